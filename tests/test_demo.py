"""`peftzoo demo` runs every registered method with its own defaults (it once passed r=8 to all of them)."""
from __future__ import annotations

import re

import pytest

import peftzoo
from peftzoo.cli import main


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from peftzoo.bench.models import default_model
    d = tmp_path_factory.mktemp("tiny")
    tok = AutoTokenizer.from_pretrained(default_model())
    tok.save_pretrained(d)
    torch.manual_seed(0)
    cfg = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                     vocab_size=tok.vocab_size, max_position_embeddings=64, num_labels=2)
    BertForSequenceClassification(cfg).save_pretrained(d)
    return str(d)


@pytest.mark.parametrize("method", peftzoo.methods())
def test_demo_trains_and_merges_every_method(method, tiny_model_dir, capsys):
    assert main(["demo", "--method", method, "--steps", "2", "--model", tiny_model_dir]) == 0
    out = capsys.readouterr().out
    assert f"{method} trains" in out and "step 2: loss" in out
    if not peftzoo.adapters.get(method).merges:  # prompt tuning: no weight change to fold
        assert f"nothing to merge: {method}'s update is no weight change" in out and "merged:" not in out
        return
    change = float(re.search(r"max \|logits change\| = (\S+)", out).group(1))
    assert change < 1e-4  # merging keeps the outputs


@pytest.mark.parametrize("method", ["full", "head"])
def test_demo_of_a_baseline_says_it_has_no_adapter(method, tiny_model_dir, capsys):
    assert main(["demo", "--method", method, "--steps", "1", "--model", tiny_model_dir]) == 0
    out = capsys.readouterr().out
    n = int(re.search(r"it trains ([\d,]+) of the model's own parameters", out).group(1).replace(",", ""))
    assert f"{method} is a baseline, no adapter" in out and " adapter +" not in out
    assert (n > 100_000) == (method == "full") and "nothing to merge" in out


def test_help_lists_every_command_and_shows_defaults(capsys):
    from peftzoo.bench.cli import LOCAL_RESULTS
    from peftzoo.cli import build_parser
    p = build_parser()
    text = p.format_help()
    assert all(c in text for c in ("demo", "methods", "bench", "table", "d90", "analyze"))
    assert "demo | methods | bench | table | d90 | analyze" in text
    sub = p._subparsers._group_actions[0].choices
    bench, table, analyze = (" ".join(sub[c].format_help().split()) for c in ("bench", "table", "analyze"))
    assert ("--preset PRESET a shipped preset's name (quick, smoke, cpu, glue, ...), or a path to a preset JSON file "
            "(default: quick)") in bench
    assert "retries of a run whose Ray worker died (default: 2)" in bench
    assert f"(default: {LOCAL_RESULTS})" in bench and "(default: quick)" in table
    assert "largest i, j of the φ(i, j) heatmap (default: 64)" in analyze
    # bench and table write to and read from a folder of the user's own, not the committed results/
    assert p.parse_args(["bench"]).results == p.parse_args(["table"]).results == LOCAL_RESULTS != "results"


def test_load_model_changes_no_global_setting(tiny_model_dir):
    from transformers.utils import logging as hf_logging

    from peftzoo.bench.models import load_model
    from peftzoo.bench.tasks import get_task
    hf_logging.set_verbosity_warning()
    hf_logging.enable_progress_bar()
    model, tok = load_model(tiny_model_dir, get_task("SST-2"))
    assert model.config.num_labels == 2 and tok("a b")["input_ids"]
    assert hf_logging.get_verbosity() == hf_logging.WARNING and hf_logging.is_progress_bar_enabled()
