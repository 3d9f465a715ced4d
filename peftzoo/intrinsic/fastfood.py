"""Fastfood random projection (Le et al. 2013), as used by Li et al. 2018 and Aghajanyan et al. 2020.

    P z = stack_b [ (1 / (‖G_b‖·√L)) · H G_b Π_b H B_b · pad_L(z) ],   truncated to D rows

H: the L × L Walsh–Hadamard matrix (entries ±1, never built), B_b: random ±1 diagonal, Π_b: random permutation,
G_b: Gaussian diagonal, L = 2^⌈log2 d⌉, n_b = ⌈D / L⌉ blocks. H B_b e_j has entries ±1, so each block maps
a unit column to norm ‖G_b‖·√L exactly; dividing by ‖G_b‖·√L·√n_b makes every column of P unit-norm
(exactly 1 when L divides D; the truncated last block makes it slightly less otherwise), as Li et al. require.
Time O(D log L), memory O(D): P is never materialised.
"""
from __future__ import annotations

import math

import torch
from torch import nn


def fwht(x: torch.Tensor) -> torch.Tensor:
    """Unnormalised fast Walsh–Hadamard transform along the last dimension (a power of 2). Returns H x."""
    n = x.shape[-1]
    if n & (n - 1):
        raise ValueError(f"fwht needs a power-of-2 length, got {n}")
    lead = x.shape[:-1]
    h = 1
    y = x.reshape(-1, n)
    while h < n:
        y = y.view(-1, n // (2 * h), 2, h)
        a, b = y[:, :, 0, :], y[:, :, 1, :]
        y = torch.stack((a + b, a - b), dim=2)
        h *= 2
    return y.reshape(*lead, n)


class _FWHT(torch.autograd.Function):
    """H is symmetric, so the backward of y = Hx is H·grad: no activations saved."""

    @staticmethod
    def forward(ctx, x):
        return fwht(x)

    @staticmethod
    def backward(ctx, g):
        return fwht(g)


def hadamard(n: int) -> torch.Tensor:
    """The explicit Hadamard matrix (Sylvester construction), for checking ``fwht`` on small n."""
    h = torch.ones(1, 1)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


class Fastfood(nn.Module):
    """z ∈ R^d ↦ P z ∈ R^D with seeded random buffers; ``forward`` is differentiable in z."""

    def __init__(self, d: int, D: int, seed: int = 0):
        super().__init__()
        if d < 1 or D < 1:
            raise ValueError(f"need d >= 1 and D >= 1 (got d={d}, D={D})")
        self.d, self.D = d, D
        self.L = 1 << max(0, math.ceil(math.log2(d)))
        self.blocks = math.ceil(D / self.L)
        g = torch.Generator().manual_seed(seed)
        nb, L = self.blocks, self.L
        self.register_buffer("B", torch.randint(0, 2, (nb, L), generator=g).float() * 2 - 1)
        self.register_buffer("Pi", torch.argsort(torch.rand(nb, L, generator=g), dim=1))
        G = torch.randn(nb, L, generator=g)
        self.register_buffer("G", G / (G.norm(dim=1, keepdim=True) * math.sqrt(L * nb)))  # unit-norm columns

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.shape[-1] != self.d:
            raise ValueError(f"z has {z.shape[-1]} entries, the projection takes d={self.d}")
        x = torch.nn.functional.pad(z, (0, self.L - self.d)).to(self.B.dtype)
        x = _FWHT.apply(self.B * x)  # (nb, L): each block sees its own B_b z
        x = torch.gather(x, 1, self.Pi) * self.G
        return _FWHT.apply(x).reshape(-1)[: self.D]

    def dense(self) -> torch.Tensor:
        """The explicit D × d matrix (small D only: for tests and checks)."""
        if self.D * self.d > 5e7:
            raise ValueError("dense() is for small projections only")
        return torch.stack([self.forward(e) for e in torch.eye(self.d)], dim=1)


class DenseProjection(nn.Module):
    """Gaussian P ∈ R^{D×d} with unit-norm columns (Li et al.'s dense baseline), for small D."""

    def __init__(self, d: int, D: int, seed: int = 0):
        super().__init__()
        P = torch.randn(D, d, generator=torch.Generator().manual_seed(seed))
        self.register_buffer("P", P / P.norm(dim=0, keepdim=True))
        self.d, self.D = d, D

    def forward(self, z):
        return self.P @ z
