"""protocol.separation: the baselines' protocol runs first (alone with `--stage separation`), and a task where full FT
does not beat head-only by more than 3x the larger 95% half-width runs no other method (unless --ignore-separation)."""
import json

import numpy as np
import pytest

from benchkit import config_only_model, write_sst2
from peftzoo.bench import store
from peftzoo.bench.plan import make_plan
from peftzoo.bench.record import EpochResult, RunRecord
from peftzoo.bench.sweep import run_protocol
from peftzoo.cli import main

# per (task, method): mean dev and validation score; seeds add 0.01 x seed. SST-2: full 0.80 vs head 0.60 with
# interval half-widths of 0.025 (4.30 x 0.01 / sqrt 3): separates; RTE: 0.55 vs 0.54, it does not
MEANS = {("SST-2", "full"): 0.80, ("SST-2", "head"): 0.60, ("RTE", "full"): 0.55, ("RTE", "head"): 0.54}


def _execute(spec, data_dir=None, device=None, progress=False):
    spec = spec.bind_data(data_dir)
    v = MEANS.get((spec.task, spec.method), 0.7) + 0.01 * spec.seed - abs(np.log10(spec.lr / 1e-3)) / 100
    return RunRecord(spec, "ok", {"peftzoo": "test"}, [EpochResult({"score": v}, {"score": v}, epoch=1)],
                     params={"target": None, "achieved": 10, "solver": None, "adapter": 10, "trainable": 20},
                     steps=2, median_step_s=0.01, peak_mem_mb=1.0, device="cpu", adapter_file_bytes=100,
                     data_skipped={"train": 0, "dev": 0})


@pytest.fixture
def two_tasks(tmp_path):
    data = write_sst2(tmp_path)
    rte = data / "RTE"
    rte.mkdir()
    for split in ("train", "dev"):
        rows = [f"{i}\ta premise {i}\ta hypothesis\t{('entailment', 'not_entailment')[i % 2]}" for i in range(30)]
        (rte / f"{split}.tsv").write_text("index\tsentence1\tsentence2\tlabel\n" + "\n".join(rows) + "\n")
    preset = {"suite": "g", "model": str(config_only_model(tmp_path)), "tasks": ["SST-2", "RTE"],
              "methods": ["full", "head", "lora"], "seeds": [0, 1, 2], "hparams": {"lora": {"r": 2}},
              "lr_grid": {"full": [1e-4, 1e-3], "head": [1e-3, 1e-2], "lora": [1e-3, 3e-3]},
              "protocol": {"separation": 3, "paper_settings": []}}
    return preset, data, tmp_path


def _ran(root) -> set:
    return {(r.task, r.method) for r in store.read_runs(root, "g")}


def test_a_task_that_does_not_separate_runs_only_its_baselines(two_tasks, capsys):
    preset, data, tmp = two_tasks
    out = run_protocol(make_plan(preset), tmp / "res", data_dir=data, quiet=True, executor=_execute)
    assert _ran(tmp / "res") == {("SST-2", "full"), ("SST-2", "head"), ("SST-2", "lora"), ("RTE", "full"),
                                 ("RTE", "head")}
    said = capsys.readouterr().err
    assert "SST-2: separates: full FT beats head-only by 20.0 points > 3 × 2.5" in said
    assert ("RTE: DOES NOT SEPARATE: full FT - head-only = 1.0 points, not more than 3 × 2.5 = 7.5 (the larger 95% "
            "half-width): this task cannot rank methods; its other methods are NOT run") in said
    assert "--ignore-separation" in said and len(out.refused) == 1 and out.refused[0].startswith("RTE:")
    assert "1 tasks ran only the baselines" in out.summary("res")
    from peftzoo.bench.reproduce import bench_args
    assert "--ignore-separation" not in bench_args(store.read_runs(tmp / "res", "g"), tmp / "res", "g")
    # overridden: the refused task's other methods run too, the line says so, and the Reproduce line has the flag
    request = {"preset": "g.json", "skip_unreachable": False, "ignore_separation": True}  # as `bench` records it
    out = run_protocol(make_plan(preset, request=request), tmp / "res", data_dir=data, quiet=True,
                       executor=_execute, ignore_separation=True)
    assert ("RTE", "lora") in _ran(tmp / "res") and out.refused == []
    assert "its other methods runs anyway (--ignore-separation)" in capsys.readouterr().err
    assert "--ignore-separation" in bench_args(store.read_runs(tmp / "res", "g"), tmp / "res", "g")


def test_the_separation_stage_runs_alone_and_needs_both_baselines(two_tasks, capsys):
    preset, data, tmp = two_tasks
    run_protocol(make_plan(preset), tmp / "res", data_dir=data, quiet=True, executor=_execute, only_separation=True)
    assert {m for _, m in _ran(tmp / "res")} == {"full", "head"}  # 2 tasks x 2 baselines x (2 LRs + 2 seeds)
    assert len(store.read_runs(tmp / "res", "g")) == 2 * 2 * 4
    with pytest.raises(ValueError, match="needs the baselines full and head in the plan.*add head to --methods"):
        run_protocol(make_plan(preset, methods=["full", "lora"]), tmp / "res", data_dir=data, executor=_execute)
    path = tmp / "g.json"
    path.write_text(json.dumps(preset))
    assert main(["bench", "--preset", str(path), "--stage", "separation", "--dry-run"]) == 0
    dry = capsys.readouterr().out
    assert "16 runs: stage 1 (LR sweep) 8, stage 2 (selected LR) 8" in dry and " lora " not in dry
    assert main(["bench", "--preset", str(path), "--dry-run"]) == 0
    assert "protocol.separation = 3: full and head run first (`--stage separation`)" in capsys.readouterr().out
