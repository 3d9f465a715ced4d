"""LoRAM's init magnitude against PiSSA's on a real model: ‖s·B A‖_F at init per layer, all-linear targets of the
embedded all-MiniLM-L6-v2 (the paper's claim: LoRAM's log_min(n,m)(r) gain stands in for PiSSA's spectral one).

Both inits move s·B A out of W, so ‖s·B A‖_F is the size of the part the factors start with (LoRAM: √Q·‖W‖_F by
construction; PiSSA: the norm of W's top-r part). Printed per rank: the ratio LoRAM / PiSSA over the layers
(median, min, max) and each init's mean ‖s·B A‖_F / ‖W‖_F. Exact arithmetic on the weights, no training.

    python benchmarks/loram_magnitude.py [--ranks 2 8 64] [--out results/speed/loram_magnitude.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def norms(init: str, r: int, model_path: str) -> dict[str, tuple[float, float]]:
    """{layer: (‖s·B A‖_F, ‖W‖_F)} for ``init`` at rank ``r``."""
    from transformers import AutoModelForSequenceClassification

    import peftzoo
    model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=2)
    w = {n: m.weight.detach().norm().item() for n, m in model.named_modules() if hasattr(m, "weight")}
    ad = peftzoo.attach(model, "lora", targets="all-linear", r=r, alpha=r, init_lora_weights=init,
                        train=["classifier"])
    return {n: (ly.delta_weight().norm().item(), w[n]) for n, ly in ad.layers.items()}


def main():
    import torch
    from transformers.utils import logging

    from peftzoo.bench.models import default_model
    ap = argparse.ArgumentParser()
    ap.add_argument("--ranks", type=int, nargs="+", default=[2, 8, 64])
    ap.add_argument("--out", default="results/speed/loram_magnitude.json")
    a = ap.parse_args()
    logging.set_verbosity_error()
    torch.set_num_threads(2)
    rows = []
    for r in a.ranks:
        lo, pi = norms("loram", r, default_model()), norms("pissa", r, default_model())
        ratio = [lo[n][0] / pi[n][0] for n in lo]
        row = {"r": r, "layers": len(ratio), "ratio_median": statistics.median(ratio), "ratio_min": min(ratio),
               "ratio_max": max(ratio), "loram_rel": statistics.mean(v / w for v, w in lo.values()),
               "pissa_rel": statistics.mean(v / w for v, w in pi.values())}
        rows.append(row)
        print(f"r={r:3d} ({row['layers']} layers): LoRAM/PiSSA ‖s·BA‖ median {row['ratio_median']:.3f} "
              f"[{row['ratio_min']:.3f}, {row['ratio_max']:.3f}];  ‖s·BA‖/‖W‖ LoRAM {row['loram_rel']:.3f}, "
              f"PiSSA {row['pissa_rel']:.3f}")
    res = {"model": "all-MiniLM-L6-v2 (embedded), all-linear", "rows": rows,
           "command": "python benchmarks/loram_magnitude.py --ranks " + " ".join(map(str, a.ranks))}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
