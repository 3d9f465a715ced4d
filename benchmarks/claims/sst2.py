"""Small SST-2 runs on the embedded all-MiniLM-L6-v2 for the claims, each analysed with peftzoo.analysis.

One run = one method (LoRA at rank r, or full fine-tuning) x one seed on the first ``MAX_TRAIN`` examples of the
quick preset's subset; its analysis JSON is cached under ``work/`` so a rerun only trains what is missing.
"""
from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from peftzoo.analysis import AnalysisConfig, GradientRank, analyze_adapter, analyze_checkpoints
from peftzoo.bench.store import write_text


@dataclass(frozen=True)
class Setup:
    max_train: int = 320  # half the quick preset's SST-2 cap: 40 steps, a run is ~1.5 min on a busy 2-core CPU
    max_eval: int = 400  # dev examples scored (the quick preset's)
    epochs: int = 2
    batch_size: int = 16
    max_len: int = 64
    lora_lr: float = 2e-3  # the quick preset's LoRA learning rate (α = 16)
    full_lr: float = 5e-5  # the quick preset's full fine-tuning learning rate
    alpha: float = 16.0
    targets: tuple = ("query", "value")
    grad_every: int = 5  # GradientRank records ∇W every this many steps (full fine-tuning only)

    def describe(self) -> str:
        return (f"all-MiniLM-L6-v2, SST-2 ({self.max_train} train / {self.max_eval} dev), {self.epochs} epochs, "
                f"batch {self.batch_size}, LoRA on {'+'.join(self.targets)} α={self.alpha:g} lr {self.lora_lr:g}, "
                f"full FT lr {self.full_lr:g}")


CFG = AnalysisConfig(threads=1, max_dim=64)


def _encode(tok, split, idx, max_len):
    """Fixed batches padded to their longest example (the first-wave runner's encoding these claims were run with)."""
    cols = list(zip(*[split.texts[i] for i in idx]))
    return dict(tok(*cols, truncation=True, max_length=max_len, padding=True, return_tensors="pt"))


def _data(setup: Setup, data_dir):
    from peftzoo.bench.models import load_model
    from peftzoo.bench.runner import load_splits
    from peftzoo.bench.tasks import get_task
    task = get_task("SST-2")
    data = load_splits(task.name, str(data_dir) if data_dir else None)
    model, tok = load_model(None, task)
    tr = data["train"]
    idx = np.random.default_rng(0).permutation(len(tr.labels))[: setup.max_train]  # the bench runner's subset
    batches = []
    for i in range(0, len(idx), setup.batch_size):
        b = _encode(tok, tr, idx[i:i + setup.batch_size], setup.max_len)
        b["labels"] = torch.as_tensor(tr.labels[idx[i:i + setup.batch_size]])
        batches.append(b)
    dev = data["dev"]
    n = min(setup.max_eval, len(dev.labels))
    evals = [(_encode(tok, dev, range(i, min(n, i + 128)), setup.max_len), dev.labels[i:min(n, i + 128)])
             for i in range(0, n, 128)]
    return model, batches, evals


def _accuracy(model, evals) -> float:
    right = total = 0
    with torch.no_grad():
        for b, y in evals:
            right += int((model(**b).logits.argmax(-1).numpy() == y).sum())
            total += len(y)
    return right / total


def run(method: str, seed: int, rank: int | None, setup: Setup, work: Path, data_dir=None) -> dict:
    """Train (or read the cache) and return {"score", "analysis", "adapter" (LoRA), "grad_rank" (full)}."""
    import peftzoo
    from peftzoo.adapters.base import AdapterConfig
    from peftzoo.adapters.baselines import FullFinetune
    from peftzoo.bench.train import fit
    name = f"{method}{'-r' + str(rank) if rank else ''}-s{seed}"
    cache = work / f"{name}.json"
    if cache.is_file():  # compare as JSON: a tuple comes back from the cache as a list
        cached = json.loads(cache.read_text())
        if cached.get("setup") == json.loads(json.dumps(asdict(setup))):
            return cached
    torch.manual_seed(seed)
    model, batches, evals = _data(setup, data_dir)
    order = np.random.default_rng(seed)
    probe = None
    if method == "full":
        base = copy.deepcopy(model)
        ad, lr = FullFinetune(model, AdapterConfig(train=["classifier"])), setup.full_lr
        probe = GradientRank(every=setup.grad_every)
    else:
        ad = peftzoo.attach(model, method, targets=list(setup.targets), r=rank, alpha=setup.alpha,
                            train=["classifier"], seed=seed)
        lr = setup.lora_lr
    res = fit(ad, lambda e: [batches[j] for j in order.permutation(len(batches))], setup.epochs, lr,
              callbacks=[probe] if probe else ())
    ad.model.eval()
    out = {"name": name, "method": method, "rank": rank, "seed": seed, "setup": asdict(setup),
           "score": _accuracy(ad.model, evals), "train_s": res.wall_s, "steps": res.steps}
    if method == "full":
        out["analysis"] = analyze_checkpoints(base.bert, model.bert, CFG)
        out["grad_rank"] = probe.summary()
        out["grad_rank_layers"] = probe.records
    else:
        path = work / "adapters" / name
        ad.save(path)
        out["adapter"] = str(path)
        fresh, _, _ = _data(setup, data_dir)
        out["analysis"] = analyze_adapter(fresh, path, config=CFG)
    write_text(cache, json.dumps(out))
    return out


def compare(a: dict, b: dict, setup: Setup, data_dir=None) -> dict:
    """φ between two LoRA runs' ΔW (right and left singular vectors), per layer."""
    out = {}
    for side in ("right", "left"):
        model, _, _ = _data(setup, data_dir)
        cfg = AnalysisConfig(threads=1, max_dim=64, phi_side=side)
        out[side] = analyze_adapter(model, a["adapter"], compare=b["adapter"], config=cfg)["compare"]["similarity"]
    return out
