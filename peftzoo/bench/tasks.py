"""GLUE tasks: specs, loaders (a local ``glue_data`` folder, else the Hugging Face hub) and GLUE metrics.

The local layout is the one the GLUE download script writes: ``<data_dir>/<Task>/{train,dev}.tsv``, tab-separated,
quoting off (quotes are literal characters in GLUE text), CoLA without a header, MRPC starting with a UTF-8 BOM.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import lru_cache
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


class DataError(ValueError):
    """A data file that cannot be used as it is: the message names the file and the line."""


@dataclass
class Split:
    texts: list  # list of tuples of strings
    labels: np.ndarray
    skipped: int = 0  # bad rows skipped (only with skip_bad_rows)


def _label(x: str, task: Task):
    """The label value, or None when ``x`` is not in the task's label set."""
    if task.regression:
        try:
            v = float(x)
        except ValueError:
            return None
        return v if np.isfinite(v) else None
    if task.labels:
        return task.labels.index(x) if x in task.labels else None
    return int(x) if x.strip() in {str(i) for i in range(task.num_labels)} else None


def _label_set(task: Task) -> str:
    return "a number" if task.regression else ", ".join(task.labels or map(str, range(task.num_labels)))


def _read_tsv(path: Path, task: Task, skip_bad_rows: bool = False) -> Split:
    """Tab-separated, quoting off, one row per line; every bad row is an error (or skipped and counted)."""
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"{path}: empty file")
    bad = []  # (line number, what is wrong)
    try:
        lines = raw.decode("utf-8-sig").split("\n")
    except UnicodeDecodeError as e:
        if not skip_bad_rows:
            line = raw.count(b"\n", 0, e.start) + 1
            raise DataError(f"{path}: line {line} (byte offset {e.start}) is not "
                            f"UTF-8 ({e.reason}); re-encode the file, or pass --skip-bad-rows") from None
        lines = []
        for i, b in enumerate(raw.removeprefix(b"\xef\xbb\xbf").split(b"\n"), 1):
            try:
                lines.append(b.decode("utf-8"))
            except UnicodeDecodeError as e:
                bad.append((i, f"not UTF-8 ({e.reason})"))
                lines.append(None)
    if lines and lines[-1] == "":
        lines.pop()  # the final newline
    rows = [(i, None if ln is None else ln.removesuffix("\r").split("\t")) for i, ln in enumerate(lines, 1)]
    if task.header:
        head = rows[0][1] or []
        rows = rows[1:]
        col = {c: i for i, c in enumerate(head)}
        missing = [c for c in (*task.text, task.label) if c not in col]
        if missing:
            raise DataError(f"{path} lacks columns {missing} (has {head}): is it {task.name}'s labelled split?")
        ti, li, need = [col[c] for c in task.text], col[task.label], len(head)
    else:
        ti, li = list(task.text), task.label
        need = max(*ti, li) + 1
    texts, labels = [], []
    for i, r in rows:
        if r is None:
            continue
        if len(r) < need or (task.header and len(r) > need):
            what = "the header has" if task.header else "needs at least"
            bad.append((i, f"{len(r)} columns, {what} {need}"))
            continue
        y = _label(r[li], task)
        if y is None:
            bad.append((i, f"label {r[li]!r} is not in the label set ({_label_set(task)})"))
            continue
        texts.append(tuple(r[j] for j in ti))
        labels.append(y)
    if bad and not skip_bad_rows:
        shown = "; ".join(f"line {i}: {w}" for i, w in sorted(bad)[:3])
        more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
        raise DataError(f"{path}: {len(bad)} bad row{'s' * (len(bad) > 1)}: {shown}{more}. Fix the file, or "
                        f"pass --skip-bad-rows to leave them out (the count is recorded in every run)")
    if not labels:
        raise DataError(f"{path}: no usable data rows" + (f" ({len(bad)} bad rows skipped)" if bad else ""))
    dtype = np.float32 if task.regression else np.int64
    return Split(texts, np.array(labels, dtype=dtype), skipped=len(bad))


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path | None:
    d = data_dir or os.environ.get(ENV)
    return Path(d).expanduser() if d else None


def task_dir(task: Task, data_dir) -> Path | None:
    """The folder holding ``task``'s TSVs under the data directory; None = the hub (no data directory given)."""
    d = resolve_data_dir(data_dir)
    if d is None:
        return None
    if not d.is_dir():
        raise FileNotFoundError(f"data directory {d} does not exist (--data-dir or ${ENV})")
    for root in (d / task.name, d / "glue" / task.name):
        if (root / "train.tsv").exists():
            return root
    raise FileNotFoundError(f"{task.name}: no {d}/{task.name}/train.tsv (the data directory must use the "
                            f"glue_data layout: <dir>/{task.name}/train.tsv, dev.tsv)")


@lru_cache(maxsize=64)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def data_source(task: Task, data_dir=None) -> str:
    """What a run's data is, for its identity: ``local:<hash of the split files' contents>`` or ``hub:...``.
    A content hash, so the same files anywhere give the same runs and an edited file gives new ones."""
    root = task_dir(task, data_dir)
    if root is None:
        return f"hub:nyu-mll/glue/{task.hub}"
    h = hashlib.sha256()
    for s in ("train", *task.dev):
        p = root / f"{s}.tsv"
        if not p.is_file():
            raise FileNotFoundError(f"{task.name}: no {p} (the glue_data layout has train.tsv and "
                                    f"{', '.join(f'{d}.tsv' for d in task.dev)})")
        st = p.stat()
        h.update(f"{s}:{_digest(str(p), st.st_size, st.st_mtime_ns)};".encode())
    return f"local:{h.hexdigest()[:16]}"


def load_task(task: Task, data_dir=None, skip_bad_rows: bool = False) -> dict[str, Split]:
    """{"train": Split, "<dev stem>": Split, ...} from ``data_dir`` (flag, or $PEFTZOO_DATA_DIR), else the hub."""
    root = task_dir(task, data_dir)
    if root is not None:
        return {s: _read_tsv(root / f"{s}.tsv", task, skip_bad_rows) for s in ("train", *task.dev)}
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
        labels = np.asarray(part["label"], dtype=np.float32 if task.regression else np.int64)
        if not task.regression and ((labels < 0) | (labels >= task.num_labels)).any():
            i = int(np.flatnonzero((labels < 0) | (labels >= task.num_labels))[0])
            raise DataError(f"hub nyu-mll/glue {task.hub} {s}: row {i} has label {labels[i]} outside "
                            f"0..{task.num_labels - 1}")
        out[s] = Split(texts, labels)
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


REGRESSION_TRIVIAL = ("a constant prediction has no correlation with the labels (Pearson and Spearman are undefined "
                      "for zero variance); 0 is used")


def trivial_score(task: Task, labels) -> dict:
    """The best ``score`` a constant prediction gets: what a model that learnt nothing scores. ``labels``: one
    evaluation split's labels, or {split: labels} (the same constant on every split, scores averaged as the bench
    averages them). Classification tries every class as the constant answer: the majority class for accuracy,
    0 for MCC, for F1+accuracy (MRPC, QQP) the better of the two answers. Regression: 0, see ``REGRESSION_TRIVIAL``.
    Returns {"score", "answer" (the constant, or None), "metrics" (its metrics on each split), "note"}."""
    import warnings
    splits = labels if isinstance(labels, dict) else {"eval": labels}
    if task.regression:
        return {"score": 0.0, "answer": None, "metrics": {}, "note": REGRESSION_TRIVIAL}
    best = None
    for c in range(task.num_labels):
        with warnings.catch_warnings():  # sklearn warns that F1 / MCC of a constant prediction are degenerate
            warnings.simplefilter("ignore")
            ms = {s: compute_metrics(task, np.full(len(y), c), np.asarray(y)) for s, y in splits.items()}
        score = float(np.mean([m["score"] for m in ms.values()]))
        if best is None or score > best["score"]:
            best = {"score": score, "answer": task.labels[c] if task.labels else c, "metrics": ms}
    return {**best, "note": f"always answering {best['answer']!r}, the best constant for {task.metric}"}


def split_indices(n: int, max_train: int | None, fraction: float = 0.1, cap: int = 1000,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(training subset, validation) indices into a train split of ``n`` examples; disjoint, fixed by ``seed``."""
    n_val = min(cap, int(round(fraction * n)))
    if n_val < 1 or n_val >= n:
        raise ValueError(f"a train split of {n} examples leaves no validation or no training data "
                         f"(fraction {fraction}, cap {cap})")
    perm = np.random.default_rng(seed).permutation(n)
    return perm[n_val:][:max_train], perm[:n_val]
