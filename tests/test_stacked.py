"""Stacked runs (bench/stacked.py): k runs of a sweep trained over one frozen base give each run's sequential record."""
import dataclasses

import pytest

from peftzoo.bench import stacked
from peftzoo.bench.runner import execute
from peftzoo.bench.sweep import plan
from test_bench import tiny_setup  # noqa: F401 - the fixture


def _lora_sweep(preset, lrs=(1e-3, 3e-3, 1e-2), **kw):
    preset.update(methods=["lora"], **kw)
    (spec,) = plan(preset)
    return [dataclasses.replace(spec, lr=lr) for lr in lrs]


def _close(a, b, tol=1e-5):
    assert a.status == b.status == "ok", (a.error, b.error)
    assert a.run_id == b.run_id and a.steps == b.steps
    for ha, hb in zip(a.history, b.history, strict=True):
        assert ha.epoch == hb.epoch and abs(ha.loss - hb.loss) < tol, (ha.loss, hb.loss)
        for got, want in ((ha.val, hb.val), (ha.dev, hb.dev)):
            assert got.keys() == want.keys() and all(abs(got[m] - want[m]) < tol for m in want), (got, want)
        assert ha.preds == hb.preds


def test_a_stacked_lr_sweep_gives_the_sequential_records(tiny_setup):
    preset, data, _ = tiny_setup
    specs = _lora_sweep(preset)  # dropout 0.1 in the tiny BERT: each run's masks come from its own stream
    alone = [execute(s, data_dir=data, progress=False) for s in specs]
    together = stacked.execute_stack(specs, data_dir=data, progress=False, say=pytest.fail)
    for t, a in zip(together, alone, strict=True):
        _close(t, a)
        assert t.extra["stacked_runs"] == 3 and t.params == a.params
    assert len({a.history[-1].loss for a in alone}) == 3  # the LRs differ: not one run copied three times
