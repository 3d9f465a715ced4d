"""Bad presets, data and settings are one clear error before anything trains; a run's id is its whole config."""
import dataclasses
import json
import re

import pytest
import torch
from benchkit import config_only_model, fake_execute, preset, run_files, write_preset, write_sst2

from peftzoo.bench import sweep as sweep_mod
from peftzoo.bench.preset import load_preset
from peftzoo.bench.spec import RunSpec, not_identity
from peftzoo.bench.sweep import plan, sweep
from peftzoo.bench.table import write as write_table
from peftzoo.cli import main


@pytest.fixture
def setup(tmp_path):
    return preset(config_only_model(tmp_path)), write_sst2(tmp_path), tmp_path


def _set(**kw):
    return lambda p, data, tmp: (p.update(kw), [])[1]


def _drop(key):
    return lambda p, data, tmp: (p.pop(key), [])[1]


def _raw_preset(text):
    def f(p, data, tmp):
        (tmp / "bad.json").write_text(text)
        return ["--preset", str(tmp / "bad.json")]
    return f


def _edit(split, line, new: bytes | None = None, whole: bytes | None = None):
    def f(p, data, tmp):
        path = data / "SST-2" / f"{split}.tsv"
        if whole is not None:
            path.write_bytes(whole)
        else:
            lines = path.read_bytes().split(b"\n")
            lines[line - 1] = new
            path.write_bytes(b"\n".join(lines))
        return []
    return f


def _args(*a):
    def f(p, data, tmp):
        return [x.format(tmp=tmp, data=data) for x in a]
    return f


CUDA = torch.cuda.is_available()
BAD = [  # (what is wrong, how to make it, the error text a user sees)
    ("unknown key", _set(max_trian=48), r"p\.json: unknown key 'max_trian' \(did you mean 'max_train'\?\)"),
    ("wrong type", _set(epochs="two"), r"p\.json: 'epochs' must be an integer, got \"two\""),
    ("hparam type", _set(hparams={"lora": {"r": "8"}}), r"'hparams\.lora\.r' must be an integer, got \"8\""),
    ("hparam name", _set(hparams={"lora": {"rank": 8}}), r"'hparams\.lora': lora has no option 'rank'"),
    ("negative batch", _set(batch_size=-4), r"'batch_size' is -4: it must be >= 1"),
    ("zero max_train", _set(max_train=0), r"'max_train' is 0: it must be >= 1"),
    ("zero lr", _set(lr={"lora": 0}), r"'lr\.lora' is 0\.0: a learning rate must be > 0"),
    ("override key", _set(task_overrides={"sst2": {"epoch": 2}}),
     r"'task_overrides\.sst2': unknown key 'epoch' \(did you mean 'epochs'\?\)"),
    ("no suite", _drop("suite"), r"p\.json: missing required key 'suite'"),
    ("no tasks", _drop("tasks"), r"p\.json: missing required key 'tasks'"),
    ("empty methods", _set(methods=[]), r"p\.json: 'methods' is empty"),
    ("unknown method", _set(methods=["head", "lroa"]), r"unknown method 'lroa' \(did you mean 'lora'\?\)"),
    ("unknown task", _set(tasks=["SST-3"]), r"unknown task 'SST-3'"),
    ("JSON syntax", _raw_preset('{"suite": "t",\n  "tasks": [,]}'), r"bad\.json: invalid JSON at line 2, column 13"),
    ("label 7 in dev", _edit("dev", 3, b"a film\t7"),
     r"dev\.tsv: 1 bad row: line 3, column 'label': label '7' is not in the label set \(0, 1\)"),
    ("short row", _edit("train", 5, b"no tab in this row"), r"train\.tsv: 1 bad row: line 5: 1 columns, the header has 2"),
    ("extra column", _edit("train", 6, b"a\tfilm\t1"), r"train\.tsv: 1 bad row: line 6: 3 columns, the header has 2"),
    ("empty file", _edit("dev", 0, whole=b""), r"dev\.tsv: empty file"),
    ("header only", _edit("train", 0, whole=b"sentence\tlabel\n"), r"train\.tsv: no usable data rows"),
    ("not UTF-8", _edit("train", 4, b"caf\xe9 film\t1"), r"train\.tsv: line 4 \(byte offset \d+\) is not UTF-8"),
    ("results not writable", _args("--results", "{tmp}/p.json/results"), r"--results .*p\.json/results: cannot write"),
    ("model path", _args("--model", "{tmp}/nope"), r"--model .*/nope: no such folder"),
    ("data dir missing", _args("--data-dir", "{tmp}/nodata"), r"--data-dir .*/nodata: no such folder"),
    ("data dir empty", lambda p, d, tmp: ((tmp / "e").mkdir(), ["--data-dir", str(tmp / "e")])[1],
     r"--data-dir .*/e: the folder is empty"),
    ("data dir lacks task", lambda p, d, tmp: ((tmp / "e" / "RTE").mkdir(parents=True), ["--data-dir", str(tmp / "e")])[1],
     r"SST-2: no .*/e/SST-2/train\.tsv \(the data directory must use the glue_data layout"),
    pytest.param("no CUDA", _args("--device", "cuda"), r"--device cuda: CUDA is not available here",
                 marks=pytest.mark.skipif(CUDA, reason="CUDA is available"), id="no CUDA"),
    ("bad device", _args("--device", "gpu0"), r"--device 'gpu0' is not a torch device"),
    ("--tasks", _args("--tasks", "foo"), r"--tasks: unknown task 'foo'"),
    ("--methods", _args("--methods", "lora", "lorax"), r"--methods: unknown method 'lorax'"),
    ("empty --seeds", _args("--seeds"), r"--seeds was given without any value"),
    ("negative --seeds", _args("--seeds", "0", "-1"), r"--seeds: seed -1 is out of range: seeds are integers from 0"),
    ("negative seed", _set(seeds=[0, -3]), r"p\.json: 'seeds': seed -3 is out of range"),
]


@pytest.mark.parametrize("what,make,error", [pytest.param(*b, id=b[0]) if type(b) is tuple else b for b in BAD])
def test_bad_input_is_one_clear_error_before_anything_runs(setup, capsys, monkeypatch, what, make, error):
    p, data, tmp = setup
    executed = []
    monkeypatch.setattr(sweep_mod, "execute", lambda spec, **kw: executed.append(spec) or fake_execute(spec, **kw))
    extra = make(p, data, tmp)
    args = ["bench", "--preset", str(write_preset(tmp / "p.json", p)), "--results", str(tmp / "results"),
            "--data-dir", str(data), "-q"]
    if "--preset" in extra:
        args[1:3] = []
    rc = main(args + extra)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert re.search(error, err), err
    assert "Traceback" not in err and executed == [] and run_files(tmp / "results") == []


def test_valid_input_runs(setup, monkeypatch, capsys):
    """The control for the table above: the same set-up, unbroken, runs both methods."""
    p, data, tmp = setup
    monkeypatch.setattr(sweep_mod, "execute", fake_execute)
    rc = main(["bench", "--preset", str(write_preset(tmp / "p.json", p)), "--results", str(tmp / "results"),
               "--data-dir", str(data), "-q"])
    assert rc == 0 and len(run_files(tmp / "results")) == 2, capsys.readouterr()


def test_shipped_presets_are_valid():
    for name in ("quick", "smoke", "glue", "roberta-base"):
        p = load_preset(name)
        assert p.suite == name and p.tasks and p.methods


def test_presets_are_package_data_found_from_any_folder(tmp_path, monkeypatch):
    """An installed peftzoo has its presets: they are package data (importlib.resources), not the source tree's."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    from pathlib import Path

    from peftzoo.bench.preset import shipped
    root = Path(__file__).resolve().parents[1]
    declared = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["peftzoo"]
    on_disk = {p.stem for p in (root / "peftzoo" / "presets").glob("*.json")}
    assert declared == ["presets/*.json", "tasks/*.json"] and set(shipped()) == on_disk >= {"quick", "cpu", "glue", "smoke"}
    from peftzoo.bench.taskdef import builtin
    assert (root / "peftzoo" / "tasks" / "glue.json").is_file() and len(builtin()) == 9  # the GLUE tasks: data too
    monkeypatch.chdir(tmp_path)
    assert load_preset("cpu").suite == "cpu"
    (tmp_path / "quick").mkdir()  # a folder named like a preset is not a preset file
    assert load_preset("quick").suite == "quick"
    with pytest.raises(FileNotFoundError, match=r"no preset 'qiuck': not a file, and the shipped presets are .*quick"):
        load_preset("qiuck")


def _other(v):
    if isinstance(v, bool):
        return not v
    if isinstance(v, (int, float)):
        return v * 2 + 1
    if isinstance(v, str):
        return v + "x"
    if isinstance(v, tuple):
        return (*v, "x")
    if isinstance(v, dict):
        return {**v, "x": 1}
    return "something"  # None


def test_every_field_but_the_excluded_ones_changes_the_run_id():
    base = RunSpec(suite="s", task="STS-B", method="lora", seed=0, hparams={"r": 8}, data="local:abc")
    ids = {base.run_id}
    from peftzoo.bench.tasks import get_task
    # fields with a closed set of values; a task definition (here STS-B's own, as a user task would record it)
    valid = {"regression_targets": "standardize", "last_layer": "pooled", "task_def": get_task("STS-B").to_dict()}
    for f in dataclasses.fields(RunSpec):
        if f.name == "head_fit":  # normalised away for a method that trains more than its head (lora): on head
            head = dataclasses.replace(base, method="head")
            assert dataclasses.replace(head, head_fit="cached").run_id not in ids | {head.run_id}
            continue
        changed = dataclasses.replace(base, **{f.name: valid.get(f.name) or _other(getattr(base, f.name))})
        if f.name in not_identity():
            assert changed.run_id == base.run_id, f.name
        else:
            assert changed.run_id not in ids, f"changing {f.name} keeps the id"
            ids.add(changed.run_id)
    # readable prefix; stable through a JSON round trip (how records are checked on read)
    assert base.run_id.startswith("lora--r8--s0--")
    assert RunSpec.from_dict(json.loads(json.dumps(base.to_dict()))).run_id == base.run_id


def test_a_changed_config_is_new_runs_and_the_table_refuses_to_mix_them(setup, capsys):
    p, data, tmp = setup
    results = tmp / "results"
    out = sweep(plan(p), root=results, data_dir=data, quiet=True, executor=fake_execute)
    assert len(out.written) == 2
    write_table(results, "t")
    p.update(epochs=2, max_train=12, lr={"lora": 0.01})
    out = sweep(plan(p), root=results, data_dir=data, quiet=True, executor=fake_execute)
    assert len(out.written) == 2 and out.done_before == 0  # not "0 runs written"
    with pytest.raises(ValueError, match=r"(?s)different configs.*SST-2: epochs 1 \(2 runs.*vs 2 \(2 runs.*max_train"):
        write_table(results, "t")
    # the same data under another path is the same runs; edited data is new ones
    moved = tmp / "moved"
    (data).rename(moved)
    assert sweep(plan(p), root=results, data_dir=moved, quiet=True, executor=fake_execute).done_before == 2
    (moved / "SST-2" / "dev.tsv").write_text((moved / "SST-2" / "dev.tsv").read_text() + "one more film\t1\n")
    assert sweep(plan(p), root=results, data_dir=moved, quiet=True, executor=fake_execute).done_before == 0


def test_duplicate_names_are_one_run(setup):
    p, data, tmp = setup
    p.update(tasks=["SST-2", "sst2", "sst-2"], methods=["head", "HEAD", "lora", "head"], seeds=[0, 0, 1])
    specs = plan(p)
    assert sorted((s.task, s.method, s.seed) for s in specs) == [
        ("SST-2", "head", 0), ("SST-2", "head", 1), ("SST-2", "lora", 0), ("SST-2", "lora", 1)]
    assert len(plan(p, tasks=["SST-2", "sst2"], methods=["head", "head"], seeds=[0])) == 1


def test_skip_bad_rows_counts_and_records_them(setup, capsys, monkeypatch):
    p, data, tmp = setup
    tsv = data / "SST-2" / "train.tsv"
    tsv.write_text(tsv.read_text() + "label 9 here\t9\nno label column\n")
    seen = []
    monkeypatch.setattr(sweep_mod, "execute", lambda spec, **kw: seen.append(spec) or fake_execute(spec, **kw))
    rc = main(["bench", "--preset", str(write_preset(tmp / "p.json", p)), "--results", str(tmp / "results"),
               "--data-dir", str(data), "--skip-bad-rows", "-q"])
    assert rc == 0 and "SST-2 train: 2 bad rows skipped" in capsys.readouterr().err
    assert all(s.skip_bad_rows for s in seen) and len(seen) == 2
    from peftzoo.bench.runner import load_splits as _data
    assert _data("SST-2", str(data), True)["train"].skipped == 2
    assert len(_data("SST-2", str(data), True)["train"].labels) == 40
