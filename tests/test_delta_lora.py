"""Delta-LoRA: W's move checked by hand over the first steps, the warm-up boundary, merge, and the saved adapter
rebuilding the trained model (its moved W included)."""
import pytest
import torch
from conftest import TARGETS, tiny_bert

import peftzoo
from peftzoo.bench.train import train_step

LABELS = torch.tensor([0, 1, 2])


def _attach(**kw):
    model = tiny_bert()
    kw = {"targets": TARGETS, "train": ["classifier"], "r": 4, "alpha": 8, **kw}
    return model, peftzoo.attach(model, "deltalora", **kw)


def _step(ad, opt, ids, step):
    """One step of the project's loop (its on_step hook included); eval mode: no dropout, so steps are exact."""
    train_step(ad, opt, {"input_ids": ids, "labels": LABELS}, step=step, clip=0)


def _factors(ad):
    return {n: (layer.A.detach().clone(), layer.B.detach().clone()) for n, layer in ad.layers.items()}


def _weights(ad):
    return {n: layer.base.weight.detach().clone() for n, layer in ad.layers.items()}


@pytest.mark.parametrize("optim", ["sgd", "adamw"])
def test_two_steps_by_hand(ids, optim):
    """K = 0: step 1 (t = 0) leaves W alone; step 2 (t = 1 > K) moves it by λ·s·(B2 A2 − B1 A1)."""
    model, ad = _attach(start_steps=0, update_ratio=2.0)
    model.classifier.requires_grad_(False)  # SGD's A, B update below is then the whole story
    lr, s, lam = 0.5, 8 / 4, 2.0
    opt = torch.optim.SGD(ad.param_groups(lr)) if optim == "sgd" else torch.optim.AdamW(ad.param_groups(1e-2))
    w0, f0 = _weights(ad), _factors(ad)
    with torch.no_grad():
        for layer in ad.layers.values():  # B = 0 at init gives A no gradient on step 1: start from a B ≠ 0
            layer.B.normal_(0, 0.2, generator=torch.Generator().manual_seed(0))
    f0 = _factors(ad)
    if optim == "sgd":  # the hand SGD step of A, B from their gradients
        model(ids, labels=LABELS).loss.backward()
        grads = {n: (layer.A.grad.clone(), layer.B.grad.clone()) for n, layer in ad.layers.items()}
        opt.zero_grad(set_to_none=True)
    _step(ad, opt, ids, step=1)
    f1 = _factors(ad)
    for n in ad.layers:
        assert torch.equal(ad.layers[n].base.weight, w0[n])  # t = 0 is not > K
        if optim == "sgd":
            torch.testing.assert_close(f1[n][0], f0[n][0] - lr * grads[n][0])
            torch.testing.assert_close(f1[n][1], f0[n][1] - lr * grads[n][1])
    _step(ad, opt, ids, step=2)
    f2 = _factors(ad)
    for n, layer in ad.layers.items():
        (a1, b1), (a2, b2) = f1[n], f2[n]
        assert not torch.equal(a2, a1) and not torch.equal(b2, b1)
        torch.testing.assert_close(layer.base.weight, w0[n] + lam * s * (b2 @ a2 - b1 @ a1), atol=1e-7, rtol=1e-6)
        assert not layer.base.weight.requires_grad and layer.base.weight.grad is None


def test_warm_up_boundary_and_only_targets_move(ids):
    """K = 2: W first moves at step 4 (t = 3), by the change of that step alone."""
    model, ad = _attach(start_steps=2)
    opt = torch.optim.AdamW(ad.param_groups(1e-2))
    others = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    w0 = _weights(ad)
    for step in (1, 2, 3):
        _step(ad, opt, ids, step)
        assert all(torch.equal(ad.layers[n].base.weight, w0[n]) for n in ad.layers)
    f3 = _factors(ad)
    _step(ad, opt, ids, 4)
    f4 = _factors(ad)
    for n, layer in ad.layers.items():
        delta = 2.0 * 2.0 * (f4[n][1] @ f4[n][0] - f3[n][1] @ f3[n][0])  # λ = 2, s = 8/4
        torch.testing.assert_close(layer.base.weight, w0[n] + delta, atol=1e-7, rtol=1e-6)
        assert torch.equal(layer.anchor_A, f3[n][0]) and torch.equal(layer.anchor_B, f3[n][1])
    moved = {n for n, p in model.named_parameters() if n in others and not torch.equal(p, others[n])}
    assert moved == {f"{n}.base.weight" for n in ad.layers}


def test_saved_adapter_rebuilds_the_trained_model_and_merge_keeps_it(tmp_path, ids):
    model, ad = _attach(start_steps=1)
    opt = torch.optim.AdamW(ad.param_groups(1e-2))
    for step in range(1, 7):  # W moves on steps 3..6
        _step(ad, opt, ids, step)
    out = model(ids).logits
    lora_only = sum((layer.base.weight - w).abs().max() for layer, w in
                    zip(ad.layers.values(), _weights(_attach()[1]).values()))
    assert lora_only > 1e-3  # W really moved
    ad.save(tmp_path)
    fresh = tiny_bert()
    back = peftzoo.load(fresh, tmp_path)
    assert back.moving and back.name == "deltalora"
    torch.testing.assert_close(fresh(ids).logits, out, atol=1e-6, rtol=1e-6)
    for n, layer in back.layers.items():
        torch.testing.assert_close(layer.base.weight, ad.layers[n].base.weight, atol=1e-7, rtol=1e-6)
    ad.merge()  # W_T + s·B A: the trained model's outputs
    torch.testing.assert_close(model(ids).logits, out, atol=1e-5, rtol=1e-5)
    with pytest.raises(RuntimeError, match="unmerge"):
        ad.on_step(7)
    ad.unmerge()
    # saved during the warm-up: W has not moved, the file says so and loads as the pretrained W
    model2, ad2 = _attach(start_steps=100)
    opt2 = torch.optim.AdamW(ad2.param_groups(1e-2))
    _step(ad2, opt2, ids, 1)
    ad2.save(tmp_path / "warm")
    fresh2 = tiny_bert()
    back2 = peftzoo.load(fresh2, tmp_path / "warm")
    assert not back2.moving
    torch.testing.assert_close(fresh2(ids).logits, model2(ids).logits, atol=1e-6, rtol=1e-6)


def test_refusals_and_the_forgotten_hook(tmp_path, ids):
    with pytest.raises(ValueError, match="dropout=0.1 is refused: Delta-LoRA removes"):
        _attach(dropout=0.1)
    model, ad = _attach(start_steps=0)
    with pytest.raises(NotImplementedError, match="moved the frozen W"):
        ad.save_peft(tmp_path)
    model.train()
    with pytest.warns(UserWarning, match="on_step\\(\\) was never called: W never moves"):
        for _ in range(11):
            model(ids, labels=LABELS).loss.backward()
