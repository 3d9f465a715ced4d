"""LoRA (Hu et al. 2021, arXiv:2106.09685), rsLoRA (Kalajdzievski 2023, arXiv:2312.03732) and
LoRA+ (Hayou et al. 2024, arXiv:2402.12354).

    y = W x + b + s · B A dropout(x),   A ∈ R^{r×d_in} (Kaiming-uniform, a=√5),  B ∈ R^{d_out×r} (zeros)
    LoRA:   s = α / r          rsLoRA: s = α / √r          LoRA+: LoRA, with B's learning rate = lr × ratio

Trainable elements per adapted layer: r · (d_in + d_out).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from peftzoo.adapters.base import AdapterConfig, AdapterLayer
from peftzoo.adapters.fused import lowrank_linear
from peftzoo.adapters.layered import LayerAdapter


@dataclass
class LoraConfig(AdapterConfig):
    r: int = 8  # rank of the update: trainable elements grow linearly with it
    alpha: float = 16.0  # scale numerator: the update is multiplied by alpha / r (rsLoRA: alpha / sqrt(r))
    dropout: float = 0.0  # dropout on the adapter's input only; 0 enables the fused fast path

    def scaling(self) -> float:
        return self.alpha / self.r


@dataclass
class RsLoraConfig(LoraConfig):
    def scaling(self) -> float:  # rank-stabilised: the update's scale stays O(1) as r grows
        return self.alpha / math.sqrt(self.r)


@dataclass
class LoraPlusConfig(LoraConfig):
    lr_ratio: float = 16.0  # B's learning rate / A's: Hayou et al. show B should learn faster (ratio ~ 2^4)


class LoraLayer(AdapterLayer):
    peft_names = {"A": "lora_A.weight", "B": "lora_B.weight"}

    def __init__(self, name: str, base: nn.Linear, config: LoraConfig, shared, gen: torch.Generator):
        super().__init__(base)
        w = base.weight
        self.scaling = config.scaling()
        self.A = nn.Parameter(torch.empty(config.r, self.in_features, dtype=w.dtype))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5), generator=gen)
        self.A.data = self.A.data.to(w.device)
        self.B = nn.Parameter(torch.zeros(self.out_features, config.r, dtype=w.dtype, device=w.device))
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else None

    @classmethod
    def check(cls, name, base, config):
        r, lim = config.r, min(base.in_features, base.out_features)
        if not isinstance(r, int) or r < 1 or r > lim:
            raise ValueError(f"r={r} does not fit layer {name!r} ({base.in_features}->{base.out_features}): "
                             f"need 1 <= r <= min(d_in, d_out) = {lim}")
        if not 0.0 <= config.dropout < 1.0:
            raise ValueError(f"dropout={config.dropout} must be in [0, 1)")

    @classmethod
    def count(cls, name, in_features, out_features, config):
        return config.r * (in_features + out_features)

    def roles(self):
        return {"A": [self.A], "B": [self.B]}

    def delta_weight(self):
        return (self.B @ self.A) * self.scaling

    def forward(self, x):
        if self.merged:
            return self.base(x)
        if self.dropout is None:
            return lowrank_linear(x, self.base, self.A, self.B, self.scaling)
        return self.base(x) + (self.dropout(x) @ self.A.t() @ self.B.t()) * self.scaling


class Lora(LayerAdapter):
    name = "lora"
    config_cls = LoraConfig
    layer_cls = LoraLayer
    peft_type = "LORA"
    default_lr = 5e-4
    default_lr_grid = (1e-4, 3e-4, 1e-3, 3e-3)  # ~10x full fine-tuning's (LoRA paper: 4e-4..5e-4 on RoBERTa-base)
    budget_knob = "r"
    paper = "Hu et al. 2021, arXiv:2106.09685"
    equation = "W x + (α/r)·B A x"
    formula = "r·(d_in + d_out)"

    @classmethod
    def peft_config(cls, config: LoraConfig) -> dict:
        return {"r": config.r, "lora_alpha": config.alpha, "lora_dropout": config.dropout,
                "use_rslora": isinstance(config, RsLoraConfig), "use_dora": False, "init_lora_weights": True}

    @classmethod
    def accepts_peft(cls, peft: dict) -> bool:
        return (peft.get("peft_type") == "LORA" and not peft.get("use_dora")
                and bool(peft.get("use_rslora")) == issubclass(cls.config_cls, RsLoraConfig))

    @classmethod
    def from_peft_config(cls, peft: dict) -> dict:
        return {"r": int(peft["r"]), "alpha": float(peft.get("lora_alpha", 8)),
                "dropout": float(peft.get("lora_dropout", 0.0))}


class RsLora(Lora):
    name = "rslora"
    config_cls = RsLoraConfig
    paper = "Kalajdzievski 2023, arXiv:2312.03732"
    equation = "W x + (α/√r)·B A x"


class LoraPlus(Lora):
    name = "loraplus"
    config_cls = LoraPlusConfig
    paper = "Hayou et al. 2024, arXiv:2402.12354"
    equation = "LoRA; lr(B) = ratio·lr(A)"
    default_lr_grid = (3e-5, 1e-4, 3e-4, 1e-3)  # the base LR is A's; B trains at ratio (16) x it

    @classmethod
    def validate(cls, config):
        if config.lr_ratio <= 0:
            raise ValueError(f"lr_ratio={config.lr_ratio} must be > 0")

    def lr_scales(self):
        return {"B": self.config.lr_ratio}

    @classmethod
    def accepts_peft(cls, peft: dict) -> bool:
        return False  # a PEFT LoRA file loads as "lora": LoRA+ changes training, not the saved adapter
