"""LoRA on ``nn.Embedding``, in PEFT's layout and initialisation: for token ids x (a vocabulary of V rows of
width d),

    y = W[x] + s · A[:, x]ᵀ Bᵀ,   A ∈ R^{r×V} (zeros), B ∈ R^{d×r} (N(0, 1))
    merged: W + ΔW,  ΔW = s · (B A)ᵀ ∈ R^{V×d}

A starts at zero (the base's rows are looked up, as LoRA's original embedding layer does) and B is random; PEFT
uses this init for True and "gaussian" alike. The lookup of A uses the base's padding_idx, scale_grad_by_freq and
sparse; a base with ``max_norm`` (which renormalises the weight it looks up, in place) is refused. An
``embed_scale`` on the base (Gemma-style scaled embeddings) multiplies the update as it does the base output, as
in PEFT. No dropout: the inputs are ids (PEFT applies none either). "pissa"/"olora" are refused: PEFT defines them
for Linear layers only (on an embedding it silently falls back to the default init).

Trainable elements per adapted layer: r · (V + d).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from peftzoo.adapters.layer import AdapterLayer
from peftzoo.adapters.lora_init import RESIDUAL


class LoraEmbedding(AdapterLayer):
    peft_names = {"A": "lora_embedding_A", "B": "lora_embedding_B"}

    def __init__(self, name, base, config, shared, gen: torch.Generator):
        super().__init__(base)
        w = base.weight
        self.scaling = config.scaling()
        self.A = nn.Parameter(torch.zeros(config.r, self.in_features, dtype=w.dtype, device=w.device))
        self.B = nn.Parameter(torch.randn(self.out_features, config.r, generator=gen, dtype=w.dtype).to(w.device))

    @staticmethod
    def dims(base):
        return base.num_embeddings, base.embedding_dim

    @classmethod
    def check(cls, name, base, config):
        if not isinstance(config.r, int) or config.r < 1:
            raise ValueError(f"r={config.r} must be a positive integer")
        if config.init_lora_weights in RESIDUAL or config.init_lora_weights is False:  # (False: both random)
            raise ValueError(f"init_lora_weights={config.init_lora_weights!r} is defined for nn.Linear layers only; "
                             f"target {name!r} is a {type(base).__name__}")
        if base.max_norm is not None:
            raise ValueError(f"target {name!r} is an embedding with max_norm={base.max_norm}, which renormalises "
                             "its weight in place at every lookup: peftzoo does not adapt it")
        es = getattr(base, "embed_scale", None)
        if isinstance(es, torch.Tensor) and es.numel() != 1:
            raise ValueError(f"target {name!r} has an embed_scale of shape {tuple(es.shape)}; only a scalar is "
                             "supported")

    @classmethod
    def count(cls, name, in_features, out_features, config):
        return config.r * (in_features + out_features)

    def roles(self):
        return {"A": [self.A], "B": [self.B]}

    def lowrank_delta(self):
        return (self.B @ self.A).t() * self.scaling

    def delta_weight(self):
        return self.lowrank_delta()

    def update(self, x):
        """s · A[:, x]ᵀ Bᵀ (× the base's embed_scale): the adapter's share of the output."""
        b = self.base
        h = F.embedding(x, self.A.t(), b.padding_idx, None, b.norm_type, b.scale_grad_by_freq, b.sparse)
        out = (h @ self.B.t()) * self.scaling
        es = getattr(b, "embed_scale", None)
        return out if es is None else out * torch.as_tensor(es, dtype=out.dtype, device=out.device)

    def adapted(self, x):
        return self.base(x) + self.update(x)
