"""The table's step ratios: a cached head fit has no training step, so nothing is divided by its L-BFGS iteration."""
import dataclasses

from benchkit import fake_execute
from peftzoo.bench.leaderboard import build
from peftzoo.bench.spec import RunSpec


def _rec(method, step_s, **kw):
    spec = RunSpec(suite="t", task="SST-2", method=method, seed=0, lr=1.0 if method == "head" else 1e-3, **kw)
    return dataclasses.replace(fake_execute(spec), median_step_s=step_s)


def test_a_cached_head_fit_is_no_step_reference_and_a_stepped_one_is():
    stepped = build([_rec("head", 0.01), _rec("full", 0.04), _rec("lora", 0.02)])
    row = {r.method: r for r in stepped.rows}
    assert row["lora"].step_vs_head == 2.0 and row["lora"].step_vs_full == 0.5 and row["head"].step_vs_head == 1.0
    cached = build([_rec("head", 3.0, head_fit="cached"), _rec("full", 0.04), _rec("lora", 0.02)])
    row = {r.method: r for r in cached.rows}
    assert row["lora"].step_vs_head is None and row["lora"].step_vs_full == 0.5  # "—", not 0.02 / 3.0
    assert row["head"].step_vs_head is None and row["head"].step_vs_full is None
