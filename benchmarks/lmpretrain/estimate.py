"""``pretrain_d90.py --estimate``: one MLM step and one SAID (and full FT) point timed at the real settings, per
width, multiplied by the plan: pre-training steps, checkpoints, and the points a d90 search scores (``d90.Search``
run on synthetic score curves with the plan's grid, seeds and definitions, its calls counted)."""
from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

from lmpretrain import corpus, mlm

CENTRES = (("low (10^2.5)", 2.5), ("mid (10^3.5)", 3.5), ("high (10^4.5)", 4.5))


def time_steps(shape, sched, tok, blocks, n: int = 5) -> tuple[float, float]:
    """(median seconds, CPU seconds / wall seconds) of ``n`` MLM training steps (after 2 untimed ones) of a fresh
    model."""
    import torch
    t = mlm.Trainer(shape, sched, tok, blocks, blocks[:1], Path("."), "estimate")
    model, opt, _, _ = t.start()
    times, c0 = [], None
    for step in range(n + 2):
        if step == 2:
            c0, w0 = mlm._cpu(), time.perf_counter()
        t0 = time.perf_counter()
        loss = mlm.mlm_loss(model, *mlm.mask(t.collator, t.batch(step), step))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    return sorted(times[2:])[n // 2], (mlm._cpu() - c0) / (time.perf_counter() - w0)


def time_point(cfg: dict, d, n_short: int = 256) -> tuple[float, float, str]:
    """Seconds of one plan point (d, or ``FULL``), extrapolated from one seed-0 run of 1 epoch on ``n_short``
    examples: setup + steps x median step + epochs x one epoch's evaluation; the run's CPU / wall seconds; and
    how it was measured."""
    from peftzoo.bench.runner import execute
    from peftzoo.bench.tasks import get_task, load_task, split_indices
    from peftzoo.intrinsic.point import point_spec
    c0, w0 = mlm._cpu(), time.perf_counter()
    rec = execute(point_spec({**cfg, "max_train": n_short, "epochs": 1}, d, 0), progress=False)
    share = (mlm._cpu() - c0) / (time.perf_counter() - w0)
    if not rec.ok:
        raise SystemExit(f"the timed point d={d} failed: {rec.error}")
    setup, evaluate = rec.wall_s - rec.train_s, rec.train_s - rec.steps * rec.median_step_s
    n = len(split_indices(len(load_task(get_task(cfg["task"]))["train"].labels), cfg["max_train"])[0])
    steps = math.ceil(n / cfg["batch_size"]) * cfg["epochs"]
    how = (f"setup {setup:.1f} s + {steps} steps x {rec.median_step_s:.3f} s + {cfg['epochs']} x evaluation "
           f"{evaluate:.1f} s ({rec.split_sizes['val']} val + {rec.split_sizes['dev']} dev rows)")
    return setup + steps * rec.median_step_s + cfg["epochs"] * evaluate, share, how


def planned_points(grid, seeds, definitions, centre: float) -> int:
    """Points a search scores when its relative d_90 is near 10**centre: sigmoid curves in log d (trivial 0.5,
    full FT 0.8, seeds 0.05 decade apart), counted."""
    from peftzoo.intrinsic.d90 import Definition, Search
    calls = []

    def f(d, s):  # 0.5 + 0.3 σ(3 (log10 d − c')) reaches 0.72 (0.9 x 0.8) at log10 d = c
        calls.append((d, s))
        return 0.5 + 0.3 / (1 + math.exp(-3 * (math.log10(d) - centre + 0.332 - 0.05 * s)))
    Search(f, baseline=0.8, seeds=seeds, trivial=0.5, definitions=[Definition(n) for n in definitions]).run(grid, 8)
    return len(calls)


def estimate(args, prepared, plan, d90_argv) -> int:
    import argparse

    from peftzoo.intrinsic.cli import add_arguments, config
    from peftzoo.intrinsic.d90 import FULL, log_grid
    tok, c, blocks, held, cid = prepared
    print(corpus.describe(c.report) + f"; {len(blocks):,} blocks of {args.seq_len} tokens")
    p = argparse.ArgumentParser()
    add_arguments(p)
    grid = args.grid or log_grid(args.dmin, args.dmax, 2)
    pts = {label: planned_points(grid, args.seeds, ("gap", "relative"), x) for label, x in CENTRES}
    wall, cpu = dict.fromkeys(pts, 0.0), dict.fromkeys(pts, 0.0)
    for shape, sched in plan:
        step, s_step = time_steps(shape, sched, tok, blocks)
        with tempfile.TemporaryDirectory() as tmp:
            t = mlm.Trainer(shape, mlm.Schedule((0,), sched.batch_size, sched.seq_len), tok, blocks, held, tmp, cid)
            te, ce = time.perf_counter(), mlm._cpu()
            t.run()
            evaluate, s_eval = time.perf_counter() - te, (mlm._cpu() - ce) / (time.perf_counter() - te)
            cfg = config(p.parse_args(d90_argv(args, t.checkpoint(0))))
            said, s_said, said_how = time_point(cfg, 1000)
            full, s_full, full_how = time_point(cfg, FULL)
        n_ck = len(sched.steps)
        pre = sched.steps[-1] * step + n_ck * evaluate
        pre_cpu = sched.steps[-1] * step * s_step + n_ck * evaluate * s_eval
        print(f"h{shape.hidden}: MLM step {step:.3f} s wall, {step * s_step:.3f} s CPU (batch {sched.batch_size} x "
              f"{sched.seq_len}); {sched.steps[-1]:,} steps + {n_ck} checkpoints (save + held-out loss "
              f"{evaluate:.1f} s) = {pre / 3600:.2f} h wall, {pre_cpu / 3600:.2f} CPU h")
        print(f"h{shape.hidden}: a SAID point (d = 1000) {said / 60:.1f} min wall, {said * s_said / 60:.1f} CPU min "
              f"= {said_how}")
        print(f"h{shape.hidden}: a full-FT point {full / 60:.1f} min wall, {full * s_full / 60:.1f} CPU min "
              f"= {full_how}")
        for label, n in pts.items():
            wall[label] += pre + n_ck * (len(args.seeds) * full + n * said)
            cpu[label] += pre_cpu + n_ck * (len(args.seeds) * full * s_full + n * said * s_said)
    print("CPU time is what one free core would take (this process's CPU seconds; the machine is shared)")
    for label, n in pts.items():
        print(f"crossing {label}: {n} SAID points per search; the plan (steps {', '.join(map(str, args.steps))}; "
              f"widths {', '.join(map(str, args.widths))}): ~{cpu[label] / 3600:.1f} CPU h (~{wall[label] / 3600:.1f} "
              f"h wall at this load); a refused checkpoint costs only its {len(args.seeds)} full-FT points")
    return 0
