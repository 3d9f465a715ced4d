"""IA3, LoHa and LoKr against PEFT 0.21.2 beyond the matrix: the same weights give the same logits, gradients and
merged weights (biases non-zero, feedforward layers, GPT-2's Conv1D, convolutions with groups), counts by hand,
LoKr's factorisation, and the options peftzoo refuses by name."""
import json

import pytest
import torch
from conftest import TARGETS, randomize, tiny_bert
from torch import nn
from zoo import ARCHS

import peftzoo
from peftzoo.adapters.lokr import factorization
from peftzoo.bench.budget import solve

peft = pytest.importorskip("peft")
pytestmark = pytest.mark.filterwarnings("ignore:Unmerge result can be inaccurate")  # PEFT's IA3 note
TOL = dict(atol=1e-5, rtol=1e-5)
P = "base_model.model."


def bert_with_biases(seed=0):
    """tiny BERT with non-zero biases (BERT's init zeroes them, which would hide how IA3 scales them) and a head
    that passes changes of the features on to the logits (its init, std 0.02, shrinks them 50-fold)."""
    model = tiny_bert(seed)
    g = torch.Generator().manual_seed(seed + 10)
    with torch.no_grad():
        for name, p in model.bert.encoder.named_parameters():
            if name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        model.classifier.weight.mul_(50)
    return model


class ConvNet(nn.Module):
    """A grouped 3×3 Conv2d (IA3 feedforward must scale each group's own input channels), a Conv1d, a Conv3d."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 6, 3, padding=1, groups=2)
        self.pw = nn.Conv2d(6, 4, 1)
        self.seq = nn.Conv1d(4, 4, 3, padding=1, dilation=1)
        self.vol = nn.Conv3d(1, 2, 3, padding=1)
        self.head = nn.Linear(2 * 64, 3)

    def forward(self, x):  # (N, 4, 4, 4)
        h = torch.tanh(self.pw(torch.tanh(self.conv(x))))
        h = torch.tanh(self.seq(h.flatten(2))).reshape(-1, 1, 4, 4, 4)
        return self.head(torch.tanh(self.vol(h)).flatten(1))


def convnet(seed=0):
    torch.manual_seed(seed)
    net = ConvNet().eval()
    with torch.no_grad():
        for m in net.modules():
            if getattr(m, "bias", None) is not None:
                m.bias.normal_(0, 0.3)
    return net


class SeqNet(nn.Module):
    """Conv1d layers only (LoKr's Conv1d cells): grouped, strided and dilated; 1-wide; small enough that W2 is whole
    at r = 1 (4 -> 4, k = 3); a Linear head. Input (N, 8, 12)."""

    def __init__(self):
        super().__init__()
        self.grouped = nn.Conv1d(8, 12, 3, stride=2, padding=2, dilation=2, groups=2)
        self.point = nn.Conv1d(12, 4, 1)
        self.small = nn.Conv1d(4, 4, 3, padding=1)
        self.head = nn.Linear(4 * 6, 3)

    def forward(self, x):
        h = torch.tanh(self.small(torch.tanh(self.point(torch.tanh(self.grouped(x))))))
        return self.head(h.flatten(1))


def seqnet(seed=0):
    torch.manual_seed(seed)
    net = SeqNet().eval()
    with torch.no_grad():
        for m in net.modules():
            if getattr(m, "bias", None) is not None:
                m.bias.normal_(0, 0.3)
    return net


BUILD = {"bert": bert_with_biases, "gpt2": lambda seed=0: (torch.manual_seed(seed), ARCHS["gpt2"].build().eval())[1],
         "conv": convnet, "seq": seqnet}
INPUTS = {"bert": lambda g: {"input_ids": torch.randint(0, 100, (3, 9), generator=g)},
          "gpt2": lambda g: {"input_ids": torch.randint(0, 100, (2, 6), generator=g)},
          "conv": lambda g: {"x": torch.randn(2, 4, 4, 4, generator=g)},
          "seq": lambda g: {"x": torch.randn(2, 8, 12, generator=g)}}
SEQ = ["grouped", "point", "small"]
CASES = {  # id: (model, method, config)
    "ia3": ("bert", "ia3", dict(targets=TARGETS)),
    "ia3-ff": ("bert", "ia3", dict(targets=["key", "value", "output.dense"], feedforward=["output.dense"])),
    "ia3-ff-regex": ("bert", "ia3", dict(targets="all-linear", feedforward=r".*layer\.1\..*dense")),
    "ia3-gpt2": ("gpt2", "ia3", dict(targets=["c_attn", "mlp.c_proj"], feedforward=["mlp.c_proj"])),
    "ia3-conv": ("conv", "ia3", dict(targets=["conv", "pw", "vol", "head"], feedforward=["conv", "vol"])),
    "loha": ("bert", "loha", dict(targets=TARGETS, r=4, alpha=6)),
    "loha-conv": ("conv", "loha", dict(targets=["conv", "pw", "seq", "head"], r=2, alpha=3)),
    "lokr": ("bert", "lokr", dict(targets=TARGETS, r=2, alpha=5)),
    "lokr-whole-w2": ("bert", "lokr", dict(targets=TARGETS, r=4)),
    "lokr-both": ("bert", "lokr", dict(targets=TARGETS, r=1, decompose_both=True, decompose_factor=8)),
    "lokr-lycoris": ("bert", "lokr", dict(targets=TARGETS, r=2, init_weights="lycoris")),
    "lokr-conv": ("conv", "lokr", dict(targets=["conv", "pw", "head"], r=1)),
    # Conv1d: W2 factored on grouped and point, whole (b × d × k, PEFT's kron layout) on small
    "lokr-conv1d": ("seq", "lokr", dict(targets=SEQ, r=1, alpha=3)),
    "lokr-conv1d-whole-w2": ("seq", "lokr", dict(targets=SEQ, r=3)),
    "lokr-conv1d-both": ("seq", "lokr", dict(targets=SEQ, r=1, decompose_both=True, decompose_factor=4)),
    "lokr-conv1d-k1-effective": ("seq", "lokr", dict(targets=["point", "head"], r=1, use_effective_conv2d=True)),
}


def loss(model, inputs):
    out = model(**inputs)
    out = out if isinstance(out, torch.Tensor) else out.logits
    return out, out.pow(2).mean()


@pytest.mark.parametrize("case", list(CASES))
def test_same_as_peft_logits_gradients_merge(tmp_path, case):
    arch, method, kw = CASES[case]
    inputs = INPUTS[arch](torch.Generator().manual_seed(1))
    model = BUILD[arch]()
    ad = peftzoo.attach(model, method, **kw)
    randomize(ad, std=0.3)
    assert peftzoo.count(BUILD[arch](), method, **kw) == ad.num_trainable()
    ad.save_peft(tmp_path)
    pm = peft.PeftModel.from_pretrained(BUILD[arch](), tmp_path, is_trainable=True).eval()
    assert ad.num_trainable() == pm.get_nb_trainable_parameters()[0]

    ours, l_ours = loss(model, inputs)
    theirs, l_theirs = loss(pm, inputs)
    torch.testing.assert_close(ours, theirs, **TOL)
    assert (ours - loss(BUILD[arch](), inputs)[0]).abs().max() > 1e-3  # the adapter matters
    l_ours.backward()
    l_theirs.backward()
    for name, layer in ad.layers.items():
        for mine, key in layer.peft_names.items():
            want = pm.get_parameter(f"{P}{name}.{key}.default").grad
            torch.testing.assert_close(getattr(layer, mine).grad, want, **TOL, msg=f"{name}.{key}")

    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        ad.merge()
        pm.merge_adapter()
        torch.testing.assert_close(loss(model, inputs)[0], ours, **TOL)
    for name, layer in ad.layers.items():
        for t in ("weight", "bias"):
            if getattr(layer.base, t) is not None:
                want = pm.get_parameter(f"{P}{name}.base_layer.{t}")
                torch.testing.assert_close(getattr(layer.base, t), want, **TOL, msg=f"{name}.{t}")
    ad.unmerge()
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], atol=1e-6, rtol=1e-6, msg=k)


def test_peft_ia3_file_with_feedforward_loads_with_the_same_logits(tmp_path):
    cfg = peft.IA3Config(target_modules=["key", "value", "output.dense"], feedforward_modules=["output.dense"])
    pm = peft.get_peft_model(bert_with_biases(), cfg).eval()
    randomize_peft(pm)
    ids = INPUTS["bert"](torch.Generator().manual_seed(2))
    ref = pm(**ids).logits
    pm.save_pretrained(tmp_path)
    model = bert_with_biases()
    ad = peftzoo.load_peft(model, tmp_path)
    assert ad.name == "ia3" and ad.config.feedforward == ["output.dense"]
    ff = sorted(n for n, layer in ad.layers.items() if layer.feedforward)
    assert ff == sorted(n.removeprefix(P) for n, m in pm.named_modules() if getattr(m, "is_feedforward", False))
    assert any(n.endswith("attention.output.dense") for n in ff)  # PEFT's plain suffix: both output.dense layers
    torch.testing.assert_close(model(**ids).logits, ref, **TOL)


def randomize_peft(pm, seed=3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in pm.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.3)


def test_ia3_counts_by_hand():
    model = tiny_bert()  # hidden 32, FFN 64, 2 layers
    assert peftzoo.count(model, "ia3", targets=["value", "intermediate.dense"]) == 2 * (32 + 64)
    assert peftzoo.count(model, "ia3", targets=["value", "output.dense"], feedforward=["output.dense"]) == \
        2 * (32 + 32 + 64)  # value: d_out 32; attention.output.dense and output.dense scale their inputs: 32, 64


def test_ia3_zero_scale_merges_and_unmerges_exactly():
    model = bert_with_biases()
    ad = peftzoo.attach(model, "ia3", targets=["query", "intermediate.dense"], feedforward=["intermediate.dense"])
    randomize(ad)
    with torch.no_grad():
        for layer in ad.layers.values():
            layer.scale.view(-1)[:3] = 0
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ids = INPUTS["bert"](torch.Generator().manual_seed(1))
    out = model(**ids).logits
    ad.merge()
    torch.testing.assert_close(model(**ids).logits, out, **TOL)
    ad.unmerge()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("kw, msg", [
    (dict(targets=["query"], feedforward=["value"]), r"feedforward names \['value'\] are not in targets"),
    (dict(targets=["query", "value"], feedforward=["value.x"]), "not in targets"),
    (dict(targets="all-linear", feedforward=["nothing"]), "feedforward 'nothing' matches none of the"),
    (dict(targets="all-linear", feedforward=r"layer\.9\..*"), "matches none of the"),
    (dict(targets=["query"], feedforward=None), "must be a list of layer-name suffixes or a regex"),
])
def test_ia3_feedforward_mistakes_are_named(kw, msg):
    with pytest.raises(ValueError, match=msg):
        peftzoo.attach(tiny_bert(), "ia3", **kw)


def test_lokr_factorization_is_peft_s():
    from peft.tuners.lokr.layer import factorization as theirs
    for size in range(1, 400):
        for f in (-1, 1, 2, 3, 4, 5, 8, 16, 64):
            assert factorization(size, f) == theirs(size, f), (size, f)


def test_lokr_factors_and_counts_by_hand():
    model = tiny_bert()  # query 32 -> 32: d_out = d_in = 4·8, so a = c = 4, b = d = 8
    kw = dict(targets=["query"])
    layer = next(iter(peftzoo.attach(tiny_bert(), "lokr", r=3, **kw).layers.values()))
    assert set(layer.peft_names) == {"w1", "w2_a", "w2_b"} and layer.w2_a.shape == (8, 3)
    assert peftzoo.count(model, "lokr", r=3, **kw) == 2 * (4 * 4 + 3 * (8 + 8))  # r < max(b, d)/2: W2 factored
    assert peftzoo.count(model, "lokr", r=4, **kw) == 2 * (4 * 4 + 8 * 8)  # r = 4: W2 whole, the count drops
    both_ad = peftzoo.attach(tiny_bert(), "lokr", r=2, decompose_both=True, decompose_factor=8, **kw)
    both = next(iter(both_ad.layers.values()))
    assert set(both.peft_names) == {"w1_a", "w1_b", "w2"}  # 32 = 8·4: W1 8×8 factored (r=2 < 4), W2 4×4 whole
    assert peftzoo.count(model, "lokr", r=2, decompose_both=True, decompose_factor=8, **kw) == 2 * (2 * 16 + 16)
    randomize(both_ad)
    torch.testing.assert_close(both.delta_weight(), torch.kron(both.w1_a @ both.w1_b, both.w2) * 4.0)


def test_lokr_conv1d_counts_by_hand():
    # grouped: c_out 12 = 3·4, c_in/groups 4 = 2·2, k 3; small: 4 = 2·2 both ways, k 3
    assert peftzoo.count(seqnet(), "lokr", targets=["grouped"], r=1) == 3 * 2 + 1 * (4 + 2 * 3)  # W2 factored
    assert peftzoo.count(seqnet(), "lokr", targets=["grouped"], r=2) == 3 * 2 + 4 * 2 * 3  # r >= 4/2: W2 whole
    assert peftzoo.count(seqnet(), "lokr", targets=["small"], r=1) == 2 * 2 + 2 * 2 * 3


def test_peft_lokr_conv1d_file_loads_with_the_same_outputs(tmp_path):
    cfg = peft.LoKrConfig(target_modules=SEQ, r=1, alpha=2)
    pm = peft.get_peft_model(seqnet(), cfg).eval()
    randomize_peft(pm)
    x = INPUTS["seq"](torch.Generator().manual_seed(2))
    ref = pm(**x)
    assert (ref - seqnet()(**x)).abs().max() > 1e-3
    pm.save_pretrained(tmp_path)
    model = seqnet()
    ad = peftzoo.load_peft(model, tmp_path)
    assert ad.name == "lokr" and sorted(ad.layers) == sorted(SEQ)
    assert ad.num_trainable() == pm.get_nb_trainable_parameters()[0]
    torch.testing.assert_close(model(**x), ref, **TOL)


def test_loha_delta_by_hand():
    ad = peftzoo.attach(tiny_bert(), "loha", targets=["query"], r=4, alpha=12)
    randomize(ad)
    layer = next(iter(ad.layers.values()))
    torch.testing.assert_close(layer.delta_weight(), (layer.w1_a @ layer.w1_b) * (layer.w2_a @ layer.w2_b) * 3.0)
    assert peftzoo.count(tiny_bert(), "loha", targets=["query"], r=4) == 2 * 2 * 4 * (32 + 32)


@pytest.mark.parametrize("method, budget", [("loha", 2048), ("lokr", 200)])
def test_budget_solver_on_loha_and_lokr(method, budget):
    s = solve(tiny_bert(), method, budget, targets=["query", "value"])
    assert s.ok, s
    r = s.kwargs["r"]
    near = [peftzoo.count(tiny_bert(), method, targets=["query", "value"], r=v) for v in (r - 1, r + 1) if v >= 1]
    assert all(abs(c - budget) >= abs(s.achieved - budget) for c in near)


def test_lokr_budget_stays_below_where_w2_becomes_whole():
    # 4 layers of 32 -> 32: 16 + 16r each for r < 4; r = 4 makes W2 whole (80 each): the solver stops at r = 3
    assert solve(tiny_bert(), "lokr", 10**6, targets=["query", "value"]).kwargs == {"r": 3}


def test_ia3_has_no_budget_knob():
    with pytest.raises(ValueError, match="ia3 has no free hyperparameter"):
        solve(tiny_bert(), "ia3", 1000, targets=["query"])


@pytest.mark.parametrize("method, kw, msg", [
    ("loha", dict(rank_dropout=0.1), "loha: rank_dropout=0.1 is not implemented in peftzoo.*set rank_dropout=0"),
    ("lokr", dict(module_dropout=0.2), "lokr: module_dropout=0.2 is not implemented"),
    ("lokr", dict(init_weights=False), "init_weights=False is not supported"),
    ("lokr", dict(decompose_factor=0), "decompose_factor=0 must be -1"),
    ("loha", dict(r=0), "r=0 must be a positive integer"),
])
def test_lycoris_options_not_implemented_are_named(method, kw, msg):
    with pytest.raises(ValueError, match=msg):
        peftzoo.attach(tiny_bert(), method, targets=["query"], **kw)


def test_effective_conv2d_is_refused_on_kernels_only():
    with pytest.raises(ValueError, match=r"use_effective_conv2d=True .* on 'conv', a Conv2d with kernel \(3, 3\)"):
        peftzoo.attach(convnet(), "loha", targets=["conv"], use_effective_conv2d=True)
    peftzoo.attach(convnet(), "loha", targets=["pw", "head"], r=2, use_effective_conv2d=True)  # 1×1, linear: PEFT too
    with pytest.raises(ValueError, match=r"use_effective_conv2d=True .* on 'small', a Conv1d with kernel \(3,\)"):
        peftzoo.attach(seqnet(), "lokr", targets=["point", "small"], use_effective_conv2d=True)


def test_lycoris_conv_with_padding_mode_is_refused():
    model = nn.Sequential(nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect"))
    with pytest.raises(ValueError, match="padding_mode='reflect'"):
        peftzoo.attach(model, "lokr", targets=["0"])


@pytest.mark.parametrize("method, target, kind", [("loha", "vol", "Conv3d"), ("lokr", "vol", "Conv3d"),
                                                  ("ia3", "seq", "Conv1d")])
def test_layer_types_peft_does_not_run_are_named(method, target, kind):
    with pytest.raises(TypeError, match=rf"'{target}' is a {kind}, not a layer type {method} adapts"):
        peftzoo.attach(convnet(), method, targets=[target])


def test_all_linear_on_gpt2_names_conv1d_for_lokr():
    with pytest.raises(TypeError, match=r"is a Conv1D, not a layer type lokr adapts .*targets='all-linear'"):
        peftzoo.attach(BUILD["gpt2"](), "lokr", targets="all-linear")


def test_peft_lycoris_file_with_a_rank_pattern_is_refused(tmp_path):
    ad = peftzoo.attach(tiny_bert(), "loha", targets=["query"], r=2)
    ad.save_peft(tmp_path)
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    cfg["rank_pattern"] = {"query": 4}
    (tmp_path / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="rank_pattern=.*per-layer values"):
        peftzoo.load_peft(tiny_bert(), tmp_path)


def test_a_method_without_a_size_knob_is_one_point_of_the_leaderboard():
    from peftzoo.bench.plan import make_plan
    preset = {"suite": "t", "tasks": ["SST-2"], "methods": ["lora", "ia3"], "seeds": [0], "budgets": [256, 1024],
              "targets": ["query", "value"], "hparams": {"ia3": {"feedforward": ["value"]}}}
    plan = make_plan(preset, model=tiny_bert(num_labels=2))
    cells = [c for c in plan.cells if c.method == "ia3"]
    assert [(c.label, c.hparams, c.middle) for c in cells] == [("—", {"feedforward": ["value"]}, True)]
    assert sorted(s.lr for s in plan.stage1() if s.method == "ia3") == sorted(peftzoo.adapters.get("ia3").lr_grid())
