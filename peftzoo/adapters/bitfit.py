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

from torch import nn

from peftzoo.adapters.own import OwnTensors
from peftzoo.adapters.base import AdapterConfig, count_train, find_train
from peftzoo.adapters.layer import AdapterLayer
from peftzoo.adapters.info import MethodInfo
from peftzoo.inject import LINEAR_TYPES, find_targets
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
class BitFit(OwnTensors):
    name = "bitfit"
    config_cls = BitFitConfig
    # LR grid: the authors' repository runs BitFit at 1e-3 (full fine-tuning at 1e-5); no budget knob: one point per
    # model and target set
    info = MethodInfo(paper="Ben Zaken et al. 2022, arXiv:2106.10199", equation="W x + b, only the biases b trained",
                      formula="d_out", default_lr=1e-3, lr_grid=(3e-4, 1e-3, 3e-3, 1e-2))

    def __init__(self, model: nn.Module, config: BitFitConfig):
        super().__init__(model, config)
        train = find_train(model, config)
        self.biases = biases(model, config, train)
        self.freeze_base(train)
        self.tensors = self.biases
        self.keep()  # the biases as attached (Σ d_out elements): what disable_adapter() and unload(merge=False) give
        for b in self.biases.values():
            b.requires_grad_(True)

    @classmethod
    def count(cls, model, config):
        train = find_train(model, config)
        return sum(b.numel() for b in biases(model, config, train).values()) + count_train(train)

    def roles(self):
        return {"bias": list(self.biases.values())}

    def save_peft(self, path):
        raise NotImplementedError("bitfit has no Hugging Face PEFT equivalent (PEFT trains biases only beside "
                                  "another adapter, through its bias='all' option): save it with ad.save(path), "
                                  "peftzoo's format, and load it with peftzoo.load(model, path)")
