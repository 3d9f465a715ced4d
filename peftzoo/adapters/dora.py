"""DoRA: weight-decomposed low-rank adaptation (Liu et al. 2024, arXiv:2402.09353).

    W' = m ⊙ (W + s·BA) / ‖W + s·BA‖_row,      y = W' x + b
       = (m / ‖W + s·BA‖) ⊙ (W x + s·B(A x)) + b
    s = α / r, or α / √r with ``use_rslora=True`` (rsLoRA's scale; PEFT's use_dora + use_rslora)

m ∈ R^{d_out} starts at ‖W + s·BA‖_row (so W' = W at init; = ‖W‖_row for the default init, B = 0); the norm
is detached from the graph (paper §4.3), as in PEFT.
``weight_norm()`` never builds the d_out × d_in matrix W + s·BA: with w_i the rows of W,
    ‖w_i + s·(BA)_i‖² = ‖w_i‖² + 2s·⟨(W Aᵀ)_i, B_i⟩ + s²·B_i (A Aᵀ) B_iᵀ
needs ‖w_i‖² (cached while W is frozen), W Aᵀ (d_out × r) and A Aᵀ (r × r). The fused forward on many rows builds
W + s·BA for its one matmul anyway (``fused.FusedDora``) and takes the norms from it. A row whose norm is 0 has a
zero direction, so its scale is taken as 0 instead of m / 0 (no NaN/inf).

The same holds for the other layer types with W read as a matrix whose rows are the output units: a
convolution's c_out × (c_in·∏k) kernel, an embedding table's transpose (d × V), as PEFT does.

Trainable elements per adapted layer: LoRA's count for the layer type + d_out (c_out; d for an embedding).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from peftzoo.adapters.conv import LoraConv
from peftzoo.adapters.embedding import LoraEmbedding
from peftzoo.adapters.fused import FusedDora, _dora_scale, fusable, many_rows
from peftzoo.adapters.lora import Lora, LoraCodec, LoraConfig, LoraLayer
from peftzoo.inject import LINEAR_TYPES
from peftzoo.registry import register


@dataclass
class DoraConfig(LoraConfig):
    use_rslora: bool = False  # s = alpha / sqrt(r) (rsLoRA's scale) instead of alpha / r: PEFT's use_dora + use_rslora

    def rank_stabilised(self) -> bool:
        return self.use_rslora


class DoraMixin:
    """DoRA on top of a LoRA layer of any type. The layer class supplies ``factors2d`` (W, A, B as matrices whose
    rows are the output units: d_out × d_in, r × d_in, d_out × r), ``weight_view`` (how a per-output vector
    broadcasts against W as ``base_weight()`` lays it out) and, from LoRA, ``lowrank_delta`` (s·BA, laid out
    the same way)."""

    def __init__(self, name, base, config, shared, gen):
        super().__init__(name, base, config, shared, gen)
        w = self.factors2d()[0].detach()
        self.register_buffer("w_sq", (w.float() ** 2).sum(1), persistent=False)  # ‖w_i‖², W frozen
        # ‖W + s·BA‖ at init (= ‖W‖ unless an init such as PiSSA moved part of W into A, B)
        self.m = nn.Parameter(self.weight_norm().to(w.dtype))
        self.register_buffer("merge_scale", torch.zeros(0), persistent=False)  # m/‖·‖ used by merge(), for unmerge

    @classmethod
    def count_layer(cls, name, base, config):
        return super().count_layer(name, base, config) + cls.dims(base)[1]

    def roles(self):
        return {**super().roles(), "magnitude": [self.m]}

    @torch.no_grad()
    def weight_norm(self) -> torch.Tensor:
        """‖W + s·BA‖ per output row, from d_out × r and r × r products only (no d_out × d_in matrix)."""
        w, A, B = self.factors2d()
        A, B, s = A.float(), B.float(), self.scaling
        wa = w.float() @ A.t()  # (d_out, r)
        sq = self.w_sq + 2 * s * (wa * B).sum(1) + s * s * ((B @ (A @ A.t())) * B).sum(1)
        return sq.clamp_min(0).sqrt()

    def scale(self) -> torch.Tensor:
        return _dora_scale(self.m, self.weight_norm())

    def delta_weight(self):
        w = self.base_weight()
        if self.merged:  # base.weight holds W'; ΔW = W' - W
            return w - self._unmerged_weight()
        return self.weight_view(self.scale()) * (w + self.lowrank_delta()) - w

    def _unmerged_weight(self):
        sc = self.weight_view(self.merge_scale)
        w = torch.where(sc != 0, self.base_weight() / torch.where(sc != 0, sc, 1), self._zero_rows)
        return w - self.lowrank_delta()

    @torch.no_grad()
    def merge(self):
        if not self.merged:
            sc = self.scale()
            w = self.base_weight()
            self._zero_rows = w.detach().clone() * (self.weight_view(sc) == 0)  # rows m/‖·‖ = 0 cannot be divided back
            self.merge_scale = sc
            self.set_base_weight(self.weight_view(sc) * (w + self.lowrank_delta()))
            self.merged = True

    @torch.no_grad()
    def unmerge(self):
        if self.merged:
            self.set_base_weight(self._unmerged_weight())
            self.merged = False
            self.merge_scale = torch.zeros(0, device=self.m.device)

    def after_load(self):
        self.w_sq = (self.factors2d()[0].detach().float() ** 2).sum(1)


class DoraLayer(DoraMixin, LoraLayer):
    peft_names = {"A": "lora_A.weight", "B": "lora_B.weight", "m": "lora_magnitude_vector"}
    additive = False  # m · (W + ΔW) / ‖W + ΔW‖ rescales the frozen output itself

    def factors2d(self):
        return self.base_weight(), self.A, self.B

    @staticmethod
    def weight_view(v):
        return v.unsqueeze(1)

    def adapted(self, x):
        if self.dropout is None and not self.base.weight.requires_grad and fusable(x):
            merged = many_rows(x, self)  # W + s·BA is built then, and its row norms are taken from it
            return FusedDora.apply(x, self.base_weight(), self.base.bias, self.A, self.B, self.m,
                                   None if merged else self.weight_norm(), self.scaling, merged)
        out = nn.functional.linear(x, self.base_weight()) + (self.drop(x) @ self.A.t() @ self.B.t()) * self.scaling
        out = out * self.scale().to(out.dtype)
        return out + self.base.bias if self.base.bias is not None else out


class DoraConv(DoraMixin, LoraConv):
    """DoRA on a convolution: the norm is over each output channel's kernel (c_in·∏k values), as PEFT; PEFT stores
    the magnitude with shape (1, c_out, 1, …)."""
    peft_names = {"A": "lora_A.weight", "B": "lora_B.weight", "m": "lora_magnitude_vector"}

    def factors2d(self):
        return self.base.weight.flatten(1), self.A.flatten(1), self.B.flatten(1)

    def weight_view(self, v):
        return v.view(-1, *(1,) * (self.base.weight.dim() - 1))

    def out_view(self, v):
        return v.view(1, -1, *(1,) * (self.base.weight.dim() - 2))

    def adapted(self, x):
        b = self.base
        out = self.conv(x, b.weight, None, b.stride, b.padding, b.dilation, b.groups) + self.update(x)
        out = out * self.out_view(self.scale().to(out.dtype))
        return out if b.bias is None else out + self.out_view(b.bias)

    def peft_state(self):
        return {**super().peft_state(), "lora_magnitude_vector": self.out_view(self.m.detach())}

    def load_peft_state(self, tensors):
        m = tensors.get("lora_magnitude_vector")
        if m is not None and m.numel() == self.m.numel():
            tensors = {**tensors, "lora_magnitude_vector": m.reshape(-1)}
        super().load_peft_state(tensors)


class DoraEmbedding(DoraMixin, LoraEmbedding):
    """DoRA on an embedding: W's output units are its d columns, so the norm of each column runs over the whole
    vocabulary (PEFT's choice: it treats the V × d table as the transposed weight of a d_in = V layer)."""
    peft_names = {"A": "lora_embedding_A", "B": "lora_embedding_B", "m": "lora_magnitude_vector"}

    def factors2d(self):
        return self.base.weight.t(), self.A, self.B

    @staticmethod
    def weight_view(v):
        return v.unsqueeze(0)

    def adapted(self, x):
        out = self.base(x) + self.update(x)
        return out * self.scale().to(out.dtype)


class DoraCodec(LoraCodec):
    """PEFT's LORA files with ``use_dora`` (rsLoRA's scale too, with ``use_rslora``)."""

    def accepts(self, cfg):
        return cfg.get("peft_type") == "LORA" and bool(cfg.get("use_dora"))

    def to_peft(self, config):
        return {**super().to_peft(config), "use_dora": True}

    def from_peft(self, cfg):
        return {**super().from_peft(cfg), "use_rslora": bool(cfg.get("use_rslora"))}


@register
class Dora(Lora):
    name = "dora"
    config_cls = DoraConfig
    layer_classes = {**dict.fromkeys(LINEAR_TYPES, DoraLayer), nn.Embedding: DoraEmbedding,
                     **dict.fromkeys((nn.Conv1d, nn.Conv2d, nn.Conv3d), DoraConv)}
    peft = DoraCodec()
    info = Lora.info.replace(paper="Liu et al. 2024, arXiv:2402.09353",
                             equation="m ⊙ (W + (α/r)·BA) / ‖W + (α/r)·BA‖_row", formula="r·(d_in + d_out) + d_out")
