"""Saving and loading adapters: peftzoo's own format and Hugging Face PEFT's, both directions.

Own format (a folder): ``adapter.safetensors`` (adapter tensors + ``train`` modules under ``train.``) and
``peftzoo.json`` (method, config, extra state, counts). No base weights.

PEFT format: ``adapter_config.json`` + ``adapter_model.safetensors`` with keys ``base_model.model.<module>.<tensor>``,
which ``peft.PeftModel.from_pretrained`` loads; the ``train`` modules travel as ``modules_to_save``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file, save_file

from peftzoo import registry
from peftzoo._atomic import dumps, write_bytes
from peftzoo.inject import find_modules, transaction

if TYPE_CHECKING:
    from peftzoo.adapters.base import Adapter

FORMAT = 1
TRAIN = "train."
PEFT_PREFIX = "base_model.model."  # PEFT's key prefix: base_model.model.<module>.<tensor>
# PEFT features we do not implement: loading them silently would give different outputs.
# (fan_in_fan_out is not among them: PEFT sets it per layer from the layer's type, and so do we.)
PEFT_UNSUPPORTED = {"layers_to_transform": None, "layer_replication": None,
                    "target_parameters": None, "trainable_token_indices": None, "alpha_pattern": {},
                    "exclude_modules": None, "lora_bias": False}


def copy_checked(dst: torch.Tensor, src: torch.Tensor, name: str) -> None:
    """Copy ``src`` into ``dst`` or raise a ValueError naming the tensor and both shapes."""
    if tuple(dst.shape) != tuple(src.shape):
        raise ValueError(f"adapter tensor {name!r} has shape {tuple(src.shape)} but the model needs "
                         f"{tuple(dst.shape)}: the adapter was made for a different model or configuration")
    with torch.no_grad():
        dst.copy_(src.to(dtype=dst.dtype, device=dst.device))


def _attach(model, method: str, **config) -> Adapter:
    """The adapter of ``method`` on ``model`` (the caller holds the transaction that undoes it on error)."""
    return registry.get(method)(model, registry.make_config(method, **config))


def _write_json(path: Path, obj) -> None:
    """Strict, sorted, indented JSON, atomically (the adapter files' bytes as they always were: no final newline)."""
    write_bytes(path, dumps(obj).encode())


def _contiguous(d: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in d.items()}


def _train_tensors(ad: Adapter, prefix: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}{m}.{k}": v for m, mod in ad.train_modules.items() for k, v in mod.state_dict().items()}


def _load_train(ad: Adapter, tensors: dict[str, torch.Tensor], prefix: str) -> set[str]:
    """Copy the ``train`` modules' tensors from the file; returns the keys used."""
    used = set()
    for m, mod in ad.train_modules.items():
        for k, v in mod.state_dict().items():
            key = f"{prefix}{m}.{k}"
            if key not in tensors:
                raise ValueError(f"adapter file lacks {key!r} of the fully trained module {m!r}")
            copy_checked(v, tensors[key], key)
            used.add(key)
    return used


def _check_all_used(tensors: dict, used: set, path) -> None:
    """Never ignore a tensor of the file: one that fits nowhere means the model or config differs from the saved."""
    left = sorted(set(tensors) - used)
    if left:
        raise ValueError(f"{path}: {len(left)} tensor(s) of the adapter file fit no adapter layer or train module "
                         f"of this model: {', '.join(left[:5])}{' ...' if len(left) > 5 else ''}")


def _kept_modules(model, train) -> list:
    """The modules a load may write into (the train modules): restored if the load fails."""
    return list(find_modules(model, train).values()) if train else []


def save(ad: Adapter, path) -> None:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {**ad.state(), **_train_tensors(ad, TRAIN)}
    save_file(_contiguous(tensors), str(path / "adapter.safetensors"))
    _write_json(path / "peftzoo.json", {"format": FORMAT, "method": ad.name, "config": ad.config.to_dict(),
                                        "extra": ad.extra_state(), "summary": ad.summary()})


def load(model, path) -> Adapter:
    path = Path(path)
    if not (path / "peftzoo.json").exists():
        hint = " (it looks like a PEFT adapter: use peftzoo.load_peft)" if (path / "adapter_config.json").exists() else ""
        raise FileNotFoundError(f"{path} holds no peftzoo.json{hint}")
    meta = json.loads((path / "peftzoo.json").read_text())
    tensors = load_file(str(path / "adapter.safetensors"))
    with transaction(model, keep=_kept_modules(model, meta["config"].get("train"))):
        ad = _attach(model, meta["method"], **meta["config"])
        ad.load_extra_state(meta.get("extra", {}))
        own = {k: v for k, v in tensors.items() if not k.startswith(TRAIN)}
        ad.load_state(own)
        _check_all_used(tensors, set(own) | _load_train(ad, tensors, TRAIN), path)
    return ad


def _peft_class(ad: Adapter):
    if not hasattr(type(ad), "peft_config"):
        raise NotImplementedError(f"{ad.name} has no Hugging Face PEFT equivalent; use ad.save() instead")
    return type(ad)


def save_peft(ad: Adapter, path) -> None:
    cls = _peft_class(ad)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    targets = ad.config.targets
    if not isinstance(targets, (list, tuple)):  # regex or all-linear: write the exact modules adapted
        targets = "^(" + "|".join(n.replace(".", r"\.") for n in ad.layers) + ")$"
    conv1d = any(getattr(layer, "fan_in_fan_out", False) for layer in ad.layers.values())
    cfg = {"peft_type": cls.peft_type, "task_type": None, "bias": "none", "inference_mode": True,
           "fan_in_fan_out": conv1d, "target_modules": list(targets) if isinstance(targets, (list, tuple)) else targets,
           "modules_to_save": list(ad.config.train) or None,
           "base_model_name_or_path": getattr(getattr(ad.model, "config", None), "_name_or_path", None) or None,
           **cls.peft_config(ad.config)}
    cfg.update(ad.peft_extra_config() if hasattr(ad, "peft_extra_config") else {})
    for key in getattr(cls, "peft_absent", ()):  # fields the method's PEFT config class lacks (PEFT warns on them)
        cfg.pop(key, None)
    tensors = {**ad.peft_state(), **_train_tensors(ad, PEFT_PREFIX)}
    save_file(_contiguous(tensors), str(path / "adapter_model.safetensors"), metadata={"format": "pt"})
    _write_json(path / "adapter_config.json", cfg)


def load_peft(model, path) -> Adapter:
    path = Path(path)
    cfg = json.loads((path / "adapter_config.json").read_text())
    kind = cfg.get("peft_type")
    matches = [c for c in registry.REGISTRY.values() if hasattr(c, "accepts_peft") and c.accepts_peft(cfg)]
    if not matches:
        known = sorted({c.peft_type for c in registry.REGISTRY.values() if getattr(c, "peft_type", "")})
        raise ValueError(f"PEFT adapter type {kind!r} (use_dora={cfg.get('use_dora', False)}) is not supported by "
                         f"peftzoo; supported PEFT types: {', '.join(known)}")
    for key, default in PEFT_UNSUPPORTED.items():
        if cfg.get(key, default) not in (default, None, {}, False):
            raise ValueError(f"PEFT adapter uses {key}={cfg[key]!r}, which peftzoo does not support")
    if cfg.get("bias", "none") != "none":
        raise ValueError(f"PEFT adapter trains biases (bias={cfg['bias']!r}), which peftzoo does not support")
    cls = matches[0]
    targets = cfg["target_modules"]
    train = list(cfg.get("modules_to_save") or [])
    tensors = load_file(str(path / "adapter_model.safetensors"))
    tensors = {k.replace(".default.", ".").removesuffix(".default"): v for k, v in tensors.items()}
    with transaction(model, keep=_kept_modules(model, train)):
        ad = _attach(model, cls.name, targets=targets if isinstance(targets, str) else sorted(targets), train=train,
                    **cls.from_peft_config(cfg))
        used = ad.load_peft_state(tensors)
        _check_all_used(tensors, used | _load_train(ad, tensors, PEFT_PREFIX), path)
    return ad
