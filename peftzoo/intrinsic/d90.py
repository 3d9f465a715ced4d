"""Automatic d_90: the smallest subspace dimension d whose score reaches a target (by default 90% of full
fine-tuning's score; see ``Definition``), per seed, with a confidence interval over seeds.

The search spends its runs where the crossing is: a coarse log grid of d, walked up until every seed has crossed;
a finer log grid (``fine_per_decade``, 4 by default) inside the coarse interval that holds each seed's crossing;
then, per seed, bisection in log space until its bracket is at most ``max_ratio`` (1.3×) wide. Before any of it,
full fine-tuning must clearly beat the trivial score (the best constant prediction) and the target must lie above
it (``uninformative``): a search that cannot fail is refused, unless allowed, and then marked not informative.

Every (d, seed) score is cached in the result JSON as soon as it is known (atomic write), so a killed search
resumes where it stopped; the file also records the settings (``config``) the scores were computed under and their
hash (``config_id``, ``bench.identity``: as a bench run's id hashes its spec), and a rerun whose settings hash
otherwise is refused rather than answered with those scores. Brackets are read off every cached
point of a seed, so a resumed search and a parallel one (``whole_grid``) find the same d_90.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from peftzoo.bench import identity
from peftzoo.bench.stats import t_interval
from peftzoo.bench.store import write_json

FULL = "full"  # the d of a baseline point, and its method: the registered full fine-tuning baseline
DEFINITIONS = ("relative", "gap", "absolute")
MIN_MARGIN = 0.03  # full FT must beat the trivial score by more than 3 points of the metric...
CI_FACTOR = 3.0  # ...and, with several seeds, by more than 3x the half-width of its 95% t-interval over them
RULE = (f"full FT must beat the trivial score by more than max({MIN_MARGIN:g}, {CI_FACTOR:g} x the half-width of "
        "its 95% t-interval over the baseline seeds), and the target must lie above the trivial score")
FIX = ("Give full fine-tuning more data (--max-train), more epochs (--epochs) or another --full-lr, or pick another "
       "task; --allow-uninformative runs the search anyway and marks the result not informative")


@dataclass(frozen=True)
class Definition:
    """What the target score of d_90 is."""
    name: str = "relative"  # relative: threshold x full FT; gap: trivial + threshold x (full FT - trivial); absolute
    threshold: float = 0.9  # the share of full FT's score (relative) or of its gain over trivial (gap): the "90"
    absolute: float | None = None  # the fixed target score of ``absolute`` (e.g. Li et al.'s 0.90 accuracy)

    def __post_init__(self):
        if self.name not in DEFINITIONS:
            raise ValueError(f"--definition {self.name!r}: one of {', '.join(DEFINITIONS)}")
        if not 0 < self.threshold <= 1:
            raise ValueError(f"--threshold must be in (0, 1] (got {self.threshold})")
        if (self.name == "absolute") != (self.absolute is not None):
            raise ValueError("--definition absolute needs --absolute-target SCORE, and --absolute-target applies "
                             "to --definition absolute only")

    def target(self, baseline: float, trivial: float) -> float:
        if self.name == "absolute":
            return float(self.absolute)
        if self.name == "gap":
            return trivial + self.threshold * (baseline - trivial)
        return self.threshold * baseline

    def text(self) -> str:
        pct = f"{100 * self.threshold:g}%"
        return {"relative": f"{pct} of full FT's score", "gap": f"trivial + {pct} of (full FT - trivial)",
                "absolute": f"a fixed score of {self.absolute}"}[self.name]


def log_grid(lo: int, hi: int, per_decade: int = 2) -> list[int]:
    if lo < 1 or hi < lo or per_decade < 1:
        raise ValueError(f"a log grid needs 1 <= dmin <= dmax and per-decade >= 1 (got dmin {lo}, dmax {hi}, "
                         f"per-decade {per_decade})")
    n = int(round(math.log10(hi / lo) * per_decade)) + 1
    return sorted({int(round(x)) for x in np.logspace(math.log10(lo), math.log10(hi), n)})


def fill(lo: int | None, hi: int | None, per_decade: int) -> list[int]:
    """The points strictly between ``lo`` and ``hi`` of an even log grid with at least ``per_decade`` per decade."""
    if lo is None or hi is None or hi - lo <= 1:
        return []
    n = math.ceil(math.log10(hi / lo) * per_decade - 0.02)  # 0.02: grid points are rounded to integers
    return sorted({int(round(lo * (hi / lo) ** (i / n))) for i in range(1, n)} - {lo, hi})


def bracket(points: dict, target: float) -> tuple[int | None, int | None]:
    """(largest d below the crossing, smallest d whose score reaches ``target``) among ``points`` {d: score};
    hi is None when no d reaches it (lo: the largest d tried), lo is None when the smallest d tried does."""
    ds = sorted(points)
    hi = next((d for d in ds if points[d] >= target), None)
    lo = max((d for d in ds if hi is None or d < hi), default=None)
    return lo, hi


def uninformative(baseline_scores, trivial: float, target: float) -> str | None:
    """None when full FT clearly beats the trivial score and the target lies above it (``RULE``); else why not,
    naming the three numbers and what to change."""
    base = float(np.mean(baseline_scores))
    lo, hi = t_interval(baseline_scores)
    half = 0.0 if lo is None else (hi - lo) / 2
    need = max(MIN_MARGIN, CI_FACTOR * half)
    n = len(baseline_scores)
    why = []
    if not base - trivial > need:
        how = f"{CI_FACTOR:g} x its 95% CI half-width {half:.3f}" if CI_FACTOR * half > MIN_MARGIN else \
            f"{MIN_MARGIN:g}, {100 * MIN_MARGIN:g} points of the metric"
        why.append(f"full FT beats the trivial score by {base - trivial:+.3f}, not by more than {need:.3f} ({how})")
    if not target > trivial:
        why.append("the target is at or below the trivial score")
    if not why:
        return None
    spread = f" ± {half:.3f} (95% CI half-width, {n} seeds)" if lo is not None else f" ({n} seed{'s' * (n != 1)})"
    return (f"full fine-tuning {base:.3f}{spread}, trivial score {trivial:.3f}, target "
            f"{target:.3f}: {'; '.join(why)}, so a d_90 here would measure nothing. {FIX}.")


class Uninformative(ValueError):
    """The search was refused before its grid: full FT does not clearly beat the trivial score (see ``RULE``)."""


class CacheMismatch(ValueError):
    """The result file holds scores computed under other settings."""


def sequential(evaluate: Callable) -> Callable:
    """``evaluate(d, seed) -> score`` as an ``evaluate_many``: one point after the other, in this process."""
    def many(points):
        for d, s in points:
            yield (d, s), float(evaluate(d, s))
    return many


def fmt2(a: float, b: float) -> tuple[str, str]:
    """``a`` and ``b`` with 3 decimals, or more where 3 would print them equal."""
    for k in (3, 4, 5, 6):
        if f"{a:.{k}f}" != f"{b:.{k}f}":
            return f"{a:.{k}f}", f"{b:.{k}f}"
    return f"{a:.6f}", f"{b:.6f}"


def seed_result(points: dict, target: float) -> dict:
    """One seed's d_90 from its points {d: score}: the smallest d reaching ``target``, its bracket, and a message
    when the crossing lies outside the d's tried."""
    lo, hi = bracket(points, target)
    best_d = max(points, key=lambda d: points[d]) if points else None
    out = {"d90": hi, "bracket": [lo, hi], "best": points.get(best_d), "best_d": best_d, "message": None}
    if hi is None:
        b, t = fmt2(points[best_d], target) if points else ("-", f"{target:.3f}")
        where = "the largest tried" if best_d == lo else f"the largest tried is {lo}"
        out["message"] = f"not reached: best {b} < target {t} (at d = {best_d}, {where}: raise --dmax)"
    elif lo is None:
        out["message"] = f"reached at the smallest d tried ({hi}): the crossing is below the grid; lower --dmin"
    return out


def summarise(per_seed: dict) -> dict:
    """The search's d_90 over seeds: the geometric mean of the per-seed d_90s, a 95% t-interval on log d, and
    ``bracket``, the envelope of the per-seed brackets (None ends where a seed is not bracketed)."""
    his = [r["d90"] for r in per_seed.values()]
    los = [r["bracket"][0] for r in per_seed.values()]
    reached = all(h is not None for h in his)
    d90 = ci = None
    if reached:
        logs = np.log10(his)
        d90 = int(round(10 ** float(np.mean(logs))))
        lo, hi = t_interval(logs)
        ci = None if lo is None else [10 ** lo, 10 ** hi]
    return {"d90": d90, "d90_ci": ci, "reached": reached,
            "bracket": [None if None in los else min(los), max(his) if reached else None],
            "outside_grid": {s: r["message"] for s, r in per_seed.items() if r["message"]}}


class Search:
    """``evaluate(d, seed)`` (or ``evaluate_many([(d, seed), ...])`` yielding ``((d, seed), score)`` as each
    finishes, e.g. on a Ray cluster) scores one point; ``d`` is an int, or ``FULL`` for the full fine-tuning
    baseline when ``baseline`` is None (it is then the mean of those scores; a number or a list of per-seed scores
    is taken as given). ``trivial``: the best constant prediction's score on the evaluation split.
    ``definitions``: the targets to search for (the first one's result is the top level of the result).

    ``config`` is the plain-data identity of a score: every setting that changes one (task, model, lr, epochs,
    data, ...). Cached scores are reused only under an equal config; another one is a ``CacheMismatch`` naming the
    keys that differ, unless ``overwrite`` (the old scores are then dropped; scores of equal settings are kept).
    """

    def __init__(self, evaluate: Callable | None, baseline, seeds=(0, 1, 2), *, trivial: float,
                 definitions=(Definition(),), path: str | Path | None = None, meta: dict | None = None,
                 progress=None, config: dict | None = None, evaluate_many: Callable | None = None,
                 overwrite: bool = False, allow_uninformative: bool = False):
        if not list(seeds):
            raise ValueError("no seeds: give at least one (e.g. --seeds 0)")
        self.evaluate_many = evaluate_many or sequential(evaluate)
        self.given = None if baseline is None else [float(b) for b in np.atleast_1d(baseline)]
        self.seeds, self.trivial = list(seeds), float(trivial)
        self.definitions = list(dict.fromkeys(definitions))
        self.allow, self.why_not = allow_uninformative, None
        self.path = Path(path) if path else None
        self.config, self.meta, self.progress = config, meta or {}, progress
        self.scores: dict[str, float] = {}
        self.point_wall: dict[str, float] = {}  # seconds from the previous result to each point's, every invocation
        if self.path and self.path.exists():
            self.scores = _cached(self.path, config, overwrite)
            if self.scores:
                old = json.loads(self.path.read_text()).get("point_wall_s", {})
                self.point_wall = {k: float(v) for k, v in old.items() if k in self.scores}

    @property
    def baseline_scores(self) -> list[float]:
        return self.given or [self.scores[f"{FULL}/{s}"] for s in self.seeds if f"{FULL}/{s}" in self.scores]

    @property
    def baseline(self) -> float | None:
        return float(np.mean(self.baseline_scores)) if self.baseline_scores else None

    @property
    def target(self) -> float:
        return self.definitions[0].target(self.baseline, self.trivial)

    def score_points(self, points) -> None:
        """Evaluate (and cache, one save per point) the points (d, seed) not cached yet."""
        todo = [(d, s) for d, s in dict.fromkeys(points) if f"{d}/{s}" not in self.scores]
        t = time.perf_counter()
        for (d, s), v in self.evaluate_many(todo):
            self.scores[f"{d}/{s}"] = float(v)
            now = time.perf_counter()
            self.point_wall[f"{d}/{s}"], t = now - t, now
            self.save()
            if self.progress is not None:
                self.progress.update(1)

    def score_many(self, ds) -> list[float]:
        """Mean score over seeds for each d, evaluating the missing points."""
        self.score_points([(d, s) for d in ds for s in self.seeds])
        return [float(np.mean([self.scores[f"{d}/{s}"] for s in self.seeds])) for d in ds]

    def points(self, seed: int, only=None) -> dict[int, float]:
        """{d: score} of one seed's cached points (those in ``only`` when given)."""
        out = {int(d): v for k, v in self.scores.items() for d, s in [k.split("/")]
               if d != FULL and int(s) == seed}
        return {d: v for d, v in out.items() if only is None or d in only}

    def check(self) -> None:
        """Refuse (``Uninformative``) a search that cannot fail, before its grid; or, allowed, remember why."""
        reasons = [uninformative(self.baseline_scores, self.trivial, d.target(self.baseline, self.trivial))
                   for d in self.definitions]
        self.why_not = next((r for r in reasons if r), None)
        if self.why_not and not self.allow:
            self.save({"stopped": self.why_not})
            raise Uninformative(f"not informative: {self.why_not}")

    def run(self, grid: list[int], bisect_steps: int = 8, whole_grid: bool = False, fine_per_decade: int = 4,
            max_ratio: float = 1.3, baseline_only: bool = False) -> dict:
        """Check the baseline against the trivial score, then search every definition's target on the shared
        points. ``whole_grid``: evaluate every coarse grid point in one batch, for a parallel ``evaluate_many``;
        the result is the same, the curve fuller. ``baseline_only``: stop after the check."""
        grid = sorted(set(grid))
        if self.given is None:
            self.score_points([(FULL, s) for s in self.seeds])
        self.check()
        if baseline_only:
            return self.head()
        if whole_grid:
            self.score_many(grid)
        for d in self.definitions:
            self._search(grid, d.target(self.baseline, self.trivial), bisect_steps, fine_per_decade, max_ratio)
        result = self.result()
        self.save(result)
        return result

    def _search(self, grid, target, bisect_steps, fine_per_decade, max_ratio) -> None:
        for i, d in enumerate(grid):  # the coarse walk: up the grid until every seed has crossed
            if all(bracket(self.points(s, grid[:i]), target)[1] is not None for s in self.seeds):
                break
            self.score_many([d])
        coarse = {s: bracket(self.points(s, grid), target) for s in self.seeds}
        self.score_many(sorted({p for lo, hi in coarse.values() for p in fill(lo, hi, fine_per_decade)}))
        for _ in range(bisect_steps):  # per seed, in one batch per step
            todo = []
            for s in self.seeds:
                lo, hi = bracket(self.points(s), target)
                if lo is not None and hi is not None and hi / lo > max_ratio and hi - lo > 1:
                    todo.append((min(max(int(round(math.sqrt(lo * hi))), lo + 1), hi - 1), s))
            if not todo:
                break
            self.score_points(todo)

    def curve(self) -> dict[int, dict]:
        """{d: mean, std and scores over the seeds scored there (``seeds``)}; bisection points have fewer."""
        by_d: dict[int, dict] = {}
        for s in self.seeds:
            for d, v in self.points(s).items():
                by_d.setdefault(d, {})[s] = v
        return {d: {"mean": float(np.mean(list(v.values()))), "std": float(np.std(list(v.values()))),
                    "scores": list(v.values()), "seeds": list(v)} for d, v in sorted(by_d.items())}

    def for_definition(self, definition: Definition) -> dict:
        target = definition.target(self.baseline, self.trivial)
        per_seed = {str(s): seed_result(self.points(s), target) for s in self.seeds}
        return {"definition": {**asdict(definition), "text": definition.text()}, "target": target,
                **summarise(per_seed), "per_seed": per_seed}

    def head(self) -> dict:
        """The baseline against the trivial score, and each definition's target: what decides informativeness."""
        base = self.baseline_scores
        lo, hi = t_interval(base)
        return {"baseline": self.baseline, "baseline_scores": base or None, "baseline_given": self.given is not None,
                "baseline_ci": None if lo is None else [lo, hi], "trivial": self.trivial,
                "targets": {d.name: d.target(self.baseline, self.trivial) for d in self.definitions},
                "informative": self.why_not is None, "not_informative_because": self.why_not, "informative_rule": RULE,
                "threshold": self.definitions[0].threshold, "seeds": self.seeds}

    def result(self) -> dict:
        by = {d.name: self.for_definition(d) for d in self.definitions}
        return {**by[self.definitions[0].name], "by_definition": by, **self.head(),
                "curve": {str(d): v for d, v in self.curve().items()}}

    def save(self, result: dict | None = None):
        if self.path:
            write_json(self.path, {**self.meta, **(result or {}), "config": self.config,
                                   "config_id": config_id(self.config), "baseline": self.baseline,
                                   "trivial": self.trivial, "scores": self.scores,
                                   # the search's time over all its invocations, killed ones included (a parallel
                                   # executor's points overlap: then the time between results, not per point)
                                   "point_wall_s": self.point_wall, "points_wall_s": sum(self.point_wall.values())})


def config_id(config: dict | None) -> str | None:
    """The hash of a search's settings: equal settings, however typed (1e-3 or 0.001, a tuple or a list), hash alike."""
    return None if config is None else identity.digest(config)


def _cached(path: Path, config, overwrite: bool) -> dict[str, float]:
    """The cached scores of ``path`` when its settings equal ``config``; {} with ``overwrite``; else refused."""
    try:
        old = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        if overwrite:
            return {}
        raise CacheMismatch(f"{path} is not valid JSON ({e}): move it away or pass --overwrite") from e
    if not isinstance(old, dict) or config_id(old.get("config")) != config_id(config):
        if overwrite:
            return {}
        raise CacheMismatch(f"{path} holds scores computed with other settings "
                            f"({_diff(old.get('config') if isinstance(old, dict) else None, config)}): "
                            "use another --out, or --overwrite to discard them")
    return {k: float(v) for k, v in old.get("scores", {}).items()}


def _diff(old: dict | None, new: dict | None) -> str:
    if not isinstance(old, dict):
        return "the file records no settings"
    keys = sorted(k for k in set(old) | set(new or {}) if old.get(k) != (new or {}).get(k))
    return "; ".join(f"{k}: {old.get(k)!r} there, {(new or {}).get(k)!r} now" for k in keys)
