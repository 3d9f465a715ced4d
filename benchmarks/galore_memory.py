"""Optimizer state of GaLore against full fine-tuning and LoRA, measured, on the embedded all-MiniLM-L6-v2.

Each row attaches a method to a fresh copy of the model (classifier trained), builds the optimizer the training
loop builds (``ad.make_optimizer``), takes ``--steps`` steps on a fixed batch (GaLore with T = 1: the projection is
refreshed every step, so a refresh is included), then counts every tensor the optimizer holds in ``opt.state``:
elements and bytes (elements × element size). These are exact counts, not timings; they are checked against
``ad.optimizer_state_count()``. Not counted: transient tensors inside one ``step()`` (GaLore's SVD workspace and
one full-size update per tensor, freed before the next tensor), gradients, activations.

    python benchmarks/galore_memory.py [--out results/speed/galore_memory.json]
"""
from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

ROWS = [  # (label, method, config): all-linear targets (GaLore's use: every 2-D weight of the encoder)
    ("full fine-tuning (every parameter)", "full", {}),
    ("lora r=8, all-linear", "lora", {"targets": "all-linear", "r": 8}),
    ("full Adam on all-linear weights (galore's trainable set)", "full-targets", {"targets": "all-linear"}),
    ("galore r=4, all-linear", "galore", {"targets": "all-linear", "r": 4}),
    ("galore r=8, all-linear", "galore", {"targets": "all-linear", "r": 8}),
    ("galore r=128, all-linear", "galore", {"targets": "all-linear", "r": 128}),
    ("galore r=4, all-linear + train_rest (the paper's GLUE setting)", "galore",
     {"targets": "all-linear", "r": 4, "train_rest": True}),
]


def state_of(opt) -> tuple[int, int]:
    """(elements, bytes) of every tensor in the optimizer's state."""
    import torch
    ts = [t for s in opt.state.values() for t in s.values() if torch.is_tensor(t)]
    return sum(t.numel() for t in ts), sum(t.numel() * t.element_size() for t in ts)


def measure(base, method: str, config: dict, steps: int) -> dict:
    import torch

    import peftzoo
    model = copy.deepcopy(base)
    if method == "full-targets":  # GaLore's trainable set under plain AdamW: its projection switched off
        ad = peftzoo.attach(model, "galore", train=["classifier"], **config)
        opt = torch.optim.AdamW(ad.param_groups(1e-4))
        predicted = sum(2 * p.numel() + 1 for p in ad.trainable_parameters())
    else:
        extra = {"update_proj_gap": 1} if method == "galore" else {}
        ad = peftzoo.attach(model, method, train=["classifier"], **config, **extra)
        opt = ad.make_optimizer(1e-4)
        predicted = ad.optimizer_state_count()
    g = torch.Generator().manual_seed(0)
    batch = {"input_ids": torch.randint(1000, 20000, (2, 16), generator=g), "labels": torch.tensor([0, 1])}
    for _ in range(steps):
        ad.model(**batch).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    elements, nbytes = state_of(opt)
    if elements != predicted:
        raise AssertionError(f"{method} {config}: measured {elements} state elements, predicted {predicted}")
    return {"method": method, "config": config, "trainable": ad.num_trainable(), "state_elements": elements,
            "state_bytes": nbytes}


def main():
    import torch
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging

    from peftzoo.bench.models import default_model
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--out", default="results/speed/galore_memory.json")
    a = ap.parse_args()
    logging.set_verbosity_error()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    base = AutoModelForSequenceClassification.from_pretrained(default_model(), num_labels=2)
    rows = [{"label": label, **measure(base, m, cfg, a.steps)} for label, m, cfg in ROWS]
    full = rows[0]["state_bytes"]
    print(f"{'':64s} {'trainable':>12s} {'state elements':>15s} {'state MiB':>10s} {'/ full FT':>9s}")
    for r in rows:
        print(f"{r['label']:64s} {r['trainable']:12,d} {r['state_elements']:15,d} "
              f"{r['state_bytes'] / 2**20:10.2f} {r['state_bytes'] / full:9.3f}")
    res = {"model": "all-MiniLM-L6-v2 (embedded), float32, 2 labels, classifier trained", "steps": a.steps,
           "rows": rows, "command": f"python benchmarks/galore_memory.py --steps {a.steps}"}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
