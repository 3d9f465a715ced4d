"""GaLore: the same parameter trajectory as galore-torch 1.0's GaLoreAdamW, the projection refreshed every T steps,
the optimizer state it keeps (counted exactly, against Adam's), and its refusals."""
import copy
import importlib
import importlib.util
import sys
import types

import pytest
import torch
from conftest import tiny_bert

import peftzoo
from peftzoo.adapters.galore_adam import projection

# square (query 32x32), tall (intermediate.dense 64x32) and wide (output.dense 32x64) weights: both projection sides
SHAPES = ["query", "intermediate.dense", "output.dense"]
LABELS = torch.tensor([0, 1, 2])


def galore_torch_adamw():
    """galore-torch's GaLoreAdamW. Its package __init__ also imports the 8-bit variant, which needs bitsandbytes;
    without it, the AdamW module is imported from the installed package alone (its code, unchanged)."""
    spec = importlib.util.find_spec("galore_torch")
    if spec is None:
        pytest.skip("galore-torch is not installed (the test extra: pip install galore-torch==1.0 --no-deps)")
    try:
        return importlib.import_module("galore_torch").GaLoreAdamW
    except ImportError:
        pkg = types.ModuleType("galore_torch")
        pkg.__path__ = list(spec.submodule_search_locations)
        sys.modules["galore_torch"] = pkg
        try:
            return importlib.import_module("galore_torch.adamw").AdamW
        finally:
            sys.modules.pop("galore_torch", None)
            sys.modules.pop("galore_torch.adamw", None)
            sys.modules.pop("galore_torch.galore_projector", None)


def batches(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 100, (3, 9), generator=g) for _ in range(n)]


def step(model, opt, ids):
    model(ids, labels=LABELS).loss.backward()  # eval mode: no dropout, the same gradients for both
    opt.step()
    opt.zero_grad(set_to_none=True)


def attach(model=None, **kw):
    return peftzoo.attach(model if model is not None else tiny_bert(0), "galore", targets=SHAPES, train=["classifier"],
                          **{"r": 4, "update_proj_gap": 2, "scale": 0.5, **kw})


def test_trajectory_equals_galore_torchs_adamw():
    """Six steps with T = 2 (three SVD refreshes), weight decay on: every trained tensor equal to galore-torch's
    after every step. Measured: equal to the last bit on CPU (the same operations); asserted to 1e-7."""
    theirs_cls = galore_torch_adamw()
    ad = attach()
    ref = tiny_bert(0)
    names = {id(p): n for n, p in ad.model.named_parameters()}
    proj = [dict(ref.named_parameters())[names[id(w)]] for w in ad.weights.values()]
    head = list(ref.classifier.parameters())
    ours = ad.make_optimizer(5e-3, weight_decay=0.01)
    theirs = theirs_cls([{"params": head}, {"params": proj, "rank": 4, "update_proj_gap": 2, "scale": 0.5,
                                            "proj_type": "std"}], lr=5e-3, eps=1e-8, weight_decay=0.01,
                        no_deprecation_warning=True)
    start = {n: p.detach().clone() for n, p in ref.named_parameters()}
    for ids in batches(6):
        step(ad.model, ours, ids)
        step(ref, theirs, ids)
        got = dict(ad.model.named_parameters())
        for n, p in ref.named_parameters():
            torch.testing.assert_close(got[n], p, atol=1e-7, rtol=0, msg=n)
    moved = max((p - start[n]).abs().max().item() for n, p in ref.named_parameters() if n.endswith("query.weight"))
    assert moved > 1e-3  # the trajectory went somewhere


def test_trajectory_differs_from_plain_adamw_on_the_same_tensors():
    ad, plain = attach(), attach()
    ours, adamw = ad.make_optimizer(5e-3), torch.optim.AdamW(plain.param_groups(5e-3))
    for ids in batches(3):
        step(ad.model, ours, ids)
        step(plain.model, adamw, ids)
    w, v = next(iter(ad.weights.values())), next(iter(plain.weights.values()))
    assert (w - v).abs().max() > 1e-3


def test_projection_is_refreshed_every_T_steps_from_the_current_gradient():
    ad = attach(update_proj_gap=2)
    opt = ad.make_optimizer(1e-3)
    w = ad.weights["bert.encoder.layer.0.intermediate.dense.weight"]  # 64 x 32: P = top-4 rows of V^T (4 x 32)
    seen = []
    for ids in batches(3):
        ad.model(ids, labels=LABELS).loss.backward()
        grad = w.grad.clone()
        opt.step()
        opt.zero_grad()
        seen.append((grad, opt.state[w]["proj"].clone()))
    (g0, p0), (_, p1), (g2, p2) = seen
    assert p0.shape == (4, 32)
    torch.testing.assert_close(p0, projection(g0, 4), atol=0, rtol=0)  # t = 0: from the first gradient
    assert torch.equal(p1, p0)  # t = 1: kept
    torch.testing.assert_close(p2, projection(g2, 4), atol=0, rtol=0)  # t = 2 = T: from the third
    assert (p2 - p0).abs().max() > 1e-3
    torch.testing.assert_close(p0 @ p0.t(), torch.eye(4), atol=1e-5, rtol=0)  # orthonormal rows
    m = opt.state[w]["exp_avg"]
    assert m.shape == (64, 4)  # Adam's moments live in the projected space


@pytest.mark.parametrize("method, kw", [("galore", {"r": 4}), ("lora", {"r": 4}), ("full", {})])
def test_optimizer_state_count_is_the_state_the_optimizer_keeps(method, kw):
    model = tiny_bert(0)
    ad = peftzoo.attach(model, method, train=["classifier"], **({"targets": SHAPES} if method != "full" else {}), **kw)
    opt = ad.make_optimizer(1e-3)
    step(ad.model, opt, batches(1)[0])
    kept = sum(t.numel() for s in opt.state.values() for t in s.values() if torch.is_tensor(t))
    assert kept == ad.optimizer_state_count()


def test_optimizer_state_by_hand_against_adam_on_the_same_weights():
    """Per target of shape (m, n) at rank r: 2·r·max(m, n) + r·min(m, n) against Adam's 2·m·n (+ its step)."""
    ad = attach(r=4)
    want = (4 * (2 * 4 * 32 + 4 * 32)  # query and attention.output.dense, 32 x 32, in 2 layers
            + 4 * (2 * 4 * 64 + 4 * 32)  # intermediate.dense 64 x 32 and output.dense 32 x 64, in 2 layers
            + 2 * (3 * 32 + 3))  # the classifier: Adam's two moments
    assert ad.optimizer_state_count() == want == ad.summary()["optimizer_state"] == ad.report()["optimizer_state"]
    adam = sum(2 * w.numel() + 1 for w in ad.weights.values())
    assert ad.summary()["adapter"] == sum(w.numel() for w in ad.weights.values()) == 4 * 1024 + 4 * 2048
    assert want - 2 * (3 * 32 + 3) < adam / 2  # under half of Adam's state at r = 4 on 32-wide layers


def test_train_rest_is_the_papers_full_finetuning_with_galore_on_the_targets():
    model = tiny_bert(0)
    ad = peftzoo.attach(model, "galore", targets=SHAPES, train=["classifier"], train_rest=True)
    assert ad.num_trainable() == sum(p.numel() for p in model.parameters()) == peftzoo.count(
        tiny_bert(0), "galore", targets=SHAPES, train=["classifier"], train_rest=True)
    opt = ad.make_optimizer(1e-3)
    projected = [g for g in opt.param_groups if "rank" in g]
    assert len(projected) == 1 and {id(p) for p in projected[0]["params"]} == {id(w) for w in ad.weights.values()}
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_save_holds_the_trained_weights_and_save_peft_refuses(tmp_path):
    from safetensors.torch import load_file
    ad = attach()
    opt = ad.make_optimizer(1e-2)
    for ids in batches(2):
        step(ad.model, opt, ids)
    ad.save(tmp_path / "a")
    saved = load_file(str(tmp_path / "a" / "adapter.safetensors"))
    assert {k for k in saved if not k.startswith("train.")} == set(ad.weights)
    fresh = peftzoo.load(tiny_bert(0), tmp_path / "a")
    for k, w in ad.weights.items():
        assert torch.equal(fresh.weights[k], w)
    with pytest.raises(NotImplementedError, match=r"galore has no Hugging Face PEFT equivalent.*ad.save\(path\)"):
        ad.save_peft(tmp_path / "p")


def test_refusals_name_the_fix():
    with pytest.raises(ValueError, match=r"r=40 exceeds min\(d_in, d_out\) = 32 at layer 'bert.encoder.layer.0"
                                         r".*use r <= 32"):
        attach(r=40)
    with pytest.raises(ValueError, match=r"update_proj_gap=0 must be a positive integer"):
        attach(update_proj_gap=0)
    ad = attach()
    with pytest.raises(ValueError, match=r"projected Adam, not SGD.*optim='adamw_torch'"):
        ad.make_optimizer(1e-3, 0.0, torch.optim.SGD)
    with pytest.raises(ValueError, match=r"\['amsgrad'\] are not GaLore's"):
        ad.make_optimizer(1e-3, 0.0, torch.optim.AdamW, amsgrad=True)
    lean = attach(model=tiny_bert(0), keep_initial=False)
    for use in (lambda: lean.disable_adapter().__enter__(), lambda: lean.unload()):
        with pytest.raises(ValueError, match=r"keep_initial=False.*copy.deepcopy\(model\)"):
            use()


def test_disable_and_unload_give_the_weights_as_attached():
    model = tiny_bert(0)
    base = copy.deepcopy(model)
    ad = attach(model)
    opt = ad.make_optimizer(1e-2)
    for ids in batches(2):
        step(model, opt, ids)
    trained = {k: w.detach().clone() for k, w in ad.weights.items()}
    with ad.disable_adapter():
        for k, w in ad.weights.items():
            assert torch.equal(w, dict(base.named_parameters())[k])
    for k, w in ad.weights.items():
        assert torch.equal(w, trained[k]) and not torch.equal(w, dict(base.named_parameters())[k])
    plain = ad.unload()
    want = dict(base.named_parameters())
    for n, p in plain.named_parameters():
        if not n.startswith("classifier"):
            assert torch.equal(p, want[n]), n


def test_make_optimizer_default_is_adamw_over_the_param_groups():
    """The hook every loop calls: for a method without its own optimizer, AdamW over ``param_groups`` (LoRA+'s B at
    lr x ratio), the weight decay in every group, the optimizer's settings passed through."""
    ad = peftzoo.attach(tiny_bert(0), "loraplus", targets=SHAPES, train=["classifier"], r=4)
    opt = ad.make_optimizer(1e-3, weight_decay=0.01, eps=1e-6)
    assert type(opt) is torch.optim.AdamW and opt.defaults["eps"] == 1e-6
    assert sorted(g["lr"] for g in opt.param_groups) == pytest.approx([1e-3, 1e-3 * ad.config.lr_ratio])
    assert all(g["weight_decay"] == 0.01 for g in opt.param_groups)
    sgd = ad.make_optimizer(0.1, 0.0, torch.optim.SGD, lr=0.1)  # a Trainer passes lr again among the kwargs
    assert type(sgd) is torch.optim.SGD and sum(len(g["params"]) for g in sgd.param_groups) == len(
        ad.trainable_parameters())


def test_analyze_reads_galores_update_as_the_change_of_the_weights(tmp_path):
    from peftzoo.analysis.weights import adapter_deltas
    ad = attach()
    opt = ad.make_optimizer(1e-2)
    for ids in batches(2):
        step(ad.model, opt, ids)
    ad.save(tmp_path)
    deltas, info = adapter_deltas(tiny_bert(0), tmp_path)
    base = dict(tiny_bert(0).named_parameters())
    assert info["method"] == "galore" and set(deltas) == {k.removesuffix(".weight") for k in ad.weights}
    for name, d in deltas.items():
        want = ad.weights[f"{name}.weight"].double() - base[f"{name}.weight"].double()
        torch.testing.assert_close(d.dW, want, atol=1e-12, rtol=0)
