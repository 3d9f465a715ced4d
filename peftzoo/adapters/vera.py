"""VeRA: vector-based random matrix adaptation (Kopiczko et al. 2024, arXiv:2310.11454).

    y = W x + b + λ_b ⊙ B_ℓ (λ_d ⊙ A_ℓ x)

One frozen pair A ∈ R^{r × max d_in}, B ∈ R^{max d_out × r}, Kaiming-uniform from ``projection_seed`` (PEFT's
``projection_prng_key``), is shared by every adapted layer; layer ℓ uses the slices A_ℓ = A[:, :d_in],
B_ℓ = B[:d_out, :]. Trained per layer: λ_d ∈ R^r (init ``d_initial``) and λ_b ∈ R^{d_out} (init 0).
r may exceed a layer's dimensions (the paper uses r = 1024 on 768-wide RoBERTa-base).

Trainable elements per adapted layer: r + d_out. The shared projections are frozen buffers (count 0) and are
saved as their seed, not as matrices.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from peftzoo.adapters.base import AdapterConfig
from peftzoo.adapters.layer import AdapterLayer
from peftzoo.adapters.fused import many_rows
from peftzoo.adapters.info import MethodInfo
from peftzoo.adapters.layered import LayerAdapter, LayerCodec
from peftzoo.inject import LINEAR_TYPES, layer_dims
from peftzoo.io import copy_checked
from peftzoo.registry import register


@dataclass
class VeraConfig(AdapterConfig):
    r: int = 256  # rank of the shared random projections; trainable count grows only by r per layer
    d_initial: float = 0.1  # initial value of every λ_d (the paper's default)
    projection_seed: int = 0  # seeds the shared frozen A, B (PEFT's projection_prng_key): the file stores this
    dropout: float = 0.0  # dropout on the adapter's input only


def kaiming_uniform(shape: tuple[int, int], gen: torch.Generator) -> torch.Tensor:
    """PEFT's VeRA initialisation: U(-√(6/fan_in), √(6/fan_in)), fan_in = shape[1]."""
    bound = math.sqrt(3.0) * math.sqrt(2) / math.sqrt(shape[1])
    return torch.empty(shape).uniform_(-bound, bound, generator=gen)


class VeraShared(nn.Module):
    """The frozen projections, one module registered under every layer (moved once by ``.to``)."""

    def __init__(self, r: int, max_in: int, max_out: int, seed: int, dtype, device):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("A", kaiming_uniform((r, max_in), gen).to(dtype=dtype, device=device), persistent=False)
        self.register_buffer("B", kaiming_uniform((max_out, r), gen).to(dtype=dtype, device=device), persistent=False)


class VeraLayer(AdapterLayer):
    peft_names = {"lambda_b": "vera_lambda_b", "lambda_d": "vera_lambda_d"}

    def __init__(self, name, base, config: VeraConfig, shared: VeraShared, gen):
        super().__init__(base, config.dropout)
        w = base.weight
        self.shared = shared
        self.lambda_d = nn.Parameter(torch.full((config.r,), float(config.d_initial), dtype=w.dtype, device=w.device))
        self.lambda_b = nn.Parameter(torch.zeros(self.out_features, dtype=w.dtype, device=w.device))

    @classmethod
    def check(cls, name, base, config):
        if not isinstance(config.r, int) or config.r < 1:
            raise ValueError(f"r={config.r} must be a positive integer")

    @classmethod
    def count(cls, name, in_features, out_features, config):
        return config.r + out_features

    def roles(self):
        return {"lambda_d": [self.lambda_d], "lambda_b": [self.lambda_b]}

    def projections(self):
        return self.shared.A[:, : self.in_features], self.shared.B[: self.out_features]

    def delta_weight(self):
        A, B = self.projections()
        return (self.lambda_b.unsqueeze(1) * B) @ (self.lambda_d.unsqueeze(1) * A)

    def adapted(self, x):
        A, B = self.projections()
        if self.dropout is None and many_rows(x, self):
            # the activations outweigh the weight (as for LoRA's fused path): one matmul with W + ΔW replaces the
            # base and the two rank-r ones, at the price of building ΔW and its (d_out × d_in) gradient
            return nn.functional.linear(x, self.base_weight() + self.delta_weight(), self.base.bias)
        return self.base(x) + self.lambda_b * ((self.lambda_d * (self.drop(x) @ A.t())) @ B.t())


class VeraCodec(LayerCodec):
    peft_type = "VERA"

    def to_peft(self, config):
        return {"r": config.r, "d_initial": config.d_initial, "projection_prng_key": config.projection_seed,
                "save_projection": False, "vera_dropout": config.dropout, "init_weights": True}

    def from_peft(self, cfg):
        return {"r": int(cfg["r"]), "d_initial": float(cfg.get("d_initial", 0.1)),
                "projection_seed": int(cfg.get("projection_prng_key", 0)),
                "dropout": float(cfg.get("vera_dropout", 0.0))}

    def load_state(self, ad, tensors):
        """PEFT saves the shared projections too (save_projection=True, its default): load them, exactly."""
        used = super().load_state(ad, tensors)
        for k in ("A", "B"):
            key = f"base_model.vera_{k}"
            if key in tensors:
                copy_checked(getattr(ad.shared, k), tensors[key], key)
                used.add(key)
        return used


@register
class Vera(LayerAdapter):
    name = "vera"
    config_cls = VeraConfig
    layer_classes = dict.fromkeys(LINEAR_TYPES, VeraLayer)  # PEFT adapts only linear layers with VeRA
    peft = VeraCodec()
    # LR grid: the paper's RoBERTa-base GLUE LRs are 4e-3..1e-2; its GLUE setting r = 1024 (query, value)
    info = MethodInfo(paper="Kopiczko et al. 2024, arXiv:2310.11454",
                      equation="W x + λ_b ⊙ B(λ_d ⊙ A x), A, B shared, frozen", formula="r + d_out",
                      default_lr=1e-2, lr_grid=(1e-3, 3e-3, 1e-2, 3e-2), budget_knob="r", paper_hparams={"r": 1024})

    @classmethod
    def make_shared(cls, targets, config):
        lin = next(iter(targets.values()))
        dims = [layer_dims(m) for m in targets.values()]
        return VeraShared(config.r, max(d[0] for d in dims), max(d[1] for d in dims), config.projection_seed,
                          lin.weight.dtype, lin.weight.device)

    def extra_state(self):
        return {"projection_seed": self.config.projection_seed}
