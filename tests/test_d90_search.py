"""d_90 that means something (issue 22): the trivial score, the refusal of searches that cannot fail, the three
definitions of the target, and a search that spends its runs where the crossing is (no training here)."""
import math
import os

import numpy as np
import pytest

from peftzoo.bench.tasks import get_task, load_task, trivial_score
from peftzoo.intrinsic.d90 import (FULL, Definition, Search, Uninformative, bracket, fill, log_grid, seed_result,
                                   uninformative)
from peftzoo.intrinsic.report import summary, table


@pytest.mark.parametrize("task, labels, score, answer", [
    ("SST-2", [1, 1, 0, 1, 0], 0.6, 1),  # accuracy: the majority class
    ("MRPC", [1] * 7 + [0] * 3, (0.7 + 14 / 17) / 2, 1),  # always 1: acc 0.7, F1 2·7/(2·7 + 3)
    ("MRPC", [1] * 2 + [0] * 8, 0.4, 0),  # always 1: (0.2 + 4/12)/2 = 0.267 < always 0: (0.8 + 0)/2
    ("CoLA", [1, 1, 1, 0], 0.0, 0),  # MCC of any constant: 0 (the first such class is kept)
    ("MNLI", {"dev_matched": [0, 0, 1], "dev_mismatched": [1, 1, 2]}, 0.5, "neutral"),  # one constant on both
])
def test_trivial_score_on_hand_made_labels(task, labels, score, answer):
    t = trivial_score(get_task(task), labels if isinstance(labels, dict) else np.array(labels))
    assert t["score"] == pytest.approx(score) and t["answer"] == answer, t
    assert repr(answer) in t["note"]


def test_trivial_score_of_regression_is_zero_and_says_why():
    t = trivial_score(get_task("STS-B"), np.array([0.5, 3.0, 4.2]))
    assert t["score"] == 0.0 and t["answer"] is None and "undefined" in t["note"] and "0 is used" in t["note"]


@pytest.mark.skipif(not os.environ.get("PEFTZOO_DATA_DIR"), reason="PEFTZOO_DATA_DIR not set")
def test_trivial_score_of_real_mrpc_dev():
    task = get_task("MRPC")
    t = trivial_score(task, load_task(task)["dev"].labels)
    m = t["metrics"]["eval"]
    assert t["answer"] == 1 and len(load_task(task)["dev"].labels) == 408
    assert (round(m["accuracy"], 3), round(m["f1"], 3), round(t["score"], 3)) == (0.684, 0.812, 0.748)


# a hand-made curve: full FT 0.80, trivial 0.50
CURVE = {10: 0.52, 100: 0.70, 316: 0.73, 1000: 0.76, 3162: 0.78, 10000: 0.79}


@pytest.mark.parametrize("definition, target, lo, hi", [
    (Definition("relative"), 0.72, 100, 316),  # 0.9 · 0.80
    (Definition("gap"), 0.77, 1000, 3162),  # 0.50 + 0.9 · (0.80 − 0.50)
    (Definition("absolute", absolute=0.75), 0.75, 316, 1000),
    (Definition("relative", threshold=0.8), 0.64, 10, 100),
])
def test_definitions_on_a_hand_made_curve(definition, target, lo, hi):
    assert definition.target(0.80, 0.50) == pytest.approx(target)
    assert bracket(CURVE, definition.target(0.80, 0.50)) == (lo, hi)
    r = Search(lambda d, s: CURVE[d], baseline=0.80, seeds=[0], trivial=0.50, definitions=[definition]).run(
        list(CURVE), bisect_steps=0, fine_per_decade=1)
    assert (r["d90"], r["bracket"], r["target"]) == (hi, [lo, hi], pytest.approx(target))
    assert r["definition"]["name"] == definition.name and r["informative"]


def test_several_definitions_share_the_points_and_are_all_recorded():
    calls = []
    r = Search(lambda d, s: calls.append(d) or CURVE[d], baseline=0.80, seeds=[0], trivial=0.50,
               definitions=[Definition("gap"), Definition("relative")]).run(list(CURVE), 0, fine_per_decade=1)
    assert r["definition"]["name"] == "gap" and r["d90"] == 3162  # the first is the headline
    assert {k: v["d90"] for k, v in r["by_definition"].items()} == {"gap": 3162, "relative": 316}
    assert len(calls) == len(set(calls)) == 5  # nothing scored twice; 10000 is above every crossing: not scored


def test_a_target_outside_the_grid_says_so():
    ab = seed_result(CURVE, Definition("absolute", absolute=0.9).target(0.8, 0.5))
    assert ab["d90"] is None and ab["message"] == "not reached: best 0.790 < target 0.900 (at d = 10000, the " \
        "largest tried: raise --dmax)"
    low = seed_result(CURVE, 0.51)
    assert low["bracket"] == [None, 10] and "below the grid; lower --dmin" in low["message"]
    assert seed_result({10: 0.7079, 100: 0.7079}, 0.708)["message"].startswith("not reached: best 0.7079 < target "
                                                                              "0.7080")


def test_uninformative_names_the_three_numbers_and_the_fix():
    # MRPC as committed before: full FT 0.760 (one seed), always answering 1 scores 0.748, target 0.9 · 0.760
    why = uninformative([0.760], 0.748, 0.684)
    assert why.startswith("full fine-tuning 0.760 (1 seed), trivial score 0.748, target 0.684: full FT beats the "
                          "trivial score by +0.012, not by more than 0.030 (0.03, 3 points of the metric); the "
                          "target is at or below the trivial score"), why
    assert "--max-train" in why and "--epochs" in why and "another task" in why and "--allow-uninformative" in why
    # three seeds 0.78..0.82: 3 × the CI half-width (4.303 · 0.02/√3 = 0.0497) is the margin to beat, not 0.03
    why = uninformative([0.80, 0.82, 0.78], 0.75, 0.77)
    assert "by +0.050, not by more than 0.149 (3 x its 95% CI half-width 0.050)" in why
    assert "± 0.050 (95% CI half-width, 3 seeds)" in why
    assert uninformative([0.85, 0.851, 0.849], 0.75, 0.84) is None  # tight seeds: 3 points suffice
    assert "at or below" in uninformative([0.9], 0.5, 0.5)
    assert uninformative([0.9], 0.5, 0.51) is None


def test_an_uninformative_search_stops_before_the_grid(tmp_path):
    calls = []
    s = Search(lambda d, s: calls.append((d, s)) or 0.75, baseline=None, seeds=[0, 1], trivial=0.748,
               path=tmp_path / "r.json")
    with pytest.raises(Uninformative, match=r"^not informative: full fine-tuning 0.750 .* trivial score 0.748"):
        s.run([10, 100])
    assert calls == [(FULL, 0), (FULL, 1)]  # the baselines only
    rec = __import__("json").loads((tmp_path / "r.json").read_text())
    assert "d90" not in rec and rec["stopped"].startswith("full fine-tuning") and rec["trivial"] == 0.748
    r = Search(lambda d, s: calls.append((d, s)) or 0.75, baseline=None, seeds=[0, 1], trivial=0.748,
               path=tmp_path / "r.json", allow_uninformative=True).run([10, 100])
    assert calls[2:] == [(10, 0), (10, 1)]  # the baselines came from the file; 10 reaches 0.9 · 0.75
    assert r["informative"] is False and r["not_informative_because"].startswith("full fine-tuning 0.750")
    assert "NOT INFORMATIVE: full fine-tuning 0.750" in summary("x", r) and "**NOT INFORMATIVE**" in table({"x": r})


def sigmoid(center, lo=0.1, hi=0.9, k=3.0):
    """A score curve in log10 d: ``lo`` far below ``center``, ``hi`` far above."""
    return lambda d, s: lo + (hi - lo) / (1 + math.exp(-k * (math.log10(d) - center[s])))


def crossing(center, target, lo=0.1, hi=0.9, k=3.0):
    return 10 ** (center - math.log((hi - lo) / (target - lo) - 1) / k)


@pytest.mark.parametrize("whole_grid", [False, True])
def test_the_search_finds_a_known_crossing_and_spends_its_runs_there(whole_grid):
    centers = {0: 3.0, 1: 3.1, 2: 2.9}
    calls = []
    f = sigmoid(centers)
    s = Search(lambda d, seed: calls.append((d, seed)) or f(d, seed), baseline=0.9, seeds=[0, 1, 2], trivial=0.1)
    grid = log_grid(10, 100000, 1)
    r = s.run(grid, whole_grid=whole_grid)  # defaults: 4 per decade around the crossing, bracket <= 1.3x
    target = 0.81
    for seed, c in centers.items():
        lo, hi = r["per_seed"][str(seed)]["bracket"]
        x = crossing(c, target)
        assert lo < x <= hi and hi / lo <= 1.3, (seed, lo, hi, x)
        near = sorted(d for d, t in calls if t == seed and 1000 <= d <= 10000)
        assert len(near) >= 5, near  # 1000, 1778, 3162, 5623, 10000 and the bisection's points
    assert sorted({d for d, _ in calls if d in grid}) == (grid if whole_grid else [10, 100, 1000, 10000])
    assert len(calls) <= (len(grid) if whole_grid else 4) * 3 + 3 * 3 + 3 * 4  # grid, fine fill, bisection
    logs = [math.log10(r["per_seed"][str(s)]["d90"]) for s in centers]
    assert r["d90"] == round(10 ** np.mean(logs)) and r["d90_ci"][0] < r["d90"] < r["d90_ci"][1]
    assert r["reached"] and r["informative"]


def test_parallel_and_sequential_searches_agree():
    f = sigmoid({0: 2.4, 1: 3.3})
    a, b = (Search(f, baseline=0.9, seeds=[0, 1], trivial=0.1).run(log_grid(10, 10000, 2), whole_grid=w)
            for w in (False, True))
    assert a["per_seed"] == b["per_seed"] and a["d90"] == b["d90"]


def test_fill_puts_at_least_the_asked_points_per_decade():
    assert fill(1000, 10000, 4) == [1778, 3162, 5623]
    assert fill(316, 1000, 4) == [562]
    assert fill(None, 10, 4) == [] and fill(10, None, 4) == [] and fill(10, 11, 4) == []
    pts = [100, *fill(100, 100000, 4), 100000]
    assert max(b / a for a, b in zip(pts, pts[1:])) <= 10 ** 0.25 * 1.01


def test_old_files_are_read_and_flagged(tmp_path):
    """A JSON from before the trivial-score check: summary, table and plot read it beside a new one, marked."""
    from peftzoo.intrinsic.report import OLD, plot
    old = {"d90": 562, "bracket": [523, 562], "reached": True, "baseline": 0.927, "target": 0.834, "seeds": [0],
           "curve": {"316": {"mean": 0.77, "std": 0.0, "scores": [0.77]}, "562": {"mean": 0.84, "std": 0.0,
                                                                                  "scores": [0.84]}}}
    assert summary("old", old).startswith(f"old: {OLD}; d90 = 562") and OLD in table({"old": old})
    new = Search(lambda d, s: CURVE[d], baseline=0.80, seeds=[0], trivial=0.50).run(list(CURVE), 0, fine_per_decade=1)
    plot({"old": old, "new": new}, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 1000


def test_the_lm_plan_measures_what_issue_22_asks():
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    import lm_d90
    a = lm_d90.parse(lm_d90.d90_argv("MRPC", "did", Path("out")))
    assert len(a.seeds) >= 3 and a.definition == ["gap", "relative"] and a.max_train is None and a.epochs >= 5
    # SST-2: 1,500 sentences x 2 epochs put full FT at 0.807 against the trivial 0.509 (the run checks it again)
    sst = lm_d90.parse(lm_d90.d90_argv("SST-2", "said", Path("out")))
    assert sst.max_train >= 1500 and sst.max_train * sst.epochs >= 3000
    low, high = lm_d90.planned_points(2.5), lm_d90.planned_points(4.5)
    assert 3 * 4 <= low < high <= 3 * (7 + 8 + 2 * 8)  # grid, fill and bisection of 3 seeds, two targets


def test_point_times_add_up_over_invocations_a_killed_one_included(tmp_path):
    import json
    import time as _time

    f = sigmoid({0: 2.0})
    n = {"calls": 0}

    def slow(d, s):  # the third point's run is "killed"
        n["calls"] += 1
        if n["calls"] == 3:
            raise KeyboardInterrupt
        _time.sleep(0.02)
        return f(d, s)

    path = tmp_path / "r.json"
    with pytest.raises(KeyboardInterrupt):
        Search(slow, baseline=0.9, seeds=[0], trivial=0.1, path=path).run(log_grid(10, 10000, 1))
    first = json.loads(path.read_text())
    assert sorted(first["point_wall_s"]) == sorted(first["scores"]) and len(first["scores"]) == 2
    assert all(t >= 0.02 for t in first["point_wall_s"].values())
    s = Search(lambda d, s: _time.sleep(0.02) or f(d, s), baseline=0.9, seeds=[0], trivial=0.1, path=path)
    s.save(s.run(log_grid(10, 10000, 1)))
    rec = json.loads(path.read_text())
    assert {k: rec["point_wall_s"][k] for k in first["point_wall_s"]} == first["point_wall_s"]  # kept, not re-timed
    assert sorted(rec["point_wall_s"]) == sorted(rec["scores"]) and len(rec["scores"]) > 2
    assert rec["points_wall_s"] == pytest.approx(sum(rec["point_wall_s"].values()))
    assert rec["points_wall_s"] >= 0.02 * len(rec["scores"])
