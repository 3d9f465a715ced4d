"""AdaLoRA's schedule (tinit / tfinal / deltaT) derived from the run's total steps when not given."""
import pytest
import torch
from conftest import TARGETS, tiny_bert

import peftzoo
from peftzoo.adapters.adalora import schedule_for
from peftzoo.bench.train import fit

peft = pytest.importorskip("peft")


def _batches(n, bs=4):
    g = torch.Generator().manual_seed(0)
    data = [{"input_ids": torch.randint(0, 100, (bs, 9), generator=g),
             "labels": torch.randint(0, 3, (bs,), generator=g)} for _ in range(n)]
    return lambda epoch: data


@pytest.mark.parametrize("total, expected", [
    (125, {"tinit": 18, "tfinal": 56, "deltaT": 1}),  # 2,000 SST-2 examples, batch 16, 1 epoch
    (50520, {"tinit": 7578, "tfinal": 22734, "deltaT": 101}),  # the paper's SST-2 run (6,000 / 22,000 / 100)
    (1, {"tinit": 0, "tfinal": 0, "deltaT": 1}),
])
def test_unset_schedule_is_derived_from_total_steps(total, expected):
    ad = peftzoo.attach(tiny_bert(), "adalora", targets=["query"])
    ad.set_total_steps(total)
    assert ad.schedule() == expected
    assert total > expected["tinit"] + expected["tfinal"]  # a budgeting phase is always left


def test_given_schedule_values_win_and_the_rest_is_derived():
    ad = peftzoo.attach(tiny_bert(), "adalora", targets=["query"], tfinal=7, total_steps=100)
    assert ad.schedule() == {"tinit": 15, "tfinal": 7, "deltaT": 1}
    ad.set_total_steps(1000)
    assert ad.schedule() == {"tinit": 150, "tfinal": 7, "deltaT": 2}
    with pytest.raises(ValueError, match="leaves no budgeting phase"):
        peftzoo.attach(tiny_bert(), "adalora", targets=["query"], tinit=10, total_steps=10)


@pytest.mark.parametrize("kw, msg", [(dict(tinit=1.5), r"tinit=1\.5: need tinit >= 0"),
                                     (dict(tfinal=-1), "tfinal >= 0"), (dict(deltaT=True), "deltaT >= 1")])
def test_bad_schedule_values_are_named(kw, msg):
    with pytest.raises(ValueError, match=msg):
        peftzoo.attach(tiny_bert(), "adalora", targets=["query"], **kw)


def test_default_schedule_warms_up_before_pruning_and_ends_with_a_fixed_pattern():
    """With the defaults, no triplet is pruned during the first 15% of steps (the importance scores are still noise:
    Λ starts at 0) and the final 45% train one fixed pattern at the target budget. The old defaults (tinit=0,
    tfinal=0, deltaT=1) pruned from step 1 and never fixed the pattern."""
    model = tiny_bert()
    ad = peftzoo.attach(model, "adalora", targets=TARGETS, init_r=6, target_r=2, train=["classifier"])
    total = 40
    budgets, patterns = [], []
    step_hook = ad.on_step

    def record(step):
        step_hook(step)
        budgets.append(sum(ad.ranks().values()))
        patterns.append({n: layer.keep.clone() for n, layer in ad.layers.items()})
    ad.on_step = record
    fit(ad, _batches(total), epochs=1, lr=1e-2)
    s = ad.schedule()
    assert s == {"tinit": 6, "tfinal": 18, "deltaT": 1}
    n_layers = len(ad.layers)
    assert budgets[: s["tinit"]] == [6 * n_layers] * s["tinit"]  # warm-up: all init_r triplets kept
    assert budgets[s["tinit"]] < 6 * n_layers  # pruning starts right after it
    final = total - s["tfinal"]
    assert budgets[final - 1:] == [2 * n_layers] * (s["tfinal"] + 1)  # the target budget from T - tfinal on
    for p in patterns[final:]:  # ... with one fixed pattern, enforced in the forward pass
        assert all(torch.equal(p[n], patterns[final - 1][n]) for n in p)
    assert all(layer.enforce for layer in ad.layers.values())


def test_derived_schedule_matches_peft_budget_step_by_step():
    """PEFT is given the resolved numbers; its RankAllocator's budget then equals ours at every step."""
    total = 125
    ad = peftzoo.attach(tiny_bert(), "adalora", targets=TARGETS, init_r=6, target_r=2, total_steps=total)
    cfg = peft.AdaLoraConfig(target_modules=TARGETS, **ad.peft.to_peft(ad.config))
    assert (cfg.tinit, cfg.tfinal, cfg.deltaT, cfg.total_step) == (18, 56, 1, total)
    pm = peft.get_peft_model(tiny_bert(), cfg)
    alloc = pm.base_model.rankallocator
    for step in range(1, total + 1):
        assert ad.budget(step) == alloc.budget_schedule(step), step


def test_schedule_for_without_total_is_the_old_fixed_default():
    cfg = peftzoo.make_config("adalora", targets=["query"])
    assert schedule_for(cfg, None) == {"tinit": 0, "tfinal": 0, "deltaT": 1}


def test_training_with_the_project_hooks_matches_peft_step_by_step():
    """Same initial tensors, same batches, AdamW, float64: after tinit, budgeting and the final phase, our weights,
    ranks and logits equal PEFT's (update_and_allocate + its orthogonal regulariser in the loss). This caught a
    float64 bug: the pruning threshold was rounded to float32, so a triplet tied with it was kept over budget."""
    from transformers import BertConfig, BertForSequenceClassification

    def tiny():
        torch.manual_seed(0)
        return BertForSequenceClassification(BertConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=100,
            max_position_embeddings=64, num_labels=3, hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0)).double()
    total = 14
    ours_model, ref_model = tiny(), tiny()
    ad = peftzoo.attach(ours_model, "adalora", targets=TARGETS, init_r=4, target_r=2, train=["classifier"],
                        total_steps=total)
    pm = peft.get_peft_model(ref_model, peft.AdaLoraConfig(task_type="SEQ_CLS", target_modules=TARGETS,  # adds orth reg
                                                            modules_to_save=["classifier"],
                                                            **ad.peft.to_peft(ad.config)))
    for n, p in pm.named_parameters():  # PEFT leaves its rank counter trainable on a float64 model: hold it
        if "ranknum" in n:
            p.requires_grad_(False)
    with torch.no_grad():
        for n, layer in ad.layers.items():
            ref = pm.base_model.model.get_submodule(n)
            for ours_t, peft_name in (("A", "lora_A"), ("B", "lora_B"), ("E", "lora_E")):
                getattr(ref, peft_name)["default"].copy_(getattr(layer, ours_t))
    opts = [torch.optim.AdamW(ad.param_groups(lr=5e-2)),
            torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=5e-2, weight_decay=0.0)]
    batches = _batches(total)(0)
    for step, b in enumerate(batches, 1):
        (ours_model(**b).loss + ad.extra_loss()).backward()
        pm(**b).loss.backward()
        for o in opts:
            o.step()
        ad.on_step(step)
        pm.base_model.update_and_allocate(step)
        for o in opts:
            o.zero_grad()
    kept = {k.removeprefix("base_model.model.").removesuffix(".lora_E.default"): sum(v)
            for k, v in pm.peft_config["default"].rank_pattern.items()}
    assert ad.ranks() == kept and sum(kept.values()) == 2 * len(kept)
    ours_model.eval(), pm.eval()
    ids = batches[0]["input_ids"]
    # float64: any gap is a real one
    torch.testing.assert_close(ours_model(ids).logits, pm(input_ids=ids).logits, atol=1e-9, rtol=1e-9)


def test_orthogonality_term_is_each_matrix_frobenius_distance_in_order():
    """The batched regulariser equals ‖A Aᵀ − I‖_F / ‖Bᵀ B − I‖_F computed matrix by matrix, in the given order, for
    mixed shapes and sides, and so does its gradient (float rounding aside: bmm and mm may round tiny matrices
    apart; on 12 × 256 factors they agreed bit for bit)."""
    from peftzoo.adapters.adalora import orthogonality
    g = torch.Generator().manual_seed(0)
    fs = [(torch.randn(*shape, generator=g, requires_grad=True), side)
          for shape, side in [((3, 7), "rows"), ((7, 3), "cols"), ((4, 5), "rows"), ((3, 7), "rows"),
                              ((9, 3), "cols"), ((4, 5), "rows")]]
    got = orthogonality(fs)
    grams = [f @ f.t() if side == "rows" else f.t() @ f for f, side in fs]
    ref = torch.stack([torch.linalg.matrix_norm(m - torch.eye(m.shape[0])) for m in grams])
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=0)
    ts = [f for f, _ in fs]
    for a, b in zip(torch.autograd.grad(got.mean(), ts), torch.autograd.grad(ref.mean(), ts)):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_importance_averages_are_the_per_tensor_recursions():
    """Two on_step calls before any pruning: Ī and Ū of every tensor follow the EMA recursions by hand."""
    ad = peftzoo.attach(tiny_bert(), "adalora", targets=TARGETS, init_r=4, target_r=2, tinit=5, tfinal=2)
    ad.set_total_steps(20)
    ps = ad.adapter_parameters()
    b1, b2 = ad.config.beta1, ad.config.beta2
    avg = [torch.zeros_like(p) for p in ps]
    unc = [torch.zeros_like(p) for p in ps]
    g = torch.Generator().manual_seed(3)
    for step in (1, 2):
        with torch.no_grad():
            for p in ps:
                p.add_(torch.randn(p.shape, generator=g))
                p.grad = torch.randn(p.shape, generator=g)
        ad.on_step(step)
        for i, p in enumerate(ps):
            ipt = (p * p.grad).abs().detach()
            avg[i] = b1 * avg[i] + (1 - b1) * ipt
            unc[i] = b2 * unc[i] + (1 - b2) * (ipt - avg[i]).abs()
    for p, a, u in zip(ps, avg, unc):
        torch.testing.assert_close(ad.avg_ipt[id(p)], a)
        torch.testing.assert_close(ad.avg_unc[id(p)], u)
