"""SAID / DID training step vs a full fine-tuning step on the embedded all-MiniLM-L6-v2 (the same batch, CPU).

Interleaved rounds; median step time of each configuration; ratio to full fine-tuning measured in this run.

    python benchmarks/said_speed.py [--d 1000 100000] [--seq 64 --batch 16 --rounds 5 --steps 3]
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--d", type=int, nargs="*", default=[1000, 100000])
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="results/speed/said_cpu.json")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging
    logging.set_verbosity_error()

    import peftzoo
    from peftzoo.adapters.base import AdapterConfig
    from peftzoo.adapters.baselines import FullFinetune
    from peftzoo.bench.models import default_model
    from peftzoo.bench.train import train_step
    torch.manual_seed(0)
    base = AutoModelForSequenceClassification.from_pretrained(default_model(), num_labels=2)
    g = torch.Generator().manual_seed(0)
    batch = {"input_ids": torch.randint(1000, 20000, (a.batch, a.seq), generator=g),
             "labels": torch.randint(0, 2, (a.batch,), generator=g)}
    confs = {"full": FullFinetune(copy.deepcopy(base), AdapterConfig(train=["classifier"]))}
    for d in a.d:
        for m in ("said", "did"):
            confs[f"{m} d={d}"] = peftzoo.attach(copy.deepcopy(base), m, d=d, train=["classifier"])
    opts = {k: torch.optim.AdamW(ad.param_groups(lr=1e-5)) for k, ad in confs.items()}
    for ad in confs.values():
        ad.model.train()
    times = {k: [] for k in confs}
    for r in range(a.rounds + 1):
        for k in (list(confs) if r % 2 else list(confs)[::-1]):
            t = time.perf_counter()
            for i in range(a.steps):
                train_step(confs[k], opts[k], batch, step=i + 1)
            if r:  # round 0 warms up
                times[k].append((time.perf_counter() - t) / a.steps)
    full = statistics.median(times["full"])
    res = {k: {"median_s": statistics.median(v), "ratio_to_full": statistics.median(v) / full,
               "D": getattr(confs[k], "D", None)} for k, v in times.items()}
    for k, v in res.items():
        print(f"{k:14s} {v['median_s'] * 1e3:8.1f} ms   x{v['ratio_to_full']:.2f} of a full fine-tuning step")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"args": vars(a), "results": res, "command": "python benchmarks/said_speed.py "
                                       + " ".join(f"--{k} {' '.join(map(str, v)) if isinstance(v, list) else v}"
                                                 for k, v in vars(a).items() if k != "out")}, indent=2))


if __name__ == "__main__":
    main()
