"""The architecture x method x target-spec matrix against Hugging Face PEFT 0.21.2 (issue 11).

Per cell, on a tiny random model (tests/zoo.py): attach; only adapter and ``train`` tensors get gradients;
merge/unmerge keep outputs and restore weights (<= 1e-5); our PEFT file loads in PEFT with the same outputs; a
file PEFT saved loads in peftzoo with the same outputs; ``count`` equals PEFT's trainable count for the same
config; our own save/load is exact. A cell that differs from PEFT on purpose says why (DIFFERENCES).
"""
import copy
import functools

import pytest
import torch
from zoo import ARCHS, output

import peftzoo
from peftzoo.adapters.layered import LayerAdapter
from peftzoo import adapters

peft = pytest.importorskip("peft")
pytestmark = pytest.mark.filterwarnings("ignore")  # PEFT's and transformers' notes on tiny configs

# per-layer methods with a PEFT counterpart (delta-lora has none: its moved W is no PEFT file's)
METHODS = [m for m in peftzoo.methods() if issubclass(adapters.get(m), LayerAdapter) and
           adapters.get(m).peft is not None]
KW = {"lora": dict(r=4), "rslora": dict(r=4), "loraplus": dict(r=4), "dora": dict(r=4), "vera": dict(r=8),
      "adalora": dict(init_r=4, target_r=2, total_steps=10), "ia3": {}, "loha": dict(r=4), "lokr": dict(r=2)}
KW["oft"] = dict(oft_block_size=8)  # the MLP's 20-wide input gets PEFT's nearest divisor, 10
TOL = dict(atol=1e-5, rtol=1e-5)
SPECS = ["attention", "all-linear"]

# Cells where PEFT itself fails and peftzoo works on purpose: (arch, spec) -> the reason, asserted in the test.
DIFFERENCES = {
    ("distilbert", "all-linear"): "PEFT's modules_to_save=['classifier'] also takes 'pre_classifier' (a plain "
    "suffix match), but PEFT's all-linear still puts a LoRA layer there and then fails (TypeError: modules_to_save "
    "cannot be applied to modules of type lora.Linear); peftzoo leaves every train module out of all-linear, and "
    "writes the exact module list, which PEFT loads",
}

# Cells PEFT refuses, refused by peftzoo too, naming the layer type: (arch, method) -> the error we raise.
# GPT-2's projections are transformers' Conv1D, which PEFT 0.21.2's OFT, LoHa and LoKr do not adapt.
REFUSED = {("gpt2", m): "is a Conv1D" for m in ("oft", "loha", "lokr")}

# Cells that target conv layers (a conv net, ViT's patch embedding): the full cell for the LoRA family (PEFT runs
# it on nn.Conv2d), a TypeError naming the layer type for the methods PEFT runs on linear layers only.
CONV_CELLS = {"convnet": ["conv", "fc1"], "vit": ["patch_embeddings.projection", "q_proj"]}
CONV_METHODS = ["lora", "rslora", "loraplus", "dora", "ia3", "loha", "lokr", "oft"]
# OFT adapts 1×1 Conv2d only (oft_conv.py: PEFT's OFT on a larger kernel is not the base layer even at init): its
# cells target the conv net's 1×1 ``pw`` (c_in 8: one block of 8), and the larger kernels are refused, naming why.
OWN_CONV_CELLS = {("oft", "convnet"): ["pw", "fc1"]}
CONV_REFUSED = {("oft", "convnet"): ("conv", r"kernel \(3, 3\)"),
                ("oft", "vit"): ("patch_embeddings.projection", r"kernel \(8, 8\)")}
# Cells that target a token embedding beside an attention projection, for the methods whose PEFT counterpart
# adapts nn.Embedding and whose embedding cell is not covered in tests/test_layers.py: OFT rotates the looked-up
# rows (oft_embedding.py; PEFT's oft_embedding_R)
EMB_CELLS = {"bert": ["word_embeddings", "query"], "llama": ["embed_tokens", "q_proj"]}
EMB_METHODS = ["oft"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These models are tiny: a second thread only adds synchronisation (25x slower on a loaded 2-core machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@functools.cache
def base(arch: str):
    torch.manual_seed(0)
    return ARCHS[arch].build().eval()


@functools.cache
def inputs(arch: str) -> dict:
    return ARCHS[arch].inputs(torch.Generator().manual_seed(1))


def fresh(arch: str):
    return copy.deepcopy(base(arch))


def out(model, arch):
    with torch.no_grad():
        return output(model, inputs(arch))


def targets_of(arch, spec, method=None):
    if spec == "conv":
        return OWN_CONV_CELLS.get((method, arch), CONV_CELLS[arch])
    if spec == "embedding":
        return EMB_CELLS[arch]
    return "all-linear" if spec == "all-linear" else ARCHS[arch].attn


def randomize(params, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn(p.shape, generator=g) * 0.1)


def peft_model(arch, cfg_dir, targets):
    """PEFT's own model for the config we wrote, with our target spec (PEFT resolves 'all-linear' itself)."""
    cfg = peft.PeftConfig.from_pretrained(cfg_dir)
    cfg.target_modules, cfg.inference_mode = targets, False
    return peft.get_peft_model(fresh(arch), cfg)


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("arch", list(ARCHS))
def test_cell(tmp_path, arch, method, spec):
    a, targets = ARCHS[arch], targets_of(arch, spec, method)
    kw = dict(targets=targets, train=a.train, **KW[method])
    if (arch, method) in REFUSED:
        with pytest.raises(TypeError, match=REFUSED[arch, method]):
            peftzoo.attach(fresh(arch), method, **kw)
        cls = adapters.get(method)
        cfg = peft.get_peft_config({"peft_type": cls.peft.peft_type, "target_modules": targets,
                                    **cls.peft.to_peft(peftzoo.make_config(method, **kw))})
        with pytest.raises(TypeError, match="not supported"):
            peft.get_peft_model(fresh(arch), cfg)
        return
    ref0 = out(base(arch), arch)

    # attach: only adapter and train tensors are trainable and get gradients
    model = fresh(arch)
    ad = peftzoo.attach(model, method, **kw)
    randomize(ad.trainable_parameters())
    output(model, inputs(arch)).pow(2).mean().backward()
    got_grad = {id(p) for p in model.parameters() if p.grad is not None}
    assert got_grad == {id(p) for p in ad.trainable_parameters()}
    model.zero_grad()
    ref = out(model, arch)
    assert (ref - ref0).abs().max() > 1e-3, "the adapter must change the output for the checks to mean anything"

    # merge / unmerge
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    ad.merge()
    torch.testing.assert_close(out(model, arch), ref, **TOL)
    ad.unmerge()
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, weights[k], **TOL)
    torch.testing.assert_close(out(model, arch), ref, **TOL)

    # own format: exact
    ad.save(tmp_path / "own")
    again = fresh(arch)
    peftzoo.load(again, tmp_path / "own")
    assert torch.equal(out(again, arch), ref)

    # our file -> PEFT
    ad.save_peft(tmp_path / "ours")
    pm = peft.PeftModel.from_pretrained(fresh(arch), tmp_path / "ours").eval()
    torch.testing.assert_close(out(pm, arch), ref, **TOL)

    # counts equal PEFT's for the same config (PEFT resolving the target spec itself)
    reason = DIFFERENCES.get((arch, spec))
    if reason:
        with pytest.raises(TypeError, match="modules_to_save cannot be applied"):
            peft_model(arch, tmp_path / "ours", targets)
        pm = peft_model(arch, tmp_path / "ours", peft.PeftConfig.from_pretrained(tmp_path / "ours").target_modules)
    else:
        pm = peft_model(arch, tmp_path / "ours", targets)
    trainable = [p for p in pm.parameters() if p.requires_grad]
    assert peftzoo.count(base(arch), method, **kw) == sum(p.numel() for p in trainable) == ad.num_trainable()

    # PEFT's file -> ours
    randomize(trainable, seed=1)
    pm.eval()
    ref_peft = out(pm, arch)
    pm.save_pretrained(tmp_path / "peft")
    back = fresh(arch)
    peftzoo.load_peft(back, tmp_path / "peft")
    torch.testing.assert_close(out(back, arch), ref_peft, **TOL)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("arch", list(CONV_CELLS))
def test_conv_cells(tmp_path, arch, method):
    if (method, arch) in CONV_REFUSED:
        target, why = CONV_REFUSED[method, arch]
        with pytest.raises(ValueError, match=rf"{target}', a Conv2d: {why}"):
            peftzoo.attach(fresh(arch), method, targets=[target], **KW[method])
        if (method, arch) not in OWN_CONV_CELLS:
            return
    if method in CONV_METHODS:
        test_cell(tmp_path, arch, method, "conv")
    else:
        with pytest.raises(TypeError, match=rf"is a Conv2d, not a layer type {method} adapts"):
            peftzoo.attach(fresh(arch), method, targets=CONV_CELLS[arch], **KW[method])


@pytest.mark.parametrize("method", EMB_METHODS)
@pytest.mark.parametrize("arch", list(EMB_CELLS))
def test_embedding_cells(tmp_path, arch, method):
    test_cell(tmp_path, arch, method, "embedding")
