"""Estimate a preset's CPU cost from short runs: `python benchmarks/protocol_cost.py --preset cpu [--measure]`.

``--measure`` runs, with one torch thread, 6 training steps of every method on the first task and of head, LoRA and
full on the others (at the preset's batch size and max_len) through ``runner.execute``, timing the training steps
and the evaluation (validation + dev, measured on the head run) apart with ``time.thread_time`` in a fit callback;
it writes them to ``--out``. Without it
the estimate reads that file. The estimate is, per planned run, steps × step CPU + epochs × (val + dev) × eval CPU
per example (methods measured on the first task only are scaled by the task's LoRA step ratio), then divided by
``--speedup`` (two threads vs one) for the wall time. Every number is CPU seconds of this machine at the time.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path

from peftzoo.bench.train import Callback

EVAL_ROWS = 8  # validation and dev rows of the runs whose evaluation is not timed


class CpuTimes(Callback):
    """A fit callback: this thread's CPU time in training steps and in the per-epoch evaluation, apart."""

    def on_train_begin(self, ad, total_steps):
        self.step = self.eval = 0.0
        self.steps, self.t = 0, time.thread_time()

    def _lap(self) -> float:
        t, self.t = self.t, time.thread_time()
        return self.t - t

    def on_step_end(self, step, loss):
        self.step += self._lap()
        self.steps += 1

    def on_epoch_end(self, result):
        self.eval += self._lap()


def measure(preset, out: Path, data_dir) -> list[dict]:
    """Short runs of the plan's stage-1 specs through ``runner.execute``, timed by ``CpuTimes``. Only the head
    run's evaluation is timed: the others evaluate on a token split (EVAL_ROWS rows)."""
    import torch

    from peftzoo.bench.plan import make_plan
    from peftzoo.bench.runner import execute
    torch.set_num_threads(1)
    plan = make_plan(preset)
    s1, rows = plan.stage1(), []
    for i, task in enumerate(plan.tasks):
        for m in dict.fromkeys(c.method for c in plan.cells if c.middle):
            if i and m not in ("head", "lora", "full"):
                continue
            spec = next(s for s in s1 if s.task == task and s.method == m)
            spec = dataclasses.replace(spec, epochs=1, max_train=6 * spec.batch_size,
                                       hparams={**spec.hparams, **({"tinit": 0, "tfinal": 0, "deltaT": 1}
                                                                   if m == "adalora" else {})},
                                       **({} if m == "head" else {"max_eval": EVAL_ROWS, "val_cap": EVAL_ROWS}))
            times = CpuTimes()
            rec = execute(spec, data_dir=data_dir, progress=False, callbacks=[times])
            rows.append({"task": task, "method": m, "status": rec.status, "error": rec.error,
                         "step_cpu_s": times.step / max(1, times.steps), "eval_cpu_s": times.eval if m == "head"
                         else 0.0, "split_sizes": rec.split_sizes, "batch_size": spec.batch_size,
                         "max_len": spec.max_len})
            print(json.dumps(rows[-1]), flush=True)
    out.write_text(json.dumps(rows, indent=1))
    return rows


def estimate(preset, rows: list[dict], data_dir, speedup: float) -> dict:
    from peftzoo.bench.plan import make_plan
    from peftzoo.bench.tasks import get_task, load_task
    ok = [r for r in rows if r["status"] == "ok"]
    step = {(r["task"], r["method"]): r["step_cpu_s"] for r in ok}
    first = ok[0]["task"]
    per_ex = {r["task"]: r["eval_cpu_s"] / (r["split_sizes"]["val"] + sum(
        v for k, v in r["split_sizes"].items() if k not in ("train", "val"))) for r in ok if r["method"] == "head"}

    def s(task, m):
        if (task, m) in step:
            return step[(task, m)]
        base = step.get((first, m), step[(first, "lora")])
        return base * step.get((task, "lora"), step[(first, "lora")]) / step[(first, "lora")]
    plan = make_plan(preset)
    specs = [s for n in plan.stages for s in plan.stage(n, None)]  # every stage (the LR does not change the cost)
    out: dict = {}
    for sp in specs:
        d = load_task(get_task(sp.task), data_dir)
        n = len(d["train"].labels)
        n_val = min(sp.val_cap, round(sp.val_fraction * n))
        n_dev = sum(len(d[x].labels) for x in get_task(sp.task).dev)
        steps = sp.epochs * math.ceil(min(sp.max_train or n, n - n_val) / sp.batch_size)
        cpu = steps * s(sp.task, sp.method) + sp.epochs * (n_val + n_dev) * per_ex.get(sp.task, per_ex[first])
        out.setdefault(sp.task, []).append(cpu)
    total = sum(map(sum, out.values()))
    return {"runs": len(specs), "cpu_s_per_task": {t: round(sum(v)) for t, v in out.items()},
            "cpu_s": round(total), "wall_h_estimate": round(total / speedup / 3600, 2), "speedup": speedup}


def main():
    from peftzoo.bench.preset import load_preset
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="cpu")
    p.add_argument("--measure", action="store_true")
    p.add_argument("--out", default="protocol_cost.json")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--speedup", type=float, default=1.43, help="2-thread over 1-thread step speed (the issue's "
                   "2-core full FT step, 535 ms, vs 767 ms of one thread measured here)")
    a = p.parse_args()
    preset = load_preset(a.preset)
    rows = measure(preset, Path(a.out), a.data_dir) if a.measure else json.loads(Path(a.out).read_text())
    print(json.dumps(estimate(preset, rows, a.data_dir, a.speedup), indent=1))


if __name__ == "__main__":
    main()
