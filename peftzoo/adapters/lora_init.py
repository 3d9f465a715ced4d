"""LoRA initialisations: PEFT's ``init_lora_weights`` for a weight W ∈ R^{d_out×d_in}, factors A (r × d_in),
B (d_out × r) and the update's scale s.

    True (default)  A Kaiming-uniform (a = √5), B = 0                                          W unchanged
    "gaussian"      A ~ N(0, 1/r²), B = 0                                                        W unchanged
    "pissa"         W = U S Vᵀ (full SVD); A = diag(√(S_r/s)) V_rᵀ, B = U_r diag(√(S_r/s))       W ← W − s·B A
                    (Meng et al. 2024, arXiv:2404.02948)
    "olora"         W = Q R (QR decomposition); A = R[:r], B = Q[:, :r]                          W ← W − s·B A
                    (Büyükakyüz 2024, arXiv:2406.01775)

PiSSA and OLoRA move the top-r part of W into A and B and leave the residual in the frozen weight, so the output
at init is unchanged. A saved adapter (ours or PEFT's) holds A and B only; loading it redoes the decomposition of
the original weight, as PEFT's own loading does. The arithmetic below is PEFT 0.21.2's, operation for operation,
so the residual is the same to the last bit on the same machine.

Not offered, each refused by name: "pissa_niter_K" (a randomized SVD drawn from the global RNG: PEFT's reload
of such a file does not reproduce its residual either), "corda", "loftq", "lora_ga", "eva", "mica" (they need
data, quantisation or change the forward pass).
"""
from __future__ import annotations

import math

import torch
from torch import nn

INITS = (True, "gaussian", "pissa", "olora")
RESIDUAL = ("pissa", "olora")  # inits that rewrite the frozen weight
# PEFT inits whose saved A, B load exactly with any of ours: the frozen weight is untouched and the forward is LoRA's
PEFT_PLAIN = (True, False, "gaussian", "orthogonal")


def check_init(init) -> None:
    if not any(init is i or (isinstance(init, str) and init == i) for i in INITS):
        hint = (" (a randomized SVD from the global RNG, which no reload reproduces exactly: use 'pissa')"
                if isinstance(init, str) and init.startswith("pissa_niter_") else "")
        raise ValueError(f"init_lora_weights={init!r} is not supported{hint}; "
                         f"supported: True (default), 'gaussian', 'pissa', 'olora'")


def init_factors(init, weight: torch.Tensor, r: int, scaling: float, gen: torch.Generator):
    """(A, B, residual): the initial factors and the new frozen weight (None when W stays as it is).

    A and B come back in W's dtype on W's device; the residual is in W's dtype."""
    w = weight.detach()
    d_out, d_in = w.shape
    if init in RESIDUAL:
        a, b, res = (_pissa if init == "pissa" else _olora)(w, r, scaling)
        return a.to(w.dtype), b.to(w.dtype), res.to(w.dtype)
    a = torch.empty(r, d_in, dtype=w.dtype)
    if init is True:
        nn.init.kaiming_uniform_(a, a=math.sqrt(5), generator=gen)
    else:  # "gaussian"
        nn.init.normal_(a, std=1 / r, generator=gen)
    return a.to(w.device), torch.zeros(d_out, r, dtype=w.dtype, device=w.device), None


def _pissa(w: torch.Tensor, r: int, scaling: float):
    v, s, uh = torch.linalg.svd(w.to(torch.float32), full_matrices=False)
    vr, sr, uhr = v[:, :r], s[:r], uh[:r]
    sr /= scaling
    a = torch.diag(torch.sqrt(sr)) @ uhr
    b = vr @ torch.diag(torch.sqrt(sr))
    return a, b, w.to(torch.float32) - scaling * b @ a


def _olora(w: torch.Tensor, r: int, scaling: float):
    w32 = w.to(torch.float32)
    q, rr = torch.linalg.qr(w32)
    a, b = rr[:r].contiguous(), q[:, :r].contiguous()
    return a, b, w32 - scaling * b @ a
