"""Tasks as data: task files (CSV / TSV / JSON / JSONL / Parquet / a hub dataset), their validation (file, line,
column), label inference, multi-class metrics and their batched bootstrap form, the data's identity, and the
built-in GLUE tasks read the new way giving exactly what the old loader gave."""
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from peftzoo.bench import stats
from peftzoo.bench.metrics import Metric
from peftzoo.bench.preset import Preset, PresetError
from peftzoo.bench.taskdata import DataError, data_source, load_task
from peftzoo.bench.taskdef import TaskError
from peftzoo.bench.tasks import TASKS, load_task_file, trivial_score

GLUE = os.environ.get("PEFTZOO_DATA_DIR")
FIXTURE = Path(__file__).parent / "fixtures" / "glue_loaded.json"


def write_csv(folder: Path, rows: dict, header="subject,body,queue") -> dict:
    """{split: path} of CSV files holding ``rows`` ({split: [line, ...]})."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, lines in rows.items():
        out[split] = folder / f"{split}.csv"
        out[split].write_text("\n".join([header, *lines]) + "\n", encoding="utf-8")
    return out


TICKETS = {"train": ["login,cannot sign in,bug", "invoice,\"charged twice, please refund\",billing",
                     "idea,dark mode please,feature", "crash,app closes,bug"],
           "dev": ["refund,money back,billing", "export,\"csv\nexport\",feature"],
           "test": ["error,500 page,bug"]}


def tickets(tmp_path, **kw) -> dict:
    write_csv(tmp_path / "data", TICKETS)
    task = {"name": "tickets", "splits": {s: f"data/{s}.csv" for s in TICKETS}, "text": ["subject", "body"],
            "label": "queue", "metric": "macro_f1", **kw}
    (tmp_path / "tickets.json").write_text(json.dumps(task))
    return task


# ---- reading and validating ---------------------------------------------------------------------------------------
def test_a_csv_task_file_reads_every_split_with_quoting_and_infers_the_labels(tmp_path):
    tickets(tmp_path)
    (t,) = load_task_file(tmp_path / "tickets.json").values()
    assert t.labels == ("billing", "bug", "feature") and t.num_labels == 3  # the train split's, sorted
    assert dict(t.splits)["dev"] == str((tmp_path / "data" / "dev.csv").resolve())  # relative to the task file
    d = load_task(t)
    assert list(d) == ["train", "dev", "test"] and t.dev == ("dev",) and t.test == ("test",)
    assert d["train"].texts[1] == ("invoice", "charged twice, please refund")  # a quoted comma
    assert d["dev"].texts[1] == ("export", "csv\nexport") and list(d["dev"].labels) == [0, 2]  # a quoted newline
    assert data_source(t).startswith("files:")


@pytest.mark.parametrize("split,row,header,error", [
    # dev's second row spans lines 3-4 (a quoted newline): the row added is on line 5
    ("dev", "x,y,spam", None, r"dev\.csv: 1 bad row: line 5, column 'queue': label 'spam' is not in the label set "
                              r"\(billing, bug, feature\)\. Fix the file, or pass --skip-bad-rows"),
    ("test", "only,two", None, r"test\.csv: 1 bad row: line 3: 2 columns, the header has 3"),
    ("dev", None, "subject,text,queue", r"dev\.csv lacks columns \['body'\] \(has \['subject', 'text', 'queue'\]\): "
                                        r"is it tickets's labelled split\?"),
])
def test_bad_rows_name_the_file_line_and_column(tmp_path, split, row, header, error):
    tickets(tmp_path, labels=["billing", "bug", "feature"])
    path = tmp_path / "data" / f"{split}.csv"
    text = path.read_text()
    path.write_text(text + row + "\n" if row else header + text[text.index("\n"):])
    (t,) = load_task_file(tmp_path / "tickets.json").values()
    with pytest.raises(DataError, match=error):
        load_task(t)
    if row:  # a bad row can be left out instead, and is counted
        assert load_task(t, skip_bad_rows=True)[split].skipped == 1


def test_non_utf8_and_empty_splits_are_errors(tmp_path):
    tickets(tmp_path, labels=["billing", "bug", "feature"])
    dev = tmp_path / "data" / "dev.csv"
    dev.write_bytes(b"subject,body,queue\nrefund,caf\xe9,billing\n")
    (t,) = load_task_file(tmp_path / "tickets.json").values()
    with pytest.raises(DataError, match=r"dev\.csv: line 2 \(byte offset 29\) is not UTF-8 .*re-encode the file"):
        load_task(t)
    dev.write_text("subject,body,queue\n")
    with pytest.raises(DataError, match=r"dev\.csv: no usable data rows"):
        load_task(t)


def test_jsonl_rows_are_numbered_by_line_and_a_null_text_is_a_bad_row(tmp_path):
    rows = [{"review": "great", "stars": 4.5}, None, {"review": "awful", "stars": 1}, {"review": None, "stars": 2}]
    for split in ("train", "dev"):
        (tmp_path / f"{split}.jsonl").write_text("\n".join("" if r is None else json.dumps(r) for r in rows) + "\n")
    (tmp_path / "t.json").write_text(json.dumps({"name": "stars", "splits": {"train": "train.jsonl", "dev": "dev.jsonl"},
                                                 "text": "review", "label": "stars", "regression": True}))
    (t,) = load_task_file(tmp_path / "t.json").values()
    assert t.metric == "pearson_spearman" and t.num_labels == 1  # regression's default metric
    with pytest.raises(DataError, match=r"train\.jsonl: 1 bad row: line 4, column 'review': no text \(null\)"):
        load_task(t)  # line 2 is blank: the 3rd row is on line 4
    d = load_task(t, skip_bad_rows=True)
    assert d["dev"].labels.tolist() == [4.5, 1.0] and d["dev"].overlap == 2  # dev repeats train: counted


def test_a_parquet_task_reads_its_rows(tmp_path):
    pd = pytest.importorskip("pandas")
    for split, n in (("train", 6), ("dev", 3)):
        pd.DataFrame({"q": [f"q{i}" for i in range(n)], "a": [f"a{i}" for i in range(n)],
                      "y": [i % 2 for i in range(n)]}).to_parquet(tmp_path / f"{split}.parquet")
    spec = {"name": "pairs", "splits": {"train": "train.parquet", "dev": "dev.parquet"}, "text": ["q", "a"],
            "label": "y", "metric": "f1", "positive": "1"}
    (t,) = load_task_file_from(tmp_path, spec).values()
    d = load_task(t)
    assert t.labels == ("0", "1") and d["dev"].texts[2] == ("q2", "a2") and d["dev"].labels.tolist() == [0, 1, 0]


def load_task_file_from(folder: Path, spec):
    (folder / "task.json").write_text(json.dumps(spec))
    return load_task_file(folder / "task.json")


@pytest.mark.parametrize("change,error", [
    ({"metrc": "accuracy"}, r"task\.json: unknown key 'metrc' \(did you mean 'metric'\?\)"),
    ({"splits": {"train": "data/train.csv", "dev": "data/nope.csv"}},
     r"split 'dev': no file .*/data/nope\.csv \(relative paths are read from .*, the folder of the file"),
    ({"splits": {"train": "data/train.csv"}}, r"'splits' needs \"train\" and \"dev\""),
    ({"metric": "f1"}, r"metric 'f1' needs 'positive', the class its F1 is of \(one of billing, bug, feature\)"),
    ({"metric": "pearson"}, r"metric 'pearson' is for regression, this task is classification: use one of accuracy"),
    ({"metric": "auc"}, r"'metric' is \"auc\"; one of accuracy, macro_f1, f1, mcc, f1_accuracy, pearson"),
    ({"positive": "spam", "metric": "f1", "labels": ["billing", "bug"]}, r"'positive' 'spam' is not one of the labels"),
    ({"name": "SST-2"}, r"duplicate task name 'SST-2' \(a built-in GLUE task\)"),
    ({"name": "my tickets"}, r"'name' must be a name of letters, digits"),
    ({"text": ["subject", "body", "queue"]}, r"'text' must be one or two column names"),
])
def test_a_bad_task_definition_is_one_error_naming_the_key(tmp_path, change, error):
    task = {**tickets(tmp_path), **change}
    with pytest.raises(TaskError, match=error):
        load_task_file_from(tmp_path, task)


def test_two_tasks_of_one_name_are_an_error(tmp_path):
    task = tickets(tmp_path)
    with pytest.raises(TaskError, match=r"task\.json task 2: duplicate task name 'tickets' \(defined twice\)"):
        load_task_file_from(tmp_path, [task, task])


def test_a_hub_task_maps_class_label_names_and_its_split_names(tmp_path, monkeypatch):
    """The hub code path, with datasets.load_dataset answering from memory (no network here)."""
    import datasets
    feats = datasets.Features({"text": datasets.Value("string"),
                               "label": datasets.ClassLabel(names=["sadness", "joy", "anger"])})
    dd = datasets.DatasetDict({s: datasets.Dataset.from_dict({"text": [f"{s} {i}" for i in range(4)],
                                                              "label": [2, 0, 1, 2]}, features=feats)
                               for s in ("train", "validation")})
    asked = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **kw: asked.append((a, kw)) or dd)
    spec = {"name": "emotion", "source": {"hub": "someone/emotion", "config": "split"}, "text": "text",
            "label": "label", "labels": ["anger", "joy", "sadness"], "splits": {"train": "train", "dev": "validation"}}
    (t,) = load_task_file_from(tmp_path, spec).values()
    d = load_task(t)
    assert d["dev"].labels.tolist() == [0, 2, 1, 0]  # anger, sadness, joy, anger: by name, not by hub index
    assert asked[0][0] == ("someone/emotion", "split") and data_source(t) == "hub:someone/emotion/split"
    bad = load_task_file_from(tmp_path, {**spec, "splits": {"train": "train", "dev": "dev"}})["emotion"]
    with pytest.raises(DataError, match=r"hub dataset someone/emotion has no split 'dev' \(it has train, "
                                        r"validation\): fix 'splits\.dev'"):
        load_task(bad)


# ---- identity -----------------------------------------------------------------------------------------------------
def _ids(preset_dict, base):
    from peftzoo.bench.plan import make_plan
    plan = make_plan(Preset.from_dict(preset_dict, "p.json", base))
    return sorted(s.bind_data().run_id for s in plan.stage1())


def test_run_ids_hash_the_files_contents_not_where_they_are(tmp_path):
    import shutil
    task = tickets(tmp_path)
    p = {"suite": "s", "tasks": [task], "methods": ["head"], "seeds": [0], "lr": {"head": 1e-3}}
    ids = _ids(p, tmp_path)
    shutil.copytree(tmp_path / "data", tmp_path / "elsewhere" / "data")
    assert _ids(p, tmp_path / "elsewhere") == ids  # the same files, another folder: the same runs
    assert _ids({**p, "tasks": [{**task, "metric": "accuracy"}]}, tmp_path) != ids  # another metric: new runs
    (tmp_path / "data" / "dev.csv").write_text("subject,body,queue\nx,y,bug\n")
    assert _ids(p, tmp_path) != ids  # edited data: new runs


def test_a_preset_defines_tasks_inline_with_paths_from_its_folder(tmp_path):
    task = tickets(tmp_path)
    (tmp_path / "p.json").write_text(json.dumps({"suite": "s", "tasks": ["sst2", task], "methods": ["head"],
                                                 "task_overrides": {"tickets": {"epochs": 3}}}))
    from peftzoo.bench.preset import load_preset
    p = load_preset(str(tmp_path / "p.json"))
    assert p.tasks == ("SST-2", "tickets") and p.task("tickets").labels == ("billing", "bug", "feature")
    assert p.for_task("tickets").epochs == 3 and p.task("SST-2") is TASKS["SST-2"]
    with pytest.raises(PresetError, match=r"p: 'tasks\[1\]': unknown key 'lable' \(did you mean 'label'\?\)"):
        Preset.from_dict({"suite": "s", "tasks": ["sst2", {**task, "lable": "x"}], "methods": ["head"]}, "p", tmp_path)


# ---- metrics ------------------------------------------------------------------------------------------------------
def test_multiclass_metrics_are_sklearns():
    from sklearn.metrics import f1_score, matthews_corrcoef
    y, p = np.array([0, 1, 2, 2, 1, 0, 2, 1]), np.array([0, 2, 2, 2, 1, 1, 0, 1])
    assert Metric("macro_f1", n_classes=3).compute(p, y)["score"] == pytest.approx(f1_score(y, p, average="macro"))
    assert Metric("mcc", n_classes=3).compute(p, y)["score"] == pytest.approx(matthews_corrcoef(y, p))
    f1 = Metric("f1", positive=2, n_classes=3).compute(p, y)
    assert f1["score"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1)) and f1["accuracy"] == pytest.approx(5 / 8)


@pytest.mark.parametrize("metric,n", [("macro_f1", 3), ("mcc", 3), ("f1", 3), ("f1_accuracy", 4), ("accuracy", 5),
                                      ("macro_f1", 2), ("mcc", 2), ("pearson", 1), ("spearman", 1)])
def test_batched_scores_match_the_metrics(metric, n):
    m, rng = Metric(metric, positive=1, n_classes=n), np.random.default_rng(3)
    if n == 1:
        Y = rng.uniform(0, 5, (5, 40))
        P = Y + rng.normal(0, 1, Y.shape)
    else:
        Y = rng.integers(0, n, (5, 40))
        P = np.where(rng.uniform(size=Y.shape) < 0.6, Y, rng.integers(0, n, Y.shape))
        Y[0] = np.where(Y[0] == n - 1, 0, Y[0])  # a class absent from one row's labels
    assert m.batch(P, Y) == pytest.approx([m.compute(P[i], Y[i])["score"] for i in range(5)], abs=1e-9)


def test_trivial_score_of_a_multiclass_task(tmp_path):
    tickets(tmp_path)
    (t,) = load_task_file(tmp_path / "tickets.json").values()  # macro_f1, classes billing, bug, feature
    y = np.array([0, 1, 1, 2, 2, 2])
    got = trivial_score(t, y)  # always "feature": its F1 is 2 * 0.5 * 1 / 1.5, the other two 0, over 3 classes
    assert got["answer"] == "feature" and got["score"] == pytest.approx(2 / 9)


def test_paired_bootstrap_of_a_multiclass_metric_against_a_plain_loop():
    m, rng = Metric("macro_f1", n_classes=3), np.random.default_rng(4)
    y = rng.integers(0, 3, 90)
    good = [{"dev": np.where(rng.uniform(size=90) < 0.8, y, (y + 1) % 3)} for _ in range(2)]
    bad = [{"dev": np.where(rng.uniform(size=90) < 0.5, y, (y + 1) % 3)} for _ in range(2)]
    diff, _ = stats.paired_bootstrap(m, good, bad, {"dev": y}, n_boot=50, seed=1)
    obs = np.mean([m.compute(g["dev"], y)["score"] for g in good]) - np.mean([m.compute(b["dev"], y)["score"]
                                                                             for b in bad])
    assert diff == pytest.approx(obs) and diff > 0.2


# ---- GLUE as data -------------------------------------------------------------------------------------------------
def _digest(split) -> dict:
    h = hashlib.sha256()
    h.update(json.dumps([list(t) for t in split.texts], ensure_ascii=False).encode())
    h.update(split.labels.dtype.str.encode() + split.labels.tobytes())
    return {"n": len(split.labels), "sha256": h.hexdigest()}


@pytest.mark.skipif(not GLUE, reason="PEFTZOO_DATA_DIR not set")
@pytest.mark.parametrize("name", ["CoLA", "SST-2", "MRPC", "STS-B", "RTE", "WNLI"])
def test_glue_read_as_data_gives_what_the_old_loader_gave(name):
    """tests/fixtures/glue_loaded.json was written by the loader this one replaced (peftzoo/bench/tasks.py before
    tasks became data): the same examples, labels, dtype and data identity, so every committed run stays valid."""
    want = json.loads(FIXTURE.read_text())[name]
    task = TASKS[name]
    got = {"data": data_source(task), **{s: _digest(x) for s, x in load_task(task).items()}}
    assert got == want


def test_the_test_split_is_reported_at_the_lr_and_epoch_validation_selected():
    from peftzoo.bench.leaderboard import build
    from peftzoo.bench.record import EpochResult, RunRecord
    from peftzoo.bench.spec import RunSpec

    def run(lr, val, test):  # one epoch: validation, dev and test scores as given
        spec = RunSpec(suite="s", task="SST-2", method="lora", seed=0, hparams={"r": 2}, lr=lr, data="local:x")
        return RunRecord(spec, "ok", {}, [EpochResult({"score": 0.7}, {"score": val}, epoch=1, test={"score": test})],
                         params={"target": None, "achieved": 8, "solver": None, "adapter": 8, "trainable": 9},
                         steps=1, median_step_s=0.1, peak_mem_mb=1.0, device="cpu", adapter_file_bytes=10)
    b = build([run(1e-3, 0.9, 0.6), run(1e-2, 0.8, 0.95)])  # the test split prefers 1e-2; validation 1e-3
    (row,) = b.rows
    assert row.tasks["SST-2"].sel.lr == 1e-3 and row.tasks["SST-2"].test == 0.6 and b.test_tasks == ["SST-2"]
