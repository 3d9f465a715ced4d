"""An adapter's life on its model (issue 20): unload / merge-and-unload, save_pretrained while attached,
disable_adapter, the errors that name the fix (a second attach, backward while merged, a spent adapter), count()
on an adapter and PEFT's trainable-parameters line. Parametrised over every method as test_contracts.py is."""
import copy

import pytest
import torch
from conftest import TARGETS, randomize, tiny_bert
from transformers import BertForSequenceClassification

import peftzoo
from peftzoo import adapters
from peftzoo.adapters.lifecycle import AdapterModule
from peftzoo.adapters.layered import LayerCodec

METHODS = peftzoo.methods()
PEFT_METHODS = [m for m in METHODS if adapters.get(m).peft is not None]
TOL = dict(atol=1e-5, rtol=1e-5)
# OFT's merge multiplies W by block rotations (a Cayley-Neumann series of random Q at std 1 here): float32 rounding of
# W R^T and back reaches ~1.5e-5 on a few elements
MERGE_TOL = {"oft": dict(atol=3e-5, rtol=1e-4)}
# methods whose trained tensors are the model's own (BitFit's biases): save_pretrained writes the trained model as it
# is, and merge folds nothing, so there is no merged state to refuse a backward in
FOLDING = [m for m in METHODS if adapters.get(m).guards_save_pretrained and adapters.get(m).merges]
# methods whose update is a weight change, so merge() exists (prompt tuning's virtual tokens are none: test_prompt.py)
MERGEABLE = [m for m in METHODS if adapters.get(m).merges]
MERGED_OR_NOT = [(m, False) for m in METHODS] + [(m, True) for m in MERGEABLE]
LABELS = torch.tensor([0, 1, 2])


def attach(model, method, train=("classifier",), **kw):
    kw.setdefault("total_steps", 10) if method == "adalora" else None
    return peftzoo.attach(model, method, targets=TARGETS, train=list(train), **kw)


def logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def adapted(method, ids, **kw):
    """(model, adapter, the adapted logits, the base logits), the adapter's tensors made random."""
    model = tiny_bert(0)
    base = logits(model, ids)
    ad = attach(model, method, **kw)
    randomize(ad, std=1.0)
    out = logits(ad.model, ids)
    # the adapter matters, so the checks below mean something: a change well above the comparisons' tolerance and a
    # few percent of tiny BERT's small logits (IA3's scales move them by ~4e-4)
    assert (out - base).abs().max() > max(20 * TOL["atol"], 0.02 * base.abs().max())
    return model, ad, out, base


def from_pretrained(path):
    """The folder loaded by transformers, asserting it found every weight it needs and nothing else."""
    model, info = BertForSequenceClassification.from_pretrained(path, output_loading_info=True)
    assert not (info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"]), info
    return model.eval()


# ---- unload --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", MERGEABLE)
def test_merge_and_unload_saves_plain_weights_that_from_pretrained_loads(tmp_path, ids, method):
    _, ad, out, _ = adapted(method, ids)
    plain = ad.unload(merge=True)
    assert type(plain) is BertForSequenceClassification
    assert not any(isinstance(m, AdapterModule) for m in plain.modules())
    assert plain.state_dict().keys() == tiny_bert(0).state_dict().keys()
    assert all(p.requires_grad for p in plain.parameters())  # as before attaching
    torch.testing.assert_close(logits(plain, ids), out, **TOL)
    plain.save_pretrained(tmp_path)
    torch.testing.assert_close(logits(from_pretrained(tmp_path), ids), out, **TOL)


@pytest.mark.parametrize("method, merged", MERGED_OR_NOT)
def test_unload_gives_back_the_original_model(ids, method, merged):
    model, ad, _, base = adapted(method, ids)
    with torch.no_grad():
        model.classifier.weight.mul_(2.0)  # a train module: kept as trained, as PEFT's unload keeps modules_to_save
    head = model.classifier.weight.clone()
    if merged:
        ad.merge()
    plain = ad.unload()
    want = tiny_bert(0).state_dict()
    assert plain.state_dict().keys() == want.keys()
    tol = MERGE_TOL.get(method, TOL) if merged else dict(atol=0, rtol=0)  # merged: W + ΔW − ΔW in float32; else W untouched
    for k, v in plain.state_dict().items():
        torch.testing.assert_close(v, head if k == "classifier.weight" else want[k], **tol)
    assert all(p.requires_grad for p in plain.parameters())


@pytest.mark.parametrize("method", [m for m in PEFT_METHODS if m in MERGEABLE])
def test_merge_and_unload_equals_pefts(tmp_path, ids, method):
    peft = pytest.importorskip("peft")
    _, ad, _, _ = adapted(method, ids)
    ad.save_peft(tmp_path)
    ref = peft.PeftModel.from_pretrained(tiny_bert(0), tmp_path).merge_and_unload().state_dict()
    got = ad.unload(merge=True).state_dict()
    assert got.keys() == ref.keys()
    for k, v in got.items():
        torch.testing.assert_close(v, ref[k], **MERGE_TOL.get(method, TOL))


@pytest.mark.parametrize("arch, targets", [("gpt2", ["c_attn"]), ("convnet", ["conv", "fc1"]),
                                           ("bert", ["word_embeddings", "query"])])
@pytest.mark.parametrize("method", ["lora", "dora"])
def test_merge_and_unload_equals_pefts_on_other_layer_types(tmp_path, arch, targets, method):
    """GPT-2's Conv1D (weight stored transposed), a Conv2d, an nn.Embedding: the weights PEFT's merge_and_unload
    gives, and unload() gives the base weights back."""
    peft = pytest.importorskip("peft")
    from zoo import ARCHS, output
    torch.manual_seed(0)
    base = ARCHS[arch].build().eval()
    x = ARCHS[arch].inputs(torch.Generator().manual_seed(1))
    model = copy.deepcopy(base)
    ad = peftzoo.attach(model, method, targets=targets, r=4)
    randomize(ad, std=0.1)
    with torch.no_grad():
        out = output(model, x)
    ad.save_peft(tmp_path)
    ref = peft.PeftModel.from_pretrained(copy.deepcopy(base), tmp_path).merge_and_unload()
    plain = ad.unload(merge=True)
    want = ref.state_dict()
    assert plain.state_dict().keys() == want.keys()
    for k, v in plain.state_dict().items():
        torch.testing.assert_close(v, want[k], **TOL)
    with torch.no_grad():
        torch.testing.assert_close(output(plain, x), out, **TOL)
    again = copy.deepcopy(base)
    ad = peftzoo.attach(again, method, targets=targets, r=4)
    randomize(ad, std=0.1)
    for k, v in ad.unload().state_dict().items():
        torch.testing.assert_close(v, base.state_dict()[k], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("init", ["pissa", "olora", "loram"])
@pytest.mark.parametrize("method", ["lora", "dora"])
def test_an_init_that_rewrote_the_weights_is_undone(ids, method, init):
    """PiSSA/OLoRA leave a residual in W: unload() and disable_adapter() give back W itself, not the residual."""
    model, ad, out, base = adapted(method, ids, r=4, init_lora_weights=init)
    with ad.disable_adapter():
        torch.testing.assert_close(logits(model, ids), base, **TOL)
    torch.testing.assert_close(logits(model, ids), out, atol=0, rtol=0)  # the residual itself is back
    want = tiny_bert(0).state_dict()
    for k, v in ad.unload().state_dict().items():
        torch.testing.assert_close(v, want[k], **TOL)


def test_pissa_attached_on_meta_then_initialized_unloads_to_the_loaded_weights(ids):
    from test_layers import load_base_weights
    with torch.device("meta"):
        model = tiny_bert(0)
    ad = peftzoo.attach(model, "lora", targets=TARGETS, r=4, init_lora_weights="pissa")
    model.to_empty(device="cpu")
    load_base_weights(model, tiny_bert(0))
    ad.initialize()
    randomize(ad)
    want = tiny_bert(0).state_dict()
    for k, v in ad.unload().state_dict().items():
        torch.testing.assert_close(v, want[k], **TOL)


@pytest.mark.parametrize("method", ["lora", "did"])
def test_an_unloaded_adapter_refuses_every_use(tmp_path, ids, method):
    _, ad, _, _ = adapted(method, ids)
    wrapper = ad.model
    plain = ad.unload(merge=True)
    for use in (lambda: ad.merge(), lambda: ad.unmerge(), lambda: ad.disable_adapter(), lambda: ad.unload(),
                lambda: ad.count(), lambda: ad.num_trainable(), lambda: ad.save(tmp_path), lambda: ad.model):
        with pytest.raises(RuntimeError, match=rf"this {method} adapter was unloaded \(ad.unload\(merge=True\)\).*"
                                               r"Use the model unload\(\) returned"):
            use()
    assert "unloaded" in repr(ad)
    if wrapper is not plain:  # DID/SAID's wrapper: a stale handle on the model
        with pytest.raises(RuntimeError, match="call the model unload"):
            wrapper(ids)
    peftzoo.attach(plain, "lora", targets=TARGETS)  # the plain model takes a new adapter


def test_baselines_unload():
    model = tiny_bert(0)
    plain = peftzoo.attach(model, "head", train=["classifier"]).unload()
    assert plain is model and all(p.requires_grad for p in model.parameters())
    ad = peftzoo.attach(tiny_bert(0), "full", train=["classifier"])
    for use in (ad.unload, lambda: ad.disable_adapter().__enter__()):
        with pytest.raises(ValueError, match=r"full fine-tuning trains the model's own weights in place.*deepcopy"):
            use()
    model = ad.model
    assert ad.unload(merge=True) is model  # the refusals left it usable: the trained model itself


# ---- save_pretrained while attached ----------------------------------------------------------------------------------
@pytest.mark.parametrize("method", FOLDING)
def test_save_pretrained_while_attached_refuses_unmerged_and_writes_plain_merged(tmp_path, ids, method):
    model, ad, out, _ = adapted(method, ids)
    with pytest.raises(RuntimeError, match=rf"carries a {method} adapter that is not merged.*ad.unload\(merge=True\)"
                                           r".*ad.save\(dir\)"):
        model.save_pretrained(tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
    ad.merge()
    model.save_pretrained(tmp_path / "merged")
    torch.testing.assert_close(logits(from_pretrained(tmp_path / "merged"), ids), out, **TOL)
    ad.unmerge()  # still attached and working
    torch.testing.assert_close(logits(ad.model, ids), out, **TOL)
    twin = copy.deepcopy(model)  # a copy's guard belongs to the copy's own adapter
    assert twin.save_pretrained.__self__.model is not ad.model
    ad.unload()
    assert "save_pretrained" not in model.__dict__


def test_a_failed_load_leaves_no_guard_on_the_model(tmp_path):
    from transformers import BertConfig
    ad = peftzoo.attach(tiny_bert(0), "lora", targets=["intermediate.dense"])
    ad.save(tmp_path / "a")
    other = BertForSequenceClassification(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                     intermediate_size=48, vocab_size=100, num_labels=3))
    with pytest.raises(ValueError, match="has shape"):
        peftzoo.load(other, tmp_path / "a")
    assert "save_pretrained" not in other.__dict__
    other.save_pretrained(tmp_path / "plain")
    from_pretrained(tmp_path / "plain")


# ---- disable_adapter -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method, merged", MERGED_OR_NOT)
def test_disable_adapter_gives_the_base_model_and_restores_the_adapter(ids, method, merged):
    model, ad, out, base = adapted(method, ids)
    tensors = [p.detach().clone() for p in ad.adapter_parameters()]
    if merged:
        ad.merge()
    with ad.disable_adapter():
        torch.testing.assert_close(logits(ad.model, ids), base, **TOL)
        with ad.disable_adapter():  # nested: still off after the inner block
            pass
        torch.testing.assert_close(logits(ad.model, ids), base, **TOL)
        with pytest.raises(RuntimeError, match=r"inside `with ad.disable_adapter\(\):`"):
            ad.merge()
    assert ad.merged == merged
    torch.testing.assert_close(logits(ad.model, ids), out, **TOL)
    assert all(torch.equal(p, t) for p, t in zip(ad.adapter_parameters(), tensors))
    assert {id(p) for p in ad.model.parameters() if p.requires_grad} == {id(p) for p in ad.trainable_parameters()}


# ---- errors that name the fix ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("train", [["classifier"], []])
@pytest.mark.parametrize("method", FOLDING)
def test_backward_while_merged_says_unmerge(ids, method, train):
    _, ad, _, _ = adapted(method, ids, train=train)
    ad.merge()
    ad.model.train()
    loss = ad.model(ids, labels=LABELS).loss  # a forward alone still works (an evaluation that forgot eval())
    with pytest.raises(RuntimeError, match=r"the adapter is merged.*call ad.unmerge\(\) before training"):
        loss.backward()
    ad.unmerge()
    ad.model.zero_grad()
    ad.model(ids, labels=LABELS).loss.backward()
    assert all(p.grad is not None for p in ad.adapter_parameters())


@pytest.mark.parametrize("first, second", [("lora", "dora"), ("lora", "did"), ("did", "lora"), ("said", "head")])
def test_a_second_attach_says_one_adapter_per_model(first, second):
    model = tiny_bert(0)
    ad = peftzoo.attach(model, first, targets=TARGETS)
    state = {k: v.clone() for k, v in ad.model.state_dict().items()}
    for target in (model, ad.model):  # DID/SAID: the model given and the wrapper are two objects
        with pytest.raises(ValueError, match=r"already has an adapter.*one adapter per model.*"
                                             r"ad.disable_adapter\(\).*ad.unload\(\)"):
            peftzoo.attach(target, second, targets=TARGETS)
    assert all(torch.equal(v, state[k]) for k, v in ad.model.state_dict().items())


@pytest.mark.parametrize("method", METHODS + ["full", "head"])
def test_count_on_an_adapter_is_the_count_attaching_gave(method):
    kw = dict(targets=TARGETS, train=["classifier"])
    want = peftzoo.count(tiny_bert(0), method, **kw)
    ad = peftzoo.attach(tiny_bert(0), method, **kw)
    assert ad.count() == want == type(ad).count(tiny_bert(0), ad.config) == ad.count(tiny_bert(0), ad.config)
    with pytest.raises(TypeError, match=r"count\(\) takes no arguments .* or both model and config"):
        ad.count(tiny_bert(0))


# per-layer files: with train=() PEFT's plain PeftModel loads them (prompt tuning's SEQ_CLS class always trains the
# head, so its line is compared with the head trained: test_prompt.py)
@pytest.mark.parametrize("method", [m for m in PEFT_METHODS if isinstance(adapters.get(m).peft, LayerCodec)])
def test_trainable_line_is_pefts_print_trainable_parameters(tmp_path, capsys, method):
    peft = pytest.importorskip("peft")
    ad = attach(tiny_bert(0), method, train=())
    ad.save_peft(tmp_path)
    cfg = peft.PeftConfig.from_pretrained(tmp_path)
    cfg.inference_mode = False
    peft.get_peft_model(tiny_bert(0), cfg).print_trainable_parameters()
    ad.print_trainable_parameters()
    theirs, mine = capsys.readouterr().out.strip().splitlines()
    assert mine == ad.trainable_line()
    if method == "adalora":  # PEFT's AdaLoRA layers each hold a frozen `ranknum` parameter (a scalar) on top
        n, total = ad.num_trainable(), sum(p.numel() for p in ad.model.parameters()) + len(ad.layers)
        mine = f"trainable params: {n:,d} || all params: {total:,d} || trainable%: {100 * n / total:.4f}"
    assert mine == theirs


def test_trainable_line_of_did_by_hand():
    model = tiny_bert(0)
    total = sum(p.numel() for p in model.parameters())
    ad = peftzoo.attach(model, "did", d=500)
    assert ad.trainable_line() == (f"trainable params: 500 || all params: {total + 500:,d} || "
                                   f"trainable%: {100 * 500 / (total + 500):.4f}")


@pytest.mark.parametrize("method", ["lora", "did"])
def test_an_adapted_model_pickles_with_its_own_adapter(tmp_path, ids, method):
    model, ad, out, _ = adapted(method, ids)
    torch.save(ad.model, tmp_path / "m.pt")
    back = torch.load(tmp_path / "m.pt", weights_only=False)
    torch.testing.assert_close(logits(back, ids), out, atol=0, rtol=0)
    inner = getattr(back, "base", back)  # DID/SAID: the model inside the wrapper carries the adapter
    twin = getattr(inner, "_peftzoo_adapter")
    assert twin is not ad and twin.model is back
    with pytest.raises(ValueError, match="one adapter per model"):
        peftzoo.attach(inner, "lora", targets=TARGETS)  # the unpickled model still knows it carries one
