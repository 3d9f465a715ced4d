"""LoRA on ``nn.Conv1d`` / ``nn.Conv2d`` / ``nn.Conv3d``, in PEFT's layout: A is a convolution with the base's
kernel, stride and padding and r output channels, B a 1×1 convolution to the base's output channels.

    y = conv(x, W) + b + s · conv₁ₓ₁(conv(dropout(x), A), B),   A ∈ R^{r×c_in×k…} (Kaiming-uniform, a=√5),
                                                                B ∈ R^{c_out×r×1…} (zeros)
    merged: W + ΔW,  ΔW = s · (B₂ A₂) reshaped to W's shape  (B₂ = B as c_out × r, A₂ = A as r × c_in·∏k)

The merged form is exact because B is 1×1 and both convolutions pad with zeros, so the layers this cannot
merge are refused: groups > 1 (PEFT cannot merge them either), dilation ≠ 1 (PEFT's A ignores the base's
dilation), padding_mode ≠ "zeros" (PEFT's A pads with zeros whatever the base does). "pissa"/"olora" are
refused too: PEFT defines them for Linear layers only (on a conv it raises "Unknown initialization").

Trainable elements per adapted layer: r · (c_in · ∏k + c_out).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from peftzoo.adapters.layer import AdapterLayer
from peftzoo.adapters.lora_init import RESIDUAL

CONV_FN = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


class LoraConv(AdapterLayer):
    peft_names = {"A": "lora_A.weight", "B": "lora_B.weight"}

    def __init__(self, name, base, config, shared, gen: torch.Generator):
        super().__init__(base, config.dropout)
        w = base.weight
        self.conv = CONV_FN[w.dim() - 2]
        self.scaling = config.scaling()
        a = torch.empty(config.r, self.in_features, *w.shape[2:], dtype=w.dtype)
        if config.init_lora_weights is True:
            nn.init.kaiming_uniform_(a, a=math.sqrt(5), generator=gen)
        else:  # "gaussian" (check() refused the rest)
            nn.init.normal_(a, std=1 / config.r, generator=gen)
        self.A = nn.Parameter(a.to(w.device))
        self.B = nn.Parameter(torch.zeros(self.out_features, config.r, *(1,) * (w.dim() - 2), dtype=w.dtype,
                                          device=w.device))

    @staticmethod
    def dims(base):
        return base.in_channels, base.out_channels

    @classmethod
    def check(cls, name, base, config):
        kind = type(base).__name__
        if not isinstance(config.r, int) or config.r < 1:
            raise ValueError(f"r={config.r} must be a positive integer")
        if not 0.0 <= config.dropout < 1.0:
            raise ValueError(f"dropout={config.dropout} must be in [0, 1)")
        if config.init_lora_weights in RESIDUAL or config.init_lora_weights is False:  # (False: both random)
            raise ValueError(f"init_lora_weights={config.init_lora_weights!r} is defined for nn.Linear layers only; "
                             f"target {name!r} is a {kind}")
        why = ("groups > 1 (PEFT cannot merge it either)" if base.groups != 1 else
               "dilation != 1" if any(d != 1 for d in base.dilation) else
               f"padding_mode={base.padding_mode!r}" if base.padding_mode != "zeros" else None)
        if why:
            raise ValueError(f"target {name!r} is a {kind} with {why}: a low-rank update of it cannot be merged "
                             "exactly, so peftzoo does not adapt it")

    @classmethod
    def count_layer(cls, name, base, config):
        c_in, c_out = cls.dims(base)
        return config.r * (c_in * math.prod(base.kernel_size) + c_out)

    def roles(self):
        return {"A": [self.A], "B": [self.B]}

    def lowrank_delta(self):
        return (self.B.flatten(1) @ self.A.flatten(1)).view(self.base.weight.shape) * self.scaling

    def delta_weight(self):
        return self.lowrank_delta()

    def update(self, x):
        """s · B(A(dropout(x))): the adapter's share of the output."""
        return self.conv(self.conv(self.drop(x), self.A, None, self.base.stride, self.base.padding), self.B) * self.scaling

    def adapted(self, x):
        return self.base(x) + self.update(x)
