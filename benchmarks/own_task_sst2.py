"""A task defined from local files reproduces the built-in task exactly: GLUE SST-2 (from $PEFTZOO_DATA_DIR) written
as CSV with string labels ("negative" / "positive"), a task JSON for it, and `peftzoo bench` on the embedded MiniLM
with the quick preset's settings for head and LoRA (its r=8 count, seed 0) on both the built-in SST-2 and the CSV
task; every epoch's dev and validation scores must be equal, and so must the table's cells.

    PEFTZOO_DATA_DIR=/path/to/glue_data python benchmarks/own_task_sst2.py [--out DIR]

Its results go to a temporary folder (or --out); nothing is written under results/. The built-in runs have the
committed quick runs' ids (results/quick/runs/SST-2): their scores are printed beside those for comparison.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LABELS = ("negative", "positive")


def write_task(folder: Path) -> Path:
    """SST-2's train and dev as CSV files with string labels, and the task JSON that reads them."""
    from peftzoo.bench.tasks import get_task, load_task
    data = load_task(get_task("SST-2"))
    for split in ("train", "dev"):
        with open(folder / f"{split}.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["sentence", "label"])
            for (text,), y in zip(data[split].texts, data[split].labels):
                w.writerow([text, LABELS[y]])
    task = {"name": "sst2-csv", "splits": {"train": "train.csv", "dev": "dev.csv"}, "text": "sentence",
            "label": "label", "labels": list(LABELS), "metric": "accuracy"}
    (folder / "sst2-csv.json").write_text(json.dumps(task, indent=1) + "\n")
    return folder / "sst2-csv.json"


def quick_head_lora(folder: Path) -> Path:
    """The quick preset with head and LoRA only, LoRA at its r=8 count (the quick runs' middle budget)."""
    p = json.loads((ROOT / "peftzoo" / "presets" / "quick.json").read_text())
    p.update(suite="own-task-sst2", methods=["head", "lora"], seeds=[0], budgets=["lora:r=8"], method_budgets={},
             description="The quick preset's settings for head and LoRA (its r=8 count), seed 0, on SST-2 and on "
                         "SST-2 written as CSV with string labels (benchmarks/own_task_sst2.py).")
    (folder / "preset.json").write_text(json.dumps(p, indent=1))
    return folder / "preset.json"


def scores(rec) -> list:
    return [(h.dev["score"], h.val["score"]) for h in rec.history]


def main(argv=None) -> int:
    from peftzoo.bench import store
    from peftzoo.cli import main as peftzoo
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="folder for the CSVs, the task JSON and the results (default: a temp one)")
    args = ap.parse_args(argv)
    folder = Path(args.out or tempfile.mkdtemp(prefix="own-task-sst2-"))
    folder.mkdir(parents=True, exist_ok=True)
    task_file, preset = write_task(folder), quick_head_lora(folder)
    results = folder / "results"
    rc = peftzoo(["bench", "--preset", str(preset), "--task-file", str(task_file), "--tasks", "SST-2", "sst2-csv",
                  "--results", str(results), "-q"])
    if rc != 0:
        return rc
    peftzoo(["table", "--suite", "own-task-sst2", "--results", str(results)])
    runs = {(r.task, r.method): r for r in store.read_runs(results, "own-task-sst2")}
    same = True
    for m in ("head", "lora"):
        a, b = runs["SST-2", m], runs["sst2-csv", m]
        committed = ROOT / "results" / "quick" / "runs" / "SST-2" / f"{a.run_id}.json"
        ref = scores(store.read_record(committed)[0]) if committed.is_file() else None
        print(f"{m}: built-in SST-2 {a.run_id} (dev, val) per epoch {scores(a)}; sst2-csv {b.run_id} {scores(b)}; "
              f"committed quick run: {ref if ref is not None else 'none with this id'}")
        same &= scores(a) == scores(b) and a.history[-1].preds == b.history[-1].preds
    print("the CSV task reproduces the built-in task's scores exactly" if same else "SCORES DIFFER")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
