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
    specs.append(dataclasses.replace(specs[0], hparams={**specs[0].hparams, "dropout": 0.2}))  # LoRA's own dropout
    alone = [execute(s, data_dir=data, progress=False) for s in specs]
    together = stacked.execute_stack(specs, data_dir=data, progress=False, say=pytest.fail)
    for t, a in zip(together, alone, strict=True):
        _close(t, a)
        assert t.extra["stacked_runs"] == 4 and t.params == a.params
    assert len({a.history[-1].loss for a in alone}) == 4  # the LRs differ: not one run copied three times


def test_stacks_group_runs_that_share_their_batches_and_leave_others_alone(tiny_setup):
    preset, _, _ = tiny_setup
    lora = _lora_sweep(preset, lrs=(1e-3, 3e-3, 1e-2))
    other_seed = dataclasses.replace(lora[0], seed=1)
    longer = dataclasses.replace(lora[0], max_len=32)
    full, dora = (dataclasses.replace(lora[0], method=m, hparams={}) for m in ("full", "dora"))
    rs = dataclasses.replace(lora[1], method="rslora")
    got = stacked.groups([*lora, other_seed, full, longer, dora, rs], k=3)
    assert got == [lora, [other_seed], [full], [longer], [dora], [rs]]  # the LoRA stack is full at 3: rs starts one
    assert stacked.groups(lora + [rs], k=2) == [lora[:2], [lora[2], rs]]  # rsLoRA shares LoRA's batches
    assert stacked.groups(lora, k=1) == [[s] for s in lora]
    assert stacked.why_not(lora[0]) is None and stacked.why_not(rs) is None
    assert "full: runs one by one" in stacked.why_not(full) and "dora" in stacked.why_not(dora)


def test_sweep_with_stack_writes_every_record_and_says_what_does_not_stack(tiny_setup, capsys):
    from peftzoo.bench import store
    from peftzoo.bench.sweep import sweep
    preset, data, results = tiny_setup
    specs = _lora_sweep(preset, lrs=(1e-3, 1e-2), epochs=1)
    head = dataclasses.replace(specs[0], method="head", hparams={})
    out = sweep(specs + [head], root=results, data_dir=data, quiet=False, stack=4)
    runs = {r.run_id: r for r in store.read_runs(results, "t")}
    assert len(out.written) == 3 and set(runs) == {s.bind_data(data).run_id for s in specs + [head]}
    assert [runs[s.bind_data(data).run_id].extra.get("stacked_runs") for s in specs + [head]] == [2, 2, None]
    assert "--stack 4: head: runs one by one" in capsys.readouterr().err


def test_bench_refuses_a_stack_below_one(tiny_setup, tmp_path, capsys):
    import json

    from peftzoo.cli import main
    preset, data, results = tiny_setup
    p = tmp_path / "p.json"
    p.write_text(json.dumps(preset))
    assert main(["bench", "--preset", str(p), "--data-dir", str(data), "--results", str(results), "--stack", "0"]) == 2
    assert "--stack 0: give K >= 1" in capsys.readouterr().err
