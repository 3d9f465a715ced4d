"""LoRAM (init_lora_weights="loram"): the paper's magnitude-driven "Basis & Basis" init, checked by hand on a tiny
layer (DST bases from scipy, β from the paper's magnitude ν), its exact reload, and its refusals."""
import json
import math

import numpy as np
import pytest
import torch
from conftest import TARGETS, randomize, tiny_bert
from scipy.fft import dst
from torch import nn

import peftzoo
from peftzoo import adapters
from peftzoo.adapters.layer import AdapterLayer

# every method whose config takes init_lora_weights (the LoRA family: lora, rslora, loraplus, dora, deltalora, ...)
FAMILY = [m for m in peftzoo.methods() if hasattr(adapters.get(m).config_cls, "init_lora_weights")]


class Tiny(nn.Module):
    def __init__(self, d_in=6, d_out=5):
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(d_in, d_out)

    def forward(self, x):
        return self.lin(x)


def nu(x):
    """The paper's magnitude ν[X] = ‖X‖_F² / (rows · columns)."""
    return float((x.detach().double() ** 2).mean())


def dst_basis(k, r):
    """The first r columns of the k-point orthonormal DST-I matrix, from scipy (an independent implementation)."""
    return torch.tensor(dst(np.eye(k), type=1, norm="ortho")[:, :r])


@pytest.mark.parametrize("alpha", [2.0, 3.0])  # s = alpha / r = 1 (the paper's scale) and 1.5
def test_factors_residual_and_norms_by_hand_on_a_tiny_layer(alpha):
    r, model = 2, Tiny()
    w = model.lin.weight.detach().double().clone()
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(1))
    before = model(x)
    ad = peftzoo.attach(model, "lora", targets=["lin"], r=r, alpha=alpha, init_lora_weights="loram")
    layer, s = ad.layers["lin"], alpha / r
    phi_n, phi_m = dst_basis(5, r), dst_basis(6, r)
    torch.testing.assert_close(phi_n.t() @ phi_n, torch.eye(r, dtype=torch.float64), atol=1e-12, rtol=0)
    q = math.log(r) / math.log(5)  # log_min(n,m)(r), n = d_out = 5, m = d_in = 6
    beta = (q * nu(w) / nu(phi_n @ phi_m.t())) ** 0.25
    torch.testing.assert_close(layer.A.double(), beta / math.sqrt(s) * phi_m.t(), atol=1e-6, rtol=0)
    torch.testing.assert_close(layer.B.double(), beta / math.sqrt(s) * phi_n, atol=1e-6, rtol=0)
    torch.testing.assert_close(layer.base.weight.double(), w - beta ** 2 * phi_n @ phi_m.t(), atol=1e-6, rtol=0)
    delta = s * layer.B.double() @ layer.A.double()
    assert nu(delta) == pytest.approx(q * nu(w), rel=1e-5)  # the paper's ν[B A] = Q[r]·ν[W]
    assert delta.norm().item() == pytest.approx(math.sqrt(q) * w.norm().item(), rel=1e-5)
    assert layer.A.norm().item() == pytest.approx(layer.B.norm().item(), rel=1e-6)  # "Basis & Basis": balanced
    torch.testing.assert_close(model(x), before, atol=1e-6, rtol=0)  # the forward at init is W x + b


def test_the_update_is_the_same_for_every_alpha():
    """s·B A = β² Φ_n Φ_mᵀ whatever α (the factors are divided by √s, as PEFT's PiSSA divides S by s)."""
    deltas = []
    for alpha in (4.0, 16.0):
        model = tiny_bert(0)
        ad = peftzoo.attach(model, "lora", targets=TARGETS, r=4, alpha=alpha, init_lora_weights="loram")
        deltas.append({n: ly.delta_weight() for n, ly in ad.layers.items()})
    for n in deltas[0]:
        torch.testing.assert_close(deltas[0][n], deltas[1][n], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("method", ["lora", "rslora", "dora"])
def test_output_is_unchanged_and_own_files_reload_exactly(tmp_path, ids, method):
    model = tiny_bert(0)
    base = model(ids).logits
    ad = peftzoo.attach(model, method, targets=TARGETS, r=4, init_lora_weights="loram", train=["classifier"])
    torch.testing.assert_close(model(ids).logits, base, atol=1e-5, rtol=0)
    randomize(ad, std=0.1)
    out = model(ids).logits
    ad.save(tmp_path)
    fresh = tiny_bert(0)
    peftzoo.load(fresh, tmp_path)
    torch.testing.assert_close(fresh(ids).logits, out, atol=0, rtol=0)  # deterministic: the same residual


def test_on_gpt2s_conv1d_the_residual_is_stored_transposed():
    from zoo import ARCHS, output
    torch.manual_seed(0)
    model = ARCHS["gpt2"].build().eval()
    x = ARCHS["gpt2"].inputs(torch.Generator().manual_seed(1))
    w = {n: m.weight.detach().clone() for n, m in model.named_modules() if n.endswith("c_attn")}
    before = output(model, x)
    ad = peftzoo.attach(model, "lora", targets=["c_attn"], r=4, init_lora_weights="loram")
    for name, layer in ad.layers.items():  # stored (d_in, d_out): W − s·B A in that layout
        torch.testing.assert_close(layer.base.weight, w[name] - (layer.scaling * layer.B @ layer.A).t(),
                                   atol=1e-6, rtol=0)
    torch.testing.assert_close(output(model, x), before, atol=1e-5, rtol=0)


def test_refusals_name_the_fix(tmp_path, model):
    with pytest.raises(ValueError, match=r"'loram' needs r >= 2 .*A = B = 0 and neither would ever get a gradient"):
        peftzoo.attach(model, "lora", targets=["query"], r=1, init_lora_weights="loram")
    with pytest.raises(ValueError, match=r"init_lora_weights='loram' needs r <= min\(d_in, d_out\) = 32"):
        peftzoo.attach(model, "lora", targets=["query"], r=40, init_lora_weights="loram")
    with pytest.raises(ValueError, match=r"'loram' is defined for nn.Linear layers only"):
        peftzoo.attach(model, "lora", targets=["word_embeddings"], r=4, init_lora_weights="loram")
    assert not any(isinstance(m, AdapterLayer) for m in model.modules())
    ad = peftzoo.attach(model, "lora", targets=["query"], r=4, init_lora_weights="loram")
    with pytest.raises(NotImplementedError, match=r"'loram' is peftzoo's, not Hugging Face PEFT 0.21.2's.*ad.save"):
        ad.save_peft(tmp_path / "p")
    plain = peftzoo.attach(tiny_bert(0), "lora", targets=["query"], r=4)
    plain.save_peft(tmp_path / "q")
    cfg = json.loads((tmp_path / "q" / "adapter_config.json").read_text())
    (tmp_path / "q" / "adapter_config.json").write_text(json.dumps({**cfg, "init_lora_weights": "loram"}))
    with pytest.raises(NotImplementedError, match=r"a PEFT LoRA file cannot carry it"):
        peftzoo.load_peft(tiny_bert(0), tmp_path / "q")


@pytest.mark.parametrize("method", FAMILY)
def test_every_lora_family_method_takes_loram(ids, method):
    """At init the output is the base model's; merge keeps it and unmerge gives the residual back; the count is the
    default init's; one step of the method's own optimizer moves both factors (neither starts at zero)."""
    from peftzoo.bench.train import train_step
    model = tiny_bert(0)
    base = model(ids).logits
    kw = dict(targets=TARGETS, r=4, train=["classifier"])
    ad = peftzoo.attach(model, method, init_lora_weights="loram", **kw)
    assert ad.count() == peftzoo.count(tiny_bert(0), method, **kw)
    torch.testing.assert_close(model(ids).logits, base, atol=1e-5, rtol=0)
    residual = {n: ly.base.weight.clone() for n, ly in ad.layers.items()}
    ad.merge()
    torch.testing.assert_close(model(ids).logits, base, atol=1e-5, rtol=0)
    ad.unmerge()
    for n, ly in ad.layers.items():
        torch.testing.assert_close(ly.base.weight, residual[n], atol=1e-6, rtol=1e-6)
    a0 = {n: (ly.A.detach().clone(), ly.B.detach().clone()) for n, ly in ad.layers.items()}
    assert all(a.abs().max() > 0 and b.abs().max() > 0 for a, b in a0.values())
    model.train()
    train_step(ad, ad.make_optimizer(1e-3), {"input_ids": ids, "labels": torch.tensor([0, 1, 2])}, step=1)
    for n, ly in ad.layers.items():
        assert not torch.equal(ly.A, a0[n][0]) and not torch.equal(ly.B, a0[n][1]), n
