"""The training step's own peak memory for every (method, budget) cell of a preset, on CPU.

A run's ``peak_mem_mb`` on CPU is the process's peak RSS: model weights, tokenised data, Python and the allocator's
leftovers from earlier runs of a sweep all count. This script isolates the step: each cell runs in its own fresh
process, which loads the model, attaches the cell's method exactly as the bench does (``models.make_adapter``),
takes one warm-up step (AdamW state allocated), then resets the peak RSS (``/proc/self/clear_refs``) and measures
one more step (forward, backward, optimizer step) on a fixed batch of the preset's ``batch_size`` × ``max_len``.
glibc is told (``MALLOC_ENV``) to return freed blocks of 64 KiB and more to the OS, so RSS follows live tensors.

Reported per cell: ``step_peak_mb`` = peak RSS during the measured step − RSS just before it (activations, saved
tensors, gradients and temporaries of the step; the weights and optimizer state that exist between steps are not
in it), ``state_mb`` = RSS before the step − RSS before the adapter was attached (what the
method keeps between steps: its parameters, their gradients and AdamW moments, and any frozen buffers), and the
bytes autograd saved for backward. ``peftzoo table`` adds ``step_peak_mb`` as the `step MB` column when
``<results>/<suite>/step_memory.json`` exists.

    python benchmarks/step_memory.py --preset cpu [--results results]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from tqdm.auto import tqdm


# glibc keeps freed heap pages resident, so RSS would hide a step's temporaries behind the warm-up step's leftovers:
# blocks of 64 KiB and more are mmap'd and returned on free, so RSS follows the live allocations
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}


def rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise OSError(f"/proc/self/status has no {field} (this measurement needs Linux)")


def child(spec_json: str) -> None:
    import torch
    from transformers.utils import logging
    logging.set_verbosity_error()
    from peftzoo.bench.models import load_model, make_adapter
    from peftzoo.bench.spec import RunSpec
    from peftzoo.bench.tasks import get_task
    spec = RunSpec.from_dict(json.loads(spec_json))
    torch.set_num_threads(2)
    torch.manual_seed(0)
    task = get_task(spec.task)
    model, _ = load_model(spec.model, task, False)
    base = rss_mb("VmRSS")
    ad = make_adapter(model, spec)
    params = [p for p in ad.model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    g = torch.Generator().manual_seed(0)
    n = model.config.num_labels
    labels = torch.randn(spec.batch_size, generator=g) if n == 1 else torch.randint(0, n, (spec.batch_size,), generator=g)
    b = {"input_ids": torch.randint(1000, 20000, (spec.batch_size, spec.max_len), generator=g),
         "attention_mask": torch.ones(spec.batch_size, spec.max_len, dtype=torch.long), "labels": labels}

    def step():
        loss, extra = ad.model(**b).loss, ad.extra_loss()
        (loss if extra is None else loss + extra).backward()
        opt.step()
        opt.zero_grad(set_to_none=False)
    m = measure_step(step)
    print(json.dumps({"step_peak_mb": m["step_peak_mb"], "state_mb": m["before_mb"] - base,
                      "saved_for_backward_mb": m["saved_for_backward_mb"], "trainable": sum(p.numel() for p in params)}))


def measure_step(step) -> dict:
    """One warm-up ``step()``, then the peak RSS of one more above the RSS before it, and the bytes autograd saved."""
    import torch
    step()
    saved = {}

    def pack(t):
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t
    before = rss_mb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return {"step_peak_mb": rss_mb("VmHWM") - before, "before_mb": before,
            "saved_for_backward_mb": sum(saved.values()) / 2**20}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--results", default="results")
    ap.add_argument("--task", default=None, help="the task whose batch shape and head are used (default: the first)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        return child(a.child)
    from peftzoo.bench import store
    from peftzoo.bench.preset import load_preset
    from peftzoo.bench.plan import make_plan
    preset = load_preset(a.preset)
    plan = make_plan(preset)
    task = a.task or plan.tasks[0]
    rows = []
    for c in tqdm(plan.cells, desc="step memory (a fresh process per cell)"):
        spec = plan.spec(task, c, 1e-5, 0, stage=1)
        out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec.to_dict())], capture_output=True,
                             text=True,
                             env={**os.environ, **MALLOC_ENV})
        if out.returncode:
            raise SystemExit(f"{c.method} {c.label}: the measuring process failed:\n{out.stderr[-2000:]}")
        rows.append({"method": c.method, "hparams": c.hparams, "label": c.label,
                     **json.loads(out.stdout.strip().splitlines()[-1])})
        tqdm.write(f"{c.method:9s} {c.label:8s} step {rows[-1]['step_peak_mb']:7.1f} MB, "
                   f"state {rows[-1]['state_mb']:6.1f} MB, saved {rows[-1]['saved_for_backward_mb']:6.1f} MB")
    res = {"preset": a.preset, "task": task, "batch_size": spec.batch_size, "max_len": spec.max_len,
           "measured": "per cell in a fresh process (glibc: " + " ".join(f"{k}={v}" for k, v in MALLOC_ENV.items())
                       + "): peak RSS of one training step (after a warm-up step) minus "
                       "the RSS just before it; state: RSS before that step minus RSS before attaching",
           "command": f"python benchmarks/step_memory.py --preset {a.preset} --results {a.results}", "rows": rows}
    path = Path(a.results) / plan.preset.suite / "step_memory.json"
    store.write_text(path, json.dumps(res, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
