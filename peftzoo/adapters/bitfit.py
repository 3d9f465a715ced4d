"""BitFit: bias-terms fine-tuning (Ben Zaken et al. 2022, arXiv:2106.10199).

    y = W x + b,   only b trained (W frozen), for every target layer; with ``layer_norm``, also the bias β of
    every LayerNorm  LN(x) = γ ⊙ (x − μ)/σ + β  outside the ``train`` modules

The paper trains every bias of the encoder (attention, feed-forward and LayerNorm): ``targets="all-linear",
layer_norm=True``; its subset variant (query and first feed-forward biases) is ``targets=["query",
"intermediate.dense"]``. ``targets="all-linear"`` (the default) means every linear layer that has a bias (LLaMA-style
bias-free projections are skipped; none at all is an error); a layer named explicitly must have one.

Nothing is added to the model: the trained tensors are the model's own biases (``trains_model_tensors``), so
``merge``/``unmerge`` have nothing to fold and are no-ops, and the saved adapter is the trained biases (peftzoo's
format). Hugging Face PEFT has no BitFit (its ``bias="all"`` trains biases only beside another adapter), so
``save_peft`` refuses. There is no budget knob: BitFit is one point per model and target set.

Trainable elements: Σ d_out over the target layers (+ Σ width over the LayerNorms with ``layer_norm``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from peftzoo.adapters import lifecycle
from peftzoo.adapters.base import Adapter, AdapterConfig, AdapterLayer, count_train, find_train
from peftzoo.adapters.info import MethodInfo
from peftzoo.inject import LINEAR_TYPES, find_targets
from peftzoo.io import copy_checked
from peftzoo.registry import register

LAYER_TYPES = (*LINEAR_TYPES, nn.Conv1d, nn.Conv2d, nn.Conv3d)  # layers whose bias BitFit trains


@dataclass
class BitFitConfig(AdapterConfig):
    targets: Any = "all-linear"  # layers whose bias is trained: every linear layer with a bias, or named ones
    layer_norm: bool = False  # also train every nn.LayerNorm's bias (the paper's full BitFit: True)


def biases(model: nn.Module, config: BitFitConfig, train: dict) -> dict[str, nn.Parameter]:
    """The biases BitFit trains, by module name (module + ".bias"): the targets', then the LayerNorms'."""
    found = find_targets(model, config.targets, skip=train, layer_types=(AdapterLayer,), base_types=LAYER_TYPES,
                         method="bitfit")
    if config.targets == "all-linear":
        found = {n: m for n, m in found.items() if m.bias is not None}
        if not found:
            raise ValueError("targets='all-linear': no linear layer of the model has a bias, so BitFit has nothing "
                             "to train (e.g. LLaMA's projections are bias-free)")
    missing = [n for n, m in found.items() if m.bias is None]
    if missing:
        raise ValueError(f"target {missing[0]!r} has no bias ({type(found[missing[0]]).__name__} with bias=False; "
                         f"{len(missing)} such target(s)): BitFit trains bias terms only; target layers with a bias, "
                         "or use targets='all-linear' (every linear layer that has one)")
    mods = list(found.items())
    if config.layer_norm:
        held = {id(p) for m in train.values() for p in m.parameters()}
        mods += [(n, m) for n, m in model.named_modules()
                 if isinstance(m, nn.LayerNorm) and m.bias is not None and id(m.bias) not in held]
    out, seen = {}, set()
    for n, m in mods:  # a bias shared by two modules is trained (and counted) once
        if id(m.bias) not in seen:
            seen.add(id(m.bias))
            out[f"{n}.bias"] = m.bias
    return out


@register
class BitFit(Adapter):
    name = "bitfit"
    config_cls = BitFitConfig
    trains_model_tensors = True  # the trained tensors are the model's own: merge/unmerge have nothing to fold
    # LR grid: the authors' repository runs BitFit at 1e-3 (full fine-tuning at 1e-5); no budget knob: one point per
    # model and target set
    info = MethodInfo(paper="Ben Zaken et al. 2022, arXiv:2106.10199", equation="W x + b, only the biases b trained",
                      formula="d_out", default_lr=1e-3, lr_grid=(3e-4, 1e-3, 3e-3, 1e-2))
    guards_save_pretrained = False  # the trained biases are the model's own: save_pretrained writes the trained model

    def __init__(self, model: nn.Module, config: BitFitConfig):
        super().__init__(model, config)
        train = find_train(model, config)
        self.biases = biases(model, config, train)
        self.freeze_base(train)
        # the biases as attached (Σ d_out elements): what disable_adapter() and unload(merge=False) give back
        self._initial = {k: b.detach().clone() for k, b in self.biases.items()}
        self._trained: dict[str, torch.Tensor] | None = None  # the trained biases while the update is off
        for b in self.biases.values():
            b.requires_grad_(True)

    @classmethod
    def count(cls, model, config):
        train = find_train(model, config)
        return sum(b.numel() for b in biases(model, config, train).values()) + count_train(train)

    def roles(self):
        return {"bias": list(self.biases.values())}

    def state(self):
        return {k: b.detach() for k, b in self.biases.items()}

    def load_state(self, tensors):
        missing, extra = sorted(set(self.biases) - set(tensors)), sorted(set(tensors) - set(self.biases))
        if missing or extra:
            raise ValueError(f"BitFit file does not fit this model: missing {missing[:3]}, unexpected {extra[:3]}")
        for k, b in self.biases.items():
            copy_checked(b, tensors[k], k)

    def initialize(self):
        """Nothing to do: the trained biases are the model's own and come with its weights."""

    def merge(self):
        """A no-op: the trained biases already are the model's (twice is a no-op too)."""
        lifecycle.refuse_while_off(self, "merge")
        self._merged = True

    def unmerge(self):
        """A no-op: there is no separate update to take out of the model."""
        lifecycle.refuse_while_off(self, "unmerge")
        self._merged = False

    @property
    def merged(self) -> bool:
        """Whether merge() was called last; the outputs are the same either way (nothing is folded)."""
        return getattr(self, "_merged", False)

    @torch.no_grad()
    def enable_update(self, on: bool) -> None:
        """Off: the biases as attached (the trained ones kept aside); on: the trained biases back."""
        if not on and self._trained is None:
            self._trained = {k: b.detach().clone() for k, b in self.biases.items()}
            for k, b in self.biases.items():
                b.copy_(self._initial[k])
        elif on and self._trained is not None:
            for k, b in self.biases.items():
                b.copy_(self._trained[k])
            self._trained = None

    @torch.no_grad()
    def unload_model(self, merge: bool) -> nn.Module:
        """The model itself: with its trained biases (``merge``), or with the biases it had when attached."""
        if not merge:
            for k, b in self.biases.items():
                b.copy_(self._initial[k])
        return self.model

    def save_peft(self, path):
        raise NotImplementedError("bitfit has no Hugging Face PEFT equivalent (PEFT trains biases only beside "
                                  "another adapter, through its bias='all' option): save it with ad.save(path), "
                                  "peftzoo's format, and load it with peftzoo.load(model, path)")
