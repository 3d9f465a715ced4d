"""Task metrics by name: each computed once on a split (sklearn / scipy, as GLUE's ``evaluate`` metric does) and
batched over bootstrap resamples (numpy, for the paired bootstrap), the two tested equal.

``Metric(name, positive, n_classes)``: ``compute(preds, labels)`` is the metrics dict a run records (its ``score``
is the task's number), ``batch(P, Y)`` the ``score`` of every row of [resamples, n] predictions and labels.
Classification metrics take class indices 0..n_classes-1; regression ones real values.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

# name: (what it is, for errors and the docs; True if it scores a regression task)
METRICS = {
    "accuracy": ("accuracy", False),
    "macro_f1": ("F1 averaged over the classes present in the labels or predictions (sklearn's macro-F1)", False),
    "f1": ("F1 of the named positive class ('positive')", False),
    "mcc": ("Matthews correlation (multi-class: Gorodkin's R_K, as sklearn)", False),
    "f1_accuracy": ("the mean of F1 (positive class) and accuracy, GLUE's MRPC / QQP number", False),
    "pearson": ("Pearson correlation", True),
    "spearman": ("Spearman rank correlation", True),
    "pearson_spearman": ("the mean of Pearson and Spearman, GLUE's STS-B number", True),
}
ALIASES = {"matthews": "mcc"}  # older names
NEEDS_POSITIVE = ("f1", "f1_accuracy")


def canonical(name: str) -> str:
    """The metric's canonical name; a ValueError listing the known ones."""
    key = ALIASES.get(name, name)
    if key not in METRICS:
        raise ValueError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")
    return key


def is_regression(name: str) -> bool:
    return METRICS[canonical(name)][1]


@dataclass(frozen=True)
class Metric:
    name: str  # a METRICS key (aliases accepted)
    positive: int = 1  # the positive class's index (f1, f1_accuracy)
    n_classes: int = 2  # classes of the task (1: regression)

    def __post_init__(self):
        object.__setattr__(self, "name", canonical(self.name))

    def compute(self, preds, labels) -> dict[str, float]:
        """The metrics of one split, with ``score`` the task's number (GLUE's keys for GLUE's metrics)."""
        from scipy.stats import pearsonr, spearmanr
        from sklearn.metrics import accuracy_score, matthews_corrcoef
        preds, labels = np.asarray(preds), np.asarray(labels)
        if is_regression(self.name):
            p, s = float(pearsonr(preds, labels)[0]), float(spearmanr(preds, labels)[0])
            score = {"pearson": p, "spearman": s, "pearson_spearman": (p + s) / 2}[self.name]
            return {"pearson": p, "spearmanr": s, "score": score}
        if self.name == "mcc":
            m = float(matthews_corrcoef(labels, preds))
            return {"matthews_correlation": m, "score": m}
        acc = float(accuracy_score(labels, preds))
        if self.name == "accuracy":
            return {"accuracy": acc, "score": acc}
        if self.name == "macro_f1":
            f = float(_f1(labels, preds, average="macro"))
            return {"accuracy": acc, "macro_f1": f, "score": f}
        f1 = float(self._f1_positive(labels, preds))
        return {"accuracy": acc, "f1": f1, "score": (acc + f1) / 2 if self.name == "f1_accuracy" else f1}

    def _f1_positive(self, labels, preds):
        if self.n_classes == 2:  # binary: sklearn's default F1 (GLUE's), of the positive class
            return _f1(labels, preds, pos_label=self.positive)
        return _f1(labels, preds, labels=[self.positive], average="macro")

    def batch(self, P: np.ndarray, Y: np.ndarray) -> np.ndarray:
        """``score`` of each row of ``P`` against the same row of ``Y`` (both [resamples, n])."""
        if is_regression(self.name):
            from scipy.stats import rankdata
            P, Y = P.astype(float), Y.astype(float)
            p = _pearson_rows(P, Y) if self.name != "spearman" else 0
            s = _pearson_rows(rankdata(P, axis=1), rankdata(Y, axis=1)) if self.name != "pearson" else 0
            return (p + s) / 2 if self.name == "pearson_spearman" else p + s
        acc = (P == Y).mean(1)
        if self.name == "accuracy":
            return acc
        if self.name == "mcc":
            return self._batch_mcc(P, Y)
        if self.name == "macro_f1":
            tp, fp, fn = (np.stack(x) for x in zip(*[_counts(P, Y, k) for k in range(self.n_classes)]))
            present = (tp + fp + fn) > 0  # sklearn averages over the classes in labels or predictions
            return (_safe_div(2 * tp, 2 * tp + fp + fn) * present).sum(0) / present.sum(0)
        tp, fp, fn = _counts(P, Y, self.positive)
        f1 = _safe_div(2 * tp, 2 * tp + fp + fn)
        return (acc + f1) / 2 if self.name == "f1_accuracy" else f1

    def _batch_mcc(self, P, Y):
        if self.n_classes == 2:  # the binary formula (CoLA), class ``positive`` against the other
            tp, fp, fn = _counts(P, Y, self.positive)
            tn = ((P != self.positive) & (Y != self.positive)).sum(1).astype(float)
            return _safe_div(tp * tn - fp * fn, np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)))
        n = float(P.shape[1])
        c = (P == Y).sum(1).astype(float)
        pk = np.stack([(P == k).sum(1) for k in range(self.n_classes)]).astype(float)
        tk = np.stack([(Y == k).sum(1) for k in range(self.n_classes)]).astype(float)
        cov = c * n - (pk * tk).sum(0)
        return _safe_div(cov, np.sqrt((n * n - (pk * pk).sum(0)) * (n * n - (tk * tk).sum(0))))


def _f1(y_true, y_pred, **kw) -> float:
    from sklearn.metrics import f1_score
    with warnings.catch_warnings():  # F1 of a class never predicted nor present is 0, as sklearn says in a warning
        warnings.simplefilter("ignore")
        return f1_score(y_true, y_pred, **kw)


def _counts(P, Y, k):
    """(tp, fp, fn) of class ``k`` per row."""
    return (((P == k) & (Y == k)).sum(1).astype(float), ((P == k) & (Y != k)).sum(1).astype(float),
            ((P != k) & (Y == k)).sum(1).astype(float))


def _safe_div(a, b):
    return np.divide(a, b, out=np.zeros_like(a, dtype=float), where=b != 0)


def _pearson_rows(x, y):
    x = x - x.mean(1, keepdims=True)
    y = y - y.mean(1, keepdims=True)
    return _safe_div((x * y).sum(1), np.sqrt((x * x).sum(1) * (y * y).sum(1)))
