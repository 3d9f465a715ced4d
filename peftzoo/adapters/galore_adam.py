"""GaLore's projected Adam (Zhao et al. 2024, arXiv:2403.03507), operation for operation galore-torch 1.0's
``GaLoreAdamW`` with ``proj_type="std"``.

A parameter group with a ``rank`` r (and ``update_proj_gap`` T, ``scale`` α) projects each tensor's gradient
G ∈ R^{m×n} (the tensor's stored shape) before Adam sees it:

    every T steps (t = 0, T, 2T, …, t counted before the step): U S Vᵀ = SVD(G_t);  P = V[:, :r]ᵀ (m ≥ n) or U[:, :r]
    R_t = G_t Pᵀ (m × r) if m ≥ n, else Pᵀ G_t (r × n)                  the projected gradient
    M_t, V_t = Adam's moments of R_t (they carry over when P is refreshed, as galore-torch's do)
    N_t = M_t / (√V_t + ε),   step size η_t = lr · √(1 − β₂ᵗ) / (1 − β₁ᵗ)
    W ← W − η_t · α · N_t P (m ≥ n) or α · P N_t;   then, with weight decay λ, W ← W − lr · λ · W

Groups without a rank take the same Adam step unprojected (galore-torch's arithmetic: ε added to √V_t before the
bias correction, decay after the update; ``torch.optim.AdamW`` differs from it in both only through ε and λ).

State per projected tensor: the two moments (r·max(m, n) each) and P (r·min(m, n)) instead of Adam's 2·m·n;
``state_elements`` gives the count before the first step. The step counter is a Python int, as galore-torch's.
"""
from __future__ import annotations

import math

import torch


def projection(grad: torch.Tensor, rank: int) -> torch.Tensor:
    """P: the top-``rank`` right singular vectors (rows of Vᵀ) of ``grad`` if it has at least as many rows as
    columns, else its top-``rank`` left singular vectors (columns of U); the SVD in float32, P in grad's dtype."""
    u, _, vh = torch.linalg.svd(grad.float(), full_matrices=False)
    p = vh[:rank, :] if grad.shape[0] >= grad.shape[1] else u[:, :rank]
    return p.to(grad.dtype)


def project(grad: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    return grad @ p.t() if grad.shape[0] >= grad.shape[1] else p.t() @ grad


def project_back(low: torch.Tensor, p: torch.Tensor, wide: bool) -> torch.Tensor:
    """The update back in the parameter's shape (``wide``: the parameter has more columns than rows)."""
    return p @ low if wide else low @ p


def state_elements(shape, rank: int | None) -> int:
    """Optimizer-state elements of one tensor of ``shape``: Adam's two moments, projected when ``rank`` is set
    (plus the projection P)."""
    if rank is None:
        return 2 * math.prod(shape)
    m, n = shape
    r = min(rank, m, n)
    return 2 * r * max(m, n) + r * min(m, n)


class GaloreAdamW(torch.optim.Optimizer):
    """Adam with decoupled weight decay; groups holding ``rank``, ``update_proj_gap`` and ``scale`` are projected."""

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        if lr < 0 or eps < 0 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"GaloreAdamW: lr={lr}, betas={betas}, eps={eps}: need lr >= 0, eps >= 0, 0 <= beta < 1")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay})
        for g in self.param_groups:
            if "rank" in g and any(p.dim() != 2 for p in g["params"]):
                raise ValueError("GaloreAdamW: a group with a rank projects 2-D tensors only; put the others "
                                 "(biases, norms) in a group without 'rank'")

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._update(p, group)
        return loss

    def _update(self, p: torch.Tensor, group: dict) -> None:
        if p.grad.is_sparse:
            raise RuntimeError("GaloreAdamW does not take sparse gradients")
        state, grad, rank = self.state[p], p.grad, group.get("rank")
        t = state.get("step", 0)
        if rank is not None:
            if "proj" not in state or t % group["update_proj_gap"] == 0:
                state["proj"] = projection(grad, rank)
            grad = project(grad, state["proj"])
        if "exp_avg" not in state:
            state["exp_avg"], state["exp_avg_sq"] = torch.zeros_like(grad), torch.zeros_like(grad)
        state["step"] = t = t + 1
        (b1, b2), m, v = group["betas"], state["exp_avg"], state["exp_avg_sq"]
        m.mul_(b1).add_(grad, alpha=1.0 - b1)
        v.mul_(b2).addcmul_(grad, grad, value=1.0 - b2)
        update = m / v.sqrt().add_(group["eps"])
        if rank is not None:
            update = project_back(update, state["proj"], p.shape[0] < p.shape[1]) * group["scale"]
        p.add_(update, alpha=-group["lr"] * math.sqrt(1.0 - b2 ** t) / (1.0 - b1 ** t))
        if group["weight_decay"] > 0.0:
            p.add_(p, alpha=-group["lr"] * group["weight_decay"])
