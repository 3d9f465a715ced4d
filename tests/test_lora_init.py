"""LoRA initialisations (init_lora_weights): PiSSA and OLoRA give PEFT's factors and residual weights, their files
load exactly both ways, and the inits nobody can reproduce exactly are refused by name."""
import json

import pytest
import torch
from conftest import TARGETS, randomize, tiny_bert

import peftzoo
from peftzoo.adapters.layer import AdapterLayer

peft = pytest.importorskip("peft")
TOL = dict(atol=1e-5, rtol=1e-5)


def peft_model(method, init, r=4, alpha=8.0):
    cfg = peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=TARGETS, init_lora_weights=init,
                          use_rslora=method == "rslora", use_dora=method == "dora", modules_to_save=["classifier"])
    return peft.get_peft_model(tiny_bert(0), cfg).eval()


def ours(method, init, r=4, alpha=8.0):
    model = tiny_bert(0)
    return model, peftzoo.attach(model, method, targets=TARGETS, r=r, alpha=alpha, init_lora_weights=init,
                                 train=["classifier"])


@pytest.mark.parametrize("method", ["lora", "rslora", "dora"])
@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_residual_inits_equal_peft_factors_and_residual(ids, method, init):
    model, ad = ours(method, init)
    pm = peft_model(method, init)
    original = tiny_bert(0)
    for name, layer in ad.layers.items():
        theirs = pm.base_model.model.get_submodule(name)
        assert torch.equal(layer.A, theirs.lora_A["default"].weight), name
        assert torch.equal(layer.B, theirs.lora_B["default"].weight), name
        assert torch.equal(layer.base.weight, theirs.base_layer.weight), name  # the same residual, bit for bit
        assert (layer.base.weight - original.get_submodule(name).weight).abs().max() > 1e-3  # W was changed
        if method == "dora":
            torch.testing.assert_close(layer.m, theirs.lora_magnitude_vector["default"].weight, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(model(ids).logits, original(ids).logits, **TOL)  # the output is unchanged at init


@pytest.mark.parametrize("method", ["lora", "rslora", "dora"])
@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_peft_residual_init_file_loads_exactly(tmp_path, ids, method, init):
    pm = peft_model(method, init)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # "training"
        for p in pm.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.1)
    ref = pm(ids).logits
    pm.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "adapter_config.json").read_text())["init_lora_weights"] == init
    model = tiny_bert(0)
    ad = peftzoo.load_peft(model, tmp_path)
    assert ad.config.init_lora_weights == init
    torch.testing.assert_close(model(ids).logits, ref, **TOL)
    assert (ref - tiny_bert(0)(ids).logits).abs().max() > 1e-2  # the adapter matters


@pytest.mark.parametrize("method", ["lora", "dora"])
@pytest.mark.parametrize("init", ["pissa", "olora", "gaussian"])
def test_our_init_files_load_in_peft_and_in_ours_exactly(tmp_path, ids, method, init):
    model, ad = ours(method, init)
    randomize(ad, std=0.1)
    out = model(ids).logits
    ad.save_peft(tmp_path / "peft")
    pm = peft.PeftModel.from_pretrained(tiny_bert(0), tmp_path / "peft").eval()
    torch.testing.assert_close(pm(ids).logits, out, **TOL)
    ad.save(tmp_path / "own")
    fresh = tiny_bert(0)
    peftzoo.load(fresh, tmp_path / "own")
    torch.testing.assert_close(fresh(ids).logits, out, atol=0, rtol=0)


@pytest.mark.parametrize("init", ["pissa", "olora", "loram"])
def test_merge_and_unmerge_keep_the_residual(ids, init):
    model, ad = ours("lora", init)
    randomize(ad, std=0.1)
    residual = {n: ly.base.weight.clone() for n, ly in ad.layers.items()}
    out = model(ids).logits
    ad.merge()
    torch.testing.assert_close(model(ids).logits, out, **TOL)
    ad.unmerge()
    for n, ly in ad.layers.items():
        torch.testing.assert_close(ly.base.weight, residual[n], atol=1e-6, rtol=1e-6)


def test_gaussian_init():
    model, ad = ours("lora", "gaussian", r=4)
    a = torch.cat([ly.A.flatten() for ly in ad.layers.values()])
    assert 0.2 < a.std().item() < 0.3  # N(0, 1/r²), r = 4; Kaiming would give std ≈ 0.10 on 32 inputs
    assert all(not ly.B.any() for ly in ad.layers.values())
    ref = tiny_bert(0)
    assert all(torch.equal(ly.base.weight, ref.get_submodule(n).weight) for n, ly in ad.layers.items())


def test_both_random_init_is_peft_false_and_moves_the_output(ids):
    """init_lora_weights=False: A and B both nn.Linear's Kaiming-uniform (bound 1/√fan_in), W untouched, so the
    output moves at init; PEFT's False draws from the same distribution (its own RNG, so not the same values)."""
    model, ad = ours("lora", False, r=4)
    pm = peft_model("lora", False)
    for n, ly in ad.layers.items():
        theirs = pm.base_model.model.get_submodule(n)
        for ours_t, peft_t, fan_in in ((ly.A, theirs.lora_A["default"].weight, ly.A.shape[1]),
                                       (ly.B, theirs.lora_B["default"].weight, 4)):
            bound = fan_in ** -0.5
            assert ours_t.abs().max() <= bound and peft_t.abs().max() <= bound, n
            assert ours_t.abs().max() > 0.8 * bound, n  # spread over the whole interval, not near 0
        assert torch.equal(ly.base.weight, tiny_bert(0).get_submodule(n).weight), n
    assert (model(ids).logits - tiny_bert(0)(ids).logits).abs().max() > 1e-3
    _, again = ours("lora", True, r=4)
    first = next(iter(ad.layers))  # A drawn as the default's (later layers' differ: B's draws come in between)
    assert torch.equal(ad.layers[first].A, again.layers[first].A)
    with pytest.raises(ValueError, match="nn.Linear layers only"):
        peftzoo.attach(tiny_bert(0), "lora", targets=["word_embeddings"], r=2, init_lora_weights=False)


@pytest.mark.parametrize("init, match", [("pissa_niter_4", "'pissa_niter_4' is not supported .a randomized SVD"),
                                         ("eva", "'eva' is not supported"), ("corda", "'corda' is not supported"),
                                         ("loftq", "'loftq' is not supported")])
def test_unsupported_init_is_refused_by_name(model, init, match):
    with pytest.raises(ValueError, match=rf"init_lora_weights={match}"):
        peftzoo.attach(model, "lora", targets=["query"], r=2, init_lora_weights=init)
    assert not any(isinstance(m, AdapterLayer) for m in model.modules())


@pytest.mark.parametrize("init", ["pissa_niter_4", "corda", "loftq", "eva", "lora_ga"])
def test_peft_file_with_unreproducible_init_is_refused_by_name(tmp_path, model, init):
    _, ad = ours("lora", True)
    ad.save_peft(tmp_path)
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    (tmp_path / "adapter_config.json").write_text(json.dumps({**cfg, "init_lora_weights": init}))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=rf"init_lora_weights='{init}'"):
        peftzoo.load_peft(model, tmp_path)
    assert not any(isinstance(m, AdapterLayer) for m in model.modules())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("init", [False, "orthogonal"])
def test_peft_files_from_plain_inits_load_exactly(tmp_path, ids, init):
    pm = peft_model("lora", init)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_" in n:  # "orthogonal" starts at BA = 0
                p.add_(torch.randn(p.shape, generator=g) * 0.3)
    ref = pm(ids).logits
    assert (ref - tiny_bert(0)(ids).logits).abs().max() > 1e-3
    pm.save_pretrained(tmp_path)
    model = tiny_bert(0)
    peftzoo.load_peft(model, tmp_path)
    torch.testing.assert_close(model(ids).logits, ref, **TOL)


def test_residual_init_rank_must_fit(model):
    with pytest.raises(ValueError, match=r"init_lora_weights='pissa' needs r <= min\(d_in, d_out\) = 32"):
        peftzoo.attach(model, "lora", targets=["query"], r=40, init_lora_weights="pissa")


def gpt2():
    from zoo import ARCHS
    torch.manual_seed(0)
    return ARCHS["gpt2"].build().eval()


def test_pissa_on_gpt2_conv1d_matches_peft(tmp_path):
    from zoo import ARCHS, output
    x = ARCHS["gpt2"].inputs(torch.Generator().manual_seed(1))
    model = gpt2()
    ad = peftzoo.attach(model, "lora", targets=["c_attn"], r=4, alpha=8, init_lora_weights="pissa")
    pm = peft.get_peft_model(gpt2(), peft.LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"],
                                                     init_lora_weights="pissa", fan_in_fan_out=True))
    for name, layer in ad.layers.items():  # W is stored (d_in, d_out) here: the residual must be too
        theirs = pm.base_model.model.get_submodule(name)
        torch.testing.assert_close(layer.A, theirs.lora_A["default"].weight, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(layer.B, theirs.lora_B["default"].weight, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(layer.base.weight, theirs.base_layer.weight, atol=1e-6, rtol=1e-6)
    randomize(ad, std=0.1)
    out = output(model, x)
    ad.save_peft(tmp_path)
    back = peft.PeftModel.from_pretrained(gpt2(), tmp_path).eval()
    torch.testing.assert_close(output(back, x), out, **TOL)
    fresh = gpt2()
    peftzoo.load_peft(fresh, tmp_path)
    torch.testing.assert_close(output(fresh, x), out, **TOL)


def test_olora_on_gpt2_conv1d_is_refused():
    # PEFT 0.21.2 QR-decomposes the stored (d_in, d_out) matrix: its A gets d_out columns and forward fails
    with pytest.raises(ValueError, match=r"init_lora_weights='olora' on 'transformer.h.0.attn.c_attn', a "
                                         r"transformers Conv1D"):
        peftzoo.attach(gpt2(), "lora", targets=["c_attn"], r=4, init_lora_weights="olora")


def test_failed_load_of_a_residual_init_file_restores_the_weights(tmp_path, model):
    _, ad = ours("lora", "pissa")
    ad.save_peft(tmp_path)
    from safetensors.torch import load_file, save_file
    tensors = load_file(str(tmp_path / "adapter_model.safetensors"))
    key = next(k for k in tensors if k.endswith("lora_B.weight") and "layer.1." in k)
    tensors[key] = tensors[key][:, :2].contiguous()  # the last layer's B does not fit: the load fails after PiSSA
    save_file(tensors, str(tmp_path / "adapter_model.safetensors"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="lora_B.weight"):
        peftzoo.load_peft(model, tmp_path)
    assert not any(isinstance(m, AdapterLayer) for m in model.modules())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_pissa_on_the_meta_device_then_initialize(ids):
    from test_layers import load_base_weights
    real, _ = ours("dora", "pissa")
    with torch.device("meta"):
        model = tiny_bert(0)
    ad = peftzoo.attach(model, "dora", targets=TARGETS, r=4, alpha=8.0, init_lora_weights="pissa", train=["classifier"])
    model.to_empty(device="cpu")
    load_base_weights(model, tiny_bert(0))  # the original weights: initialize() decomposes them
    ad.initialize()
    want = real.state_dict()
    assert all(torch.equal(v, want[k]) for k, v in model.state_dict().items())
    torch.testing.assert_close(model(ids).logits, real(ids).logits, atol=0, rtol=0)
