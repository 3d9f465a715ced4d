"""`peftzoo bench --save-adapters`: each run keeps its trained adapter beside its JSON, `peftzoo analyze` reads it,
full fine-tuning keeps none (said why), and the store warns when a sweep would outgrow the results folder's budget."""
import dataclasses
import json

import numpy as np
import pytest
import torch
from benchkit import config_only_model, fake_execute, preset, write_sst2
from conftest import tiny_bert
from test_bench import tiny_setup  # noqa: F401 (a fixture: a small BERT and a synthetic SST-2)

import peftzoo
from peftzoo.bench import batches, store
from peftzoo.bench.models import load_model
from peftzoo.bench.stats import decode_preds
from peftzoo.bench.sweep import plan, sweep
from peftzoo.bench.tasks import get_task, load_task
from peftzoo.cli import main


def test_bench_saves_each_runs_adapter_and_it_is_the_trained_one(tiny_setup, tmp_path, capsys):  # noqa: F811
    p, data, results = tiny_setup
    p.update(methods=["lora", "head", "full"], epochs=1)
    path = tmp_path / "p.json"
    path.write_text(json.dumps(p))
    rc = main(["bench", "--preset", str(path), "--data-dir", str(data), "--results", str(results), "-q",
               "--save-adapters"])
    assert rc == 0, capsys.readouterr().err
    runs = {r.method: r for r in store.read_runs(results, "t")}
    assert set(runs) == {"lora", "head", "full"}  # the adapter folders are no runs to the store
    task = get_task("SST-2")
    dev = load_task(task, data)["dev"]
    for m in ("lora", "head"):
        rec = runs[m]
        folder = store.run_path(results, "t", "SST-2", rec.run_id).with_name(rec.saved_adapter["path"])
        assert folder.name == f"{rec.run_id}.adapter"
        assert sorted(f.name for f in folder.iterdir()) == ["adapter.safetensors", "peftzoo.json"]
        assert rec.saved_adapter["bytes"] == sum(f.stat().st_size for f in folder.iterdir())
        model, tok = load_model(rec.spec.model, task)
        ad = peftzoo.load(model, folder)  # the own format, the head included
        enc = batches.encode_split(tok, dev, np.arange(len(dev.labels)), rec.spec.max_len, task.name)
        got = batches.predict(ad.model.eval(), enc, 64, torch.device("cpu"), False,
                              torch.autocast("cpu", enabled=False))
        np.testing.assert_array_equal(got, decode_preds(rec.history[-1].preds["dev"]))  # the final epoch's model
    full = runs["full"].saved_adapter
    assert set(full) == {"skipped"} and "its trained tensors are every weight of the model" in full["skipped"]
    assert not store.adapter_dir(store.run_path(results, "t", "SST-2", runs["full"].run_id)).exists()


def test_analyze_reads_a_runs_saved_adapter_and_says_why_full_ft_has_none(tiny_setup, tmp_path, capsys):  # noqa: F811
    p, data, results = tiny_setup
    p.update(methods=["lora", "full"], epochs=1)
    specs = plan(p)
    sweep(specs, root=results, data_dir=data, quiet=True, save_adapters=True)
    js = {r.method: store.run_path(results, "t", "SST-2", r.run_id) for r in store.read_runs(results, "t")}
    out = tmp_path / "a"
    assert main(["analyze", "--adapter", str(js["lora"]), "--out", str(out), "--no-plots", "--threads", "1"]) == 0
    res = json.loads((out / "analysis.json").read_text())
    assert len(res["layers"]) == 4  # query and value of the tiny model's 2 layers, read on the model the run used
    capsys.readouterr()
    assert main(["analyze", "--adapter", str(js["full"]), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "has no saved adapter: full fine-tuning has no adapter file" in err and "--finetuned" in err


def test_full_finetuning_refuses_an_adapter_file_naming_what_to_save():
    ad = peftzoo.attach(tiny_bert(0), "full", train=["classifier"])
    with pytest.raises(NotImplementedError, match=r"every weight of the model \(0.\d MB here\).*"
                                                  r"ad.unload\(merge=True\).save_pretrained"):
        ad.save("unused")


def _saving(spec, data_dir=None, device=None, progress=False, save_adapter=False, kb=300):
    rec = fake_execute(spec, data_dir)
    if not save_adapter:
        return rec
    return dataclasses.replace(rec, adapter_files={"adapter.safetensors": b"x" * (kb * 1000)},
                               saved_adapter={"path": f"{rec.run_id}.adapter", "bytes": kb * 1000})


def test_the_store_warns_once_when_saved_adapters_would_outgrow_the_budget(tmp_path):
    said = []
    rec = _saving(plan(preset(config_only_model(tmp_path)))[0], write_sst2(tmp_path), save_adapter=True)
    under = store.AdapterBudget(tmp_path / "r", said.append, budget_mb=1)
    under.expect(2)
    under.written(rec)
    assert said == []  # 0.3 MB saved + 0.3 MB for the one run left: within 1 MB
    over = store.AdapterBudget(tmp_path / "r", said.append, budget_mb=1)
    over.expect(5)
    over.written(rec)
    over.written(rec)
    assert len(said) == 1 and "would reach about 1.5 MB: 0.3 MB saved by 1 adapters (mean 300 KB) and up to 4 runs " \
                              "left, over its size budget of 1 MB" in said[0]


def test_a_sweep_saving_adapters_writes_them_before_the_json_and_names_runs_finished_without(tmp_path):
    p, data = preset(config_only_model(tmp_path)), write_sst2(tmp_path)
    specs = plan(p)
    first = sweep(specs[:1], tmp_path / "r", data, quiet=True, executor=_saving)  # without --save-adapters
    assert first.unsaved == []
    out = sweep(specs, tmp_path / "r", data, quiet=True, executor=_saving, save_adapters=True)
    assert out.unsaved == first.written and "1 finished before without a saved adapter" in out.summary("r")
    (fresh,) = out.written
    assert (store.adapter_dir(fresh) / "adapter.safetensors").stat().st_size == 300_000
    rec, _ = store.read_record(fresh)
    assert rec.saved_adapter == {"path": f"{rec.run_id}.adapter", "bytes": 300_000} and rec.adapter_files is None
    assert "adapter_files" not in json.loads(fresh.read_text())
