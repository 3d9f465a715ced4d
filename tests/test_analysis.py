"""peftzoo.analysis and `peftzoo analyze`: every quantity checked against SVDs computed here by hand with numpy."""
import json

import numpy as np
import pytest
import torch
from conftest import TARGETS, randomize, tiny_bert

import peftzoo
from peftzoo.analysis import (AnalysisConfig, GradientRank, LayerDelta, analyze_adapter, analyze_checkpoints,
                              analyze_deltas, compare_bases, write)
from peftzoo.analysis import spectra
from peftzoo.cli import main

CFG = AnalysisConfig(threads=1)


def lora_dir(tmp_path, name="a", r=4, seed=0, peft=False):
    ad = peftzoo.attach(tiny_bert(), "lora", targets=TARGETS, r=r, alpha=8, train=["classifier"], seed=seed)
    randomize(ad, seed)
    with torch.no_grad():
        next(iter(ad.train_modules.values())).weight.add_(1.0)  # a trained head: saved, but not an adapted layer
    hand = {n: (layer.base.weight.detach().double().numpy(), (layer.B.double() @ layer.A.double()).detach().numpy() * 8 / r)
            for n, layer in ad.layers.items()}
    (ad.save_peft if peft else ad.save)(tmp_path / name)
    return tmp_path / name, hand


def np_eff_rank(s):
    p = s / s.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def test_scalar_spectra_by_hand():
    s = torch.tensor([3.0, 1.0, 0.0])
    assert spectra.effective_rank(s) == pytest.approx(np.exp(-(0.75 * np.log(0.75) + 0.25 * np.log(0.25))))
    assert spectra.stable_rank(s) == pytest.approx(10 / 9)
    assert spectra.numerical_rank(s, (3, 3)) == 2
    assert spectra.effective_rank(torch.ones(5)) == pytest.approx(5.0)  # flat spectrum: every direction counts
    assert spectra.effective_rank(torch.zeros(4)) == 0.0 and spectra.stable_rank(torch.zeros(4)) == 0.0


def test_batched_svd_matches_per_matrix_numpy():
    g = torch.Generator().manual_seed(0)
    mats = {"a": torch.randn(5, 3, generator=g), "b": torch.randn(4, 6, generator=g), "c": torch.randn(5, 3, generator=g)}
    assert spectra.group_by_shape(mats) == [["a", "c"], ["b"]]
    out = spectra.batched_svd(mats)
    for n, m in mats.items():
        np.testing.assert_allclose(out[n][1].numpy(), np.linalg.svd(m.numpy(), compute_uv=False), rtol=1e-5)
        U, S, Vh = out[n]
        np.testing.assert_allclose((U * S) @ Vh, m, atol=1e-5)


@pytest.mark.parametrize("peft", [False, True])
def test_lora_adapter_quantities_equal_hand_svd(tmp_path, peft):
    path, hand = lora_dir(tmp_path, r=4, peft=peft)
    res = analyze_adapter(tiny_bert(), path, config=AnalysisConfig(threads=1, float64=True))
    assert res["source"]["format"] == ("peft" if peft else "peftzoo")
    assert set(res["layers"]) == set(hand)  # the classifier (train=["classifier"], trained in full) is not a ΔW
    for n, (W, dW) in hand.items():
        v = res["layers"][n]
        U, S, Vt = np.linalg.svd(dW)
        np.testing.assert_allclose(v["singular_values"], S[: len(v["singular_values"])], rtol=1e-4, atol=1e-6)
        assert v["numerical_rank"] == 4
        assert v["effective_rank"] == pytest.approx(np_eff_rank(S[:4]), rel=1e-4)
        assert v["stable_rank"] == pytest.approx((S ** 2).sum() / S[0] ** 2, rel=1e-4)
        assert v["relative_norm"] == pytest.approx(np.linalg.norm(dW) / np.linalg.norm(W), rel=1e-5)
        amp = v["amplification"]
        proj = np.linalg.norm(U[:, :4].T @ W @ Vt[:4].T)
        assert amp["r"] == 4 and amp["proj_dW_dirs"] == pytest.approx(proj, rel=1e-4)
        assert amp["factor"] == pytest.approx(np.linalg.norm(dW) / proj, rel=1e-4)
        sw = np.linalg.svd(W, compute_uv=False)
        assert amp["proj_W_dirs"] == pytest.approx(np.sqrt((sw[:4] ** 2).sum()), rel=1e-4)
        U0, U1 = np.linalg.svd(W, full_matrices=False)[0], np.linalg.svd(W + dW, full_matrices=False)[0]
        maxcos = np.abs(U1[:, :10].T @ U0).max(1)
        np.testing.assert_allclose(v["intruders"]["max_cos"], maxcos, atol=1e-6)


def test_own_and_peft_format_give_the_same_analysis(tmp_path):
    own, _ = lora_dir(tmp_path, "own")
    peft, _ = lora_dir(tmp_path, "peft", peft=True)
    a = analyze_adapter(tiny_bert(), own, config=CFG)["layers"]
    b = analyze_adapter(tiny_bert(), peft, config=CFG)["layers"]
    for n in a:
        np.testing.assert_allclose(a[n]["singular_values"], b[n]["singular_values"], rtol=1e-6)


def test_phi_of_two_adapters_by_hand(tmp_path):
    p1, h1 = lora_dir(tmp_path, "r4", r=4, seed=0)
    p2, h2 = lora_dir(tmp_path, "r8", r=8, seed=1)
    res = analyze_adapter(tiny_bert(), p1, compare=p2, config=CFG)
    sim = res["compare"]["similarity"]
    n = "bert.encoder.layer.0.attention.self.query"
    V1, V2 = np.linalg.svd(h1[n][1])[2][:4].T, np.linalg.svd(h2[n][1])[2][:8].T  # right singular vectors
    phi = np.array(sim[n]["phi"])
    assert phi.shape == (4, 8)
    for i, j in [(1, 1), (2, 5), (4, 8)]:
        want = np.linalg.norm(V1[:, :i].T @ V2[:, :j]) ** 2 / min(i, j)
        assert phi[i - 1, j - 1] == pytest.approx(want, abs=1e-4)
    same = compare_bases({"x": torch.tensor(V2)}, {"x": torch.tensor(V2)})["x"]["phi"]
    assert np.allclose(np.diag(same), 1.0, atol=1e-5)  # a subspace against itself: φ(i, i) = 1


def test_intruder_dimension_constructed_by_hand():
    W0 = torch.diag(torch.tensor([4.0, 3.0, 2.0, 1.0])).double()  # singular vectors: the standard basis
    u = torch.full((4,), 0.5, dtype=torch.float64)  # |cos| 0.5 with every standard basis vector
    layers, _ = analyze_deltas({"l": LayerDelta(W0, 1e4 * torch.outer(u, u))},
                               AnalysisConfig(top_k=1, eps=(0.4, 0.6), threads=1))
    intr = layers["l"]["intruders"]
    assert intr["max_cos"][0] == pytest.approx(0.5, abs=1e-3)  # W0 + ΔW's top direction is u (nearly)
    assert intr["counts"] == {"0.4": 0, "0.6": 1}
    assert layers["l"]["numerical_rank"] == 1 and layers["l"]["stable_rank"] == pytest.approx(1.0)


def test_checkpoints_only_changed_layers_and_exact_delta():
    base, ft = tiny_bert(), tiny_bert()
    name = "bert.encoder.layer.1.intermediate.dense"
    g = torch.Generator().manual_seed(3)
    d = torch.randn(64, 2, generator=g) @ torch.randn(2, 32, generator=g)
    with torch.no_grad():
        ft.get_submodule(name).weight.add_(d)
    res = analyze_checkpoints(base, ft, CFG)
    assert list(res["layers"]) == [name]
    v = res["layers"][name]
    np.testing.assert_allclose(v["singular_values"][:2], np.linalg.svd(d.double().numpy(), compute_uv=False)[:2],
                               rtol=1e-4)
    assert v["numerical_rank"] == 2


def test_clear_errors_for_bad_input(tmp_path):
    from transformers import BertConfig, BertForSequenceClassification
    path, _ = lora_dir(tmp_path)
    def other():
        return BertForSequenceClassification(BertConfig(hidden_size=48, num_hidden_layers=2, num_attention_heads=2,
                                                        intermediate_size=64, vocab_size=100, num_labels=3))
    with pytest.raises(ValueError, match="cannot be loaded onto the model analysed, BertForSequenceClassification; "
                                         "the adapter does not record its base model's name or path with 3 labels: .*shape.*--model BASE, "
                                         "and --num-labels 3"):
        analyze_adapter(other(), path, config=CFG)
    with pytest.raises(ValueError, match="shape .* in the base but .* different models"):
        analyze_checkpoints(tiny_bert(), other(), CFG)
    one_layer = BertForSequenceClassification(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                         intermediate_size=64, vocab_size=100, num_labels=3))
    with pytest.raises(ValueError, match="lacks 6 nn.Linear"):
        analyze_checkpoints(tiny_bert(), one_layer, CFG)
    with pytest.raises(ValueError, match="share no nn.Linear"):
        analyze_checkpoints(tiny_bert(), tiny_bert().bert.embeddings, CFG)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        analyze_adapter(tiny_bert(), tmp_path / "nope", config=CFG)
    untrained = peftzoo.attach(tiny_bert(), "lora", targets=["query"], r=2)
    untrained.save(tmp_path / "zero")
    with pytest.raises(ValueError, match="changes no nn.Linear"):
        analyze_adapter(tiny_bert(), tmp_path / "zero", config=CFG)
    ad = peftzoo.attach(tiny_bert(), "lora", targets=["value"], r=2)
    randomize(ad)
    ad.save(tmp_path / "value")
    with pytest.raises(ValueError, match="adapt different layers"):
        analyze_adapter(tiny_bert(), path, compare=tmp_path / "value", config=CFG)
    with pytest.raises(ValueError, match="rank=0"):
        AnalysisConfig(rank=0).check()


def test_cli_end_to_end_and_its_errors(tmp_path, capsys):
    base = tmp_path / "base"
    tiny_bert().save_pretrained(base)
    a, hand = lora_dir(tmp_path, "a", peft=True)
    b, _ = lora_dir(tmp_path, "b", r=8, seed=1)
    out = tmp_path / "out"
    rc = main(["analyze", "--model", str(base), "--adapter", str(a), "--compare", str(b), "--out", str(out),
               "--threads", "1", "--eps", "0.3", "0.5"])
    assert rc == 0, capsys.readouterr().err
    assert "6 adapted layers" in capsys.readouterr().out
    res = json.loads((out / "analysis.json").read_text())
    assert {p.name for p in out.iterdir()} == {"analysis.json", "spectra.png", "intruders.png", "similarity.png"}
    n = next(iter(hand))
    np.testing.assert_allclose(res["layers"][n]["singular_values"][:4], np.linalg.svd(hand[n][1], compute_uv=False)[:4],
                               rtol=1e-4)
    assert set(res["layers"][n]["intruders"]["counts"]) == {"0.3", "0.5"}
    assert main(["analyze", "--model", str(base), "--compare", str(b), "--adapter", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["analyze", "--model", str(tmp_path / "nomodel"), "--adapter", str(a)]) == 2
    assert "no such folder" in capsys.readouterr().err
    ft = tiny_bert()
    with torch.no_grad():
        ft.bert.encoder.layer[0].attention.self.query.weight.add_(0.1)
    ft.save_pretrained(tmp_path / "ft")
    assert main(["analyze", "--model", str(base), "--finetuned", str(tmp_path / "ft"), "--out", str(tmp_path / "o2"),
                 "--no-plots", "--threads", "1"]) == 0
    res = json.loads((tmp_path / "o2" / "analysis.json").read_text())
    assert list(res["layers"]) == ["encoder.layer.0.attention.self.query"]  # the backbone's names
    assert res["layers"]["encoder.layer.0.attention.self.query"]["numerical_rank"] == 1  # + 0.1 everywhere: rank 1


def test_wrong_base_names_the_model_the_recorded_base_and_the_options(tmp_path, capsys):
    from transformers import BertConfig, BertForSequenceClassification
    base = tmp_path / "base"
    tiny_bert().save_pretrained(base)
    from transformers import AutoModelForSequenceClassification
    ad = peftzoo.attach(AutoModelForSequenceClassification.from_pretrained(base), "lora", targets=["query"], r=2,
                        train=["classifier"])
    randomize(ad)
    ad.save_peft(tmp_path / "peft")  # PEFT's format records base_model_name_or_path
    wrong = tmp_path / "wrong"
    BertForSequenceClassification(BertConfig(hidden_size=48, num_hidden_layers=2, num_attention_heads=2,
                                             intermediate_size=64, vocab_size=100, num_labels=2)).save_pretrained(wrong)
    assert main(["analyze", "--model", str(wrong), "--adapter", str(tmp_path / "peft"), "--no-plots"]) == 2
    err = capsys.readouterr().err
    assert f"cannot be loaded onto the model analysed, {wrong}; the adapter records base model '{base}'" in err, err
    assert f"--model {base}, and --num-labels N" in err and "this model's head has 2 labels" in err
    assert err.count("does not fit") <= 1  # the reason is said once


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path):
    layers, _ = analyze_deltas({"l": LayerDelta(torch.eye(3).double(), torch.ones(3, 3).double())}, CFG)
    res = {"source": {"method": "x"}, "layers": layers, "summary": {}}
    write(res, tmp_path, plots=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["analysis.json", "intruders.png", "spectra.png"]
    # the same mode as every other output (bench, d90: 0644), not mkstemp's 0600
    assert {oct(p.stat().st_mode & 0o777) for p in tmp_path.iterdir()} == {"0o644"}


def test_plots_name_both_adapters_and_count_directions_in_integers():
    import matplotlib
    matplotlib.use("Agg")
    from peftzoo.analysis import report
    assert report.describe({"method": "lora", "config": {"r": 8}, "path": "out/r8"}) == "lora r=8 (out/r8)"
    assert report.describe({"method": "said", "config": {"d": 500}}) == "said d=500"
    assert report.describe({"method": "full", "format": "checkpoints"}) == "full"
    assert report._int_ticks(1) == [1] and report._int_ticks(4) == [1, 2, 3, 4]
    assert all(isinstance(t, int) and 1 <= t <= 64 for t in report._int_ticks(64)) and len(report._int_ticks(64)) <= 7


def test_gradient_rank_hook_in_the_training_loop():
    from peftzoo.adapters.base import AdapterConfig
    from peftzoo.adapters.baselines import FullFinetune
    from peftzoo.bench.train import fit
    g = torch.Generator().manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
    ad = FullFinetune(net, AdapterConfig(train=[]))
    batches = [(torch.randn(1, 6, generator=g), torch.tensor([1])) for _ in range(3)]  # batch of 1: ∇W = outer product
    batches += [(torch.randn(4, 6, generator=g), torch.randint(0, 3, (4,), generator=g)) for _ in range(2)]
    probe = GradientRank(every=2)
    fit(ad, lambda e: batches, 1, 1e-2, warmup=0.0, callbacks=[probe])
    assert [r["step"] for r in probe.records] == [1, 3, 5]
    for rec in probe.records[:2]:  # batch of one: every weight gradient has rank 1
        for v in rec["layers"].values():
            assert v["numerical_rank"] == 1 and v["stable_rank"] == pytest.approx(1.0, rel=1e-4)
    last = probe.records[2]["layers"]["0"]
    assert 1 < last["numerical_rank"] <= 4 and last["max_rank"] == 5
    assert probe._handles == [] and probe.summary()["steps"][0]["mean_stable_rank"] == pytest.approx(1.0, rel=1e-4)


def test_gram_svd_is_a_thin_svd_also_for_low_rank_and_tall_matrices():
    g = torch.Generator().manual_seed(0)
    mats = {"tall": torch.randn(7, 4, generator=g), "wide": torch.randn(4, 9, generator=g),
            "lowrank_tall": torch.randn(9, 2, generator=g) @ torch.randn(2, 6, generator=g),
            "lowrank_wide": torch.randn(6, 2, generator=g) @ torch.randn(2, 9, generator=g)}
    out = spectra.gram_svd(mats)
    for n, m in mats.items():
        U, S, Vh = out[n]
        k = min(m.shape)
        assert U.shape == (m.shape[0], k) and Vh.shape == (k, m.shape[1]), n
        # float32 rounding leaves the rank-2 products σ ~ 1e-7 σ₁, under the Gram's floor: reported as 0
        np.testing.assert_allclose(S, np.linalg.svd(m.double().numpy(), compute_uv=False), atol=2e-7 * float(S[0]))
        np.testing.assert_allclose((U * S) @ Vh, m.double(), atol=2e-7 * float(S[0]))
        np.testing.assert_allclose(U.T @ U, np.eye(k), atol=1e-12)  # orthonormal, completed where σ = 0
        np.testing.assert_allclose(Vh @ Vh.T, np.eye(k), atol=1e-12)
    assert int((out["lowrank_wide"][1] > 0).sum()) == 2


def test_default_analysis_equals_the_float64_lapack_reference(tmp_path):
    path, _ = lora_dir(tmp_path, r=4)
    ref = analyze_adapter(tiny_bert(), path, config=AnalysisConfig(threads=1, float64=True))["layers"]
    got = analyze_adapter(tiny_bert(), path, config=AnalysisConfig(threads=1))["layers"]
    for n, v in ref.items():
        w = got[n]
        np.testing.assert_allclose(w["singular_values"], v["singular_values"], atol=1e-9)
        for k in ("numerical_rank", "effective_rank", "stable_rank", "relative_norm"):
            assert w[k] == pytest.approx(v[k], rel=1e-6), k
        for k in ("proj_dW_dirs", "proj_W_dirs", "proj_random_dirs", "factor"):
            assert w["amplification"][k] == pytest.approx(v["amplification"][k], rel=1e-6), k
        np.testing.assert_allclose(w["intruders"]["max_cos"], v["intruders"]["max_cos"], atol=1e-6)
