"""Statistics of the leaderboard: t-intervals over seeds, compact per-example predictions, a paired bootstrap.

The paired bootstrap answers "is method M's dev score different from LoRA's?" with the evaluation examples as the
unit of resampling: one resample draws n dev examples with replacement and applies *the same* draw to every seed of
both methods; the statistic is (mean over M's seeds of the GLUE score on the draw) − (the same for LoRA). Pooling
the seeds this way compares the seed-averaged scores the table reports; the variation it measures is the one from
the finite dev set. Seed-to-seed variation is shown separately (std and the t-interval over seeds).
"""
from __future__ import annotations

import math

import numpy as np


def mean_std(xs) -> tuple[float | None, float | None]:
    xs = [x for x in xs if x is not None]
    if not xs:
        return None, None
    return float(np.mean(xs)), (float(np.std(xs, ddof=1)) if len(xs) > 1 else 0.0)


def t_interval(xs, level: float = 0.95) -> tuple[float | None, float | None]:
    """Two-sided t-interval for the mean of ``xs`` (seeds); (None, None) with fewer than two values."""
    from scipy.stats import t
    xs = np.asarray([x for x in xs if x is not None], dtype=float)
    if len(xs) < 2:
        return None, None
    m, se = float(xs.mean()), float(xs.std(ddof=1)) / math.sqrt(len(xs))
    h = float(t.ppf(0.5 + level / 2, len(xs) - 1)) * se
    return m - h, m + h


# ---- compact predictions: a class string ("0110...") for labels < 10, else a list --------------------------------
def encode_preds(preds, regression: bool):
    preds = np.asarray(preds)
    if regression:
        return [round(float(x), 4) for x in preds]
    if preds.size and (preds.min() < 0 or preds.max() > 9):
        return [int(x) for x in preds]
    return "".join(str(int(x)) for x in preds)


def decode_preds(enc) -> np.ndarray:
    if isinstance(enc, str):
        return np.frombuffer(enc.encode("ascii"), dtype=np.uint8).astype(np.int64) - ord("0")
    arr = np.asarray(enc)
    return arr.astype(np.float64 if arr.dtype.kind == "f" else np.int64)


# ---- task scores over a batch of resamples (rows), matching tasks.compute_metrics' "score" -------------------------
def batch_score(metric, P: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """The ``score`` of each row of predictions ``P`` against labels ``Y`` (both shaped [resamples, n]); ``metric``:
    a ``metrics.Metric`` (a task's ``scorer``), or a metric's name (binary, positive class 1)."""
    from peftzoo.bench.metrics import Metric
    return (metric if isinstance(metric, Metric) else Metric(metric)).batch(P, Y)


def paired_bootstrap(metric: str, a: list, b: list, labels: dict, n_boot: int = 2000,
                     seed: int = 0) -> tuple[float, float]:
    """Difference of seed-averaged scores (a − b) and its two-sided bootstrap p-value; ``metric`` as in
    ``batch_score``.

    ``a`` and ``b`` are lists (one per seed) of {dev split: predictions}; ``labels`` is {dev split: labels}.
    Every split is resampled with its own draw shared by all seeds of both methods; multi-split tasks (MNLI)
    average the splits' scores, as the table does.
    """
    if not a or not b:
        raise ValueError("paired_bootstrap needs predictions from at least one seed of each method")
    rng = np.random.default_rng(seed)
    diff_obs, diffs = 0.0, np.zeros(n_boot)
    for split, y in labels.items():
        y = np.asarray(y)
        n = len(y)
        for preds in (*a, *b):
            if len(preds[split]) != n:
                raise ValueError(f"{split}: {len(preds[split])} predictions for {n} labels")
        idx = rng.integers(0, n, size=(n_boot, n))
        full = np.arange(n)[None]

        def avg(runs, ix):
            return np.mean([batch_score(metric, np.asarray(p[split])[ix], y[ix]) for p in runs], axis=0)
        diff_obs += float(avg(a, full)[0] - avg(b, full)[0]) / len(labels)
        diffs += (avg(a, idx) - avg(b, idx)) / len(labels)
    # two-sided: how often the resampled difference falls on the other side of zero (add-one smoothing)
    p = 2 * min((np.sum(diffs <= 0) + 1) / (n_boot + 1), (np.sum(diffs >= 0) + 1) / (n_boot + 1))
    return diff_obs, float(min(1.0, p))


def significance_mark(p: float | None) -> str:
    if p is None:
        return ""
    return "**" if p < 0.01 else "*" if p < 0.05 else ""
