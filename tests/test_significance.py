"""The leaderboard's two-level bootstrap (bench/significance.py) on synthetic predictions: scores on count resamples
equal the plain ones, examples are paired across rows, a known effect is found, no effect is found about 5% of the
time, seed variance widens the interval, the minimum detectable difference is detected about 4 times in 5, and the
board's tie-aware view (bench/ties.py) renders as the table says."""
import math
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.stats import t as tdist

from peftzoo.bench import significance as sig
from peftzoo.bench import stats, ties


def synthetic(rng, n=150, seeds=3, seed_sd=0.0, effect=0.0, rows=2):
    """Binary predictions: per-example difficulty shared by every row (what pairing removes), a per-(row, seed)
    skill offset of std ``seed_sd`` (logit scale: the seed variance), row 0 better by ``effect``."""
    y = rng.integers(0, 2, n)
    hard = rng.normal(0, 2.0, n)
    out = []
    for m in range(rows):
        runs = []
        for _ in range(seeds):
            logit = 1.5 + hard + (effect if m == 0 else 0.0) + seed_sd * rng.normal()
            right = rng.uniform(size=n) < 1 / (1 + np.exp(-logit))
            runs.append({"dev": np.where(right, y, 1 - y)})
        out.append(runs)
    return out, {"dev": y}


def percentile_p(d):  # the plain percentile test (twice the smaller tail beyond 0), for comparison
    return min(1.0, 2 * min((np.sum(d <= 0) + 1) / (len(d) + 1), (np.sum(d >= 0) + 1) / (len(d) + 1)))


@pytest.mark.parametrize("metric", ["accuracy", "f1_accuracy", "matthews", "pearson_spearman"])
def test_scores_on_counts_equal_scores_on_the_drawn_indices(metric):
    rng = np.random.default_rng(0)
    n, b = 70, 9
    if metric == "pearson_spearman":  # ties in labels and predictions, as STS-B has
        y = np.round(rng.uniform(0, 5, n))
        P = np.round(y + rng.normal(0, 1, (3, n)), 1)
        P[0, :12] = P[0, 0]
    else:
        y = rng.integers(0, 2, n)
        P = np.where(rng.uniform(size=(3, n)) < 0.7, y, 1 - y)
    W = stats.resample_counts(np.random.default_rng(1), n, b)
    idx = np.random.default_rng(1).integers(0, n, (b, n))  # the same draws, as indices
    assert W.sum(1).tolist() == [n] * b
    ref = np.stack([stats.batch_score(metric, p[idx], y[idx]) for p in P])
    assert stats.count_score(metric, P, y, W) == pytest.approx(ref, abs=1e-12)


def test_examples_are_paired_across_rows_and_seeds_drawn_within_each():
    rows, labels = synthetic(np.random.default_rng(3), n=80, seed_sd=0.5)
    twin = [dict(r) for r in rows[0]]  # row 1 = row 0's predictions exactly
    d = sig.draws("accuracy", [rows[0], twin], labels, n_boot=50, seed=7)
    assert np.array_equal(d.E[0], d.E[1])  # one example draw for both: the difference is exactly 0
    assert not np.array_equal(d.T[0], d.T[1])  # their seeds are drawn apart
    # E by hand: the example draws of rng([7, 0]) as indices, every seed scored, then averaged
    idx = np.random.default_rng([7, 0]).integers(0, 80, (50, 80))
    y = labels["dev"]
    by_hand = np.mean([[(r["dev"][i] == y[i]).mean() for i in idx] for r in rows[0]], axis=0)
    assert d.E[0] == pytest.approx(by_hand, abs=1e-12)
    assert d.obs[0] == pytest.approx(np.mean([(r["dev"] == y).mean() for r in rows[0]]))
    one = sig.draws("accuracy", [rows[0][:1], rows[1][:1]], labels, n_boot=50)
    assert np.array_equal(one.T, one.E) and one.seed_var == [None, None]  # one seed: no seed level


def test_the_seed_component_is_the_spread_beyond_dev_sampling():
    rng = np.random.default_rng(4)
    rows, labels = synthetic(rng, n=400, seeds=3, seed_sd=0.0, rows=1)  # seeds differ only by per-example luck
    rows2, labels2 = synthetic(rng, n=400, seeds=3, seed_sd=1.0, rows=1)  # + large per-seed offsets
    d0 = sig.draws("accuracy", rows, labels, n_boot=400)
    d1 = sig.draws("accuracy", rows2, labels2, n_boot=400)
    s0 = np.var(d0.seed_scores[0], ddof=1)
    assert d0.seed_var[0] < 0.5 * s0 + 1e-12  # most of that spread is dev sampling, not seed
    assert d1.seed_var[0] > 0.8 * np.var(d1.seed_scores[0], ddof=1)  # large offsets: nearly all of it is seed


def test_a_known_effect_is_detected_and_ranked():
    rows, labels = synthetic(np.random.default_rng(5), n=400, seed_sd=0.1, effect=1.5, rows=3)
    rows[2] = [{"dev": 1 - r["dev"]} for r in rows[2]]  # a row that is wrong where the others are right
    d = sig.draws("accuracy", rows, labels, n_boot=500)
    t = sig.pair(d, 0, 1)
    assert t.diff > 0.05 and t.p < 0.001 and t.ci[0] > 0
    rk = sig.ranking(d.obs, d.T, [d.terms(i) for i in range(3)])
    assert rk.best == 0 and rk.group == [0] and rk.rank_ci == [(1, 1), (2, 2), (3, 3)]


def test_ranking_by_hand():
    rng = np.random.default_rng(6)
    base = rng.normal(0, 1, 1000)
    T = np.stack([0.80 + 0.001 * base, 0.79 + 0.02 * rng.normal(size=1000), 0.50 + 0.001 * rng.normal(size=1000)])
    rk = sig.ranking(np.array([0.80, 0.79, 0.50]), T, [[], [], []])
    assert rk.best == 0 and rk.group == [0, 1] and rk.rank_ci == [(1, 2), (1, 2), (3, 3)]
    se = np.std(T[0] - T[1], ddof=1)
    assert rk.tests[1].p == pytest.approx(2 * tdist.sf(0.01 / se, math.inf)) and rk.tests[0] is None


def test_welch_degrees_of_freedom_and_the_degenerate_test():
    assert sig.welch_df(1.0, []) == math.inf
    assert sig.welch_df(0.5, [(0.2, 2), (0.2, 2)]) == pytest.approx(0.25 / (2 * 0.04 / 2))
    assert sig.welch_df(0.2, [(0.1, 2), (0.1, 2)]) == pytest.approx(4.0)  # seed parts only: Welch's 2(S − 1)
    assert sig.welch_df(0.2, [(0.2, 2)]) == 2  # never below the smallest part's
    same = sig.test(0.0, np.zeros(10), [])
    assert same.p == 1.0 and same.se == 0.0


def _null_rates(seed_sd, reps=200, n=150):
    rng = np.random.default_rng(10)
    studentised = percentile = 0
    for k in range(reps):
        rows, labels = synthetic(rng, n=n, seed_sd=seed_sd)
        d = sig.draws("accuracy", rows, labels, n_boot=200, seed=k)
        studentised += sig.pair(d, 0, 1).p < 0.05
        percentile += percentile_p(d.T[0] - d.T[1]) < 0.05
    return studentised / reps, percentile / reps


@pytest.mark.parametrize("seed_sd", [0.2, 1.0])  # seeds comparable to dev sampling; seeds dominating
def test_no_effect_is_found_about_5_percent_of_the_time(seed_sd):
    fpr, pct = _null_rates(seed_sd)
    assert 0.015 <= fpr <= 0.10, fpr  # 200 replications: 5% ± 3 (binomial 95%)
    if seed_sd == 1.0:
        assert pct > 0.09, pct  # the plain percentile test on 3 seeds: too liberal, why the test is studentised


def test_seed_variance_widens_the_interval_over_the_example_only_bootstrap():
    rng = np.random.default_rng(11)
    ratio = {}
    for seed_sd in (0.0, 0.6):
        rows, labels = synthetic(rng, n=300, seed_sd=seed_sd)
        d = sig.draws("accuracy", rows, labels, n_boot=1000)
        ratio[seed_sd] = np.std(d.T[0] - d.T[1]) / np.std(d.E[0] - d.E[1])
        got = sig.compare("accuracy", rows[0], rows[1], labels, n_boot=1000)
        assert got.ci[0] < got.diff < got.ci[1]
    assert ratio[0.6] > 1.5 and ratio[0.0] < 1.3, ratio


def test_the_minimum_detectable_difference_is_found_about_4_times_in_5():
    rng = np.random.default_rng(12)
    found, diffs, mdds = 0, [], []
    for k in range(200):
        rows, labels = synthetic(rng, n=200, effect=0.5)
        d = sig.draws("accuracy", rows, labels, n_boot=200, seed=k)
        found += sig.pair(d, 0, 1).p < 0.05
        diffs.append(d.obs[0] - d.obs[1])
        mdds.append(sig.mdd(d).mdd)
    assert abs(np.mean(diffs) / np.median(mdds) - 1) < 0.15  # this effect is one MDD (checked, so the rate means it)
    assert 0.55 <= found / 200 <= 0.95, found


def test_mdd_from_its_components():
    rows, labels = synthetic(np.random.default_rng(13), n=300, seed_sd=0.5, rows=3)
    d = sig.draws("accuracy", rows, labels, n_boot=300)
    m = sig.mdd(d)
    dev = np.median([np.var(d.E[i] - d.E[j], ddof=1) for i, j in ((0, 1), (0, 2), (1, 2))])
    seed = np.median(d.seed_var)
    var = 2 * seed / 3 + dev
    df = var ** 2 / (2 * (seed / 3) ** 2 / 2)
    assert m.seeds == 3 and m.n == 300 and m.df == pytest.approx(df)
    assert m.mdd == pytest.approx((tdist.ppf(0.975, df) + tdist.ppf(0.8, df)) * math.sqrt(var))
    assert sig.mdd(sig.draws("accuracy", rows[:1], labels, n_boot=20)) is None  # one row: nothing to detect


def _row(method, label, task, mean):
    cell = SimpleNamespace(mean=mean, std=0.01, n=3, p=None, diff=None, best_group=None, rank=None)
    return SimpleNamespace(method=method, label=label, tasks={task: cell}, avg=mean, avg_group=None, avg_rank=None)


def test_the_board_view_renders_groups_ranks_and_the_mdd():
    rows, labels = synthetic(np.random.default_rng(14), n=400, seed_sd=0.1, effect=1.5, rows=3)
    board_rows = [_row("lora", "73,728", "SST-2", 0.9), _row("dora", "73,728", "SST-2", 0.8),
                  _row("vera", "73,728", "SST-2", 0.8)]
    tt = ties.task_ties("SST-2", "accuracy", board_rows, rows, labels, n_boot=300)
    b = SimpleNamespace(tasks=["SST-2"], ties={"SST-2": tt, "avg": ties.avg_ties({"SST-2": tt})})
    assert tt.best is board_rows[0] and [r.method for r in tt.group] == ["lora"]
    assert tt.of(board_rows[0])[:2] == (True, (1, 1)) and tt.of(board_rows[1])[0] is False
    assert ties.rank_text((1, 1)) == "1" and ties.rank_text((2, 3)) == "2–3" and ties.rank_text(None) == ""
    g = ties.groups_sentence(b)
    assert g.startswith("Not distinguishable from the best") and "SST-2 (best lora 73,728" in g and "1 of 3 rows" in g
    assert "avg (" not in g  # one task: the average is that task
    m = ties.mdd_sentence(b)
    assert f"SST-2 **{100 * tt.mdd.mdd:.1f}** points at 3 seeds × 400 dev examples" in m
