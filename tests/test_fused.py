"""The fast paths compute the same values and gradients as the plain expressions."""
import pytest
import torch
from torch import nn

from peftzoo.adapters.fused import FusedDora, FusedIa3, FusedLowRankLinear, FusedOft, _column_dots, \
    _near_orthogonal_inverse


def _setup(bias, seed=0):
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(12, 10, bias=bias).double().requires_grad_(False)
    x = torch.randn(2, 5, 12, generator=g, dtype=torch.float64, requires_grad=True)
    A = torch.randn(3, 12, generator=g, dtype=torch.float64, requires_grad=True)
    B = torch.randn(10, 3, generator=g, dtype=torch.float64, requires_grad=True)
    return lin, x, A, B


@pytest.mark.parametrize("merged", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_fused_lowrank_matches_plain(bias, merged):
    lin, x, A, B = _setup(bias)
    ref = lin(x) + (x @ A.t() @ B.t()) * 0.7
    out = FusedLowRankLinear.apply(x, lin.weight, lin.bias, A, B, 0.7, merged)
    torch.testing.assert_close(out, ref)
    gy = torch.randn_like(ref)
    g_ref = torch.autograd.grad(ref, (x, A, B), gy)
    g_out = torch.autograd.grad(out, (x, A, B), gy)
    for a, b in zip(g_out, g_ref):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("merged", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_fused_dora_matches_plain(bias, merged):
    lin, x, A, B = _setup(bias)
    m = torch.rand(10, dtype=torch.float64, requires_grad=True)
    with torch.no_grad():
        m[2] = 0.0  # a zero magnitude must not break the backward
    norm = torch.linalg.norm(lin.weight + 0.7 * B @ A, dim=1).detach()
    pre = nn.functional.linear(x, lin.weight) + (x @ A.t() @ B.t()) * 0.7
    ref = pre * (m / norm) + (lin.bias if bias else 0)
    out = FusedDora.apply(x, lin.weight, lin.bias, A, B, m, norm, 0.7, merged)
    torch.testing.assert_close(out, ref)
    gy = torch.randn_like(ref)
    g_ref = torch.autograd.grad(ref, (x, A, B, m), gy)
    g_out = torch.autograd.grad(out, (x, A, B, m), gy)
    for name, a, b in zip("xABm", g_out, g_ref):
        if name == "m":  # row 2 has m = 0: its gradient is set to 0 (pre cannot be recovered from y there)
            a, b = a[torch.arange(10) != 2], b[torch.arange(10) != 2]
        torch.testing.assert_close(a, b, msg=name)


def test_fused_dora_takes_the_norm_from_the_merged_weight():
    """Many rows, no norm given: the row norms of W + s·BA built for the matmul (as PEFT's direct norm), still
    detached from the graph; a zero row of W + s·BA gets scale 0 (no NaN)."""
    lin, x, A, B = _setup(True)
    with torch.no_grad():
        lin.weight[4], B[4] = 0.0, 0.0  # row 4 of W + s·BA is zero
    m = torch.rand(10, dtype=torch.float64, requires_grad=True)
    norm = torch.linalg.norm(lin.weight + 0.7 * B @ A, dim=1).detach()
    scale = torch.where(norm > 0, m / torch.where(norm > 0, norm, 1), 0)
    ref = (nn.functional.linear(x, lin.weight) + (x @ A.t() @ B.t()) * 0.7) * scale + lin.bias
    out = FusedDora.apply(x, lin.weight, lin.bias, A, B, m, None, 0.7, True)
    torch.testing.assert_close(out, ref)
    assert torch.isfinite(out).all()
    gy = torch.randn_like(ref)
    for name, a, b in zip("xABm", torch.autograd.grad(out, (x, A, B, m), gy), torch.autograd.grad(ref, (x, A, B, m), gy)):
        torch.testing.assert_close(a, b, msg=name)


@pytest.mark.parametrize("rows", [3, 40000])  # one block, several blocks
def test_column_dots_match_the_plain_sum(rows):
    g = torch.Generator().manual_seed(1)
    a, b, bias = torch.randn(rows, 7, generator=g), torch.randn(rows, 7, generator=g), torch.randn(7, generator=g)
    torch.testing.assert_close(_column_dots(a, b, bias), (a * (b - bias)).sum(0), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(_column_dots(a, b), (a * b).sum(0), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("feedforward", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_fused_ia3_matches_plain(bias, feedforward):
    """Values and gradients of the folded (IA)³ layer equal the plain expressions, an l_j = 0 entry included (its
    gradient is recomputed from x, not lost with the zero output)."""
    lin, x, _, _ = _setup(bias)
    n = 12 if feedforward else 10
    g = torch.Generator().manual_seed(2)
    shape = (1, n) if feedforward else (n, 1)
    scale = (1 + 0.3 * torch.randn(shape, generator=g, dtype=torch.float64)).requires_grad_()
    with torch.no_grad():
        scale.view(-1)[3] = 0.0
    ref = lin(x * scale) if feedforward else lin(x) * scale.reshape(-1)
    out = FusedIa3.apply(x, lin.weight, lin.bias, scale, feedforward)
    torch.testing.assert_close(out, ref)
    gy = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    for name, a, b in zip("xl", torch.autograd.grad(out, (x, scale), gy), torch.autograd.grad(ref, (x, scale), gy)):
        torch.testing.assert_close(a, b, msg=name)


class _CountMatmuls(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts the matrix products run inside it (aten mm/addmm/bmm)."""

    def __init__(self):
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n += func.overloadpacket in (torch.ops.aten.mm, torch.ops.aten.addmm, torch.ops.aten.bmm)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("feedforward", [False, True])
def test_fused_ia3_skips_the_input_gradient_nobody_needs(feedforward):
    """With an input that needs no gradient (a first layer, fed by frozen embeddings) an output-scaled layer's
    backward runs no matmul at all, and ∂l is still the plain one; an input-scaled layer needs g W for ∂l (one)."""
    lin, x, _, _ = _setup(True)
    x = x.detach()
    n = 12 if feedforward else 10
    scale = (1 + 0.3 * torch.randn((1, n) if feedforward else (n, 1), dtype=torch.float64)).requires_grad_()
    ref = lin(x * scale) if feedforward else lin(x) * scale.reshape(-1)
    out = FusedIa3.apply(x, lin.weight, lin.bias, scale, feedforward)
    gy = torch.randn(ref.shape, dtype=torch.float64)
    with _CountMatmuls() as count:
        (gl,) = torch.autograd.grad(out, scale, gy)
    assert count.n == (1 if feedforward else 0)
    torch.testing.assert_close(gl, torch.autograd.grad(ref, scale, gy)[0])


@pytest.mark.parametrize("share", [False, True])
def test_fused_oft_matches_plain(share):
    """x (W Rᵀ)ᵀ + b with block-diagonal R equals the frozen layer applied to the block-rotated input, values and
    gradients (a shared block's gradient sums over the blocks)."""
    lin, x, _, _ = _setup(True)
    g = torch.Generator().manual_seed(4)
    r0 = torch.randn(1 if share else 3, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)
    r = r0.expand(3, -1, -1)
    ref = lin(torch.einsum("...rk,rkc->...rc", x.reshape(2, 5, 3, 4), r).reshape(x.shape))
    out = FusedOft.apply(x, lin.weight, lin.bias, r)
    torch.testing.assert_close(out, ref)
    gy = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    for name, a, b in zip("xR", torch.autograd.grad(out, (x, r0), gy), torch.autograd.grad(ref, (x, r0), gy)):
        torch.testing.assert_close(a, b, msg=name)


@pytest.mark.parametrize("share", [False, True])
@pytest.mark.parametrize("scale", [0.01, 0.5])
def test_fused_oft_gradient_paths_match_plain(share, scale):
    """∂R through R⁻¹ (R near-orthogonal: Cayley-Neumann of a small Q, as in training) and through g W (a larger Q,
    R far from orthogonal): both equal autograd of the plain block-rotated forward, in float32."""
    from peftzoo.adapters.oft import cayley_neumann, skew
    torch.manual_seed(0)
    lin, x = nn.Linear(32, 24), torch.randn(3, 50, 32, requires_grad=True)
    rows, cols = torch.triu_indices(8, 8, 1)
    q = (torch.randn(1 if share else 4, 28) * scale).requires_grad_(True)
    r = cayley_neumann(skew(q, 8, rows, cols), 5).expand(4, -1, -1)
    assert (_near_orthogonal_inverse(r.detach()) is None) == (scale > 0.1)  # both paths run
    lin.requires_grad_(False)
    ref = lin(torch.einsum("...rk,rkc->...rc", x.reshape(3, 50, 4, 8), r).reshape(x.shape))
    out = FusedOft.apply(x, lin.weight, lin.bias, r)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    gy = torch.randn(ref.shape)
    ours = torch.autograd.grad(out, (x, q), gy, retain_graph=True)  # R's graph serves every call
    want = torch.autograd.grad(ref, (x, q), gy, retain_graph=True)
    for name, a, b in zip("xQ", ours, want):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-5, msg=name)
    # one of the two needed: ∂x alone (x R⁻ᵀ not formed), ∂Q alone (a frozen input)
    torch.testing.assert_close(torch.autograd.grad(out, x, gy, retain_graph=True)[0], want[0], atol=1e-4, rtol=1e-5)
    frozen = FusedOft.apply(x.detach(), lin.weight, lin.bias, r)
    torch.testing.assert_close(torch.autograd.grad(frozen, q, gy)[0], want[1], atol=1e-4, rtol=1e-5)


def test_vera_paths_agree():
    import peftzoo
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 16))
    ad = peftzoo.attach(model, "vera", targets=["0"], r=64)
    layer = ad.layers["0"]
    with torch.no_grad():
        layer.lambda_b.normal_()
    few, many = torch.randn(2, 16), torch.randn(400, 16)  # few rows: factored; many rows: one merged matmul
    for x in (few, many):
        A, B = layer.projections()
        ref = layer.base(x) + layer.lambda_b * ((layer.lambda_d * (x @ A.t())) @ B.t())
        torch.testing.assert_close(layer(x), ref, atol=1e-5, rtol=1e-5)
