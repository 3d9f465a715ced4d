"""Contracts every registered method answers: written once, parametrised over peftzoo.methods()."""
import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import TARGETS, randomize

import peftzoo
from peftzoo import adapters
from peftzoo.adapters.layer import AdapterLayer
from peftzoo.adapters.layered import LayerAdapter

METHODS = peftzoo.methods()
LAYER_METHODS = [m for m in METHODS if issubclass(adapters.get(m), LayerAdapter)]
# methods whose trained tensors are the model's own (BitFit's biases) have nothing to merge: test_bitfit.py
MERGING = [m for m in METHODS if not adapters.get(m).trains_model_tensors and adapters.get(m).merges]
# a method whose update is a weight change starts at ΔW = 0 (the base model); prompt tuning's virtual tokens change the
# outputs from the start and cannot merge (test_prompt.py)
AT_BASE = [m for m in METHODS if adapters.get(m).merges]


def attach(model, method, **kw):
    return peftzoo.attach(model, method, targets=TARGETS, train=["classifier"], **kw)


@pytest.mark.parametrize("method", METHODS)
def test_only_adapter_and_train_modules_are_trainable(model, method):
    ad = attach(model, method)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    expected = {id(p) for p in ad.adapter_parameters()} | {id(p) for p in model.classifier.parameters()}
    assert trainable <= expected
    assert {id(p) for p in ad.model.parameters() if p.requires_grad} == expected
    if issubclass(type(ad), LayerAdapter):
        assert ad.model is model  # in-place methods


@pytest.mark.parametrize("method", AT_BASE)
def test_output_equals_base_model_at_init(model, ids, method):
    ref = model(ids).logits
    ad = attach(model, method)
    torch.testing.assert_close(ad.model(ids).logits, ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("method", LAYER_METHODS)
def test_layer_forward_equals_linear_with_merged_weight(model, method):
    with torch.no_grad():  # non-zero biases (BERT's init zeroes them): IA3 scales them when it merges
        g = torch.Generator().manual_seed(7)
        for p in [p for n, p in model.named_parameters() if n.endswith("bias")]:
            p.add_(torch.randn(p.shape, generator=g))
    ad = attach(model, method)
    randomize(ad)
    x = torch.randn(4, 5, 32)
    layers = [m for m in model.modules() if isinstance(m, AdapterLayer)]
    assert len(layers) == 6
    for layer in layers:
        if layer.in_features != 32:
            continue
        w = layer.base.weight + layer.delta_weight()
        db = layer.delta_bias() if hasattr(layer, "delta_bias") else None  # what merge() adds to the bias, if any
        b = layer.base.bias if db is None else layer.base.bias + db
        torch.testing.assert_close(layer(x), F.linear(x, w, b), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", MERGING)
def test_merge_keeps_outputs_and_unmerge_restores_weights(model, ids, method):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ad = attach(model, method)
    randomize(ad)
    out = ad.model(ids).logits
    ad.merge()
    torch.testing.assert_close(ad.model(ids).logits, out, atol=1e-5, rtol=1e-5)
    merged = {k: v.clone() for k, v in model.state_dict().items()}
    ad.merge()  # twice changes nothing
    for k, v in model.state_dict().items():
        assert torch.equal(v, merged[k]), k
    assert any(not torch.equal(merged[k], before[k.replace(".base.", ".")]) for k in merged
               if k.endswith("weight")), "merge did not change any weight"
    ad.unmerge()
    for k, v in model.state_dict().items():
        if k.replace(".base.", ".") in before:
            torch.testing.assert_close(v, before[k.replace(".base.", ".")], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(ad.model(ids).logits, out, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_count_matches_trainable_and_does_not_touch_model(model, method):
    snapshot = copy.deepcopy(model.state_dict())
    n_modules = len(list(model.modules()))
    n = peftzoo.count(model, method, targets=TARGETS, train=["classifier"])
    assert len(list(model.modules())) == n_modules
    assert all(torch.equal(v, snapshot[k]) for k, v in model.state_dict().items())
    assert all(p.requires_grad for p in model.parameters())
    ad = attach(model, method)
    assert n == ad.num_trainable() == sum(p.numel() for p in ad.model.parameters() if p.requires_grad)
    assert ad.summary()["adapter"] + ad.summary()["train_modules"] == n


@pytest.mark.parametrize("method", METHODS)
def test_save_load_roundtrip_without_base_weights(tmp_path, model, ids, method):
    from conftest import tiny_bert
    from safetensors.torch import load_file
    ad = attach(model, method)
    randomize(ad)
    out = ad.model(ids).logits
    ad.save(tmp_path / "a")
    keys = load_file(str(tmp_path / "a" / "adapter.safetensors")).keys()
    assert not any(k.endswith("base.weight") or "embeddings" in k for k in keys)
    fresh = tiny_bert(seed=0)
    ad2 = peftzoo.load(fresh, tmp_path / "a")
    assert ad2.name == method
    torch.testing.assert_close(ad2.model(ids).logits, out, atol=1e-6, rtol=0)


@pytest.mark.parametrize("method", METHODS)
def test_one_step_changes_only_adapter_and_train_tensors(model, ids, method):
    from peftzoo.bench.train import train_step
    ad = attach(model, method)
    model = ad.model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    ad.set_total_steps(10)
    opt = ad.make_optimizer(1e-2)  # the method's own optimizer (AdamW over param_groups for most)
    model.train()
    train_step(ad, opt, {"input_ids": ids, "labels": torch.tensor([0, 1, 2])}, step=1)
    own = {id(p) for p in ad.trainable_parameters()}
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    allowed = {n for n, p in model.named_parameters() if id(p) in own}
    assert changed <= allowed
    assert any("classifier" in n for n in changed)
    assert any(id(p) in {id(q) for q in ad.adapter_parameters()} for n, p in model.named_parameters() if n in changed)
