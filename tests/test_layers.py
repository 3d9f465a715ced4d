"""Layer types other than nn.Linear (nn.Embedding, nn.Conv1d/2d/3d): the contracts and PEFT parity, on a tiny
conv net and a tiny embedding model."""
import pytest
import torch
import torch.nn.functional as F
from conftest import randomize, tiny_bert
from torch import nn

import peftzoo
from peftzoo.adapters.layer import AdapterLayer

peft = pytest.importorskip("peft")
METHODS = ["lora", "rslora", "loraplus", "dora"]  # the methods PEFT runs on these layer types
TOL = dict(atol=1e-5, rtol=1e-5)


class ConvNet(nn.Module):
    """Conv2d 3×3 stride 2, Conv2d 1×1, Conv1d, Conv3d and a Linear head; input (N, 3, 8, 8)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, stride=2, padding=1)
        self.pw = nn.Conv2d(6, 6, 1, bias=False)
        self.seq = nn.Conv1d(6, 4, 3, padding=1)
        self.vol = nn.Conv3d(1, 2, 3, padding=1)
        self.head = nn.Linear(128, 5)

    def forward(self, x):
        h = torch.tanh(self.pw(torch.tanh(self.conv(x))))  # (N, 6, 4, 4)
        h = torch.tanh(self.seq(h.flatten(2)))  # (N, 4, 16)
        h = torch.tanh(self.vol(h.reshape(-1, 1, 4, 4, 4)))  # (N, 2, 4, 4, 4)
        return self.head(h.flatten(1))


class EmbNet(nn.Module):
    """Two embeddings (one with padding_idx) and a Linear head; input ids (N, L) < 20."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(20, 16, padding_idx=0)
        self.pos = nn.Embedding(8, 16)
        self.proj = nn.Linear(16, 16)
        self.head = nn.Linear(16, 3)

    def forward(self, ids):
        h = self.emb(ids) + self.pos(torch.arange(ids.shape[1]))
        return self.head(torch.tanh(self.proj(h)).mean(1))


def make(kind, seed=0):
    torch.manual_seed(seed)
    return (ConvNet() if kind == "conv" else EmbNet()).eval()


TARGETS = {"conv": ["conv", "pw", "seq", "vol", "head"], "emb": ["emb", "pos", "proj"]}
BASES = {"conv": (nn.Conv1d, nn.Conv2d, nn.Conv3d), "emb": (nn.Embedding,)}
KINDS = ["conv", "emb"]


def inputs(kind):
    g = torch.Generator().manual_seed(1)
    return torch.randn(4, 3, 8, 8, generator=g) if kind == "conv" else torch.randint(0, 20, (4, 7), generator=g)


def attach(kind, method, seed=0, **kw):
    model = make(kind, seed)
    return model, peftzoo.attach(model, method, targets=TARGETS[kind], r=2, alpha=6, **kw)


def base_forward(layer, x, weight):
    """The wrapped layer's own forward with ``weight`` in place of its weight."""
    b = layer.base
    if isinstance(b, nn.Embedding):
        return F.embedding(x, weight, b.padding_idx)
    if isinstance(b, nn.Linear):
        return F.linear(x, weight, b.bias)
    return b._conv_forward(x, weight, b.bias)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method", METHODS)
def test_attach_is_identity_and_only_adapter_tensors_get_gradients(kind, method):
    x = inputs(kind)
    ref = make(kind)(x)
    model, ad = attach(kind, method)
    assert {type(ly.base) for ly in ad.layers.values()} >= set(BASES[kind])
    torch.testing.assert_close(model(x), ref, atol=1e-6, rtol=0)
    randomize(ad)
    model(x).square().sum().backward()
    own = {id(p) for p in ad.adapter_parameters()}
    for n, p in model.named_parameters():
        assert (p.grad is not None and p.grad.abs().sum() > 0) == (id(p) in own), n


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method", METHODS)
def test_count_leaves_the_model_alone_and_a_step_moves_only_adapter_tensors(kind, method):
    model = make(kind)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    n = peftzoo.count(model, method, targets=TARGETS[kind], r=2)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert not any(isinstance(m, AdapterLayer) for m in model.modules())
    ad = peftzoo.attach(model, method, targets=TARGETS[kind], r=2, alpha=6)
    assert n == ad.num_trainable() == sum(p.numel() for p in model.parameters() if p.requires_grad)
    opt = torch.optim.AdamW(ad.param_groups(lr=1e-2))
    params = dict(model.named_parameters())
    start = {k: v.detach().clone() for k, v in params.items()}
    model(inputs(kind)).square().mean().backward()
    opt.step()
    own = {id(p) for p in ad.adapter_parameters()}
    changed = {k for k, v in params.items() if not torch.equal(v, start[k])}
    assert changed and changed <= {k for k, v in params.items() if id(v) in own}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method", METHODS)
def test_layer_equals_base_with_merged_weight_and_merge_roundtrip(kind, method):
    x = inputs(kind)
    model, ad = attach(kind, method)
    randomize(ad)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = model(x)
    for name, layer in ad.layers.items():
        if not isinstance(layer.base, nn.Linear):  # feed each layer an input of its own shape
            xi = torch.randint(0, layer.in_features, (3, 5)) if kind == "emb" else \
                torch.randn(2, layer.in_features, *(6,) * (layer.base.weight.dim() - 2))
            w = layer.base.weight + layer.delta_weight()
            torch.testing.assert_close(layer(xi), base_forward(layer, xi, w), **TOL)
    ad.merge()
    assert all(ly.merged for ly in ad.layers.values())
    torch.testing.assert_close(model(x), out, **TOL)
    assert all(not torch.equal(model.state_dict()[f"{n}.base.weight"], before[f"{n}.base.weight"]) for n in ad.layers)
    ad.unmerge()
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(model(x), out, **TOL)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method", METHODS)
def test_own_save_load_is_exact(tmp_path, kind, method):
    x = inputs(kind)
    model, ad = attach(kind, method)
    randomize(ad)
    out = model(x)
    ad.save(tmp_path)
    fresh = make(kind)
    ad2 = peftzoo.load(fresh, tmp_path)
    torch.testing.assert_close(fresh(x), out, atol=0, rtol=0)
    assert ad2.num_trainable() == ad.num_trainable()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method", METHODS)
def test_our_file_in_peft_and_peft_file_in_ours(tmp_path, kind, method):
    x = inputs(kind)
    model, ad = attach(kind, method)
    randomize(ad)
    out = model(x)
    assert (out - make(kind)(x)).abs().max() > 1e-3  # the adapter matters
    ad.save_peft(tmp_path / "ours")
    pm = peft.PeftModel.from_pretrained(make(kind), tmp_path / "ours").eval()
    torch.testing.assert_close(pm(x), out, **TOL)

    cfg = peft.PeftConfig.from_pretrained(tmp_path / "ours")
    cfg.inference_mode = False
    pm = peft.get_peft_model(make(kind), cfg).eval()
    n_peft = sum(p.numel() for p in pm.parameters() if p.requires_grad)
    assert peftzoo.count(make(kind), method, targets=TARGETS[kind], r=2) == ad.num_trainable() == n_peft
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in pm.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.3)
    ref = pm(x)
    pm.save_pretrained(tmp_path / "peft")
    fresh = make(kind)
    peftzoo.load_peft(fresh, tmp_path / "peft")
    torch.testing.assert_close(fresh(x), ref, **TOL)


@pytest.mark.parametrize("method", ["lora", "dora"])
def test_bert_word_embeddings_with_peft(tmp_path, ids, method):
    model = tiny_bert(0)
    ad = peftzoo.attach(model, method, targets=["word_embeddings", "query"], r=4, train=["classifier"])
    randomize(ad)
    out = model(ids).logits
    ad.save_peft(tmp_path)
    pm = peft.PeftModel.from_pretrained(tiny_bert(0), tmp_path).eval()
    torch.testing.assert_close(pm(ids).logits, out, **TOL)
    ad.merge()
    torch.testing.assert_close(model(ids).logits, out, **TOL)


@pytest.mark.parametrize("method", ["vera", "adalora"])
@pytest.mark.parametrize("kind, target, type_name", [("conv", "conv", "Conv2d"), ("conv", "seq", "Conv1d"),
                                                     ("emb", "emb", "Embedding")])
def test_linear_only_methods_name_the_layer_type(method, kind, target, type_name):
    model = make(kind)
    with pytest.raises(TypeError, match=rf"'{target}' is a {type_name}, not a layer type {method} adapts "
                                        r"\(nn\.Linear, transformers\.Conv1D\)"):
        peftzoo.attach(model, method, targets=[target])
    with pytest.raises(TypeError, match=type_name):
        peftzoo.count(model, method, targets=[target])
    assert not any(isinstance(m, AdapterLayer) for m in model.modules())


@pytest.mark.parametrize("conv, why", [(nn.Conv2d(4, 4, 3, groups=2), "groups > 1"),
                                       (nn.Conv2d(4, 4, 3, dilation=2), "dilation != 1"),
                                       (nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"), "padding_mode='reflect'")])
def test_convs_that_cannot_merge_exactly_are_refused(conv, why):
    model = nn.Sequential(conv)
    with pytest.raises(ValueError, match=rf"'0' is a Conv2d with {why}.*cannot be merged"):
        peftzoo.attach(model, "lora", targets=["0"], r=2)
    assert isinstance(model[0], nn.Conv2d) and all(p.requires_grad for p in model.parameters())


def test_embedding_with_max_norm_is_refused():
    with pytest.raises(ValueError, match="max_norm"):
        peftzoo.attach(nn.Sequential(nn.Embedding(10, 4, max_norm=1.0)), "lora", targets=["0"], r=2)


@pytest.mark.parametrize("kind, target", [("conv", "conv"), ("emb", "emb")])
@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_residual_inits_on_non_linear_layers_are_refused(kind, target, init):
    with pytest.raises(ValueError, match=rf"init_lora_weights='{init}' is defined for nn.Linear layers only; "
                                         rf"target '{target}'"):
        peftzoo.attach(make(kind), "lora", targets=[target], r=2, init_lora_weights=init)


def test_embedding_update_is_scaled_like_the_base():
    class Scaled(nn.Embedding):  # a Gemma-style embedding that multiplies its output
        embed_scale = 3.0

        def forward(self, x):
            return super().forward(x) * self.embed_scale

    torch.manual_seed(0)
    model = nn.Sequential(Scaled(10, 4))
    ad = peftzoo.attach(model, "lora", targets=["0"], r=2)
    randomize(ad)
    x = torch.arange(10).view(2, 5)
    out = model(x)
    layer = ad.layers["0"]
    torch.testing.assert_close(out, F.embedding(x, layer.base.weight + layer.delta_weight()) * 3.0, **TOL)
    ad.merge()
    torch.testing.assert_close(model(x), out, **TOL)



def load_base_weights(model, ref):
    """Copy ``ref``'s weights and buffers into ``model``, whose wrapped layers keep theirs under '<layer>.base.'."""
    weights = {**dict(ref.named_parameters()), **dict(ref.named_buffers())}
    with torch.no_grad():
        for k, v in [*model.named_parameters(), *model.named_buffers()]:
            if k.replace(".base.", ".") in weights:
                v.copy_(weights[k.replace(".base.", ".")])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method", ["lora", "dora"])
def test_meta_device_then_initialize(kind, method):
    _, real = attach(kind, method)
    with torch.device("meta"):
        model = make(kind)
    assert peftzoo.count(model, method, targets=TARGETS[kind], r=2) == real.num_trainable()
    ad = peftzoo.attach(model, method, targets=TARGETS[kind], r=2, alpha=6)
    model.to_empty(device="cpu")
    load_base_weights(model, make(kind))
    ad.initialize()
    want = real.model.state_dict()
    assert all(torch.equal(v, want[k]) for k, v in model.state_dict().items())
    randomize(ad)
    randomize(real)
    assert torch.equal(model(inputs(kind)), real.model(inputs(kind)))


def test_tied_embedding_warns_that_merge_changes_the_output_layer():
    from zoo import ARCHS, output
    torch.manual_seed(0)
    model = ARCHS["gpt2"].build().eval()  # wte is tied to lm_head
    x = ARCHS["gpt2"].inputs(torch.Generator().manual_seed(1))
    with pytest.warns(UserWarning, match=r"target 'transformer.wte' shares its weight with 'lm_head'.*merge\(\)"):
        ad = peftzoo.attach(model, "lora", targets=["wte"], r=2)
    randomize(ad)
    out = output(model, x)
    assert model.lm_head.weight is ad.layers["transformer.wte"].base.weight
    ad.merge()  # what the warning says: lm_head now sees the merged weight
    assert (output(model, x) - out).abs().max() > 1e-3
