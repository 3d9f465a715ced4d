"""benchmarks/trainer_vs_bench.py's bookkeeping: bench configurations, and the verdict on the clock asked for."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import trainer_vs_bench as tvb  # noqa: E402


def test_bench_configurations_name_only_what_differs_from_the_runner():
    assert tvb.bench_config("fp32") == ("bench fp32", {"precision": "fp32"})
    assert tvb.bench_config("fp32:full:128")[0] == "bench fp32"  # the defaults spelled out: the same name
    name, kw = tvb.bench_config("bf16:pooled:32")
    assert name == "bench[last_layer=pooled,eval_batch=32] bf16"
    assert kw == {"precision": "bf16", "last_layer": "pooled", "eval_batch": 32}
    with pytest.raises(SystemExit):
        tvb.bench_config("bf16:pooled:32:x")


def _run(total, cpu, acc, seed):
    return {"seed": seed, "total_s": total, "train_eval_s": total - 1, "cpu_s": cpu, "accuracy": acc}


def test_the_verdict_reads_the_clock_asked_for():
    runs = {"bench[last_layer=pooled] fp32": [_run(20, 10, 0.80, 0), _run(20, 10, 0.79, 1)],
            "trainer group_by_length fp32": [_run(22, 14, 0.795, 0), _run(22, 14, 0.79, 1)]}
    wall, = tvb.verdicts(runs, "wall")
    cpu, = tvb.verdicts(runs, "cpu")
    assert "1.10x" in wall and "NOT met" in wall and "wall clock" in wall
    assert "1.40x" in cpu and "MET" in cpu and "NOT" not in cpu and "cpu clock" in cpu
    runs["trainer group_by_length fp32"][1]["accuracy"] = 0.75  # 2.25 points apart on the mean: not equal
    assert "NOT met" in tvb.verdicts(runs, "cpu")[0]


def _report(tmp_path, name, seeds, threads=1):
    import json
    runs = {"bench fp32": [_run(20, 10, 0.80, s) for s in seeds],
            "trainer group_by_length fp32": [_run(22, 13, 0.79, s) for s in seeds]}
    p = tmp_path / name
    p.write_text(json.dumps({"complete": True, "job": tvb.JOB, "threads": threads, "clock": "cpu", "runs": runs,
                             "command": f"python benchmarks/trainer_vs_bench.py {name}"}))
    return str(p)


def test_merged_reports_pool_their_seeds_and_refuse_a_repeated_seed_or_another_setup(tmp_path, capsys):
    import json
    a, b = _report(tmp_path, "a.json", [0, 1]), _report(tmp_path, "b.json", [2, 3])
    out = tmp_path / "m.json"
    tvb.main(["--merge", a, b, "--out", str(out)])
    rep = json.loads(out.read_text())
    assert [r["seed"] for r in rep["runs"]["bench fp32"]] == [0, 1, 2, 3] and rep["summary"]["bench fp32"]["n"] == 4
    assert rep["merged_from"] == [f"python benchmarks/trainer_vs_bench.py {n}" for n in ("a.json", "b.json")]
    assert "1.30x" in rep["verdicts"][0] and "4 seed(s)" in rep["verdicts"][0] and rep["threads"] == 1
    with pytest.raises(SystemExit, match="repeats seed"):
        tvb.main(["--merge", a, _report(tmp_path, "c.json", [1, 2]), "--out", str(out)])
    with pytest.raises(SystemExit, match="same job"):
        tvb.main(["--merge", a, _report(tmp_path, "d.json", [5], threads=2), "--out", str(out)])
