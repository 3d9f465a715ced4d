"""Reference tests: the same adapter weights give the same logits in peftzoo and in Hugging Face PEFT."""
import json

import pytest
import torch
from conftest import TARGETS, randomize, tiny_bert

import peftzoo
from peftzoo import adapters

peft = pytest.importorskip("peft")
PEFT_METHODS = [m for m in peftzoo.methods() if adapters.get(m).peft is not None]
TOL = dict(atol=1e-5, rtol=1e-5)


def ours(method, seed=0, **kw):
    model = tiny_bert(seed)
    kw.setdefault("total_steps", 10) if method == "adalora" else None
    return model, peftzoo.attach(model, method, targets=TARGETS, train=["classifier"], **kw)


@pytest.mark.parametrize("method", PEFT_METHODS)
def test_our_file_loads_in_peft_with_same_logits(tmp_path, ids, method):
    model, ad = ours(method)
    randomize(ad)
    with torch.no_grad():
        model.classifier.weight.mul_(2.0)
    out = ad.model(ids).logits  # ad.model: the model itself, or a whole-model method's wrapper (prompt tuning)
    ad.save_peft(tmp_path)
    pm = peft.PeftModel.from_pretrained(tiny_bert(0), tmp_path).eval()
    torch.testing.assert_close(pm(ids).logits, out, **TOL)
    assert (out - tiny_bert(0)(ids).logits).abs().max() > 1e-3  # the adapter matters


@pytest.mark.parametrize("method", PEFT_METHODS)
def test_peft_file_loads_in_peftzoo_with_same_logits_and_counts(tmp_path, ids, method):
    _, ad = ours(method)
    ad.save_peft(tmp_path / "cfg")  # our config, read by PEFT, builds PEFT's own model
    cfg = peft.PeftConfig.from_pretrained(tmp_path / "cfg")
    cfg.inference_mode = False
    pm = peft.get_peft_model(tiny_bert(0), cfg).eval()
    n_peft = sum(p.numel() for p in pm.parameters() if p.requires_grad)
    assert ad.num_trainable() == n_peft
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in pm.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.3)
    ref = pm(ids).logits
    pm.save_pretrained(tmp_path / "peft")
    model = tiny_bert(0)
    ad2 = peftzoo.load_peft(model, tmp_path / "peft")
    assert ad2.name == ("lora" if method == "loraplus" else method)  # LoRA+ files are plain LoRA files
    torch.testing.assert_close(ad2.model(ids).logits, ref, **TOL)


def test_adalora_pruned_peft_adapter_loads(tmp_path, ids):
    model, ad = ours("adalora", init_r=4, target_r=2)
    randomize(ad)
    for i, layer in enumerate(ad.layers.values()):  # a rank pattern with different ranks per layer
        layer.keep[: i % 4] = 0
        layer.enforce = True
    out = model(ids).logits
    ad.save_peft(tmp_path)
    pattern = json.loads((tmp_path / "adapter_config.json").read_text())["rank_pattern"]
    assert sorted(sum(v) for v in pattern.values()) == sorted(4 - i % 4 for i in range(6))
    pm = peft.PeftModel.from_pretrained(tiny_bert(0), tmp_path).eval()
    torch.testing.assert_close(pm(ids).logits, out, **TOL)
    pm.save_pretrained(tmp_path / "again")
    back = tiny_bert(0)
    ad2 = peftzoo.load_peft(back, tmp_path / "again")
    torch.testing.assert_close(back(ids).logits, out, **TOL)
    sizes = {n: l.in_features + l.out_features + 1 for n, l in ad2.layers.items()}
    assert ad2.summary()["adapter"] == sum(r * sizes[n] for n, r in ad2.ranks().items())
    assert sorted(ad2.ranks().values()) == sorted(4 - i % 4 for i in range(6))


def test_lora_delta_weight_by_hand(model):
    ad = peftzoo.attach(model, "lora", targets=["query"], r=4, alpha=12)
    randomize(ad)
    layer = next(iter(ad.layers.values()))
    torch.testing.assert_close(layer.delta_weight(), layer.B @ layer.A * 3.0)
    rs = peftzoo.attach(tiny_bert(), "rslora", targets=["query"], r=4, alpha=12)
    randomize(rs)
    layer = next(iter(rs.layers.values()))
    torch.testing.assert_close(layer.delta_weight(), layer.B @ layer.A * 6.0)


def test_vera_projections_match_peft():
    model = tiny_bert(0)
    ad = peftzoo.attach(model, "vera", targets=TARGETS, r=16, projection_seed=7)
    pm = peft.get_peft_model(tiny_bert(0), peft.VeraConfig(r=16, target_modules=TARGETS, projection_prng_key=7))
    torch.testing.assert_close(ad.shared.A, pm.base_model.vera_A["default"], atol=0, rtol=0)
    torch.testing.assert_close(ad.shared.B, pm.base_model.vera_B["default"], atol=0, rtol=0)
