"""Models beyond BERT (issue 11): GPT-2's Conv1D, a wrapper that looks like the layer it wraps, PEFT's
modules_to_save rule, the meta device, files whose every tensor must be used, transactional attach/load (issue 9)."""
import copy
import json

import pytest
import torch
import torch.nn.functional as F
from conftest import randomize, tiny_bert
from safetensors.torch import load_file, save_file
from zoo import ARCHS, output

import peftzoo
from peftzoo.adapters.layer import AdapterLayer

peft = pytest.importorskip("peft")
LAYER_METHODS = ["lora", "rslora", "dora", "vera", "adalora", "ia3"]  # those PEFT runs on GPT-2's Conv1D
KW = {"lora": dict(r=4), "rslora": dict(r=4), "dora": dict(r=4), "vera": dict(r=8),
      "adalora": dict(init_r=4, target_r=2, total_steps=10), "ia3": {}, "loha": dict(r=4), "lokr": dict(r=2)}


def build(arch, seed=0):
    torch.manual_seed(seed)
    return ARCHS[arch].build().eval()


def snapshot(model):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            [(n, type(m)) for n, m in model.named_modules()],
            [(n, p.requires_grad) for n, p in model.named_parameters()])


def assert_unchanged(model, snap):
    state, types, grads = snap
    now = model.state_dict()
    assert now.keys() == state.keys() and all(torch.equal(now[k], state[k]) for k in state)
    assert [(n, type(m)) for n, m in model.named_modules()] == types
    assert [(n, p.requires_grad) for n, p in model.named_parameters()] == grads


@pytest.mark.parametrize("method", LAYER_METHODS)
def test_gpt2_conv1d_layer_is_linear_in_transposed_storage(method):
    model = build("gpt2")
    ad = peftzoo.attach(model, method, targets=["c_attn", "c_fc"], **KW[method])
    randomize(ad, std=0.1)
    layer = ad.layers["transformer.h.0.attn.c_attn"]
    w0 = layer.base.weight.detach().clone()
    assert layer.fan_in_fan_out and w0.shape == (32, 96) and (layer.in_features, layer.out_features) == (32, 96)
    x = torch.randn(2, 5, 32)
    want = F.linear(x, w0.t() + layer.delta_weight(), layer.base.bias)
    torch.testing.assert_close(layer(x), want, atol=1e-5, rtol=1e-5)
    ad.merge()
    torch.testing.assert_close(layer.base.weight, w0 + layer.delta_weight().t(), atol=1e-5, rtol=1e-5)
    ad.unmerge()
    torch.testing.assert_close(layer.base.weight, w0, atol=1e-6, rtol=1e-6)


def test_all_linear_finds_gpt2_conv1d_layers_as_peft(tmp_path):
    ad = peftzoo.attach(build("gpt2"), "lora", targets="all-linear", r=2)
    pm = peft.get_peft_model(build("gpt2"), peft.LoraConfig(r=2, target_modules="all-linear"))
    theirs = {n.removeprefix("base_model.model.") for n, m in pm.named_modules() if hasattr(m, "lora_A")}
    assert set(ad.layers) == theirs and len(theirs) == 2 * 4  # c_attn, attn.c_proj, c_fc, mlp.c_proj; not lm_head
    ad.save_peft(tmp_path)
    assert json.loads((tmp_path / "adapter_config.json").read_text())["fan_in_fan_out"] is True


def test_wrapper_answers_like_the_layer_it_wraps():
    model = build("t5")
    ad = peftzoo.attach(model, "lora", targets=["wo"], r=2)  # T5's DenseReluDense reads self.wo.weight
    layer = ad.layers["encoder.block.0.layer.1.DenseReluDense.wo"]
    assert layer.weight is layer.base.weight and layer.bias is None
    assert (layer.in_features, layer.out_features) == (64, 32) and layer.weight.dtype == torch.float32
    output(model, ARCHS["t5"].inputs(torch.Generator().manual_seed(0)))  # forward runs
    gpt = peftzoo.attach(build("gpt2"), "lora", targets=["c_fc"], r=2).layers["transformer.h.0.mlp.c_fc"]
    assert gpt.nf == 128 and gpt.weight.shape == (32, 128)  # any other attribute comes from the base (Conv1D.nf)
    with pytest.raises(AttributeError):
        gpt.no_such_attribute


def test_train_matches_module_names_by_suffix_as_peft(tmp_path):
    """PEFT wraps every module whose name ends with a modules_to_save entry: DistilBERT's 'classifier' also takes
    'pre_classifier'. peftzoo trains the same modules, and its file loads in PEFT."""
    model = build("distilbert")
    ad = peftzoo.attach(model, "lora", targets=["q_lin"], r=2, train=["classifier"])
    assert set(ad.train_modules) == {"pre_classifier", "classifier"}
    pm = peft.get_peft_model(build("distilbert"), peft.LoraConfig(r=2, target_modules=["q_lin"],
                                                                  modules_to_save=["classifier"]))
    wrapped = {n.removeprefix("base_model.model.") for n, m in pm.named_modules()
               if type(m).__name__ == "ModulesToSaveWrapper"}
    assert wrapped == set(ad.train_modules)
    assert ad.num_trainable() == sum(p.numel() for p in pm.parameters() if p.requires_grad)


@pytest.mark.parametrize("method", ["lora", "dora", "adalora", "vera", "ia3", "loha", "lokr"])
def test_meta_device_attach_count_forward_then_initialize(method, ids):
    real = peftzoo.attach(tiny_bert(), method, targets=["query", "value"], **KW[method])
    with torch.device("meta"):
        model = tiny_bert()
    assert peftzoo.count(model, method, targets=["query", "value"], **KW[method]) == real.num_trainable()
    ad = peftzoo.attach(model, method, targets=["query", "value"], **KW[method])
    assert model(ids.to("meta")).logits.shape == (3, 3)  # shapes only: planning a model that does not fit
    model.to_empty(device="cpu")
    ref = tiny_bert()
    weights = {**dict(ref.named_parameters()), **dict(ref.named_buffers())}
    with torch.no_grad():  # the base weights (and buffers) live under '<layer>.base.' once wrapped
        for k, v in [*model.named_parameters(), *model.named_buffers()]:
            if k.replace(".base.", ".") in weights:
                v.copy_(weights[k.replace(".base.", ".")])
    ad.initialize()
    want = real.model.state_dict()
    assert all(torch.equal(v, want[k]) for k, v in model.state_dict().items())
    randomize(ad)
    randomize(real)
    assert torch.equal(model(ids).logits, real.model(ids).logits)  # non-persistent state (DoRA's norms, VeRA's A, B)


def _peft_file(tmp_path, method="lora"):
    model = tiny_bert()
    ad = peftzoo.attach(model, method, targets=["query", "value"], train=["classifier"], **KW[method])
    randomize(ad)
    with torch.no_grad():
        model.classifier.weight.mul_(2.0)  # so that a head copied from the file differs from the fresh model's
    ad.save_peft(tmp_path)
    return tmp_path


def test_load_peft_fails_naming_tensors_it_cannot_place(tmp_path):
    path = _peft_file(tmp_path)
    tensors = load_file(str(path / "adapter_model.safetensors"))
    tensors["base_model.model.bert.encoder.layer.0.attention.self.key.lora_A.weight"] = torch.zeros(4, 32)
    save_file(tensors, str(path / "adapter_model.safetensors"))
    model = tiny_bert()
    snap = snapshot(model)
    with pytest.raises(ValueError, match=r"1 tensor\(s\) of the adapter file fit no adapter layer or train module.*"
                                         r"layer\.0\.attention\.self\.key\.lora_A\.weight"):
        peftzoo.load_peft(model, path)
    assert_unchanged(model, snap)


def test_peft_file_with_fan_in_fan_out_on_linear_layers_loads(tmp_path, ids):
    """PEFT decides fan_in_fan_out per layer from its type (it resets the flag on nn.Linear): so do we."""
    path = _peft_file(tmp_path)
    cfg = json.loads((path / "adapter_config.json").read_text())
    (path / "adapter_config.json").write_text(json.dumps({**cfg, "fan_in_fan_out": True}))
    model = tiny_bert()
    peftzoo.load_peft(model, path)
    pm = peft.PeftModel.from_pretrained(tiny_bert(), path).eval()
    torch.testing.assert_close(model(ids).logits, pm(ids).logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("fmt", ["own", "peft"])
def test_failed_load_leaves_the_model_exactly_as_before(tmp_path, fmt):
    ad = peftzoo.attach(tiny_bert(), "lora", targets=["query", "value"], r=4, train=["classifier"])
    randomize(ad)
    (ad.save if fmt == "own" else ad.save_peft)(tmp_path)
    name = "adapter.safetensors" if fmt == "own" else "adapter_model.safetensors"
    tensors = load_file(str(tmp_path / name))
    last = sorted(k for k in tensors if "layer.1" in k and "value" in k)[-1]
    tensors[last] = torch.zeros(3, 3)  # a wrong shape, found after other layers and the head were placed
    save_file(tensors, str(tmp_path / name))
    model = tiny_bert()
    snap = snapshot(model)
    with pytest.raises(ValueError, match=r"shape \(3, 3\)"):
        (peftzoo.load if fmt == "own" else peftzoo.load_peft)(model, tmp_path)
    assert_unchanged(model, snap)
    peftzoo.attach(model, "lora", targets=["query"])  # and it can still be attached to


def test_failed_attach_midway_leaves_the_model_exactly_as_before(monkeypatch):
    from peftzoo.adapters.dora import DoraLayer
    model = tiny_bert()
    snap = snapshot(model)
    built = []
    real_init = DoraLayer.__init__

    def flaky(self, *a, **k):
        if len(built) == 3:
            raise RuntimeError("out of memory (simulated)")
        real_init(self, *a, **k)
        built.append(self)
    monkeypatch.setattr(DoraLayer, "__init__", flaky)
    with pytest.raises(RuntimeError, match="simulated"):
        peftzoo.attach(model, "dora", targets="all-linear", train=["classifier"])
    assert len(built) == 3 and not any(isinstance(m, AdapterLayer) for m in model.modules())
    assert_unchanged(model, snap)


def test_model_copies_keep_the_adapter():
    ad = peftzoo.attach(build("gpt2"), "dora", targets=["c_attn"], r=2)
    clone = copy.deepcopy(ad.model)  # __getattr__ forwarding must not break copying or pickling
    assert isinstance(clone.transformer.h[0].attn.c_attn, AdapterLayer)


def test_peft_vera_file_with_saved_projections_loads_them(tmp_path, ids):
    """PEFT's VeRA saves its shared projections by default (save_projection=True): they are used, not ignored."""
    pm = peft.get_peft_model(tiny_bert(), peft.VeraConfig(r=8, target_modules=["query", "value"],
                                                          projection_prng_key=3))
    with torch.no_grad():
        for p in pm.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape) * 0.3)
        pm.base_model.vera_A["default"].mul_(1.5)  # projections that the seed alone would not give
    pm.eval().save_pretrained(tmp_path)
    assert "base_model.vera_A" in load_file(str(tmp_path / "adapter_model.safetensors"))
    model = tiny_bert()
    peftzoo.load_peft(model, tmp_path)
    torch.testing.assert_close(model(ids).logits, pm(ids).logits, atol=1e-5, rtol=1e-5)


def test_all_linear_on_a_plain_module_adapts_its_last_layer_as_peft():
    """PEFT excludes the output layer of a transformers model only; a plain module's get_output_embeddings is not
    consulted, so its last layer is adapted (here with r > its d_out, accepted)."""
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.hidden, self.head = torch.nn.Linear(8, 8), torch.nn.Linear(8, 2)

        def get_output_embeddings(self):
            return self.head

        def forward(self, x):
            return self.head(self.hidden(x))

    torch.manual_seed(0)
    ours = peftzoo.attach(Net(), "lora", targets="all-linear", r=4)
    pm = peft.get_peft_model(Net(), peft.LoraConfig(r=4, target_modules="all-linear"))
    theirs = {n.removeprefix("base_model.model.") for n, m in pm.named_modules() if hasattr(m, "lora_A")}
    assert set(ours.layers) == theirs == {"hidden", "head"}
