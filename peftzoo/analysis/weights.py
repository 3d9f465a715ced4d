"""Where (W₀, ΔW) pairs come from: an adapter on a base model (peftzoo's format or PEFT's), or two full checkpoints.

An adapter's ΔW is read by merging it, for every method alike: the model is cast to float64 first, the weights of
its ``nn.Linear`` modules are copied, the adapter is loaded and merged, and ΔW = W_merged − W₀ (float64, so the
subtraction loses nothing of ΔW even when it is 10⁻⁵ of W). Layers whose weight did not change are not adapted;
the adapter's ``train`` modules (e.g. the classifier, trained in full from a fresh initialisation) are left out.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn


@dataclass
class LayerDelta:
    W: torch.Tensor  # the pre-trained weight W₀ (d_out × d_in)
    dW: torch.Tensor  # the update: fine-tuned weight = W₀ + ΔW


def linear_weights(model: nn.Module) -> dict[str, nn.Linear]:
    return {n: m for n, m in model.named_modules() if n and isinstance(m, nn.Linear)}


def adapter_format(path) -> str:
    """'peftzoo' or 'peft' from the files in the adapter folder; a clear error for anything else."""
    path = Path(path)
    if (path / "peftzoo.json").is_file():
        return "peftzoo"
    if (path / "adapter_config.json").is_file():
        return "peft"
    if not path.exists():
        raise FileNotFoundError(f"adapter folder {path} does not exist")
    raise FileNotFoundError(f"{path} is neither a peftzoo adapter (peftzoo.json) nor a PEFT adapter "
                            "(adapter_config.json)")


def recorded_base(path) -> tuple[str | None, int | None]:
    """(name or path, num_labels) of the base model an adapter folder records, where it does: peftzoo.json's
    ``base_model`` (``name_or_path``, ``num_labels``), PEFT's ``base_model_name_or_path``."""
    import json
    for name in ("peftzoo.json", "adapter_config.json"):
        try:
            meta = json.loads((Path(path) / name).read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(meta, dict):
            continue
        base = meta.get("base_model")
        if isinstance(base, dict) and (base.get("name_or_path") or base.get("num_labels")):
            return base.get("name_or_path"), base.get("num_labels")
        if meta.get("base_model_name_or_path"):
            return str(meta["base_model_name_or_path"]), None
    return None, None


def misfit(model: nn.Module, path, problem: Exception) -> ValueError:
    """The adapter at ``path`` does not load onto ``model``: say which model was analysed, the base the adapter
    records (if any) and how to analyse it on the right one."""
    cfg = getattr(model, "config", None)
    name = getattr(cfg, "_name_or_path", "") or type(model).__name__
    base, saved_labels = recorded_base(path)
    labels = getattr(cfg, "num_labels", None)
    recorded = (f"; the adapter records base model {base!r}" if base else
                "; the adapter does not record its base model's name or path")
    if saved_labels:
        recorded += f" with {saved_labels} labels"
    head = f" (this model's head has {labels} labels)" if labels else ""
    n = saved_labels if saved_labels else "N"
    return ValueError(f"adapter {path} cannot be loaded onto the model analysed, {name}{recorded}: {problem}. Analyse "
                      f"it on the model it was trained from: --model {base or 'BASE'}, and --num-labels {n} if its "
                      f"classification head had another size{head}")


def adapter_deltas(model: nn.Module, path) -> tuple[dict[str, LayerDelta], dict]:
    """(W₀, ΔW) for every nn.Linear the adapter at ``path`` changes, and a description of the adapter.

    ``model`` is the base model the adapter was trained on; it is cast to float64 and the adapter is attached and
    merged into it (pass a copy if you need it untouched).
    """
    from peftzoo.io import load, load_peft
    fmt = adapter_format(path)
    model.double()
    lin = linear_weights(model)
    if not lin:
        raise ValueError("the model has no nn.Linear layer to analyse")
    w0 = {n: m.weight.detach().clone() for n, m in lin.items()}
    try:
        ad = (load if fmt == "peftzoo" else load_peft)(model, path)
    except (ValueError, TypeError) as e:
        raise misfit(model, path, e) from e
    with torch.no_grad():
        ad.merge()
    trained = {id(m) for mod in ad.train_modules.values() for m in mod.modules()}  # trained in full, not adapted
    out = {}
    for n, m in lin.items():
        if id(m) in trained:
            continue
        d = m.weight.detach() - w0[n]
        if torch.any(d != 0):
            out[n] = LayerDelta(w0[n], d)
    if not out:
        raise ValueError(f"adapter {path} changes no nn.Linear weight of the model (ΔW = 0 everywhere, e.g. an "
                         "untrained LoRA whose B is still zero)")
    return out, {"path": str(path), "format": fmt, "method": ad.name, "config": ad.config.to_dict(),
                 "adapted_layers": len(out)}


def checkpoint_deltas(base: nn.Module, finetuned: nn.Module) -> tuple[dict[str, LayerDelta], dict]:
    """(W₀, W₁ − W₀) for every nn.Linear the two models share by name; a clear error for models that differ."""
    b, f = linear_weights(base), linear_weights(finetuned)
    common = [n for n in b if n in f]
    if not common:
        raise ValueError("the two checkpoints share no nn.Linear module name: they are different architectures")
    missing = [n for n in b if n not in f]
    if missing:
        raise ValueError(f"the fine-tuned checkpoint lacks {len(missing)} nn.Linear module(s) of the base, e.g. "
                         f"{missing[0]!r}: they are different architectures")
    out = {}
    for n in common:
        w0, w1 = b[n].weight.detach().double(), f[n].weight.detach().double()
        if w0.shape != w1.shape:
            raise ValueError(f"{n!r} has shape {tuple(w0.shape)} in the base but {tuple(w1.shape)} in the fine-tuned "
                             "checkpoint: they are different models")
        d = w1 - w0
        if torch.any(d != 0):
            out[n] = LayerDelta(w0, d)
    if not out:
        raise ValueError("the two checkpoints have identical nn.Linear weights (ΔW = 0 everywhere)")
    extra = [n for n in f if n not in b]
    return out, {"format": "checkpoints", "method": "full", "adapted_layers": len(out),
                 "unchanged_layers": len(common) - len(out), "ignored_finetuned_only": extra}
