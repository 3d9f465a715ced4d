"""LoRA initialisations: PEFT's ``init_lora_weights`` for a weight W ∈ R^{d_out×d_in}, factors A (r × d_in),
B (d_out × r) and the update's scale s.

    True (default)  A Kaiming-uniform (a = √5), B = 0                                          W unchanged
    "gaussian"      A ~ N(0, 1/r²), B = 0                                                        W unchanged
    False           A and B both Kaiming-uniform (a = √5: nn.Linear's default, bound 1/√fan_in),  W unchanged
                    so s·B A ≠ 0 at init and the output moves (PEFT's ``False``: "random init, not a no-op")
    "pissa"         W = U S Vᵀ (full SVD); A = diag(√(S_r/s)) V_rᵀ, B = U_r diag(√(S_r/s))       W ← W − s·B A
                    (Meng et al. 2024, arXiv:2404.02948)
    "olora"         W = Q R (QR decomposition); A = R[:r], B = Q[:, :r]                          W ← W − s·B A
                    (Büyükakyüz 2024, arXiv:2406.01775)
    "loram"         A = (β/√s) Φ_mᵀ, B = (β/√s) Φ_n,  β = (Q·ν[W] / ν[Φ_n Φ_mᵀ])^{1/4}          W ← W − s·B A
                    (Zhang et al. 2025, "The Primacy of Magnitude in Low-Rank Adaptation", arXiv:2507.06558)

PiSSA and OLoRA move the top-r part of W into A and B and leave the residual in the frozen weight, so the output
at init is unchanged. A saved adapter (ours or PEFT's) holds A and B only; loading it redoes the decomposition of
the original weight, as PEFT's own loading does. The arithmetic below is PEFT 0.21.2's, operation for operation,
so the residual is the same to the last bit on the same machine.

LoRAM is the paper's own definition (its Eq. 11-12 and Algorithm 1), not a magnitude-matched stand-in: for W with
n = d_out rows and m = d_in columns, Φ_n and Φ_m are the first r columns of the n- and m-point orthonormal DST-I
bases, Φ_k[i, j] = √(2/(k+1)) sin((i+1)(j+1)π/(k+1)); ν[X] = ‖X‖_F² / numel(X) (the paper's magnitude);
Q = log_{min(n,m)} r, its logarithmic stand-in for PiSSA's spectral gain, so that ν[s·B A] = Q·ν[W], i.e.
‖s·B A‖_F = √Q·‖W‖_F, with no SVD. The paper fixes the scale to 1 (here: ``alpha = r``, s = 1); for any other s the
factors are divided by √s, as PEFT's PiSSA divides its singular values by s, so that s·B A = β² Φ_n Φ_mᵀ for every
α. The product leaves W, so the output at init is unchanged; the factors are deterministic (no seed), so a reload
redoes them exactly. PEFT 0.21.2 has no such init: ``save_peft`` refuses it (``peft_init``). r = 1 is refused:
Q = log 1 = 0 gives A = B = 0, and then neither factor ever gets a gradient.

Not offered, each refused by name: "pissa_niter_K" (a randomized SVD drawn from the global RNG: PEFT's reload
of such a file does not reproduce its residual either), "corda", "loftq", "lora_ga", "eva", "mica" (they need
data, quantisation or change the forward pass).
"""
from __future__ import annotations

import math

import torch
from torch import nn

# PEFT inits whose saved A, B load exactly with any of ours: the frozen weight is untouched and the forward is LoRA's
PEFT_PLAIN = (True, False, "gaussian", "orthogonal")
INITS = (True, False, "gaussian", "pissa", "olora", "loram")
RESIDUAL = ("pissa", "olora", "loram")  # inits that rewrite the frozen weight
PEFT_INITS = (*PEFT_PLAIN, "pissa", "olora")  # the inits a PEFT 0.21.2 file and ours exchange


def check_init(init) -> None:
    if not any(init is i or (isinstance(init, str) and init == i) for i in INITS):
        hint = (" (a randomized SVD from the global RNG, which no reload reproduces exactly: use 'pissa')"
                if isinstance(init, str) and init.startswith("pissa_niter_") else "")
        raise ValueError(f"init_lora_weights={init!r} is not supported{hint}; "
                         f"supported: True (default), False, 'gaussian', 'pissa', 'olora', 'loram'")


def peft_init(init):
    """``init`` as a PEFT file's ``init_lora_weights`` (either way), or an error for one PEFT does not have."""
    if not any(init is i or (isinstance(init, str) and init == i) for i in PEFT_INITS):
        raise NotImplementedError(f"init_lora_weights={init!r} is peftzoo's, not Hugging Face PEFT 0.21.2's: a PEFT "
                                  "LoRA file cannot carry it (PEFT would load it as plain LoRA on the unchanged W: it "
                                  "cannot redo this init's residual). Save and load such an adapter in peftzoo's "
                                  "format, ad.save(path) and peftzoo.load(model, path), or save a plain checkpoint "
                                  "with ad.unload(merge=True).save_pretrained(path)")
    return init


def check_rank(init, name: str, r: int, dims: tuple[int, int]) -> None:
    """Refuse a rank this init cannot give on the layer ``name`` of (d_in, d_out) ``dims``."""
    if init in RESIDUAL and isinstance(r, int) and r > min(dims):  # the SVD/QR/DST basis has only that many parts
        raise ValueError(f"init_lora_weights={init!r} needs r <= min(d_in, d_out) = {min(dims)} at layer "
                         f"{name!r}, got r={r}")
    if init == "loram" and r == 1:
        raise ValueError(f"init_lora_weights='loram' needs r >= 2 (layer {name!r}): its gain log_min(d_in, d_out)(r) "
                         "is 0 at r = 1, so A = B = 0 and neither would ever get a gradient; use r >= 2")


def init_factors(init, weight: torch.Tensor, r: int, scaling: float, gen: torch.Generator):
    """(A, B, residual): the initial factors and the new frozen weight (None when W stays as it is).

    A and B come back in W's dtype on W's device; the residual is in W's dtype."""
    w = weight.detach()
    d_out, d_in = w.shape
    if init in RESIDUAL:
        a, b, res = {"pissa": _pissa, "olora": _olora, "loram": _loram}[init](w, r, scaling)
        return a.to(w.dtype), b.to(w.dtype), res.to(w.dtype)
    a = torch.empty(r, d_in, dtype=w.dtype)
    b = torch.zeros(d_out, r, dtype=w.dtype)
    if init is True or init is False:
        nn.init.kaiming_uniform_(a, a=math.sqrt(5), generator=gen)
        if init is False:  # both random (PEFT: both factors keep nn.Linear's default init)
            nn.init.kaiming_uniform_(b, a=math.sqrt(5), generator=gen)
    else:  # "gaussian"
        nn.init.normal_(a, std=1 / r, generator=gen)
    return a.to(w.device), b.to(w.device), None


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


def dst_basis(k: int, r: int, device=None) -> torch.Tensor:
    """Φ_k: the first r columns of the k-point orthonormal DST-I matrix, √(2/(k+1)) sin((i+1)(j+1)π/(k+1)) (float32,
    computed in float64)."""
    i = torch.arange(1, k + 1, dtype=torch.float64, device=device).unsqueeze(1)
    j = torch.arange(1, r + 1, dtype=torch.float64, device=device).unsqueeze(0)
    return (math.sqrt(2 / (k + 1)) * torch.sin(i * j * (math.pi / (k + 1)))).to(torch.float32)


def _loram(w: torch.Tensor, r: int, scaling: float):
    """The paper's Algorithm 1 with the factors divided by √s (s·B A is then its β² Φ_n Φ_mᵀ whatever s is)."""
    w32 = w.to(torch.float32)
    n, m = w32.shape
    phi_n, phi_m = dst_basis(n, r, w.device), dst_basis(m, r, w.device)
    gain = math.log(r) / math.log(min(n, m))  # Q[r] ≈ log_min(n,m)(r)
    beta = (gain * w32.square().mean() / (phi_n @ phi_m.t()).square().mean()) ** 0.25
    c = beta / math.sqrt(scaling)
    a, b = c * phi_m.t(), c * phi_n
    return a, b, w32 - scaling * b @ a
