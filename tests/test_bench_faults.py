"""Faults: runs that did not train, strict JSON, disk full, exit codes, invalid records, concurrent sweeps."""
import dataclasses
import errno
import json
import multiprocessing
import os
import re
import socket
import subprocess
import sys
import time

import pytest
from benchkit import config_only_model, fake_execute, preset, run_files, write_preset, write_sst2

from peftzoo.bench import claim, store
from peftzoo.bench import sweep as sweep_mod
from peftzoo.bench.record import RecordError, RunRecord
from peftzoo.bench.runner import execute
from peftzoo.bench.sweep import EXIT_SOME_FAILED, plan, sweep
from peftzoo.bench.table import write as write_table
from peftzoo.cli import main


@pytest.fixture
def setup(tmp_path):
    return preset(config_only_model(tmp_path)), write_sst2(tmp_path), tmp_path


def _bench(p, data, tmp, *extra):
    return main(["bench", "--preset", str(write_preset(tmp / "p.json", p)), "--results", str(tmp / "results"),
                 "--data-dir", str(data), "-q", *extra])


@pytest.mark.parametrize("change,reason", [
    ({"max_train": 0}, r"no training step: epochs=1, batch_size=8, max_train=0"),
    ({"batch_size": -4}, r"no training step: epochs=1, batch_size=-4"),
    ({"max_train": -4}, r"max_train=-4"),  # a negative slice would have trained on all but 4 rows
    ({"epochs": 0}, r"no training step: epochs=0"),
])
def test_a_run_that_cannot_train_is_failed_with_its_reason(setup, change, reason):
    p, data, tmp = setup
    spec = dataclasses.replace(plan(p, methods=["head"])[0], **change)
    rec = execute(spec, data_dir=data, progress=False)
    assert rec.status == "failed" and re.search(reason, rec.error), rec.error


def test_a_header_only_train_file_fails_the_run_and_the_preflight(setup, capsys):
    p, data, tmp = setup
    (data / "SST-2" / "train.tsv").write_text("sentence\tlabel\n")
    rec = execute(plan(p, methods=["head"])[0], data_dir=data, progress=False)
    assert rec.status == "failed" and "train.tsv: no usable data rows" in rec.error
    assert _bench(p, data, tmp) == 2 and "no usable data rows" in capsys.readouterr().err


def test_json_is_strict_nan_becomes_null(tmp_path):
    path = tmp_path / "r.json"
    store.write_json(path, {"a": float("nan"), "b": [float("inf"), 1.5], "c": (1, 2)})

    def no_constants(c):
        raise AssertionError(f"non-standard JSON constant {c}")
    assert json.loads(path.read_text(), parse_constant=no_constants) == {"a": None, "b": [None, 1.5], "c": [1, 2]}


def test_a_zero_step_record_is_not_trusted(setup):
    p, data, tmp = setup
    (spec,) = [s.bind_data(data) for s in plan(p, methods=["head"])]
    rec = {**fake_execute(spec, data_dir=data).to_json(), "steps": 0}
    with pytest.raises(RecordError, match="^status ok but 0 training steps$"):
        RunRecord.from_json(rec)


def _enospc(fd, data):
    if data:  # the preflight's empty probe file still works: the disk fills up mid-sweep
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return None


def test_disk_full_keeps_earlier_results_and_leaves_no_temp_files(setup, monkeypatch, capsys):
    p, data, tmp = setup
    results = tmp / "results"
    monkeypatch.setattr(sweep_mod, "execute", fake_execute)
    assert _bench({**p, "methods": ["head"]}, data, tmp) == 0
    write_table(results, "t")
    before = {f: f.read_bytes() for f in results.rglob("*") if f.is_file()}
    monkeypatch.setattr(store, "_write_all", _enospc)
    capsys.readouterr()
    assert _bench(p, data, tmp) == 2  # lora's record cannot be written
    err = capsys.readouterr().err
    assert re.search(r"could not write .*lora--r2--s0--\w+\.json: No space left on device \(disk full\); the "
                     r"temporary file was removed, no lora.*json was written and earlier results are untouched", err)
    with pytest.raises(store.OutputError, match=r"leaderboard\.md.*the previous leaderboard\.md is intact"):
        write_table(results, "t")
    after = {f: f.read_bytes() for f in results.rglob("*") if f.is_file()}
    assert after == before  # no temp file left, the run JSON and leaderboard md/csv/png unchanged
    monkeypatch.setattr(store, "_write_all", lambda fd, d: None if not d.startswith(b"\x89PNG") else _enospc(fd, d))
    with pytest.raises(store.OutputError, match=r"leaderboard\.png"):
        write_table(results, "t")
    assert (results / "t" / "leaderboard.png").read_bytes() == before[results / "t" / "leaderboard.png"]
    assert not [f for f in results.rglob(".tmp-*")]


def test_exit_status_failures_printed_with_q_and_retry_hint(setup, monkeypatch, capsys):
    p, data, tmp = setup

    def lora_fails(spec, **kw):
        return fake_execute(spec, status="failed" if spec.method == "lora" else "ok", **kw)
    monkeypatch.setattr(sweep_mod, "execute", lora_fails)
    assert _bench(p, data, tmp) == EXIT_SOME_FAILED == 3
    out = capsys.readouterr()
    assert "SST-2 lora lr=0.0003 s0: failed: RuntimeError: made to fail" in out.err
    assert "1 failed (listed above)" in out.out and "--retry-failed" in out.out
    assert _bench(p, data, tmp) == 3  # not retried: still failed, still said
    out = capsys.readouterr()
    assert "SST-2 lora lr=0.0003 s0: failed earlier: RuntimeError: made to fail" in out.err and "0 runs written" in out.out
    monkeypatch.setattr(sweep_mod, "execute", fake_execute)
    assert _bench(p, data, tmp, "--retry-failed") == 0
    assert "1 runs written" in capsys.readouterr().out


def test_invalid_records_are_named_skipped_by_table_and_rerun_by_bench(setup, capsys):
    p, data, tmp = setup
    results = tmp / "results"
    specs = [s.bind_data(data) for s in plan(p)]
    sweep(specs[:1], root=results, data_dir=data, quiet=True, executor=fake_execute)
    runs = results / "t" / "runs" / "SST-2"
    (runs / "junk.json").write_text("[]")
    lora = store.run_path(results, "t", "SST-2", specs[1].run_id)
    lora.write_text('{"status": "ok"}')
    md = write_table(results, "t").read_text()
    err = capsys.readouterr().err
    assert f"skipping invalid run record {runs / 'junk.json'}: not a JSON object (a list)" in err
    assert f"skipping invalid run record {lora}: no 'spec' object" in err
    assert "| head |" in md and "| lora |" not in md and "Invalid run records" in md
    executed = []
    out = sweep(specs, root=results, data_dir=data, quiet=True,
                executor=lambda s, **kw: executed.append(s.method) or fake_execute(s, **kw))
    assert executed == ["lora"] and out.invalid[0][0] == lora and out.done_before == 1
    assert store.read_record(lora)[0].status == "ok"


def test_table_on_a_suite_whose_runs_all_failed(setup, capsys):
    p, data, tmp = setup
    sweep(plan(p), root=tmp / "results", data_dir=data, quiet=True,
          executor=lambda s, **kw: fake_execute(s, status="failed", **kw))
    assert main(["table", "--suite", "t", "--results", str(tmp / "results")]) == 2
    err = capsys.readouterr().err
    assert "no successful run" in err and "SST-2 lora s0: failed: RuntimeError: made to fail" in err
    assert "Traceback" not in err and not list((tmp / "results" / "t").glob("leaderboard.*"))


def test_a_claim_held_by_a_live_process_is_left_to_it_and_a_dead_ones_is_taken_over(setup):
    p, data, tmp = setup
    results = tmp / "results"
    specs = [s.bind_data(data) for s in plan(p)]
    target = store.run_path(results, "t", "SST-2", specs[1].run_id)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        target.parent.mkdir(parents=True)
        claim.claim_path(target).write_text(json.dumps({"host": socket.gethostname(), "pid": holder.pid,
                                                        "start": claim._start_time(holder.pid)}))
        executed = []
        run = lambda s, **kw: executed.append(s.method) or fake_execute(s, **kw)  # noqa: E731
        out = sweep(specs, root=results, data_dir=data, quiet=True, executor=run)
        assert executed == ["head"] and [s.method for s, _ in out.busy] == ["lora"]
        assert "left to another sweep" in out.summary("x") and f"pid {holder.pid}" in out.summary("x")
    finally:
        holder.kill()
        holder.wait()
    out = sweep(specs, root=results, data_dir=data, quiet=True, executor=run)
    assert executed == ["head", "lora"] and not out.busy and not claim.claim_path(target).exists()


def _slow(spec, **kw):
    with open(os.environ["PZ_LOG"], "a") as f:
        f.write(f"{spec.run_id}\n")
    time.sleep(0.2)
    return fake_execute(spec, **kw)


def _sweep_proc(specs, results, data):
    sweep(specs, root=results, data_dir=data, quiet=True, executor=_slow)


def test_two_concurrent_sweeps_split_the_work(setup, monkeypatch):
    p, data, tmp = setup
    p.update(seeds=[0, 1, 2])
    specs = plan(p)
    monkeypatch.setenv("PZ_LOG", str(tmp / "log"))
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_sweep_proc, args=(specs, tmp / "results", data)) for _ in range(2)]
    for pr in procs:
        pr.start()
    for pr in procs:
        pr.join(60)
    assert [pr.exitcode for pr in procs] == [0, 0]
    done = (tmp / "log").read_text().split()
    assert len(done) == len(set(done)) == 6  # every run once, none twice
    assert len(run_files(tmp / "results")) == 6 and not list((tmp / "results").rglob(".*.claim"))



