"""How long `peftzoo analyze` takes on a BERT-base-sized model (110M parameters, random weights): LoRA r=8 on every
nn.Linear (72 layers), B random so ΔW is full rank-8. Writes results/speed/analyze_cpu.json.

    python benchmarks/analyze_speed.py [--threads 1] [--out results/speed/analyze_cpu.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="results/speed/analyze_cpu.json")
    args = p.parse_args(argv)
    from transformers import BertConfig, BertModel

    import peftzoo
    from peftzoo.analysis import AnalysisConfig, analyze_adapter
    from peftzoo.analysis.report import write
    from peftzoo.bench.store import write_text
    cfg = BertConfig()  # bert-base: hidden 768, 12 layers, FFN 3072
    torch.manual_seed(0)
    model = BertModel(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    ad = peftzoo.attach(model, "lora", targets="all-linear", r=8)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for B in ad.roles()["B"]:
            B.normal_(0, 0.01, generator=g)
    with tempfile.TemporaryDirectory() as d:
        ad.save(d)
        torch.manual_seed(0)
        base = BertModel(cfg)
        load0 = os.getloadavg()[0]
        t0 = time.perf_counter()
        res = analyze_adapter(base, d, config=AnalysisConfig(threads=args.threads))
        t_analyze = time.perf_counter() - t0
        t1 = time.perf_counter()
        write(res, Path(d) / "out")
        t_write = time.perf_counter() - t1
    rec = {"parameters": n_params, "layers": res["summary"]["layers"], "threads": args.threads,
           "analyze_s": t_analyze, "svd_and_metrics_s": res["seconds"], "write_json_png_s": t_write,
           "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
           "load_average_1min_before_after": [load0, os.getloadavg()[0]], "cpu_count": os.cpu_count(),
           "note": "a CPU shared with other jobs gives an upper bound (see the load average)",
           "command": "python benchmarks/analyze_speed.py --threads %d" % args.threads}
    write_text(args.out, json.dumps(rec, indent=1))
    print(json.dumps(rec, indent=1))


if __name__ == "__main__":
    main()
