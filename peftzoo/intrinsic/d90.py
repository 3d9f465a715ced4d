"""Automatic d_90: the smallest subspace dimension d whose score reaches 90% of full fine-tuning.

A coarse log grid of d brackets the crossing, then bisection in log space narrows the bracket. Every (d, seed)
score is cached in the result JSON as soon as it is known (atomic write), so a killed search resumes where it
stopped. Scores per d are the mean over seeds.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

import numpy as np

from peftzoo.bench.store import write_json


def log_grid(lo: int, hi: int, per_decade: int = 2) -> list[int]:
    n = int(round(math.log10(hi / lo) * per_decade)) + 1
    return sorted({int(round(x)) for x in np.logspace(math.log10(lo), math.log10(hi), n)})


class Search:
    def __init__(self, evaluate: Callable[[int, int], float], baseline: float, seeds=(0,), threshold: float = 0.9,
                 path: str | Path | None = None, meta: dict | None = None, progress=None):
        self.evaluate, self.baseline, self.seeds, self.threshold = evaluate, baseline, list(seeds), threshold
        self.path = Path(path) if path else None
        self.scores: dict[str, float] = {}
        self.meta = meta or {}
        self.progress = progress
        if self.path and self.path.exists():
            old = json.loads(self.path.read_text())
            if old.get("baseline") == baseline and old.get("threshold") == threshold:
                self.scores = old.get("scores", {})

    @property
    def target(self) -> float:
        return self.threshold * self.baseline

    def score(self, d: int) -> float:
        vals = []
        for s in self.seeds:
            key = f"{d}/{s}"
            if key not in self.scores:
                self.scores[key] = float(self.evaluate(d, s))
                self.save()
                if self.progress is not None:
                    self.progress.update(1)
            vals.append(self.scores[key])
        return float(np.mean(vals))

    def run(self, grid: list[int], bisect_steps: int = 4) -> dict:
        grid = sorted(grid)
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
            d, _ = k.split("/")
            out.setdefault(int(d), []).append(v)
        return dict(sorted(out.items()))

    def result(self, lo, hi) -> dict:
        return {"d90": hi, "bracket": [lo, hi], "reached": hi is not None, "baseline": self.baseline,
                "threshold": self.threshold, "target": self.target, "seeds": self.seeds,
                "curve": {str(d): {"mean": float(np.mean(v)), "std": float(np.std(v)), "scores": v}
                          for d, v in self.curve().items()}}

    def save(self, result: dict | None = None):
        if self.path:
            write_json(self.path, {**self.meta, **(result or {}), "baseline": self.baseline,
                                   "threshold": self.threshold, "scores": self.scores})


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
    fig.savefig(path, dpi=110)
    plt.close(fig)
