"""Method-specific behaviour beyond the shared contracts."""
import warnings

import pytest
import torch
from conftest import TARGETS, randomize, tiny_bert

import peftzoo
from peftzoo.bench.train import fit


def test_dora_zero_weight_row_gives_no_nan(model, ids):
    with torch.no_grad():
        model.bert.encoder.layer[0].attention.self.query.weight[3].zero_()
    ad = peftzoo.attach(model, "dora", targets=["query"], r=4)
    out = model(ids).logits
    assert torch.isfinite(out).all()
    model.train()
    model(ids, labels=torch.tensor([0, 1, 2])).loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in ad.adapter_parameters())
    ad.merge()
    assert torch.isfinite(model(ids).logits).all()
    ad.unmerge()
    assert model.bert.encoder.layer[0].attention.self.query.base.weight[3].abs().sum() == 0


def test_dora_norm_without_materialising_matches_direct_norm(model):
    ad = peftzoo.attach(model, "dora", targets=["query"], r=4)
    randomize(ad)
    layer = next(iter(ad.layers.values()))
    direct = torch.linalg.norm(layer.base.weight + layer.scaling * layer.B @ layer.A, dim=1)
    torch.testing.assert_close(layer.weight_norm(), direct, atol=1e-5, rtol=1e-5)


def test_vera_saves_seed_not_matrices(tmp_path, model, ids):
    ad = peftzoo.attach(model, "vera", targets=TARGETS, r=64, projection_seed=5)
    randomize(ad)
    ad.save(tmp_path)
    size = (tmp_path / "adapter.safetensors").stat().st_size
    n_trained = sum(p.numel() for p in ad.adapter_parameters())
    assert size < 4 * n_trained + 4096  # the trained numbers and a header, no 64 x 64 projections
    out = model(ids).logits
    fresh = tiny_bert()
    peftzoo.load(fresh, tmp_path)
    torch.testing.assert_close(fresh(ids).logits, out, atol=1e-6, rtol=0)


def _batches(n=8, bs=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    data = [{"input_ids": torch.randint(0, 100, (bs, 9), generator=g),
             "labels": torch.randint(0, 3, (bs,), generator=g)} for _ in range(n)]
    return lambda epoch: data


def test_adalora_ranks_change_with_the_project_loop(model):
    ad = peftzoo.attach(model, "adalora", targets=TARGETS, init_r=6, target_r=2, tinit=2, tfinal=2, deltaT=1,
                        train=["classifier"])
    assert set(ad.ranks().values()) == {6}
    fit(ad, _batches(), epochs=2, lr=1e-2)
    ranks = ad.ranks()
    assert sum(ranks.values()) == 2 * len(ranks)  # the final budget: target_r per layer on average
    s = ad.summary()
    assert s["initial_budget"] == 36 and s["rank_budget_now"] == 12
    assert s["effective"] < s["adapter"]


@pytest.mark.parametrize("kw, msg", [
    (dict(total_steps=5, tinit=3, tfinal=2), "leaves no budgeting phase"),
    (dict(init_r=4, target_r=8), "target_r=8 must be in"),
    (dict(deltaT=0), "deltaT >= 1"),
    (dict(beta1=1.0), "beta1"),
])
def test_adalora_schedule_errors(model, kw, msg):
    with pytest.raises(ValueError, match=msg):
        peftzoo.attach(model, "adalora", targets=["query"], **kw)


def test_adalora_needs_schedule_and_warns_when_hooks_are_forgotten(model, ids):
    ad = peftzoo.attach(model, "adalora", targets=["query"])
    with pytest.raises(ValueError, match="leaves no budgeting phase"):
        ad.set_total_steps(0)
    with pytest.raises(RuntimeError, match="set_total_steps"):
        ad.on_step(1)
    model.train()
    with pytest.warns(UserWarning, match="on_step\\(\\) was never called"):
        for _ in range(12):
            model(ids, labels=torch.tensor([0, 1, 2])).loss.backward()


def test_adalora_no_warning_with_the_project_loop(model):
    ad = peftzoo.attach(model, "adalora", targets=["query"], train=["classifier"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        fit(ad, _batches(n=12), epochs=2, lr=1e-3)
