"""Bad input gets a clear error, never a silent no-op."""
import json

import pytest
import torch
from conftest import tiny_bert

import peftzoo


def test_unknown_method_lists_known(model):
    with pytest.raises(ValueError, match=r"unknown method 'lorax'.*lora, loraplus"):
        peftzoo.attach(model, "lorax")


def test_unknown_option_lists_options(model):
    with pytest.raises(TypeError, match=r"no option 'rank'.*alpha"):
        peftzoo.attach(model, "lora", rank=4)


def test_target_matching_nothing_lists_close_names(model):
    with pytest.raises(ValueError, match=r"'querry' matches no module.*query"):
        peftzoo.attach(model, "lora", targets=["querry"])


def test_target_that_is_not_linear(model):
    with pytest.raises(TypeError, match=r"BertSelfAttention, not a layer type lora adapts \(nn\.Linear, .*self\.query"):
        peftzoo.attach(model, "lora", targets=["attention.self"])


@pytest.mark.parametrize("r", [0, -1, 2.5])
def test_rank_out_of_range(model, r):
    with pytest.raises(ValueError, match=rf"r={r} must be a positive integer"):
        peftzoo.attach(model, "lora", targets=["query"], r=r)
    assert all(p.requires_grad for p in model.parameters()), "a failed attach must leave the model untouched"


@pytest.mark.parametrize("method, kw", [("lora", {"r": 40}), ("dora", {"r": 40}),
                                        ("adalora", {"init_r": 40, "target_r": 4})])
def test_rank_above_layer_size_is_accepted_with_a_warning_as_peft(model, method, kw):
    with pytest.warns(UserWarning, match=r"rank 40 exceeds min\(d_in, d_out\) on 2 layer\(s\).*accepted, as PEFT"):
        ad = peftzoo.attach(model, method, targets=["query"], **kw)
    assert ad.num_trainable() == peftzoo.count(tiny_bert(), method, targets=["query"], **kw) > 0


def test_vera_rank_may_exceed_layer_but_not_be_zero(model):
    peftzoo.attach(model, "vera", targets=["query"], r=100)
    with pytest.raises(ValueError, match="r=0"):
        peftzoo.attach(tiny_bert(), "vera", targets=["query"], r=0)


@pytest.mark.parametrize("targets", [["query"], ["value"], "all-linear"])
def test_a_second_attach_is_a_clear_error_and_changes_nothing(model, targets):
    ad = peftzoo.attach(model, "lora", targets=["query"], train=["classifier"])
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"already has an adapter \(2 adapter layers.*attaching twice is not supported"):
        peftzoo.attach(model, "dora", targets=targets)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == trainable  # the first stays trainable
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items()) and len(ad.layers) == 2


def test_all_linear_skips_output_layer_and_train_modules_only(model):
    """PEFT's rule: every linear layer but the output layer and the train modules (the pooler is adapted)."""
    ad = peftzoo.attach(model, "lora", targets="all-linear", r=2, train=["classifier"])
    assert "classifier" not in ad.layers and "bert.pooler.dense" in ad.layers
    assert len(ad.layers) == 2 * 6 + 1  # q, k, v, attn-out, ffn-in, ffn-out per layer, and the pooler


def test_train_module_that_does_not_exist(model):
    with pytest.raises(ValueError, match="'classifer' matches no module.*classifier"):
        peftzoo.attach(model, "lora", train=["classifer"])


def test_loading_adapter_with_wrong_shapes(tmp_path):
    from transformers import BertConfig, BertForSequenceClassification
    ad = peftzoo.attach(tiny_bert(), "lora", targets=["query"], r=4)
    ad.save(tmp_path / "own")
    ad.save_peft(tmp_path / "peft")
    cfg = BertConfig(hidden_size=48, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=100)
    with pytest.raises(ValueError, match=r"shape \(4, 32\) but the model needs \(4, 48\)"):
        peftzoo.load(BertForSequenceClassification(cfg), tmp_path / "own")
    with pytest.raises(ValueError, match=r"shape \(4, 32\) but the model needs \(4, 48\)"):
        peftzoo.load_peft(BertForSequenceClassification(cfg), tmp_path / "peft")


def test_unsupported_peft_type(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "FOURIERFT", "target_modules": ["query"]}))
    with pytest.raises(ValueError, match=r"PEFT adapter type 'FOURIERFT'.*not supported.*ADALORA, IA3, LOHA, LOKR, LORA, OFT, PROMPT_TUNING, VERA"):
        peftzoo.load_peft(tiny_bert(), tmp_path)


def test_unsupported_peft_feature(tmp_path):
    ad = peftzoo.attach(tiny_bert(), "lora", targets=["query"], r=4)
    ad.save_peft(tmp_path)
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    cfg["bias"] = "all"
    (tmp_path / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="trains biases"):
        peftzoo.load_peft(tiny_bert(), tmp_path)


def test_own_loader_points_to_peft_loader(tmp_path):
    peftzoo.attach(tiny_bert(), "lora", targets=["query"], r=4).save_peft(tmp_path)
    with pytest.raises(FileNotFoundError, match="use peftzoo.load_peft"):
        peftzoo.load(tiny_bert(), tmp_path)


def test_count_reports_bad_input_too(model):
    with pytest.raises(ValueError, match="r=0"):
        peftzoo.count(model, "lora", targets=["query"], r=0)


def test_loraplus_groups_put_exactly_B_at_ratio(model):
    ad = peftzoo.attach(model, "loraplus", targets=["query", "value"], r=4, lr_ratio=16, train=["classifier"])
    groups = ad.param_groups(lr=1e-3, weight_decay=0.01)
    fast = [g for g in groups if g["lr"] == pytest.approx(1.6e-2)]
    assert len(fast) == 1
    assert {id(p) for p in fast[0]["params"]} == {id(layer.B) for layer in ad.layers.values()}
    slow = {id(p) for g in groups if g["lr"] == pytest.approx(1e-3) for p in g["params"]}
    assert slow == {id(l.A) for l in ad.layers.values()} | {id(p) for p in model.classifier.parameters()}
    torch.optim.AdamW(groups)  # torch accepts them
