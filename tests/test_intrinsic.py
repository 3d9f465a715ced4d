"""Fastfood, DID/SAID and the d_90 search."""
import math
from pathlib import Path

import pytest
import torch

import peftzoo
from peftzoo.intrinsic.d90 import Search, log_grid
from peftzoo.adapters.fastfood import Fastfood, fwht, hadamard


@pytest.mark.parametrize("n", [1, 2, 8, 64, 256])
def test_fwht_equals_hadamard_matrix(n):
    x = torch.randn(3, n, dtype=torch.float64)
    torch.testing.assert_close(fwht(x), x @ hadamard(n).double().t())


def test_fwht_rejects_non_power_of_two():
    with pytest.raises(ValueError, match="power-of-2"):
        fwht(torch.zeros(6))


@pytest.mark.parametrize("d, D", [(16, 64), (10, 100), (100, 3000)])
def test_fastfood_columns_unit_norm_and_seeded(d, D):
    P = Fastfood(d, D, seed=3).dense()
    assert P.shape == (D, d)
    norms = P.norm(dim=0)
    if D % Fastfood(d, D).L == 0:
        torch.testing.assert_close(norms, torch.ones(d), atol=1e-5, rtol=0)
    else:  # the last block is truncated
        assert ((norms > 0.6) & (norms <= 1 + 1e-5)).all()
    assert torch.equal(P, Fastfood(d, D, seed=3).dense())
    assert not torch.allclose(P, Fastfood(d, D, seed=4).dense())
    cos = (P.t() @ P) / (norms[:, None] * norms[None])
    assert (cos - torch.eye(d)).abs().max() < 0.6  # random directions, not collapsed


def test_fastfood_gradient_is_transpose_projection():
    ff = Fastfood(12, 200, seed=0)
    z = torch.randn(12, requires_grad=True)
    g = torch.randn(200)
    (ff(z) * g).sum().backward()
    torch.testing.assert_close(z.grad, ff.dense().t() @ g, atol=1e-5, rtol=1e-5)


def _mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(10, 20), torch.nn.ReLU(), torch.nn.Linear(20, 3))


@pytest.mark.parametrize("method", ["did", "said"])
def test_d_zero_is_the_base_model(method):
    net, x = _mlp(), torch.randn(5, 10)
    ref = net(x)
    ad = peftzoo.attach(net, method, d=0)
    torch.testing.assert_close(ad.model(x), ref)
    assert ad.num_trainable() == 0


def test_said_counts_its_scales_in_d_and_dense_matches_fastfood_shape():
    net = _mlp()
    ad = peftzoo.attach(net, "said", d=50)
    assert ad.model.z.numel() == 50 - 4 and ad.model.lam.numel() == 4 and ad.num_trainable() == 50
    with pytest.raises(ValueError, match="SAID needs d > 4"):
        peftzoo.attach(_mlp(), "said", d=4)
    did = peftzoo.attach(_mlp(), "did", d=50, projection="dense")
    assert did.model.proj.P.shape == (sum(p.numel() for p in _mlp().parameters()), 50)


def test_subspace_trains_with_the_project_loop():
    from peftzoo.bench.train import fit
    from peftzoo.intrinsic.images import accuracy, build_net, load_images
    x, y, xt, yt = load_images("digits")
    net = build_net("fc", 8, seed=0)
    ad = peftzoo.attach(net, "said", d=500, train=[])
    before = accuracy(ad.model, xt, yt)
    batches = [(x[i:i + 128], y[i:i + 128]) for i in range(0, len(y), 128)]
    fit(ad, lambda e: batches, epochs=3, lr=5e-2, evaluate=None, warmup=0.0)
    after = accuracy(ad.model, xt, yt)
    assert after > before + 0.3, (before, after)
    assert all(torch.equal(p, q) for p, q in zip(net.parameters(), build_net("fc", 8, seed=0).parameters()))
    ad.merge()  # merged weights give the trained model
    torch.testing.assert_close(accuracy(net, xt, yt), after)


def _peak_rss_mb():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_projection_memory_is_linear_in_D():
    D, d = 20_000_000, 100_000  # a dense P would be 8 TB
    Path("/proc/self/clear_refs").write_text("5")
    start = _peak_rss_mb()
    ff = Fastfood(d, D, seed=0)
    with torch.no_grad():
        out = ff(torch.randn(d))
    assert out.shape == (D,)
    grown = (_peak_rss_mb() - start) * 2**20
    buffers = sum(b.numel() * b.element_size() for b in ff.buffers())
    assert buffers <= 20 * D
    assert grown < 60 * D, f"peak grew by {grown / 2**20:.0f} MB for D = {D}"


def test_d90_search_on_a_synthetic_curve(tmp_path):
    calls = []

    def score(d, seed):
        calls.append((d, seed))
        return 0.8 * (1 - math.exp(-d / 300)) + 0.001 * seed
    s = Search(score, baseline=0.8, seeds=[0, 1], trivial=0.1, path=tmp_path / "r.json")
    r = s.run(log_grid(10, 10000, 2), bisect_steps=8, max_ratio=1.03)
    for seed in (0, 1):
        lo, hi = r["per_seed"][str(seed)]["bracket"]
        crossing = -300 * math.log(1 - (0.72 - 0.001 * seed) / 0.8)  # this seed crosses here (≈ 690, ≈ 686)
        assert lo < crossing < hi and hi / lo <= 1.03, (seed, lo, hi, crossing)
    assert r["reached"] and r["d90"] == round(math.sqrt(r["per_seed"]["0"]["d90"] * r["per_seed"]["1"]["d90"]))
    n = len(calls)
    r2 = Search(score, baseline=0.8, seeds=[0, 1], trivial=0.1, path=tmp_path / "r.json").run(
        log_grid(10, 10000, 2), 8, max_ratio=1.03)
    assert r2["d90"] == r["d90"] and len(calls) == n  # resumed from the file: nothing re-evaluated


def test_d90_not_reached_is_reported():
    r = Search(lambda d, s: 0.1, baseline=1.0, seeds=[0], trivial=0.0).run([10, 100])
    assert not r["reached"] and r["d90"] is None and r["bracket"] == [100, None]
    assert r["per_seed"]["0"]["message"] == "not reached: best 0.100 < target 0.900 (at d = 10, the largest " \
        "tried is 100: raise --dmax)"


@pytest.mark.skipif(not __import__("os").environ.get("PEFTZOO_DATA_DIR"), reason="PEFTZOO_DATA_DIR not set")
def test_real_mnist_and_fashion_files():
    import os

    from peftzoo.intrinsic.images import load_images
    x, y, xt, yt = load_images("mnist", os.environ["PEFTZOO_DATA_DIR"])
    assert x.shape == (10000, 1, 28, 28) and xt.shape == (5000, 1, 28, 28)
    assert 0 <= float(x.min()) and float(x.max()) <= 1 and set(yt.tolist()) == set(range(10))
    assert (torch.bincount(yt) == 500).all()  # 500 per class, as the data README says
    x, y, xt, yt = load_images("fashion-mnist", os.environ["PEFTZOO_DATA_DIR"], max_train=1000)
    assert x.shape == (1000, 1, 28, 28) and len(yt) == 10000


@pytest.mark.parametrize("side", [8, 28])
def test_lenet_and_fc_build_for_both_input_sizes(side):
    from peftzoo.intrinsic.images import build_net
    for name in ("fc", "lenet"):
        net = build_net(name, side, seed=0)
        assert net(torch.zeros(2, 1, side, side)).shape == (2, 10)


def test_subspace_has_no_peft_format(tmp_path):
    ad = peftzoo.attach(_mlp(), "said", d=20)
    with pytest.raises(NotImplementedError, match="no Hugging Face PEFT equivalent"):
        ad.save_peft(tmp_path)


def test_said_fused_parameters_give_autograd_gradients():
    """SAID's fused θ0 + λ·(P z) (``_Said``) against the same θ built from ``deltas()`` with autograd's own ops."""
    from torch.func import functional_call
    net, x = _mlp(), torch.randn(5, 10)
    ad = peftzoo.attach(net, "said", d=40, seed=0)
    m = ad.model
    with torch.no_grad():
        m.z.normal_(0, 0.3, generator=torch.Generator().manual_seed(1))
        m.lam.uniform_(0.5, 1.5, generator=torch.Generator().manual_seed(2))
    w = torch.randn(5, 3)
    (m(x) * w).sum().backward()
    fused = (m.z.grad.clone(), m.lam.grad.clone())
    m.z.grad = m.lam.grad = None
    own = dict(m.base.named_parameters())
    theta = {n: own[n] + d for n, d in m.deltas().items()}
    (functional_call(m.base, theta, (x,)) * w).sum().backward()
    torch.testing.assert_close(fused[0], m.z.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fused[1], m.lam.grad, atol=1e-5, rtol=1e-5)
    assert fused[1].abs().sum() > 0 and fused[0].abs().sum() > 0


def test_said_trains_under_bf16_autocast():
    """Under autocast the projection comes out in bf16: SAID takes autograd's ops, and its backward runs."""
    net, x = _mlp(), torch.randn(5, 10)
    ad = peftzoo.attach(net, "said", d=40, seed=0)
    with torch.no_grad():
        ad.model.z.normal_(0, 0.3, generator=torch.Generator().manual_seed(1))  # z = 0 would give λ no gradient
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = ad.model(x)
    out.float().sum().backward()
    assert ad.model.z.grad is not None and torch.isfinite(ad.model.z.grad).all() and ad.model.lam.grad.abs().sum() > 0
