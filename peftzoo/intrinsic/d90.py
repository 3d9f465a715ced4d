"""Automatic d_90: the smallest subspace dimension d whose score reaches 90% of full fine-tuning.

A coarse log grid of d brackets the crossing, then bisection in log space narrows the bracket. Every (d, seed)
score is cached in the result JSON as soon as it is known (atomic write), so a killed search resumes where it
stopped; the file also records the settings (``config``) the scores were computed under, and a rerun with other
settings is refused rather than answered with those scores. Scores per d are the mean over seeds.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

import numpy as np

from peftzoo.bench.store import write_figure, write_json

FULL = "full"  # the d of a baseline point, and its method: the registered full fine-tuning baseline


def log_grid(lo: int, hi: int, per_decade: int = 2) -> list[int]:
    if lo < 1 or hi < lo or per_decade < 1:
        raise ValueError(f"a log grid needs 1 <= dmin <= dmax and per-decade >= 1 (got dmin {lo}, dmax {hi}, "
                         f"per-decade {per_decade})")
    n = int(round(math.log10(hi / lo) * per_decade)) + 1
    return sorted({int(round(x)) for x in np.logspace(math.log10(lo), math.log10(hi), n)})


class CacheMismatch(ValueError):
    """The result file holds scores computed under other settings."""


def sequential(evaluate: Callable) -> Callable:
    """``evaluate(d, seed) -> score`` as an ``evaluate_many``: one point after the other, in this process."""
    def many(points):
        for d, s in points:
            yield (d, s), float(evaluate(d, s))
    return many


class Search:
    """``evaluate(d, seed)`` (or ``evaluate_many([(d, seed), ...])`` yielding ``((d, seed), score)`` as each
    finishes, e.g. on a Ray cluster) scores one point; ``d`` is an int, or ``FULL`` for the full fine-tuning
    baseline when ``baseline`` is None (it is then the mean of those scores).

    ``config`` is the plain-data identity of a score: every setting that changes one (task, model, lr, epochs,
    data, ...). Cached scores are reused only under an equal config; another one is a ``CacheMismatch`` naming the
    keys that differ, unless ``overwrite`` (the old scores are then dropped; scores of equal settings are kept).
    """

    def __init__(self, evaluate: Callable | None, baseline: float | None, seeds=(0,), threshold: float = 0.9,
                 path: str | Path | None = None, meta: dict | None = None, progress=None, config: dict | None = None,
                 evaluate_many: Callable | None = None, overwrite: bool = False):
        if not list(seeds):
            raise ValueError("no seeds: give at least one (e.g. --seeds 0)")
        self.evaluate_many = evaluate_many or sequential(evaluate)
        self.baseline, self.seeds, self.threshold = baseline, list(seeds), threshold
        self.path = Path(path) if path else None
        self.config = config
        self.scores: dict[str, float] = {}
        self.meta = meta or {}
        self.progress = progress
        if self.path and self.path.exists():
            try:
                old = json.loads(self.path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                if overwrite:
                    return
                raise CacheMismatch(f"{self.path} is not valid JSON ({e}): move it away or pass --overwrite") from e
            if not isinstance(old, dict) or old.get("config") != config:
                if overwrite:
                    return
                raise CacheMismatch(f"{self.path} holds scores computed with other settings "
                                    f"({_diff(old.get('config') if isinstance(old, dict) else None, config)}): "
                                    "use another --out, or --overwrite to discard them")
            self.scores = {k: float(v) for k, v in old.get("scores", {}).items()}

    @property
    def target(self) -> float:
        return self.threshold * self.baseline

    def score_many(self, ds) -> list[float]:
        """Mean score over seeds for each d, evaluating (and caching, one save per point) the missing points."""
        todo = [(d, s) for d in dict.fromkeys(ds) for s in self.seeds if f"{d}/{s}" not in self.scores]
        for (d, s), v in self.evaluate_many(todo):
            self.scores[f"{d}/{s}"] = float(v)
            self.save()
            if self.progress is not None:
                self.progress.update(1)
        return [float(np.mean([self.scores[f"{d}/{s}"] for s in self.seeds])) for d in ds]

    def score(self, d: int) -> float:
        return self.score_many([d])[0]

    def run(self, grid: list[int], bisect_steps: int = 4, whole_grid: bool = False) -> dict:
        """Bracket the crossing on ``grid``, then bisect. ``whole_grid``: evaluate every grid point (and the
        baseline) in one batch, for a parallel ``evaluate_many``; the result is the same, the curve fuller."""
        grid = sorted(grid)
        if self.baseline is None or whole_grid:
            self.score_many(([FULL] if self.baseline is None else []) + (grid if whole_grid else []))
        if self.baseline is None:
            self.baseline = self.score(FULL)
        lo, hi = None, None
        for d in grid:
            if self.score(d) >= self.target:
                hi = d
                break
            lo = d
        if hi is not None and lo is not None:
            for _ in range(bisect_steps):
                if hi - lo <= 1:
                    break
                mid = int(round(math.sqrt(lo * hi)))
                mid = min(max(mid, lo + 1), hi - 1)
                if self.score(mid) >= self.target:
                    hi = mid
                else:
                    lo = mid
        result = self.result(lo, hi)
        self.save(result)
        return result

    def curve(self) -> dict[int, list[float]]:
        out: dict[int, list[float]] = {}
        for k, v in self.scores.items():
            d, s = k.split("/")
            if d != FULL and int(s) in self.seeds:
                out.setdefault(int(d), []).append(v)
        return dict(sorted(out.items()))

    def result(self, lo, hi) -> dict:
        base = [self.scores[f"{FULL}/{s}"] for s in self.seeds if f"{FULL}/{s}" in self.scores]
        return {"d90": hi, "bracket": [lo, hi], "reached": hi is not None, "baseline": self.baseline,
                "baseline_scores": base or None, "threshold": self.threshold, "target": self.target,
                "seeds": self.seeds,
                "curve": {str(d): {"mean": float(np.mean(v)), "std": float(np.std(v)), "scores": v}
                          for d, v in self.curve().items()}}

    def save(self, result: dict | None = None):
        if self.path:
            write_json(self.path, {**self.meta, **(result or {}), "config": self.config, "baseline": self.baseline,
                                   "threshold": self.threshold, "scores": self.scores})


def _diff(old: dict | None, new: dict | None) -> str:
    if not isinstance(old, dict):
        return "the file records no settings"
    keys = sorted(k for k in set(old) | set(new or {}) if old.get(k) != (new or {}).get(k))
    return "; ".join(f"{k}: {old.get(k)!r} there, {(new or {}).get(k)!r} now" for k in keys)


def plot(results: dict[str, dict], path: str | Path, title: str = "") -> None:
    """Score vs d (log axis), one line per result, with each one's 90% line and d_90 marker."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, (label, r) in enumerate(results.items()):
        c = f"C{i}"
        ds = sorted(int(d) for d in r["curve"])
        m = [r["curve"][str(d)]["mean"] for d in ds]
        s = [r["curve"][str(d)]["std"] for d in ds]
        ax.errorbar(ds, m, yerr=s, marker="o", ms=4, capsize=2, color=c,
                    label=f"{label}: d90 = {r['d90'] if r['reached'] else '> ' + str(max(ds))}")
        ax.axhline(r["target"], color=c, ls="--", lw=0.8)
        ax.axhline(r["baseline"], color=c, ls=":", lw=0.8)
        if r["reached"]:
            ax.axvline(r["d90"], color=c, ls="-.", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("subspace dimension d")
    ax.set_ylabel("score")
    ax.set_title(title + "  (dotted: full FT, dashed: 90%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        write_figure(Path(path), fig, dpi=110)
    finally:
        plt.close(fig)
