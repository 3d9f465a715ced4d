"""benchmarks/claims/lora_scaling.py without training: target patterns, run counts, verdict rules."""
import sys
from pathlib import Path

import pytest

from conftest import tiny_bert

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "claims"))
ls = pytest.importorskip("lora_scaling")


def test_target_patterns_match_exactly_the_intended_modules():
    got = ls.check_targets(lambda: tiny_bert())  # 2 layers, hidden 32, intermediate 64
    assert got == {"attention": [8, 8 * 64 * 9], "MLP": [4, 4 * 96 * 7], "all-linear": [12, (8 * 64 + 4 * 96) * 4]}


def test_planned_run_counts():
    assert ls.planned() == {"c2": 30, "c6": 18}


def _cmp(diff, p):
    return {"diff": diff, "p": p, "a": 80 + diff, "b": 80.0, "n": 3, "seed_ci": [diff - 1, diff + 1]}


def _set(lr):
    return {"lr": lr, "epoch": 2, "edge": False, "per_lr": [[lr, 0.8]], "dev": [0.8, 0.81, 0.79],
            "ci": [0.775, 0.825], "seeds": [0, 1, 2]}


def test_rows_compute_their_verdicts():
    c6 = {"r": {"attention": 9, "MLP": 7, "all-linear": 4}, "counts": {k: [1, 165888] for k in ls.TARGETS},
          "sets": {k: _set(1e-3) for k in ls.TARGETS},
          "cmp": {"MLP vs attention": _cmp(2.0, 0.01), "all-linear vs attention": _cmp(1.5, 0.02)}}
    row = ls.row_c6(c6)
    assert len(row) == 8 and row[0] == "6" and row[5] == "**holds**"
    c6["cmp"]["MLP vs attention"] = _cmp(-2.0, 0.01)
    assert ls.row_c6(c6)[5].startswith("**mixed**")
    c2 = {"spread": {"lora": 0.01, "rslora": 0.05}, "lr_steps": {"lora": 0, "rslora": -2},
          "lr_ratio": {"lora": 1.0, "rslora": 0.1}, "high": _cmp(1.0, 0.01), "ends": [1, 256],
          "early": {"lora": {"1": 0.6, "256": 0.61}, "rslora": {"1": 0.6, "256": 0.5}}, "early_steps": 20,
          "shared_lr": 3e-3, "ranks": [1, 256], "sweep": {m: {"1": _set(1e-3), "256": _set(1e-3)}
                                                          for m in ("lora", "rslora")}}
    row = ls.row_c2(c2)
    assert len(row) == 8 and row[5] == "**holds**" and row[7] == "c2_lora_scaling.png"
    c2["spread"] = {"lora": 0.05, "rslora": 0.01}
    assert "early curves: does not hold" in ls.row_c2(c2)[5]


def test_runs_are_made_from_the_cpu_preset_in_the_committed_claims_setting():
    """The claims' RunSpecs come from the cpu preset (plan.run_spec), in the setting results/claims/claims.json
    states for claims 2 and 6; so they are the runs those numbers came from (same ids as specs written out by hand)."""
    import json

    from peftzoo.bench.spec import RunSpec
    committed = json.loads((Path(__file__).resolve().parents[1] / "results" / "claims" / "claims.json").read_text())
    assert ls._setting() == committed["c2"]["setting"] == committed["c6"]["setting"]
    by_hand = RunSpec(suite="x", method="lora", seed=1, hparams={"alpha": 16, "r": 4}, lr=3e-3,
                      **committed["c2"]["setting"])
    spec = ls._spec("lora", 4, 3e-3, 1, "seeds")
    assert spec.run_id == by_hand.bind_data().run_id and spec.stage == 2 and spec.protocol.val_cap == 500
