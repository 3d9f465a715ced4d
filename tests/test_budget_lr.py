"""The LR at every budget (protocol.budget_lr_points): local grids centred on the middle budget's selected LR, the
three-stage plan, its resumable sweep, and the table that says which protocol it ran and marks edge LRs."""
import dataclasses
import math

import pytest

from benchkit import write_sst2
from conftest import tiny_bert
from peftzoo.bench import store
from peftzoo.bench.leaderboard import at_edge, build
from peftzoo.bench.plan import make_plan
from peftzoo.bench.protocol import Protocol, local_grid
from peftzoo.bench.record import EpochResult, RunRecord
from peftzoo.bench.sweep import run_protocol

LORA = (1e-4, 3e-4, 1e-3, 3e-3)  # the LoRA class grid


def test_local_grid_is_the_grids_neighbours_and_continues_its_steps_past_the_ends():
    assert local_grid(LORA, 3e-4, 3) == (1e-4, 3e-4, 1e-3)
    assert local_grid(LORA, 3e-3, 3) == (1e-3, 3e-3, 1e-2)  # past the top: ×10/3 after ×3, as the grid steps
    assert local_grid(LORA, 1e-4, 3) == (3e-5, 1e-4, 3e-4)
    assert local_grid(LORA, 3e-3, 5) == (3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
    assert local_grid((1e-3, 2e-3), 2e-3, 3) == (1e-3, 2e-3, 4e-3)  # two points: their one ratio
    assert local_grid((5e-4,), 5e-4, 3) == (5e-4,)  # a fixed LR stays fixed
    assert all(math.isnan(x) for x in local_grid(LORA, float("nan"), 3))  # planning before selection: 3 runs
    with pytest.raises(ValueError, match="not in the grid"):
        local_grid(LORA, 5e-4, 3)


def test_the_option_is_checked_and_recorded_only_when_set():
    for bad in (1, 2, 4):
        with pytest.raises(ValueError, match="budget_lr_points is %d; 0 .* or an odd count >= 3" % bad):
            Protocol.parse({"budget_lr_points": bad})
    with pytest.raises(ValueError, match="separation is -1"):
        Protocol.parse({"separation": -1})
    old = Protocol()
    assert "budget_lr_points" not in old.to_dict() and "separation" not in old.to_dict()  # old runs' records as before
    new = Protocol.parse({"budget_lr_points": 3, "separation": 3})
    assert new.to_dict()["budget_lr_points"] == 3 and Protocol.from_record(new.to_dict()) == new
    assert Protocol.from_record(old.to_dict()) == old and (old.stages, new.stages) == (2, 3)
    assert "LR TRANSFERRED" in old.describe() and "LR PER BUDGET" in new.describe()
    assert "local grid of 3 LRs" in new.describe() and "more than 3 × the larger 95%" in new.describe()


def _preset(points=3, **kw):
    return {"suite": "t", "tasks": ["SST-2"], "methods": ["head", "lora", "vera"], "seeds": [0, 1, 2],
            "budgets": [256, 1024, 4096], "method_budgets": {"vera": [256, 1024]}, "targets": ["query", "value"],
            "lr_grid": {"head": [1e-3, 1e-2], "lora": list(LORA), "vera": [1e-3, 1e-2, 1e-1]},
            "protocol": {"sweep_seeds": 1, "budget_lr_points": points, "paper_settings": ["vera"]}, **kw}


def test_the_plan_sweeps_a_local_grid_at_every_other_budget_and_paper_setting():
    m = tiny_bert(num_labels=2)  # q, v of 2 layers (32 -> 32): 256 elements per LoRA rank
    local, moved = make_plan(_preset(), model=m), make_plan(_preset(points=0), model=m)
    assert local.stages == [1, 2, 3] and moved.stages == [1, 2]
    assert [s.run_id for s in local.stage1()] == [s.run_id for s in moved.stage1()]  # the same sweep runs
    others = [c for c in local.cells if not c.middle]
    assert {c.name for c in others} == {"lora 256", "lora 4,096", "vera 256", "vera paper"}
    sel = {("SST-2", "head"): 1e-2, ("SST-2", "lora"): 3e-3, ("SST-2", "vera"): 1e-2}
    s2 = local.stage2(sel)
    middle = [s for s in s2 if s.cell in ("—", "1,024")]
    assert {(s.method, s.lr, s.seed) for s in middle} == {(m_, sel[("SST-2", m_)], x) for m_ in ("head", "lora", "vera")
                                                          for x in (1, 2)}
    grids = {}
    for s in s2:
        if s not in middle:
            grids.setdefault((s.method, s.cell), []).append(s.lr)
    assert grids == {("lora", "256"): [1e-3, 3e-3, 1e-2], ("lora", "4,096"): [1e-3, 3e-3, 1e-2],  # past the top
                     ("vera", "256"): [1e-3, 1e-2, 1e-1], ("vera", "paper"): [1e-3, 1e-2, 1e-1]}
    assert {s.seed for s in s2 if s not in middle} == {0} and {s.stage for s in s2} == {2}
    # the transferred plan's seed-0 run at a budget is the local grid's centre: the same run (a suite can switch)
    centre = {(s.task, s.run_id) for s in moved.stage2(sel) if s.seed == 0 and s.cell == "256"}
    assert centre <= {(s.task, s.run_id) for s in s2}
    per_cell = {("SST-2", c.method, c.key): 1e-3 for c in others}
    s3 = local.stage3(per_cell)
    assert len(s3) == 4 * 2 and {s.seed for s in s3} == {1, 2} and {s.lr for s in s3} == {1e-3}
    assert {s.stage for s in s3} == {3} and moved.stage3(per_cell) == []
    no_vera = {k: v for k, v in per_cell.items() if k[1] != "vera"}  # a cell without a selection: no stage 3
    assert local.stage3(no_vera) == [s for s in s3 if s.method == "lora"]
    # counting before selection: every stage's size is known
    assert [len(local.stage(n, None)) for n in local.stages] == [2 + 4 + 3, 3 * 2 + 4 * 3, 4 * 2]


def _dev_score(spec) -> float:
    """A made-up response: LoRA's best LR moves with its budget (3e-4 at 256; 1e-3 at 1,024; 3e-3 at 4,096)."""
    best = {256: 3e-4, 1024: 1e-3, 4096: 3e-3}.get(spec.budget, 1e-2)
    return 0.9 - 0.1 * abs(math.log10(spec.lr / best)) + 0.001 * spec.seed


def _execute(spec, data_dir=None, device=None, progress=False, calls=None):
    spec = spec.bind_data(data_dir)
    if calls is not None:
        calls.append(spec)
    v = _dev_score(spec)
    return RunRecord(spec, "ok", {"peftzoo": "test"}, [EpochResult({"score": v - 0.05}, {"score": v}, epoch=1)],
                     params={"target": spec.budget, "achieved": 10, "solver": None, "adapter": 10, "trainable": 20},
                     steps=2, median_step_s=0.01, peak_mem_mb=1.0, device="cpu", adapter_file_bytes=100,
                     data_skipped={"train": 0, "dev": 0})


def test_each_budget_selects_its_own_lr_resumes_and_the_table_says_so(tmp_path, capsys):
    from peftzoo.bench.table import markdown
    data = write_sst2(tmp_path)
    p = _preset(methods=["head", "lora"], method_budgets={}, protocol={"sweep_seeds": 1, "budget_lr_points": 3,
                                                                       "paper_settings": []})
    plan = make_plan(p, model=tiny_bert(num_labels=2))
    calls = []
    out = run_protocol(plan, tmp_path / "res", data_dir=data, executor=lambda s, **kw: _execute(s, calls=calls, **kw))
    printed = capsys.readouterr().out
    assert "selected on validation: SST-2 lora lr=0.001" in printed  # the middle budget
    assert "selected on validation: SST-2 lora 4,096 lr=0.003" in printed  # its own, not the middle's
    runs = store.read_runs(tmp_path / "res", "t")
    # head 2 LRs + 2 seeds; LoRA: 4 LRs + 2 seeds at 1,024, and at 256 and 4,096: 3 local LRs + 2 seeds each
    assert len(runs) == len(calls) == out.total == (2 + 2) + (4 + 2) + 2 * (3 + 2)
    assert sorted({r.spec.stage for r in runs}) == [1, 2, 3]
    s3 = {(r.spec.budget, r.spec.lr) for r in runs if r.spec.stage == 3}
    assert s3 == {(256, 3e-4), (4096, 3e-3)}  # the best LR moved, and each budget found its own
    b = build(runs)
    cells = {r.label: r.tasks["SST-2"] for r in b.rows if r.method == "lora"}
    assert {k: c.sel.lr for k, c in cells.items()} == {"256": 3e-4, "1,024": 1e-3, "4,096": 3e-3}
    assert cells["256"].n == 3 and sorted(cells["256"].sel.per_lr) == [3e-4, 1e-3, 3e-3]  # centred on the middle's
    # both moved to an end of their 3-point grid: marked (the best may lie further out); the middle's is inside
    assert at_edge(cells["256"].sel) and at_edge(cells["4,096"].sel) and not at_edge(cells["1,024"].sel)
    md = markdown("t", b, "val")
    assert "LR PER BUDGET" in md and "LR TRANSFERRED" not in md
    # started again: every stage re-planned from the records, nothing run twice
    again = run_protocol(plan, tmp_path / "res", data_dir=data, quiet=True,
                         executor=lambda s, **kw: _execute(s, calls=calls, **kw))
    assert again.written == [] and again.done_before == out.total and len(calls) == out.total


def test_a_local_grid_whose_best_is_its_end_point_is_marked(tmp_path):
    from peftzoo.bench.table import markdown
    data = write_sst2(tmp_path)
    # LoRA's best at 4,096 is 3e-3 (as above); centred on the middle's 3e-4, its local grid ends at 9e-4 below it
    p = _preset(methods=["lora"], method_budgets={}, budgets=[256, 1024, 4096], lr_grid={"lora": [1e-4, 3e-4]},
                protocol={"sweep_seeds": 1, "budget_lr_points": 3, "paper_settings": []}, seeds=[0])
    run_protocol(make_plan(p, model=tiny_bert(num_labels=2)), tmp_path / "res", data_dir=data, quiet=True,
                 executor=_execute)
    b = build(store.read_runs(tmp_path / "res", "t"))
    lora = {r.label: r for r in b.rows}
    assert lora["1,024"].tasks["SST-2"].sel.lr == 3e-4  # the middle's best of its two LRs (1e-3 is best)
    top = lora["4,096"].tasks["SST-2"].sel
    assert sorted(top.per_lr) == [1e-4, 3e-4, 9e-4] and top.lr == 9e-4 and at_edge(top)
    assert not at_edge(lora["256"].tasks["SST-2"].sel)  # its best, 3e-4, is inside its grid
    assert "| 0.0009† / 1 |" in markdown("t", b, "val")  # the LR / epoch cell of the row at 4,096


def test_old_presets_plan_as_before():
    """The transferred protocol is the default: a preset without the option plans stage 2 as it always did (the
    committed run ids: tests/test_preset_ids.py) and no stage 3."""
    plan = make_plan(_preset(points=0), model=tiny_bert(num_labels=2))
    sel = {("SST-2", m): 1e-3 for m in ("head", "lora", "vera")}
    assert plan.stage3(None) == [] and all(s.lr == 1e-3 for s in plan.stage2(sel))
    assert len([s for s in plan.stage2(sel) if s.cell == "256"]) == 2 * 3  # lora and vera, every seed
    assert dataclasses.asdict(plan.protocol)["budget_lr_points"] == 0
