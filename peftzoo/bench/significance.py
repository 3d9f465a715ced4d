"""Seed-aware significance for the leaderboard: a two-level bootstrap over training seeds and dev examples.

Why two levels. A cell is the mean over S training seeds of a GLUE score on n dev examples, and it would move if
either were drawn again: other seeds (initialisation, data order: Bouthillier et al. 2021, "Accounting for variance
in machine learning benchmarks", MLSys, measure these sources and ask that comparisons randomise them), or another
sample of the task's examples (Dror et al. 2018, "The hitchhiker's guide to testing statistical significance in
NLP", ACL: the paired bootstrap over test examples). A bootstrap over examples alone, with the seeds averaged, treats
the S seeds as fixed and so reports only the second source. Here every resample draws both:

1. the dev examples: n of the n with replacement, **one draw per task shared by every seed of every method**
   (pairing: an example that is hard for one method is hard for all, and that shared part cancels in a difference);
2. the seeds, **within each method**, S of its S with replacement (the methods' runs are separate trainings).

A row's resampled score is the mean over its drawn seeds of each drawn seed's score on the drawn examples. Drawing
both levels naively counts one part twice: seed-to-seed spread on a fixed dev set already holds the seed × example
part of dev sampling (seeds err on different examples), which the example level draws again (Owen 2007, "The
pigeonhole bootstrap", Ann. Appl. Stat., shows the same excess for crossed designs); on SST-2 here that part is all
of the seed spread (σ ≈ 0.6 points). So the seed level carries only the seed variance *beyond* dev sampling,
estimated per row by the method of moments (``seed_component``), the drawn seeds' deviation from the all-seed mean
being scaled to it (its √(S/(S − 1)) included, the small-sample rescaling of residual bootstraps: Davison & Hinkley
1997, *Bootstrap methods and their application*). A row with one seed carries no seed variance (it shows none).

A difference Δ between two rows is tested studentised: t = Δ / sd(resampled Δ) on Satterthwaite's degrees of
freedom for the seed parts estimated from S seeds each (Welch 1947; the dev-sampling part counts as known), and
its 95% interval is Δ ± t₀.₉₇₅ · sd. With 3 seeds the plain percentile test is too liberal when seeds dominate:
on synthetic predictions with no effect (tests/test_significance.py's generator, 150 examples, 3 seeds, 1,000
replications) it rejected 11.8% of the time where this test did 5.5%; with seed and dev variance comparable 6.4%
and 6.1%; with no seed variance 3.3% and 3.2% (the seed component's estimate, clipped at 0, is then a little high).

Per task: the **group not distinguishable from the best** (every row whose difference from the highest row has
p ≥ 0.05: one test per row, not corrected for their number, so the group is if anything too small) and each row's
**rank interval**, from 1 + the rows significantly above it to R − the rows significantly below it.

**Minimum detectable difference** (MDD) of a task at the table's S seeds and n dev examples, for a two-sided 5%
test at 80% power: (t₀.₉₇₅ + t₀.₈₀) · √(2 σ²_seed/S + σ²_dev), from the data's two variance components: σ²_seed
the median row's seed component (one unstable method does not set it) and σ²_dev the median over pairs of rows of
the variance of their paired difference of seed means under the example resampling alone (pairing has removed the
examples' shared difficulty from it); t on the degrees of freedom such a pair would have. A true difference of the
MDD is found about 4 times in 5; a smaller one mostly missed.

Scores on resamples are computed from counts (how often each example is drawn) by matrix products of the GLUE
metric's sufficient statistics (``stats.count_score``), so 30 rows × 3 seeds × 872 examples × 2,000 resamples is a
few matrix products.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np

from peftzoo.bench import stats

ALPHA, POWER = 0.05, 0.80  # the tests' level and the power the minimum detectable difference is stated at
_CHUNK = 4_000_000  # resamples x examples held at once (float64: 32 MB)


@dataclass
class Draws:
    """Per row (a method at its selected LR): its observed and resampled scores on one task."""
    obs: np.ndarray  # [R] mean over the row's seeds of its score on the whole dev set
    seed_scores: list  # [R] arrays: each seed's score on the whole dev set
    seed_var: list  # [R] the seed component of one run's variance, ``seed_component`` (None: one seed)
    T: np.ndarray  # [R, B] seeds and examples resampled (the test's distribution)
    E: np.ndarray  # [R, B] examples resampled, every seed kept (the example-only bootstrap)
    n: int  # dev examples (all splits)

    def terms(self, i: int) -> list:
        """Row i's seed part of the variance of its mean, with its degrees of freedom: [(σ²_seed / S, S − 1)]."""
        s = len(self.seed_scores[i])
        return [] if self.seed_var[i] is None else [(self.seed_var[i] / s, s - 1)]


def draws(metric: str, rows: list, labels: dict, n_boot: int = 2000, seed: int = 0) -> Draws:
    """The two-level bootstrap of ``rows``: one list per row, one {dev split: predictions} per seed; ``labels`` is
    {dev split: labels}. Multi-split tasks (MNLI) average their splits' scores, each split with its own draw."""
    if not rows or any(not r for r in rows):
        raise ValueError("the bootstrap needs predictions from at least one seed of every row")
    runs = [p for r in rows for p in r]
    Z, full = _run_draws(metric, runs, labels, n_boot, np.random.default_rng([seed, 0]))
    rng_seed = np.random.default_rng([seed, 1])
    T, E, seed_scores, seed_var, at = np.zeros((len(rows), n_boot)), np.zeros((len(rows), n_boot)), [], [], 0
    for i, r in enumerate(rows):
        z, s = Z[at:at + len(r)], len(r)
        seed_scores.append(full[at:at + s])
        E[i] = T[i] = z.mean(0)
        seed_var.append(None)
        if s > 1:  # the seeds drawn within the row, their deviation scaled to carry the seed component alone
            seed_var[i] = a2 = seed_component(z, seed_scores[i], E[i])
            q = float(np.mean(np.var(z, axis=0, ddof=1)))  # the seeds' spread on a resample
            pick = z[rng_seed.integers(0, s, (n_boot, s)), np.arange(n_boot)[:, None]].mean(1)
            T[i] += (np.sqrt(s / (s - 1) * a2 / q) if q > 0 else 0.0) * (pick - E[i])
        at += s
    return Draws(np.array([x.mean() for x in seed_scores]), seed_scores, seed_var, T, E,
                 sum(len(y) for y in labels.values()))


def _run_draws(metric: str, runs: list, labels: dict, n_boot: int, rng) -> tuple:
    """([runs, B] every run's score on each example resample, [runs] on the whole dev set); every split has its own
    draw, shared by all runs (the pairing), and a task's score is the mean over its splits."""
    Z, full = np.zeros((len(runs), n_boot)), np.zeros(len(runs))
    for split, y in labels.items():
        y = np.asarray(y)
        bad = [len(p[split]) for p in runs if len(p[split]) != len(y)]
        if bad:
            raise ValueError(f"dev split {split!r}: runs with {bad[0]} predictions for {len(y)} labels: the runs were "
                             "not scored on the same dev set (mixed max_eval or data?); rerun them with one config")
        P = np.stack([np.asarray(p[split]) for p in runs])
        full += stats.count_score(metric, P, y, np.ones((1, len(y))))[:, 0] / len(labels)
        step = max(1, _CHUNK // len(y))
        for lo in range(0, n_boot, step):
            W = stats.resample_counts(rng, len(y), min(step, n_boot - lo))
            Z[:, lo:lo + len(W)] += stats.count_score(metric, P, y, W) / len(labels)
    return Z, full


def seed_component(z: np.ndarray, scores: np.ndarray, mean_draws: np.ndarray) -> float:
    """The seed variance of one run's score beyond its dev-sampling noise (method of moments, ≥ 0).

    ``z`` [S, B]: each seed's score on the example resamples; ``scores`` [S]: on the whole dev set; ``mean_draws``
    [B]: the seed mean on the resamples. The seeds' spread s² on the fixed dev set holds the seed variance plus the
    seed × example part of dev sampling, σ²ₑ/n, which the example resampling shows as the excess of one seed's
    variance over the seed mean's, (1 − 1/S) σ²ₑ/n. So σ²_seed = s² − S/(S − 1) · that excess."""
    s = len(scores)
    excess = float(np.mean(np.var(z, axis=1, ddof=1))) - float(np.var(mean_draws, ddof=1))
    return max(0.0, float(np.var(scores, ddof=1)) - s / (s - 1) * max(0.0, excess))


def task_seed(task: str, seed: int = 0) -> int:
    """A stable per-task seed: the tasks of a board get independent draws (their average is resampled too)."""
    return seed * 2 ** 32 + zlib.crc32(task.encode())


@dataclass
class Test:
    """One difference a − b: its value, two-sided p, 95% interval, bootstrap standard error and t degrees of
    freedom (inf: no seed variance in it)."""
    diff: float
    p: float
    ci: tuple
    se: float
    df: float


def welch_df(var: float, terms: list) -> float:
    """Satterthwaite's degrees of freedom of a variance ``var`` whose seed parts ``terms`` [(v, df)] are estimated
    (the dev-sampling rest counts as known); at least the smallest part's df."""
    den = sum(v * v / df for v, df in terms if v > 0)
    if den == 0:
        return math.inf
    return max(min(df for _, df in terms), var * var / den)


def test(diff: float, d: np.ndarray, terms: list, alpha: float = ALPHA) -> Test:
    """The studentised test of a difference ``diff`` whose two-level resamples are ``d``: t = diff / sd(d) on
    ``welch_df`` degrees of freedom; the interval is diff ± t(1 − α/2) · sd(d)."""
    from scipy.stats import t as tdist
    se = float(np.std(d, ddof=1))
    df = welch_df(se * se, terms)
    if se == 0:
        return Test(diff, 1.0 if diff == 0 else 0.0, (diff, diff), 0.0, df)
    h = float(tdist.ppf(1 - alpha / 2, df)) * se
    return Test(diff, float(min(1.0, 2 * tdist.sf(abs(diff) / se, df))), (diff - h, diff + h), se, df)


def pair(d: Draws, i: int, j: int) -> Test:
    """Row i − row j of ``d``."""
    return test(float(d.obs[i] - d.obs[j]), d.T[i] - d.T[j], d.terms(i) + d.terms(j))


def compare(metric: str, a: list, b: list, labels: dict, n_boot: int = 2000, seed: int = 0) -> Test:
    """Row ``a`` − row ``b`` (lists of per-seed {split: predictions}) under the two-level bootstrap."""
    return pair(draws(metric, [a, b], labels, n_boot, seed), 0, 1)


@dataclass
class Ranking:
    """Rows compared on one score: the best, the rows not distinguishable from it, and rank intervals."""
    best: int  # index of the highest observed score
    tests: list  # [Test] best − row (None for the best itself)
    group: list  # indices whose difference from the best has p ≥ alpha, the best included, in row order
    rank_ci: list  # [(lo, hi)] the ranks (1 = highest) the pairwise tests leave open to each row


def ranking(obs: np.ndarray, T: np.ndarray, terms: list, alpha: float = ALPHA) -> Ranking:
    """``obs`` [R] and ``T`` [R, B] the rows' observed and resampled scores, ``terms`` [R] their seed parts.

    A row's rank interval runs from 1 + the rows significantly above it to R − the rows significantly below it
    (every pair tested as the best is): the ranks its data do not rule out, consistent with the bold group."""
    r = len(obs)
    above = np.zeros((r, r), dtype=bool)  # above[i, j]: row i significantly above row j
    for i in range(r):
        for j in range(r):
            if obs[i] > obs[j]:
                above[i, j] = test(float(obs[i] - obs[j]), T[i] - T[j], terms[i] + terms[j], alpha).p < alpha
    best = int(np.argmax(obs))
    tests = [None if i == best else test(float(obs[best] - obs[i]), T[best] - T[i], terms[best] + terms[i], alpha)
             for i in range(r)]
    return Ranking(best, tests, [i for i, t in enumerate(tests) if t is None or t.p >= alpha],
                   [(1 + int(above[:, i].sum()), r - int(above[i].sum())) for i in range(r)])


@dataclass
class Mdd:
    """A task's minimum detectable difference and the variance components it is made of."""
    mdd: float  # (t(1 − α/2) + t(power)) · √(2 σ²_seed / S + v)
    seed_sd: float | None  # σ_seed of the median row with ≥ 2 seeds (None: no row has 2)
    dev_sd: float  # √v: median over pairs of rows of the example-resampling std of their paired difference
    seeds: int  # S: the seeds of the table's rows (the median)
    n: int  # dev examples
    df: float  # the t degrees of freedom it is computed at


def mdd(d: Draws, alpha: float = ALPHA, power: float = POWER) -> Mdd | None:
    """The minimum detectable difference at ``d``'s seeds and dev size (None with fewer than two rows)."""
    from scipy.stats import t as tdist
    r = len(d.obs)
    if r < 2:
        return None
    dev_var = float(np.median([np.var(d.E[i] - d.E[j], ddof=1) for i in range(r) for j in range(i + 1, r)]))
    multi = [v for v in d.seed_var if v is not None]
    seed_var = float(np.median(multi)) if multi else None  # the median row: one unstable method does not set it
    s = int(np.median([len(x) for x in d.seed_scores]))
    terms = [(seed_var / s, s - 1)] * 2 if seed_var is not None and s > 1 else []
    var = dev_var + sum(v for v, _ in terms)
    df = welch_df(var, terms)
    z = float(tdist.ppf(1 - alpha / 2, df) + tdist.ppf(power, df))
    return Mdd(z * math.sqrt(var), None if seed_var is None else math.sqrt(seed_var), math.sqrt(dev_var), s, d.n, df)
