"""DoRA: weight-decomposed low-rank adaptation (Liu et al. 2024, arXiv:2402.09353).

    W' = m ⊙ (W + s·BA) / ‖W + s·BA‖_row,      y = W' x + b
       = (m / ‖W + s·BA‖) ⊙ (W x + s·B(A x)) + b

m ∈ R^{d_out} starts at ‖W‖_row (so W' = W at init); the norm is detached from the graph (paper §4.3), as in PEFT.
The d_out × d_in matrix W + s·BA is never built: with w_i the rows of W,
    ‖w_i + s·(BA)_i‖² = ‖w_i‖² + 2s·⟨(W Aᵀ)_i, B_i⟩ + s²·B_i (A Aᵀ) B_iᵀ
needs ‖w_i‖² (cached while W is frozen), W Aᵀ (d_out × r) and A Aᵀ (r × r). A row whose norm is 0 has a zero
direction, so its scale is taken as 0 instead of m / 0 (no NaN/inf).

Trainable elements per adapted layer: r · (d_in + d_out) + d_out.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from peftzoo.adapters.fused import FusedDora, _dora_scale, fusable, many_rows
from peftzoo.adapters.lora import Lora, LoraConfig, LoraLayer


@dataclass
class DoraConfig(LoraConfig):
    pass


class DoraLayer(LoraLayer):
    peft_names = {"A": "lora_A.weight", "B": "lora_B.weight", "m": "lora_magnitude_vector"}

    def __init__(self, name, base, config, shared, gen):
        super().__init__(name, base, config, shared, gen)
        w = self.base_weight().detach()
        self.register_buffer("w_sq", (w.float() ** 2).sum(1), persistent=False)  # ‖w_i‖², W frozen
        self.m = nn.Parameter(self.w_sq.sqrt().to(w.dtype))
        self.register_buffer("merge_scale", torch.zeros(0), persistent=False)  # m/‖·‖ used by merge(), for unmerge

    @classmethod
    def count(cls, name, in_features, out_features, config):
        return config.r * (in_features + out_features) + out_features

    def roles(self):
        return {"A": [self.A], "B": [self.B], "magnitude": [self.m]}

    @torch.no_grad()
    def weight_norm(self) -> torch.Tensor:
        """‖W + s·BA‖ per output row, from d_out × r and r × r products only (no d_out × d_in matrix)."""
        A, B, s = self.A.float(), self.B.float(), self.scaling
        wa = self.base_weight().float() @ A.t()  # (d_out, r)
        sq = self.w_sq + 2 * s * (wa * B).sum(1) + s * s * ((B @ (A @ A.t())) * B).sum(1)
        return sq.clamp_min(0).sqrt()

    def scale(self) -> torch.Tensor:
        return _dora_scale(self.m, self.weight_norm())

    def forward(self, x):
        if self.merged:
            return self.base(x)
        if self.dropout is None and not self.base.weight.requires_grad and fusable(x):
            return FusedDora.apply(x, self.base_weight(), self.base.bias, self.A, self.B, self.m, self.weight_norm(),
                                   self.scaling, many_rows(x, self))
        h = self.dropout(x) if self.dropout is not None else x
        out = nn.functional.linear(x, self.base_weight()) + (h @ self.A.t() @ self.B.t()) * self.scaling
        out = out * self.scale().to(out.dtype)
        return out + self.base.bias if self.base.bias is not None else out

    def delta_weight(self):
        w = self.base_weight()
        if self.merged:  # base.weight holds W'; ΔW = W' - W
            return w - self._unmerged_weight()
        return self.scale().unsqueeze(1) * (w + self.scaling * self.B @ self.A) - w

    def _unmerged_weight(self):
        sc = self.merge_scale.unsqueeze(1)
        w = torch.where(sc != 0, self.base_weight() / torch.where(sc != 0, sc, 1), self._zero_rows)
        return w - self.scaling * self.B @ self.A

    @torch.no_grad()
    def merge(self):
        if not self.merged:
            sc = self.scale()
            w = self.base_weight()
            self._zero_rows = w.detach().clone() * (sc == 0).unsqueeze(1)  # rows m/‖·‖ = 0 cannot be divided back
            self.merge_scale = sc
            self.set_base_weight(sc.unsqueeze(1) * (w + self.scaling * self.B @ self.A))
            self.merged = True

    @torch.no_grad()
    def unmerge(self):
        if self.merged:
            self.set_base_weight(self._unmerged_weight())
            self.merged = False
            self.merge_scale = torch.zeros(0, device=self.m.device)

    def after_load(self):
        self.w_sq = (self.base_weight().detach().float() ** 2).sum(1)


class Dora(Lora):
    name = "dora"
    config_cls = DoraConfig
    layer_cls = DoraLayer
    paper = "Liu et al. 2024, arXiv:2402.09353"
    equation = "m ⊙ (W + (α/r)·BA) / ‖W + (α/r)·BA‖_row"
    formula = "r·(d_in + d_out) + d_out"

    @classmethod
    def peft_config(cls, config):
        return {**super().peft_config(config), "use_dora": True}

    @classmethod
    def accepts_peft(cls, peft):
        return peft.get("peft_type") == "LORA" and bool(peft.get("use_dora")) and not peft.get("use_rslora")
