"""OFT on ``nn.Embedding`` (PEFT 0.21.2's ``oft.Embedding``): the looked-up rows are rotated, R acting on the
embedding dimension d (n = d / b blocks, as a Linear's d_in):

    y = E[x] R,   E ∈ R^{V×d} (V rows of width d), R = diag(R_1, …, R_n) as for Linear
    merged: E' = E R (every row of the table rotated; PEFT's ``merge`` writes ``E @ block_diag(R)``),
    unmerged with R⁻¹ (R is only near-orthogonal under the Neumann series)

PEFT keeps the trained entries under ``oft_embedding_R`` (not ``oft_R``) and counts d as the layer's in_features
(V as out_features), so its count is d · (b−1)/2 (``block_share``: b(b−1)/2), independent of the vocabulary. The
rotation follows the base layer's own forward (its padding_idx, ``scale_grad_by_freq``, ``sparse``, and an
``embed_scale`` a Gemma-style subclass multiplies its output by: a scalar commutes with R), as in PEFT. Refused:
``max_norm`` (the base renormalises the rows it looks up, in place: under the Neumann series R is not orthogonal,
and rows of E R renormalised differ from E's renormalised then rotated, so PEFT's merge changes its own output;
tests/test_oft.py shows it on PEFT).
"""
from __future__ import annotations

import torch


class EmbeddingRotation:
    """What ``oft.OftEmbedding`` (this mixin on ``oft.OftLayer``) changes for an Embedding: its sizes, PEFT's
    tensor name, the refusal, the forward and the side R multiplies in merge (E R, not W Rᵀ)."""

    peft_names = {"weight_q": "oft_embedding_R.weight"}

    @staticmethod
    def dims(base):
        return base.embedding_dim, base.num_embeddings  # PEFT's (in_features, out_features): d is rotated

    @classmethod
    def check(cls, name, base, config):
        if base.max_norm is not None:
            raise ValueError(f"OFT on {name!r}, an Embedding with max_norm={base.max_norm}: the base renormalises "
                             "the rows it looks up, in place, and R is not orthogonal under the Neumann series, so "
                             "renormalising E R (PEFT's merge) differs from renormalising E and then rotating (its "
                             "forward); peftzoo does not adapt it")
        super().check(name, base, config)

    def _rotate(self, w, r):
        """E (V × d) times the block-diagonal R: OftLayer's W Rᵀ with each block transposed."""
        return super()._rotate(w, r.transpose(-1, -2))

    def adapted(self, x):
        """The base layer's rows, each cut into n blocks of b and each block multiplied by its R_i (PEFT's)."""
        r = self.rotation()
        h = self.base(x)
        return torch.einsum("...rk,rkc->...rc", h.reshape(*h.shape[:-1], self.n, self.b), r).reshape(h.shape)
