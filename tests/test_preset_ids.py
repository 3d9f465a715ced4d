"""Planning a shipped preset gives the run ids it gave when this fixture was written (tests/fixtures/preset_ids.json):
a refactor of the planner, the preset schema or RunSpec that changed a planned run's identity would orphan the
committed results (a run's id is the hash of its spec). Stage-2 runs are planned at a placeholder LR (their LR is
selected on validation), so their ids capture every other field.

Regenerate only for an intended change of the runs:
    PEFTZOO_DATA_DIR=... python tests/test_preset_ids.py --write
"""
import hashlib
import json
import os
import sys
from pathlib import Path

import pytest

FIXTURE = Path(__file__).parent / "fixtures" / "preset_ids.json"
PRESETS = ("quick", "smoke", "cpu", "cpu-stsb-raw", "glue", "cpu-sizing-probe")
GLUE = os.environ.get("PEFTZOO_DATA_DIR")


LISTED = 100  # a stage of more runs is stored as its count and the digest of its sorted ids


def digest(ids: list) -> dict:
    return {"n": len(ids), "sha256": hashlib.sha256("\n".join(ids).encode()).hexdigest()}


def planned_ids(name: str) -> dict:
    """{"stage1": [...], "stage2": [...]}: the sorted run ids of the preset's plan, bound to $PEFTZOO_DATA_DIR."""
    from peftzoo.bench.preset import load_preset
    from peftzoo.bench.plan import make_plan
    plan = make_plan(load_preset(name))
    return {f"stage{i}": sorted(s.bind_data(GLUE).run_id for s in specs)
            for i, specs in ((1, plan.stage1()), (2, plan.stage2(None)))}


@pytest.mark.skipif(not GLUE, reason="PEFTZOO_DATA_DIR not set (the data's identity is part of a run's)")
@pytest.mark.parametrize("name", PRESETS)
def test_planning_a_shipped_preset_gives_the_recorded_run_ids(name):
    want = json.loads(FIXTURE.read_text())[name]
    got = planned_ids(name)
    for stage in ("stage1", "stage2"):
        if isinstance(want[stage], dict):
            assert digest(got[stage]) == want[stage], f"{name} {stage}: other run ids (e.g. {got[stage][:2]})"
        else:
            assert got[stage] == want[stage], (f"{name} {stage}: new {sorted(set(got[stage]) - set(want[stage]))[:3]}"
                                               f", gone {sorted(set(want[stage]) - set(got[stage]))[:3]}")


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    assert GLUE, "set PEFTZOO_DATA_DIR"
    ids = {n: planned_ids(n) for n in PRESETS}
    short = {n: {k: v if len(v) <= LISTED else digest(v) for k, v in st.items()} for n, st in ids.items()}
    FIXTURE.write_text(json.dumps(short, indent=1) + "\n")
    print(f"wrote {FIXTURE}")
