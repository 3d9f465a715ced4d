"""Fused autograd functions for the low-rank paths (LoRA family, AdaLoRA, DoRA), used when dropout is 0 and the
frozen weight needs no gradient.

Why: autograd of the plain expression y = x Wᵀ + b + s·(x Aᵀ) Bᵀ saves x twice, keeps the (N × d_out)
low-rank output and its scaled copy alive, and makes extra passes over the activations for each add and scale.
On a CPU a rank-8 update is memory-bound, so passes over (N × d) tensors are what it costs. Here each layer is
one autograd node that writes its output once and saves only what backward needs.
"""
from __future__ import annotations

import torch


def _rowmajor_t(b: torch.Tensor) -> torch.Tensor:
    """B (d × r) as the transposed view of a contiguous (r × d) copy: (N × d) @ it runs 2-3x faster on CPU BLAS
    than with B's own layout (measured: 0.21 vs 0.09 ms at N=2048, d=256, r=8). Likewise the (d × r) gradient
    is computed as (xaᵀ g)ᵀ, not gᵀ xa (0.11 vs 0.48 ms; 0.55 vs 5.2 ms at d=1024)."""
    return b.t().contiguous().t()


def _lowrank_grads(ctx, g, x2, xa, weight, A, B, idx):
    """∂x = g (W + s·BA) (merged) or g W + s (g B) A (factored); ∂A = s (g B)ᵀ x; ∂B = s g (x Aᵀ) — for a
    (N × d_out) output gradient g, in ctx.dt. ``idx``: positions of x, A, B in ctx.needs_input_grad."""
    s, dt = ctx.scale, ctx.dt
    a, b_ = A.to(dt), B.to(dt)
    gb = g @ _rowmajor_t(b_)  # (N, r)
    gx = gA = gB = None
    if ctx.needs_input_grad[idx[0]]:
        gx = g @ torch.addmm(weight.to(dt), b_, a, alpha=s) if ctx.merged else torch.addmm(g @ weight.to(dt), gb, a, alpha=s)
        gx = gx.reshape(ctx.shape).to(ctx.xdt)
    if ctx.needs_input_grad[idx[1]]:
        gA = (gb.t() @ x2).mul_(s).to(A.dtype)
    if ctx.needs_input_grad[idx[2]]:
        xa = x2 @ a.t() if xa is None else xa
        gB = (xa.t() @ g).t().mul_(s).to(B.dtype)
    return gx, gA, gB


def _compute_dtype(x: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """Under autocast its dtype (the functions cast explicitly with autocast off; backward does the same), else the
    promoted dtype of x and W."""
    dev = x.device.type
    return torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else torch.promote_types(x.dtype, weight.dtype)


def _lowrank_product(x2, weight, bias, A, B, scale: float, merged: bool, dt):
    """(y, x Aᵀ) with y = x (W + s·BA)ᵀ (+ b), for x as (N × d_in) in ``dt``, by either schedule: merged builds
    W + s·BA once and makes one matmul (x Aᵀ is not formed: None); factored makes x Wᵀ and adds s·(x Aᵀ) Bᵀ in
    place."""
    if merged:
        w, xa = torch.addmm(weight.to(dt), B.to(dt), A.to(dt), alpha=scale), None
    else:
        w, xa = weight.to(dt), x2 @ A.to(dt).t()
    y = torch.addmm(bias.to(dt), x2, w.t()) if bias is not None else x2 @ w.t()
    if xa is not None:
        y.addmm_(xa, B.to(dt).t(), alpha=scale)
    return y, xa


class FusedLowRankLinear(torch.autograd.Function):
    """Two schedules of the same function, chosen per call by the shapes (``lowrank_linear``):

    * factored (few rows): y = x Wᵀ + b, then y += s·(x Aᵀ) Bᵀ in place; saves x and x Aᵀ.
    * merged (many rows): y = x (W + s·BA)ᵀ + b, one matmul as the frozen layer's own; backward rebuilds
      W + s·BA (d_out × d_in × r FLOPs, no activation pass) for ∂x, and computes x Aᵀ again for ∂B;
      saves only x. Fewer passes over the (N × d) activations, which is what a rank-8 update costs on a CPU.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, A, B, scale: float, merged: bool = False):
        shape, dt = x.shape, _compute_dtype(x, weight)
        with torch.autocast(x.device.type, enabled=False):
            x2 = x.reshape(-1, shape[-1]).to(dt)
            y, xa = _lowrank_product(x2, weight, bias, A, B, scale, merged, dt)
        ctx.save_for_backward(x2, xa, weight, A, B)
        ctx.scale, ctx.shape, ctx.dt, ctx.xdt, ctx.merged = scale, shape, dt, x.dtype, merged
        return y.reshape(*shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, gy):
        x2, xa, weight, A, B = ctx.saved_tensors
        with torch.autocast(gy.device.type, enabled=False):
            gy2 = gy.reshape(-1, gy.shape[-1]).to(ctx.dt)
            gx, gA, gB = _lowrank_grads(ctx, gy2, x2, xa, weight, A, B, (0, 3, 4))
        return gx, None, None, gA, gB, None, None


def lowrank_linear(x, layer, A, B, scale: float):
    """layer.base(x) + scale · B(A(x)) for an AdapterLayer, fused when nothing needs the frozen weight's gradient."""
    base = layer.base
    if not fusable(x) or base.weight.requires_grad or (base.bias is not None and base.bias.requires_grad):
        return base(x) + (x @ A.t() @ B.t()) * scale
    return FusedLowRankLinear.apply(x, layer.base_weight(), base.bias, A, B, scale, many_rows(x, layer))


def fusable(x) -> bool:
    """Whether the fused functions may run on x's device: not on ``meta`` (no autocast there; shapes only)."""
    return x.device.type != "meta"


def many_rows(x, layer) -> bool:
    """True when the activations are larger than the weight: then building W + s·BA beats extra passes over x."""
    rows = x.numel() // x.shape[-1]
    return rows * (layer.in_features + layer.out_features) > layer.in_features * layer.out_features


def _dora_scale(m, norm):
    """m / ‖·‖, and 0 where the row norm is 0 (its direction is the zero vector: no NaN, no inf)."""
    return torch.where(norm > 0, m / torch.where(norm > 0, norm, torch.ones_like(norm)), torch.zeros_like(m))


class FusedDora(torch.autograd.Function):
    """y = c ⊙ (x Wᵀ + s·(x Aᵀ) Bᵀ) + b with c = m / ‖W + s·BA‖ (the norm detached, as in PEFT).

    Many rows (merged): W' = W + s·BA is built once (in W's precision, at least float32), its row norms taken from it
    when ``norm`` is None, and c folded into it, so y = x (c ⊙ W')ᵀ + b is one matmul, as the frozen layer's own.
    Backward folds c into the rebuilt W' and into B again (∂x = g (c ⊙ W'), g' B = g (c ⊙ B), ∂B = s·c ⊙ (gᵀ x Aᵀ)):
    no pass over the (N × d_out) activations but the one reduction ∂m needs, made in cache-sized row blocks.
    Few rows (factored): y is written once and scaled in place; backward scales g by c (g' = c ⊙ g).
    Either way only x (and x Aᵀ when factored) and y are kept: ∂m = Σ_rows g ⊙ pre / ‖·‖ with pre = (y − b) / c
    recovered from the output, i.e. ∂m = Σ_rows g ⊙ (y − b) / m (0 where m = 0).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, A, B, m, norm, scale: float, merged: bool = False):
        shape, dt = x.shape, _compute_dtype(x, weight)
        with torch.autocast(x.device.type, enabled=False):
            x2 = x.reshape(-1, shape[-1]).to(dt)
            if merged:
                w = _merged_weight(weight, A, B, scale)
                c = _scale_of(m, torch.linalg.vector_norm(w, dim=1) if norm is None else norm)
                w = w.mul_(c.to(w.dtype).unsqueeze(1)).to(dt)
                y, xa = (torch.addmm(bias.to(dt), x2, w.t()) if bias is not None else x2 @ w.t()), None
            else:
                c = _scale_of(m, norm)
                y, xa = _lowrank_product(x2, weight, None, A, B, scale, False, dt)  # the bias comes after the scale
                y.mul_(c.to(dt))
                if bias is not None:
                    y.add_(bias.to(dt))
        ctx.save_for_backward(x2, xa, weight, bias, A, B, m, c, y)
        ctx.scale, ctx.shape, ctx.dt, ctx.xdt, ctx.merged = scale, shape, dt, x.dtype, merged
        return y.reshape(*shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, gy):
        x2, xa, weight, bias, A, B, m, c, y = ctx.saved_tensors
        dt, gm = ctx.dt, None
        with torch.autocast(gy.device.type, enabled=False):
            g = gy.reshape(-1, gy.shape[-1]).to(dt)
            if ctx.needs_input_grad[5]:
                gsum = _column_dots(g, y, None if bias is None else bias.to(dt))
                gm = torch.where(m != 0, gsum / torch.where(m != 0, m.to(dt), 1), 0).to(m.dtype)
            if ctx.merged:
                gx, gA, gB = _folded_grads(ctx, g, x2, weight, A, B, c)
            else:
                gx, gA, gB = _lowrank_grads(ctx, g * c.to(dt), x2, xa, weight, A, B, (0, 3, 4))
        return gx, None, None, gA, gB, gm, None, None, None


def _scale_of(m, norm):
    """m / ‖·‖ and 0 on a zero row, as ``_dora_scale`` (no autograd here, so m / 0 may be formed and dropped)."""
    return torch.where(norm > 0, m / norm, 0)


def _merged_weight(weight, A, B, scale: float):
    """W + s·BA in W's precision, at least float32 (the norm and the scale are taken from it)."""
    pd = torch.promote_types(weight.dtype, torch.float32)
    return torch.addmm(weight.to(pd), B.to(pd), A.to(pd), alpha=scale)


BLOCK = 2 ** 17  # elements per row block of ``_column_dots``: its temporaries stay in cache (measured fastest)


def _column_dots(g, y, bias=None):
    """Σ_rows g ⊙ (y − b), in row blocks when large: a temporary of g ⊙ y's full size would cost a fresh
    allocation and a pass through memory on every call."""
    n, d = g.shape
    if n * d <= BLOCK:
        out = (g * y).sum(0)
        return out if bias is None else out - bias * g.sum(0)
    rows, out = max(1, BLOCK // d), torch.zeros(d, dtype=g.dtype, device=g.device)
    gs = None if bias is None else torch.zeros_like(out)
    for i in range(0, n, rows):
        gi = g[i:i + rows]
        out += (gi * y[i:i + rows]).sum(0)
        if gs is not None:
            gs += gi.sum(0)
    return out if gs is None else out - bias * gs


def _folded_grads(ctx, g, x2, weight, A, B, c):
    """``_lowrank_grads`` for the output gradient g ⊙ c without forming it: c scales the rows of W + s·BA and of B
    (d_out × d_in and d_out × r) instead of the (N × d_out) gradient."""
    s, dt = ctx.scale, ctx.dt
    a, cw = A.to(dt), c.to(dt).unsqueeze(1)
    gb = g @ _rowmajor_t(B.to(dt) * cw)  # (N, r) = (g ⊙ c) B
    gx = gA = gB = None
    if ctx.needs_input_grad[0]:
        w = _merged_weight(weight, A, B, s)
        gx = (g @ w.mul_(c.to(w.dtype).unsqueeze(1)).to(dt)).reshape(ctx.shape).to(ctx.xdt)
    if ctx.needs_input_grad[3]:
        gA = (gb.t() @ x2).mul_(s).to(A.dtype)
    if ctx.needs_input_grad[4]:
        gB = (x2 @ a.t()).t().matmul(g).t().mul_(cw).mul_(s).to(B.dtype)
    return gx, gA, gB


class FusedIa3(torch.autograd.Function):
    """(IA)³ on a linear layer, for many rows: y = l ⊙ (x Wᵀ + b) (output scaled) or y = (x ⊙ l) Wᵀ + b
    (``feedforward``: input scaled), with l folded into W's rows (and b) or columns, so the forward is one matmul
    and no scaled copy of x or y is made or kept.

    Backward: ∂x = g (l ⊙ W) (output-scaled) or g (W ⊙ l) = (g W) ⊙ l (input-scaled), one matmul with the folded
    weight again; ∂l = Σ_rows g ⊙ (x Wᵀ + b) = Σ_rows g ⊙ y / l, or Σ_rows x ⊙ (g W) = Σ_rows x ⊙ ∂x / l: one
    reduction over the activations. Where l_j = 0 those quotients vanish, so ∂l_j is computed from x (or g W).
    An output-scaled layer whose input needs no gradient (the first adapted layers, fed by the frozen embeddings)
    skips the ∂x matmul: ∂l reads only g and y (an input-scaled layer needs g W for ∂l anyway).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, scale, feedforward: bool):
        shape, dt = x.shape, _compute_dtype(x, weight)
        with torch.autocast(x.device.type, enabled=False):
            x2 = x.reshape(-1, shape[-1]).to(dt)
            w, b = _ia3_folded(weight, bias, scale, feedforward)
            w, b = w.to(dt), None if b is None else b.to(dt)
            y = torch.addmm(b, x2, w.t()) if b is not None else x2 @ w.t()
        ctx.save_for_backward(x2, weight, bias, scale, None if feedforward else y)
        ctx.shape, ctx.dt, ctx.xdt, ctx.feedforward = shape, dt, x.dtype, feedforward
        return y.reshape(*shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, gy):
        x2, weight, bias, scale, y = ctx.saved_tensors
        dt = ctx.dt
        need_x, need_l = ctx.needs_input_grad[0], ctx.needs_input_grad[3]
        gx = gl = None
        with torch.autocast(gy.device.type, enabled=False):
            g, l, w = gy.reshape(-1, gy.shape[-1]).to(dt), scale.reshape(-1).to(dt), weight.to(dt)
            if need_x or (need_l and ctx.feedforward):
                gx = g @ _ia3_folded(weight, None, scale, ctx.feedforward)[0].to(dt)  # = g (l ⊙ W) or (g W) ⊙ l
            if need_l:
                gl = _ia3_scale_grad(ctx, g, gx, x2, w, bias, l, y)
        gx = gx.reshape(ctx.shape).to(ctx.xdt) if need_x else None
        gl = gl.reshape(scale.shape).to(scale.dtype) if need_l else None
        return gx, None, None, gl, None


def _ia3_scale_grad(ctx, g, gx, x2, w, bias, l, y):
    """∂l = Σ g ⊙ y / l, or Σ x ⊙ ∂x / l (feedforward); where l_j = 0 both vanish: recomputed from x (resp. g W)."""
    dt = ctx.dt
    gl = _column_dots(x2, gx) if ctx.feedforward else _column_dots(g, y)
    gl = gl / torch.where(l != 0, l, 1)
    zero = l == 0
    if bool(zero.any()):
        if ctx.feedforward:
            gl[zero] = (x2[:, zero] * (g @ w[:, zero])).sum(0)
        else:
            pre = x2 @ w[zero].t() + (0 if bias is None else bias.to(dt)[zero])
            gl[zero] = (g[:, zero] * pre).sum(0)
    return gl


def _ia3_folded(weight, bias, scale, feedforward: bool):
    """l folded into W's columns (feedforward) or rows and b, in W's precision (at least float32)."""
    pd = torch.promote_types(weight.dtype, torch.float32)
    l = scale.reshape(-1).to(pd)
    w = weight.to(pd) * (l if feedforward else l.unsqueeze(1))
    return w, None if bias is None else bias.to(pd) if feedforward else bias.to(pd) * l


class FusedOft(torch.autograd.Function):
    """OFT on a linear layer, for many rows: y = (x R) Wᵀ + b with R = diag(R_1, …, R_n) (b × b blocks) computed as
    x (W Rᵀ)ᵀ + b, one matmul with the rotated d_out × d_in weight (the (N × d_in) rotated input is never formed).

    Backward, with u = g W the gradient of the rotated input: ∂x_i = u_i R_iᵀ, i.e. ∂x = g (W Rᵀ), one matmul with
    the rotated weight, rebuilt (d_out × d_in × b products; kept, it would add its size to the saved tensors), so
    no block pass over the (N × d_in) gradient and no transposing copy, and
    ∂R_i = x_iᵀ u_i = (x_iᵀ ∂x_i) R_i⁻ᵀ (u_i = ∂x_i R_i⁻ᵀ): one batched reduction over the rows, then n b × b
    products. R⁻¹ is taken only where R is near-orthogonal (b · max |RᵀR − I| ≤ ``ORTHO_TOL``, so cond(R) ≤ 1.033
    and it adds no more than float rounding: the case in training, Q small) and on the CPU; otherwise u = g W is
    formed, ∂x_i = u_i R_iᵀ block by block and ∂R_i = x_iᵀ u_i (one matmul and two block passes).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, r):
        shape, dt = x.shape, _compute_dtype(x, weight)
        with torch.autocast(x.device.type, enabled=False):
            x2 = x.reshape(-1, shape[-1]).to(dt)
            w = _blocks_times(weight.to(dt), r.to(dt), transpose=True)  # W Rᵀ, block by block
            y = torch.addmm(bias.to(dt), x2, w.t()) if bias is not None else x2 @ w.t()
        ctx.save_for_backward(x2, weight, r)
        ctx.shape, ctx.dt, ctx.xdt = shape, dt, x.dtype
        return y.reshape(*shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, gy):
        x2, weight, r = ctx.saved_tensors
        n, b = r.shape[0], r.shape[1]
        gx = gr = None
        with torch.autocast(gy.device.type, enabled=False):
            g = gy.reshape(-1, gy.shape[-1]).to(ctx.dt)
            xs = x2.view(-1, n, b).permute(1, 2, 0)  # (n, b, N): x_iᵀ
            inv = _near_orthogonal_inverse(r) if all(ctx.needs_input_grad[i] for i in (0, 3)) else None
            if inv is not None or not ctx.needs_input_grad[3]:
                w = _blocks_times(weight.to(ctx.dt), r.to(ctx.dt), transpose=True)  # rebuilt: W Rᵀ
                gx = g @ w if ctx.needs_input_grad[0] else None
                if inv is not None:
                    m = torch.bmm(xs, gx.view(-1, n, b).transpose(0, 1))  # x_iᵀ ∂x_i
                    gr = torch.bmm(m.to(inv.dtype), inv.transpose(1, 2)).to(r.dtype)
            else:
                u = g @ weight.to(ctx.dt)  # ∂ of the rotated input
                gx = _blocks_times(u, r.to(ctx.dt), transpose=True) if ctx.needs_input_grad[0] else None
                gr = torch.bmm(xs, u.view(-1, n, b).transpose(0, 1)).to(r.dtype)
        return None if gx is None else gx.reshape(ctx.shape).to(ctx.xdt), None, None, gr


# bound on b · max |RᵀR − I| (≥ ‖RᵀR − I‖₂) for ∂R through R⁻¹: singular values² within 1 ± 0.032, cond(R) ≤ 1.033
ORTHO_TOL = 0.032


def _near_orthogonal_inverse(r):
    """R_i⁻¹ (float32 at least) when every block is near-orthogonal (``ORTHO_TOL``), else None. On the CPU only: the
    check reads one number back, which on an accelerator is a host sync per layer (there ∂R is taken directly; the
    inverse path was measured on CPU only)."""
    if r.device.type != "cpu":
        return None
    rf = r.to(torch.promote_types(r.dtype, torch.float32))
    eye = torch.eye(r.shape[-1], dtype=rf.dtype, device=rf.device)
    if float((torch.bmm(rf.transpose(1, 2), rf) - eye).abs().amax()) * r.shape[-1] > ORTHO_TOL:
        return None
    return torch.linalg.inv(rf)


def _blocks_times(m, r, transpose: bool = False):
    """m (rows × n·b) with each block of b columns multiplied by R_i (or R_iᵀ): one batched matmul."""
    n, b = r.shape[0], r.shape[1]
    out = torch.bmm(m.reshape(-1, n, b).transpose(0, 1), r.transpose(1, 2) if transpose else r)
    return out.transpose(0, 1).reshape(m.shape)
