"""BitFit beyond the shared contracts: only biases learn, counts by hand, its own file, no-op merge, no budget knob."""
import pytest
import torch
from conftest import TARGETS, tiny_bert

import peftzoo

HEAD = 32 * 3 + 3  # the classifier of tiny_bert (32 -> 3)


def test_only_biases_get_gradients_and_change(ids):
    model = tiny_bert()
    ad = peftzoo.attach(model, "bitfit", targets=TARGETS, train=["classifier"], layer_norm=True)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model(ids, labels=torch.tensor([0, 1, 2])).loss.backward()
    graded = {n for n, p in model.named_parameters() if p.grad is not None}
    expected = {f"bert.encoder.layer.{i}.{m}.bias" for i in range(2)
                for m in ("attention.self.query", "attention.self.value", "intermediate.dense",
                          "attention.output.LayerNorm", "output.LayerNorm")}
    assert graded == expected | {"bert.embeddings.LayerNorm.bias", "classifier.weight", "classifier.bias"}
    torch.optim.SGD(ad.param_groups(lr=0.1)).step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == graded


def test_counts_by_hand():
    m = tiny_bert()
    # per encoder layer: query 32 + value 32 + intermediate.dense 64
    assert peftzoo.count(m, "bitfit", targets=TARGETS, train=["classifier"]) == 2 * 128 + HEAD
    # + LayerNorms: the embeddings' and 2 per layer, 32 wide
    assert peftzoo.count(m, "bitfit", targets=TARGETS, layer_norm=True) == 2 * 128 + 5 * 32
    # all-linear (the default): q, k, v, attention output 32 each, intermediate 64, output 32; the pooler 32
    assert peftzoo.count(m, "bitfit", train=["classifier"]) == 2 * (4 * 32 + 64 + 32) + 32 + HEAD
    ad = peftzoo.attach(m, "bitfit", train=["classifier"])
    assert ad.summary() == {"method": "bitfit", "adapter": 2 * 224 + 32, "effective": 2 * 224 + 32,
                            "train_modules": HEAD, "trainable": 2 * 224 + 32 + HEAD}


def test_save_load_round_trip_holds_only_the_biases(tmp_path, ids):
    from peftzoo.bench.train import fit
    model = tiny_bert()
    ad = peftzoo.attach(model, "bitfit", targets=TARGETS, train=["classifier"], layer_norm=True)
    g = torch.Generator().manual_seed(0)
    data = [{"input_ids": torch.randint(0, 100, (4, 9), generator=g), "labels": torch.randint(0, 3, (4,), generator=g)}
            for _ in range(3)]
    fit(ad, lambda epoch: data, epochs=1, lr=1e-2)
    model.eval()
    out = model(ids).logits
    assert (out - tiny_bert()(ids).logits).abs().max() > 1e-3
    ad.save(tmp_path)
    from safetensors.torch import load_file
    keys = set(load_file(str(tmp_path / "adapter.safetensors")))
    assert keys == set(ad.state()) | {"train.classifier.weight", "train.classifier.bias"}
    assert all(k.endswith(".bias") for k in ad.state())
    fresh = tiny_bert()
    back = peftzoo.load(fresh, tmp_path)
    assert back.name == "bitfit" and back.config.layer_norm
    assert torch.equal(fresh(ids).logits, out)
    with pytest.raises(NotImplementedError, match="no Hugging Face PEFT equivalent.*ad.save"):
        ad.save_peft(tmp_path / "peft")


def test_merge_and_unmerge_are_exact_no_ops(ids):
    model = tiny_bert()
    ad = peftzoo.attach(model, "bitfit", targets=TARGETS)
    with torch.no_grad():
        for b in ad.adapter_parameters():
            b.add_(0.3)
    out, state = model(ids).logits, {k: v.clone() for k, v in model.state_dict().items()}
    for op in (ad.merge, ad.merge, ad.unmerge):
        op()
        assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
        assert torch.equal(model(ids).logits, out)


def test_bias_free_targets_are_refused():
    net = torch.nn.Sequential(torch.nn.Linear(4, 4, bias=False), torch.nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"target '0' has no bias .*BitFit trains bias terms only"):
        peftzoo.attach(net, "bitfit", targets=["0", "1"])
    ad = peftzoo.attach(net, "bitfit")  # all-linear: the layers that have a bias
    assert list(ad.state()) == ["1.bias"] and ad.num_trainable() == 2
    with pytest.raises(ValueError, match="no linear layer of the model has a bias"):
        peftzoo.count(torch.nn.Sequential(torch.nn.Linear(4, 4, bias=False)), "bitfit")


def test_no_budget_knob_one_cell_in_the_plan():
    from peftzoo.bench.budget import solve
    from peftzoo.bench.plan import make_plan
    m = tiny_bert(num_labels=2)
    with pytest.raises(ValueError, match="bitfit has no free hyperparameter"):
        solve(m, "bitfit", 1000, targets=TARGETS)
    plan = make_plan({"suite": "t", "tasks": ["SST-2"], "methods": ["lora", "bitfit"], "seeds": [0],
                      "budgets": [256, 1024], "targets": ["query", "value"]}, model=m)
    cells = [(c.method, c.label, c.middle) for c in plan.cells]
    assert cells == [("lora", "256", False), ("lora", "1,024", True), ("bitfit", "—", True)]
    assert {s.method for s in plan.stage1()} == {"lora", "bitfit"}
