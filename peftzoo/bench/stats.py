"""Statistics of the leaderboard: t-intervals over seeds, compact per-example predictions, GLUE scores on resamples
(``batch_score`` on drawn indices; ``count_score`` on draw counts, by matrix products: what ``bench.significance``'s
two-level bootstrap, the table's test, runs on), and the example-only paired bootstrap.

``paired_bootstrap`` answers "is method M's dev score different from LoRA's?" with the evaluation examples as the
only unit of resampling: one resample draws n dev examples with replacement and applies *the same* draw to every
seed of both methods; the statistic is (mean over M's seeds of the GLUE score on the draw) − (the same for LoRA).
It treats the seeds as fixed, so its variation is the finite dev set's alone; the claims report reads it. The
table's tests also resample seeds (``bench.significance``).
"""
from __future__ import annotations

import math

import numpy as np


def _safe_div(a, b):
    return np.divide(a, b, out=np.zeros_like(a, dtype=float), where=b != 0)


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


# ---- GLUE scores on resamples given as counts: one matrix product per sufficient statistic -----------------------
def resample_counts(rng, n: int, n_boot: int) -> np.ndarray:
    """[n_boot, n]: how often each of n examples is drawn in each of n_boot resamples of n with replacement (the
    same draws as ``rng.integers(0, n, (n_boot, n))``, as counts)."""
    idx = rng.integers(0, n, size=(n_boot, n)) + n * np.arange(n_boot)[:, None]
    return np.bincount(idx.ravel(), minlength=n_boot * n).reshape(n_boot, n).astype(float)


def _wmean(X, W):
    """Weighted means of each row of X ([R, n]) under each weight row of W ([B, n]): [R, B]."""
    return (X @ W.T) / W.sum(1)[None]


def _centred_ranks(x, W, mid):
    """x's sort order and, in that order, each example's average rank (ties averaged, as scipy's rankdata) in each
    resample of W's counts ([B, n]), minus ``mid`` ([B, 1]); also the counts in that order."""
    order = np.argsort(x, kind="stable")
    xs, Wo = x[order], W[:, order]
    r = np.cumsum(Wo, 1)
    r -= 0.5 * Wo
    r += 0.5 - mid  # draws before an example, plus the average position among its own draws
    tie = np.flatnonzero(xs[1:] == xs[:-1]) + 1  # positions that continue a tie group of x's values
    if len(tie):
        start = np.r_[True, xs[1:] != xs[:-1]]
        first = np.maximum.accumulate(np.where(start, np.arange(len(xs)), 0))  # each position's group start
        last = np.r_[np.flatnonzero(start)[1:], len(xs)][np.cumsum(start) - 1] - 1
        cols = np.unique(np.r_[tie, tie - 1])  # every member of a tie group
        def cum(c):  # draws up to and including positions c
            return r[:, c] + 0.5 * Wo[:, c] - 0.5 + mid
        before = cum(first[cols]) - Wo[:, first[cols]]
        r[:, cols] = before + (cum(last[cols]) - before + 1) / 2 - mid
    return order, Wo, r


def _wpearson(X, y, W):
    """Weighted Pearson of each row of X ([R, n]) with y ([n]) under each weight row of W ([B, n]): [R, B]."""
    X, y = X - X.mean(1, keepdims=True), (y - y.mean())[None]
    mx, my = _wmean(X, W), _wmean(y, W)
    cxy = _wmean(X * y, W) - mx * my
    vx, vy = _wmean(X * X, W) - mx ** 2, _wmean(y * y, W) - my ** 2
    return _safe_div(cxy, np.sqrt(np.clip(vx * vy, 0, None)))


def _wspearman(P, y, W):
    """Spearman of each row of P ([R, n]) with y on each resample: the weighted Pearson of the resample's average
    ranks, whose weighted mean is always (n + 1) / 2: [R, B]."""
    mid = (W.sum(1, keepdims=True) + 1) / 2
    oy, Wy, ry_s = _centred_ranks(y, W, mid)
    ry = np.empty_like(ry_s)
    ry[:, oy] = ry_s
    vy = np.einsum("ij,ij,ij->i", Wy, ry_s, ry_s)
    out = np.empty((len(P), len(W)))
    for i, p in enumerate(P):
        order, Wo, rx = _centred_ranks(p, W, mid)
        Wo *= rx  # the weighted ranks, in place
        out[i] = _safe_div(np.einsum("ij,ij->i", Wo, ry[:, order]), np.sqrt(np.einsum("ij,ij->i", Wo, rx) * vy))
    return out


def count_score(metric: str, P: np.ndarray, y: np.ndarray, W: np.ndarray) -> np.ndarray:
    """[R, B]: the GLUE ``score`` of each run's predictions (rows of ``P``, [R, n]) against labels ``y`` on each
    resample given by its counts (rows of ``W``, [B, n]); equal to ``batch_score`` on the resampled indices."""
    P, y = np.asarray(P), np.asarray(y)
    if not isinstance(metric, str):  # a bench.metrics.Metric: the count form where there is one, else its batch form
        fast = {"mcc": "matthews"}.get(metric.name, metric.name)
        binary = metric.n_classes == 2 and metric.positive == 1
        if fast not in ("accuracy", "pearson_spearman") and not (fast in ("f1_accuracy", "matthews") and binary):
            return _indexed_score(metric, P, y, W)
        metric = fast
    metric = {"mcc": "matthews"}.get(metric, metric)
    if metric == "pearson_spearman":
        P, y = P.astype(float), y.astype(float)
        return (_wpearson(P, y, W) + _wspearman(P, y, W)) / 2
    n = W.sum(1)[None]
    acc = ((P == y[None]).astype(float) @ W.T) / n
    if metric == "accuracy":
        return acc
    pos, yes = P == 1, (y == 1)[None]
    tp, fp, fn = ((a & b).astype(float) @ W.T for a, b in ((pos, yes), (pos, ~yes), (~pos, yes)))
    if metric == "f1_accuracy":
        return (acc + _safe_div(2 * tp, 2 * tp + fp + fn)) / 2
    if metric == "matthews":  # binary (CoLA)
        tn = ((~pos) & (~yes)).astype(float) @ W.T
        return _safe_div(tp * tn - fp * fn, np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)))
    raise ValueError(f"no batched score for metric {metric!r}")


def _indexed_score(metric, P: np.ndarray, y: np.ndarray, W: np.ndarray) -> np.ndarray:
    """``count_score`` for a metric without a count form (macro-F1, multi-class MCC, Pearson or Spearman alone):
    each resample's counts turned back into its indices, scored by ``metric.batch``."""
    n = np.arange(W.shape[1])
    ix = np.stack([np.repeat(n, w.astype(int)) for w in W])  # [B, n]: every resample draws n examples
    return np.stack([metric.batch(p[ix], y[ix]) for p in P])


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
