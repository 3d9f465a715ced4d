"""Frozen nn.Linear weights cast once under autocast (bench/frozen.py): bit for bit what autocast computes itself,
only inside autocast, refreshed when a frozen tensor changes, and gone afterwards."""
import copy

import torch
from conftest import randomize, tiny_bert

import peftzoo
from peftzoo.bench.frozen import FrozenCasts
from peftzoo.bench.train import fit

BF16 = dict(device_type="cpu", dtype=torch.bfloat16)


def _step(model, ids, labels):
    with torch.autocast(**BF16):
        loss = model(input_ids=ids, labels=labels).loss
    loss.backward()
    return loss.detach()


def _setup(method="lora"):
    model = tiny_bert().train()
    for m in model.modules():  # no dropout: two runs must see the same randomness-free step
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    ad = peftzoo.attach(model, method, targets=["query", "value"], train=["classifier"], r=4)
    randomize(ad)
    g = torch.Generator().manual_seed(0)
    return ad, torch.randint(0, 100, (4, 9), generator=g), torch.randint(0, 3, (4,), generator=g)


def test_a_step_under_frozen_casts_is_bit_identical_to_plain_autocast():
    ad, ids, labels = _setup()
    twin = copy.deepcopy(ad.model)
    ref = _step(twin, ids, labels)
    casts = FrozenCasts(ad.model, **BF16)
    layer = ad.model.bert.encoder.layer[0]
    assert layer.attention.self.key in casts.originals  # key, output dense layers, intermediate, pooler: plain
    assert layer.attention.self.query.base not in casts.originals  # a wrapped layer is its adapter's business
    assert ad.model.classifier not in casts.originals  # trained
    with casts:
        for _ in range(2):  # the second step reuses the cached copies
            ad.model.zero_grad()
            got = _step(ad.model, ids, labels)
    assert torch.equal(got, ref)
    grads = {n: p.grad for n, p in ad.model.named_parameters() if p.grad is not None}
    ref_grads = {n: p.grad for n, p in twin.named_parameters() if p.grad is not None}
    assert grads.keys() == ref_grads.keys() and grads
    assert all(torch.equal(grads[n], ref_grads[n]) for n in grads)


def test_only_inside_autocast_and_nothing_left_after():
    ad, ids, _ = _setup()
    before = {n: p for n, p in ad.model.named_parameters()}
    with FrozenCasts(ad.model, **BF16) as casts:
        out = ad.model(input_ids=ids).logits  # no autocast: the layers' own fp32 tensors
        assert out.dtype == torch.float32 and not casts.swapped
        with torch.autocast(**BF16):
            ad.model(input_ids=ids)
        assert casts.cache and not casts.swapped  # each layer had its copy for its own forward only
    after = {n: p for n, p in ad.model.named_parameters()}
    assert after.keys() == before.keys() and all(after[n] is before[n] for n in before)
    assert all(p.dtype == torch.float32 for p in after.values())
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in ad.model.modules())


def test_a_frozen_weight_changed_in_place_is_cast_again():
    ad, ids, _ = _setup()
    dense = ad.model.bert.encoder.layer[0].intermediate.dense
    with FrozenCasts(ad.model, **BF16), torch.autocast(**BF16):
        ad.model(input_ids=ids)
        with torch.no_grad():
            dense.weight.mul_(2.0)
        got = ad.model(input_ids=ids).logits
    with torch.autocast(**BF16):
        ref = ad.model(input_ids=ids).logits
    assert torch.equal(got, ref)


def test_fit_in_bf16_trains_exactly_as_without_the_cache(monkeypatch):
    import peftzoo.bench.train as train
    data = [{"input_ids": torch.randint(0, 100, (4, 9), generator=torch.Generator().manual_seed(i)),
             "labels": torch.tensor([0, 1, 2, 0])} for i in range(3)]
    results = []
    for cached in (True, False):
        ad, _, _ = _setup("dora")  # DoRA reads its own bases' fp32 weights: those are not touched
        if not cached:
            monkeypatch.setattr(train, "frozen_casts", lambda *a: __import__("contextlib").nullcontext())
        fit(ad, lambda e: data, 1, 1e-2, precision="bf16")
        results.append([p.detach().clone() for p in ad.trainable_parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*results))
