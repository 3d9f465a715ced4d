"""A sweep stacked (``peftzoo bench --stack K``, bench/stacked.py) against the same runs one after the other.

Both in one process, interleaved for ``--rounds`` rounds (sequential, stacked, sequential, ...), so load on a shared
machine hits both alike; prints each round's wall time, the ratio of medians (sequential / stacked), and the
largest difference between a stacked run's record and its sequential one (losses, validation and dev scores: equal
up to float summation order), and which of the plan's methods stack at all (the others run one by one).

Slices (``--slice``):
* ``quick``: the ``quick`` plan's LoRA-family runs (LoRA at r=1, 8, 64 counts, rsLoRA, LoRA+; SST-2, seed 0), one
  stack of 5;
* ``cpu-lr``: the ``cpu`` plan's LoRA LR sweep on SST-2 (stage 1, seed 0), one stack of its grid.

    python benchmarks/sweep_speed.py --slice quick --rounds 2
    python benchmarks/sweep_speed.py --slice cpu-lr --rounds 2 --threads 2
    python benchmarks/sweep_speed.py --slice quick --max-train 160 --rounds 1   # a smoke run (not a result)

Timing needs a quiet machine: on a loaded one the ratio is indicative only.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from peftzoo.bench import stacked
from peftzoo.bench.plan import make_plan
from peftzoo.bench.preset import load_preset
from peftzoo.bench.runner import execute

SLICES = {"quick": ("quick", None), "cpu-lr": ("cpu", "lora")}


def slice_specs(name: str, max_train: int | None):
    """(the slice's runs, the plan's methods that do not stack, with why)."""
    preset, method = SLICES[name]
    plan = make_plan(load_preset(preset), tasks=["SST-2"])
    specs = plan.stage1() if method else plan.known()
    specs = [s for s in specs if s.seed == 0 and (s.method == method if method else True)]
    others = sorted({stacked.why_not(s) for s in specs if stacked.why_not(s)})
    specs = [s for s in specs if not stacked.why_not(s)]
    if max_train:
        specs = [dataclasses.replace(s, max_train=max_train) for s in specs]
    return specs, others


def worst_gap(a, b) -> float:
    """The largest |difference| between two records' per-epoch losses and validation/dev metrics."""
    gap = 0.0
    for ha, hb in zip(a.history, b.history, strict=True):
        gap = max([gap, abs(ha.loss - hb.loss)] + [abs(x[m] - y[m]) for x, y in ((ha.val, hb.val), (ha.dev, hb.dev))
                                                    for m in y])
    return gap


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slice", choices=sorted(SLICES), default="quick")
    ap.add_argument("--rounds", type=int, default=2, help="sequential/stacked pairs, interleaved")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--max-train", type=int, default=None, help="fewer training rows: a smoke run, not a result")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default=None, help="write the numbers to this JSON file")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    specs, others = slice_specs(args.slice, args.max_train)
    print(f"{args.slice}: {len(specs)} runs stack: " + ", ".join(s.label for s in specs))
    for line in others:
        print(f"  not stacked: {line}")
    seq_s, stk_s, gaps = [], [], []
    for rnd in range(args.rounds):
        t = time.perf_counter()
        alone = [execute(s, data_dir=args.data_dir, progress=False) for s in specs]
        seq_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        together = stacked.execute_stack(specs, data_dir=args.data_dir, progress=False, say=print)
        stk_s.append(time.perf_counter() - t)
        bad = [r.label for r in alone + together if not r.ok]
        if bad:
            print(f"runs not ok: {bad}", file=sys.stderr)
            return 1
        gaps.append(max(worst_gap(x, y) for x, y in zip(together, alone)))
        print(f"round {rnd + 1}: sequential {seq_s[-1]:.1f} s, stacked {stk_s[-1]:.1f} s, "
              f"ratio {seq_s[-1] / stk_s[-1]:.2f}x, largest record difference {gaps[-1]:.2g}")
    ratio = statistics.median(seq_s) / statistics.median(stk_s)
    cmd = "python benchmarks/sweep_speed.py " + " ".join(sys.argv[1:] if argv is None else argv)
    print(f"{args.slice}: stacked {ratio:.2f}x faster than sequential (medians of {args.rounds} rounds: "
          f"{statistics.median(seq_s):.1f} s vs {statistics.median(stk_s):.1f} s, {torch.get_num_threads()} "
          f"threads); records differ by at most {max(gaps):.2g}\n  {cmd}")
    if args.out:
        Path(args.out).write_text(json.dumps({
            "slice": args.slice, "runs": [s.run_id for s in specs], "sequential_s": seq_s, "stacked_s": stk_s,
            "ratio": ratio, "max_record_gap": max(gaps), "threads": torch.get_num_threads(),
            "max_train": args.max_train, "not_stacked": others, "cpu": platform.processor() or platform.machine(),
            "command": cmd}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
