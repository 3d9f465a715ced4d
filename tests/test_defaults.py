"""Default targets per architecture (issue 20 item 9) and the default head (issue 23 item 5), against PEFT 0.21.2.

Without ``targets`` a method adapts exactly the layers ``peft.get_peft_model`` adapts without ``target_modules``;
the resolved names are recorded in the config and in both file formats; an architecture without a default is an
error that lists the model's linear layers. ``default_head`` names what PEFT's ``task_type="SEQ_CLS"`` trains.
"""
import json

import pytest
import torch
from torch import nn
from zoo import ARCHS, output

import peftzoo
from peftzoo.adapters.layer import AdapterLayer
from peftzoo.defaults import EXTRA
from peftzoo.inject import default_head, find_modules

peft = pytest.importorskip("peft")
pytestmark = pytest.mark.filterwarnings("ignore")  # PEFT's and transformers' notes on tiny configs

PEFT_CONFIGS = {"lora": lambda: peft.LoraConfig(r=2), "vera": lambda: peft.VeraConfig(r=4),
                "adalora": lambda: peft.AdaLoraConfig(init_r=2, target_r=1, total_step=10)}
KW = {"lora": dict(r=2), "vera": dict(r=4), "adalora": dict(init_r=2, target_r=1, total_steps=10)}
WITH_PEFT_DEFAULT = ["bert", "roberta", "deberta-v2", "gpt2", "llama", "qwen2", "mistral", "gemma", "phi", "t5", "bart"]
OURS_ONLY = ["distilbert", "vit", "clip-text"]  # PEFT asks for target_modules on these


def build(arch):
    torch.manual_seed(0)
    return ARCHS[arch].build().eval()


def peft_adapted(arch, cfg):
    """The module names PEFT adapts, or None when PEFT refuses for want of a default."""
    try:
        pm = peft.get_peft_model(build(arch), cfg)
    except ValueError as e:
        assert "target_modules" in str(e)
        return None
    return sorted(pm.targeted_module_names), pm.peft_config["default"].target_modules


@pytest.mark.parametrize("arch", WITH_PEFT_DEFAULT)
def test_default_targets_are_pefts(arch):
    for method, cfg in PEFT_CONFIGS.items():
        want = peft_adapted(arch, cfg())
        ad = peftzoo.attach(build(arch), method, **KW[method])
        if want is None:  # PEFT has no default for this method here (AdaLoRA on Mistral, Phi): LoRA's is used
            want = peft_adapted(arch, PEFT_CONFIGS["lora"]())
        assert sorted(ad.layers) == want[0], (arch, method)
        assert set(ad.config.targets) == set(want[1]), (arch, method)


@pytest.mark.parametrize("arch", OURS_ONLY)
def test_architectures_peft_has_no_default_for(arch):
    assert peft_adapted(arch, peft.LoraConfig(r=2)) is None
    ad = peftzoo.attach(build(arch), "lora", r=2)
    assert ad.config.targets == EXTRA[ARCHS[arch].build().config.model_type] == ARCHS[arch].attn
    pm = peft.get_peft_model(build(arch), peft.LoraConfig(r=2, target_modules=ad.config.targets))
    assert sorted(ad.layers) == sorted(pm.targeted_module_names) and len(ad.layers) == 4  # 2 layers x (q, v)


def test_the_resolved_targets_are_recorded_in_both_formats(tmp_path):
    model, g = build("llama"), torch.Generator().manual_seed(1)
    ad = peftzoo.attach(model, "lora", r=2)
    with torch.no_grad():
        for p in ad.adapter_parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.3)
    x = ARCHS["llama"].inputs(torch.Generator().manual_seed(2))
    ref = output(model, x)
    ad.save(tmp_path / "own")
    ad.save_peft(tmp_path / "peft")
    assert json.loads((tmp_path / "own/peftzoo.json").read_text())["config"]["targets"] == ["q_proj", "v_proj"]
    assert json.loads((tmp_path / "peft/adapter_config.json").read_text())["target_modules"] == ["q_proj", "v_proj"]
    for load, d in [(peftzoo.load, "own"), (peftzoo.load_peft, "peft")]:
        again = build("llama")
        assert load(again, tmp_path / d).config.targets == ["q_proj", "v_proj"]
        torch.testing.assert_close(output(again, x), ref)
    assert peftzoo.count(build("gpt2"), "dora", r=2) == peftzoo.count(build("gpt2"), "dora", r=2, targets=["c_attn"])


def test_a_plain_torch_model_is_told_its_linear_layers():
    mlp = ARCHS["mlp"].build()
    with pytest.raises(ValueError, match=r"MLP is not a transformers model .* pass targets=.* 3 linear layers are "
                                         r"named: lin0, lin1, out"):
        peftzoo.attach(mlp, "lora", r=2)
    assert all(not isinstance(m, AdapterLayer) for m in mlp.modules())  # left untouched
    with pytest.raises(ValueError, match="pass targets="):
        peftzoo.count(mlp, "vera", r=2)


def test_an_unknown_architecture_is_named_with_its_linear_layers():
    from transformers import MPNetConfig, MPNetModel
    model = MPNetModel(MPNetConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                   vocab_size=100))
    with pytest.raises(ValueError, match=r"model type 'mpnet' \(MPNetModel\) has no default targets in "
                                         r"peftzoo/defaults.py: pass targets=.*named: .*\bq\b.*\bv\b"):
        peftzoo.attach(model, "lora", r=2)


@pytest.mark.parametrize("arch, want", [("bert", ["classifier"]), ("distilbert", ["classifier"]),
                                        ("deberta-v2", ["classifier"]), ("llama-cls", ["score"]), ("gpt2", [])])
def test_default_head_is_what_peft_seq_cls_trains(arch, want):
    def make():
        if arch != "llama-cls":
            return build(arch)
        from transformers import LlamaConfig, LlamaForSequenceClassification
        torch.manual_seed(0)
        return LlamaForSequenceClassification(LlamaConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                          intermediate_size=64, vocab_size=100, num_labels=3))
    model = make()
    assert default_head(model) == want
    if not want:
        return
    attn = ARCHS[arch].attn if arch in ARCHS else ["q_proj", "v_proj"]
    pm = peft.get_peft_model(make(), peft.LoraConfig(r=2, task_type="SEQ_CLS", target_modules=attn))
    wrapped = {n.removeprefix("base_model.model.") for n, m in pm.named_modules()
               if type(m).__name__ == "ModulesToSaveWrapper"}
    assert wrapped == set(find_modules(model, want))
    ad = peftzoo.attach(model, "lora", r=2, train=default_head(model))
    assert {id(p) for p in ad.trainable_parameters()} >= {id(p) for m in find_modules(model, want).values()
                                                         for p in m.parameters()}


def test_plain_module_has_no_head():
    assert default_head(nn.Sequential(nn.Linear(2, 2))) == []
