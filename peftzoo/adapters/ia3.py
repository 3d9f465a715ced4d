"""(IA)³: infused adapter by inhibiting and amplifying inner activations (Liu et al. 2022, arXiv:2205.05638),
as PEFT 0.21.2.

    y = l ⊙ (W x + b)        on a target layer              (the paper's l_k, l_v: scale the keys, the values)
    y = W (l ⊙ x) + b        on a ``feedforward`` layer     (the paper's l_ff: scale the FFN's hidden activation)

l is one learned vector per layer, initialised to ones (the model is unchanged at the start). Merged, the vector
scales W's rows and b (target) or W's columns (feedforward): W' = diag(l) W, b' = l ⊙ b, or W' = W diag(l).
``unmerge`` divides back (to float rounding; where l = 0 the weights kept before merging are restored exactly).
``feedforward`` is PEFT's ``feedforward_modules``: layer names that *end with* one of its strings (a plain string
suffix, PEFT's rule) or a regex string (full match); listed names must be among ``targets`` as in PEFT, and each
must scale some adapted layer. Convolutions (``nn.Conv2d/3d``, PEFT's) scale output or input channels.

Trainable elements: Σ over adapted layers of d_out (c_out), or d_in (c_in) for a feedforward layer. There is no
size knob: one point per choice of targets.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from peftzoo.adapters.base import AdapterConfig
from peftzoo.adapters.fused import FusedIa3, fusable, many_rows
from peftzoo.adapters.layer import AdapterLayer
from peftzoo.adapters.info import MethodInfo
from peftzoo.adapters.layered import LayerAdapter, LayerCodec
from peftzoo.inject import LINEAR_TYPES
from peftzoo.registry import register


@dataclass
class Ia3Config(AdapterConfig):
    # targets whose input (not output) is scaled: names ending with one of these strings, or a regex (PEFT's
    # feedforward_modules); the paper scales the FFN's hidden activation, i.e. the input of its second linear layer
    feedforward: Any = ()


def is_feedforward(name: str, feedforward) -> bool:
    """PEFT's test: a regex string must match the whole name; a list entry is a plain suffix of it."""
    if isinstance(feedforward, str):
        return re.fullmatch(feedforward, name) is not None
    return any(name.endswith(f) for f in feedforward)


class Ia3Layer(AdapterLayer):
    peft_names = {"scale": "ia3_l"}

    def __init__(self, name, base, config: Ia3Config, shared, gen):
        super().__init__(base)
        self.feedforward = is_feedforward(name, config.feedforward)
        w = base.weight
        self.kernel_dims = w.dim() - 2  # 0 for linear layers
        n = self.in_features if self.feedforward else self.out_features
        # PEFT's layout: (1, d_in) or (d_out, 1) for a linear layer, (1, c, 1, ...) for a convolution
        shape = (1, n, *(1,) * self.kernel_dims) if self.kernel_dims else (1, n) if self.feedforward else (n, 1)
        self.scale = nn.Parameter(torch.ones(shape, dtype=w.dtype, device=w.device))
        self._kept = None  # (W, b) before merge, only when some l = 0 (division cannot give them back)

    @staticmethod
    def dims(base):
        if isinstance(base, (nn.Conv2d, nn.Conv3d)):
            return base.in_channels, base.out_channels
        return AdapterLayer.dims(base)

    @classmethod
    def count(cls, name, in_features, out_features, config):
        return in_features if is_feedforward(name, config.feedforward) else out_features

    def roles(self):
        return {"scale": [self.scale]}

    def vector(self) -> torch.Tensor:
        """l, shaped to broadcast over the channel axis of the scaled activation."""
        return self.scale.reshape(-1, *(1,) * self.kernel_dims)

    def adapted(self, x):
        base = self.base
        if (not self.kernel_dims and fusable(x) and many_rows(x, self) and not base.weight.requires_grad
                and (base.bias is None or not base.bias.requires_grad)):
            return FusedIa3.apply(x, self.base_weight(), base.bias, self.scale, self.feedforward)
        if self.feedforward:
            return self.base(x * self.vector())
        return self.base(x) * self.vector()

    def weight_factor(self) -> torch.Tensor:
        """l shaped to multiply W (as ``base_weight()`` lays it out): its rows, or its columns (feedforward)."""
        v, tail = self.scale.reshape(-1), (1,) * self.kernel_dims
        if not self.feedforward:
            return v.view(-1, 1, *tail)
        g = getattr(self.base, "groups", 1)
        if g == 1:
            return v.view(1, -1, *tail)
        # a grouped conv: the kernels of output group k read input channels k·(c_in/g) ... (k+1)·(c_in/g) - 1
        return v.view(g, 1, -1).expand(g, self.out_features // g, -1).reshape(self.out_features, -1, *tail)

    def has_bias_scale(self) -> bool:
        return not self.feedforward and self.base.bias is not None

    def delta_weight(self):
        w = self._unmerged()[0] if self.merged else self.base_weight()
        return w * (self.weight_factor() - 1)

    def delta_bias(self) -> torch.Tensor | None:
        """b' - b: what merge() adds to the bias (None: the bias is left alone)."""
        if not self.has_bias_scale():
            return None
        b = self._unmerged()[1] if self.merged else self.base.bias
        return b * (self.scale.reshape(-1) - 1)

    @torch.no_grad()
    def merge(self):
        if self.merged:
            return
        w, b, v = self.base_weight(), self.base.bias, self.scale.reshape(-1)
        self._kept = (w.clone(), None if b is None else b.clone()) if bool((v == 0).any()) else None
        self.set_base_weight(w * self.weight_factor())
        if self.has_bias_scale():
            b.data = (b * v).to(b.dtype)
        self.merged = True

    @torch.no_grad()
    def unmerge(self):
        if not self.merged:
            return
        w, b = self._unmerged()
        self.set_base_weight(w)
        if self.has_bias_scale():
            self.base.bias.data = b.to(self.base.bias.dtype)
        self.merged, self._kept = False, None

    def _unmerged(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(W, b) as before merge(), read from the merged ones."""
        if self._kept is not None:
            return self._kept
        b = self.base.bias
        if self.has_bias_scale():
            b = b / self.scale.reshape(-1)
        return self.base_weight() / self.weight_factor(), b


class Ia3Codec(LayerCodec):
    peft_type = "IA3"
    absent = ("bias",)  # a shared field IA3Config lacks (PEFT warns on it)

    def to_peft(self, config):
        ff = config.feedforward
        return {"feedforward_modules": ff if isinstance(ff, str) else list(ff), "init_ia3_weights": True}

    def from_peft(self, cfg):
        ff = cfg.get("feedforward_modules")
        if ff is None:
            raise ValueError("PEFT IA3 adapter without feedforward_modules: PEFT fills it from a per-architecture "
                             "table when it builds the model; set feedforward_modules in adapter_config.json "
                             "(e.g. [] for none)")
        return {"feedforward": ff if isinstance(ff, str) else sorted(ff)}


@register
class Ia3(LayerAdapter):
    name = "ia3"
    config_cls = Ia3Config
    layer_classes = {**dict.fromkeys(LINEAR_TYPES, Ia3Layer), nn.Conv2d: Ia3Layer, nn.Conv3d: Ia3Layer}  # PEFT's
    peft = Ia3Codec()
    # LR grid: T-Few (the paper's recipe) trains l at 3e-3; vectors take large LRs. No size knob: one point per
    # choice of targets
    info = MethodInfo(paper="Liu et al. 2022, arXiv:2205.05638",
                      equation="l ⊙ (W x + b), or W (l ⊙ x) + b on feedforward layers",
                      formula="d_out (d_in on feedforward layers)", default_lr=3e-3, lr_grid=(1e-3, 3e-3, 1e-2, 3e-2))

    @classmethod
    def validate(cls, config: Ia3Config) -> None:
        ff, targets = config.feedforward, config.targets
        if not isinstance(ff, str) and not (isinstance(ff, (list, tuple)) and all(isinstance(f, str) for f in ff)):
            raise ValueError(f"feedforward={ff!r} must be a list of layer-name suffixes or a regex string")
        if not isinstance(ff, str) and not isinstance(targets, str):
            extra = sorted(set(ff) - set(targets))
            if extra:
                raise ValueError(f"feedforward names {extra} are not in targets={list(targets)}: PEFT requires "
                                 "feedforward_modules to be a subset of target_modules; add them to targets")

    @classmethod
    def find(cls, model, config, train):
        found = super().find(model, config, train)
        ff = config.feedforward
        for spec in [ff] if isinstance(ff, str) else [[f] for f in ff]:
            if not any(is_feedforward(n, spec) for n in found):
                what = spec if isinstance(spec, str) else spec[0]
                raise ValueError(f"feedforward {what!r} matches none of the {len(found)} adapted layers (e.g. "
                                 f"{next(iter(found))!r}), so it would scale nothing: a list entry is a plain suffix "
                                 "of a layer name, a string is a regex matching the whole name")
        return found
