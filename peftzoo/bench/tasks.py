"""GLUE tasks: specs, loaders (a local ``glue_data`` folder, else the Hugging Face hub) and GLUE metrics.

The local layout is the one the GLUE download script writes: ``<data_dir>/<Task>/{train,dev}.tsv``, tab-separated,
quoting off (quotes are literal characters in GLUE text), CoLA without a header, MRPC starting with a UTF-8 BOM.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ENV = "PEFTZOO_DATA_DIR"


@dataclass(frozen=True)
class Task:
    name: str  # GLUE folder name, e.g. "SST-2"
    hub: str  # nyu-mll/glue config name
    text: tuple  # local column names (CoLA: indices) of the one or two texts
    label: object  # local label column (name or index)
    labels: tuple | None  # label vocabulary for string labels; None = integers (or float for regression)
    metric: str  # primary GLUE metric name
    dev: tuple = ("dev",)  # dev split file stems (MNLI has two)
    header: bool = True
    hub_text: tuple = ()  # hub column names of the texts

    @property
    def regression(self) -> bool:
        return self.metric == "pearson_spearman"

    @property
    def num_labels(self) -> int:
        return 1 if self.regression else (len(self.labels) if self.labels else 2)


TASKS = {t.name: t for t in [
    Task("CoLA", "cola", (3,), 1, None, "matthews", header=False, hub_text=("sentence",)),
    Task("SST-2", "sst2", ("sentence",), "label", None, "accuracy", hub_text=("sentence",)),
    Task("MRPC", "mrpc", ("#1 String", "#2 String"), "Quality", None, "f1_accuracy", hub_text=("sentence1", "sentence2")),
    Task("QQP", "qqp", ("question1", "question2"), "is_duplicate", None, "f1_accuracy", hub_text=("question1", "question2")),
    Task("STS-B", "stsb", ("sentence1", "sentence2"), "score", None, "pearson_spearman", hub_text=("sentence1", "sentence2")),
    Task("MNLI", "mnli", ("sentence1", "sentence2"), "gold_label", ("entailment", "neutral", "contradiction"),
         "accuracy", dev=("dev_matched", "dev_mismatched"), hub_text=("premise", "hypothesis")),
    Task("QNLI", "qnli", ("question", "sentence"), "label", ("entailment", "not_entailment"), "accuracy",
         hub_text=("question", "sentence")),
    Task("RTE", "rte", ("sentence1", "sentence2"), "label", ("entailment", "not_entailment"), "accuracy",
         hub_text=("sentence1", "sentence2")),
    Task("WNLI", "wnli", ("sentence1", "sentence2"), "label", None, "accuracy", hub_text=("sentence1", "sentence2")),
]}
ALIASES = {k.lower().replace("-", ""): k for k in TASKS}


def get_task(name: str) -> Task:
    key = name.lower().replace("-", "").replace("_", "")
    if key not in ALIASES:
        raise ValueError(f"unknown task {name!r}; GLUE tasks: {', '.join(TASKS)}")
    return TASKS[ALIASES[key]]


@dataclass
class Split:
    texts: list  # list of tuples of strings
    labels: np.ndarray


def _read_tsv(path: Path, task: Task) -> Split:
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    if task.header:
        head, rows = rows[0], rows[1:]
        col = {c: i for i, c in enumerate(head)}
        missing = [c for c in (*task.text, task.label) if c not in col]
        if missing:
            raise ValueError(f"{path} lacks columns {missing} (has {head}): is it {task.name}'s labelled split?")
        ti, li = [col[c] for c in task.text], col[task.label]
    else:
        ti, li = list(task.text), task.label
    rows = [r for r in rows if len(r) > max(*ti, li)]
    texts = [tuple(r[i] for i in ti) for r in rows]
    raw = [r[li] for r in rows]
    if task.regression:
        labels = np.array([float(x) for x in raw], dtype=np.float32)
    elif task.labels:
        labels = np.array([task.labels.index(x) for x in raw], dtype=np.int64)
    else:
        labels = np.array([int(x) for x in raw], dtype=np.int64)
    return Split(texts, labels)


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path | None:
    d = data_dir or os.environ.get(ENV)
    return Path(d).expanduser() if d else None


def load_task(task: Task, data_dir=None) -> dict[str, Split]:
    """{"train": Split, "<dev stem>": Split, ...} from ``data_dir`` (flag, or $PEFTZOO_DATA_DIR), else the hub."""
    d = resolve_data_dir(data_dir)
    if d is not None:
        for root in (d / task.name, d / "glue" / task.name):
            if (root / "train.tsv").exists():
                return {s: _read_tsv(root / f"{s}.tsv", task) for s in ("train", *task.dev)}
        raise FileNotFoundError(f"{task.name}: no {d}/{task.name}/train.tsv (the data directory must use the "
                                f"glue_data layout: <dir>/{task.name}/train.tsv, dev.tsv)")
    try:
        from datasets import load_dataset
        ds = load_dataset("nyu-mll/glue", task.hub)
    except Exception as e:  # no network, no cache
        raise RuntimeError(
            f"cannot load GLUE {task.name}: no local data directory was given and the Hugging Face hub is not "
            f"reachable ({type(e).__name__}). Pass --data-dir DIR or set {ENV}=DIR, DIR holding the glue_data "
            f"layout (DIR/{task.name}/train.tsv, dev.tsv).") from e
    hub_dev = {"dev": "validation", "dev_matched": "validation_matched", "dev_mismatched": "validation_mismatched"}
    out = {}
    for s in ("train", *task.dev):
        part = ds["train" if s == "train" else hub_dev[s]]
        texts = list(zip(*[part[c] for c in task.hub_text]))
        out[s] = Split(texts, np.asarray(part["label"], dtype=np.float32 if task.regression else np.int64))
    return out


def compute_metrics(task: Task, preds: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """GLUE's metrics (the formulas of the ``evaluate`` glue metric) and ``score``, the task's GLUE number."""
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef
    if task.regression:
        p, s = float(pearsonr(preds, labels)[0]), float(spearmanr(preds, labels)[0])
        return {"pearson": p, "spearmanr": s, "score": (p + s) / 2}
    if task.metric == "matthews":
        m = float(matthews_corrcoef(labels, preds))
        return {"matthews_correlation": m, "score": m}
    acc = float(accuracy_score(labels, preds))
    if task.metric == "f1_accuracy":
        f1 = float(f1_score(labels, preds))
        return {"accuracy": acc, "f1": f1, "score": (acc + f1) / 2}
    return {"accuracy": acc, "score": acc}
