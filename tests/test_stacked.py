"""Stacked runs (bench/stacked.py): k runs of a sweep trained over one frozen base give each run's sequential record."""
import dataclasses

import numpy as np
import pytest

from peftzoo.bench import stacked
from peftzoo.bench.runner import execute
from peftzoo.bench.sweep import plan
from test_bench import tiny_setup  # noqa: F401 - the fixture


def _lora_sweep(preset, lrs=(1e-3, 3e-3, 1e-2), **kw):
    preset.update(methods=["lora"], **kw)
    (spec,) = plan(preset)
    return [dataclasses.replace(spec, lr=lr) for lr in lrs]


def _vary_lengths(data):
    """SST-2 rows of 1 to 9 words, so that batches are padded (the attention mask matters)."""
    rng = np.random.default_rng(1)
    words = {0: ["dull", "bad", "boring", "awful"], 1: ["great", "fine", "lovely", "superb"]}
    for split, n in (("train", 64), ("dev", 24)):
        ys = rng.integers(0, 2, n)
        rows = [" ".join(rng.choice(words[y], rng.integers(1, 10))) + f"\t{y}" for y in ys]
        (data / "SST-2" / f"{split}.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")


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
    _vary_lengths(data)
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


def test_the_host_computes_each_runs_own_outputs_on_padded_batches(tiny_setup):
    import torch

    from peftzoo.bench import runner
    preset, data, _ = tiny_setup
    _vary_lengths(data)
    specs = [s.bind_data(data) for s in _lora_sweep(preset)][:2]
    task, d = runner.load_data(specs[0], data)
    runs, states = [], []
    for s in specs:
        runs.append(runner.prepare(s, task, d, torch.device("cpu")))
        states.append(stacked.Streams([], False)._get())
    with torch.no_grad():
        for r in runs:  # distinct adapters, so each run's rows must see its own
            for p in r.adapter.trainable_parameters():
                p.normal_(0, 0.5)
    host = stacked.Host(runs, specs[0].train_modules, states)
    b = {k: v for k, v in runs[0].epoch_batches(0)[0].items() if k != "labels"}
    assert (b["attention_mask"] == 0).any()  # padded: without the model's mask format the host attends to pads
    host.model.eval()
    with torch.no_grad():
        got = host.model(**{k: v.repeat(2, 1) for k, v in b.items()}).logits.chunk(2)
        for r, g in zip(runs, got):
            want = r.adapter.model.eval()(**b).logits
            assert (g - want).abs().max() < 1e-6
        assert (got[0] - got[1]).abs().max() > 1e-3
