"""Helpers for the bench hardening tests: a synthetic SST-2, a config-only tiny model, a fake executor."""
import json
from pathlib import Path

import numpy as np


def write_sst2(root: Path, n_train: int = 40, n_dev: int = 12) -> Path:
    data = root / "glue" / "SST-2"
    data.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("dev", n_dev)):
        rows = ["sentence\tlabel"] + [f"a {'good' if y else 'bad'} film\t{y}" for y in rng.integers(0, 2, n)]
        (data / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    return root / "glue"


def config_only_model(root: Path) -> Path:
    """A folder AutoConfig loads (enough for the preflight; the fake executor never loads weights)."""
    from transformers import BertConfig
    d = root / "model"
    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).save_pretrained(d)
    return d


def preset(model: Path, **kw) -> dict:
    """No budget, so planning loads no model."""
    return {"suite": "t", "model": str(model), "tasks": ["SST-2"], "methods": ["head", "lora"], "seeds": [0],
            "epochs": 1, "batch_size": 8, "max_len": 16, "max_train": 16, "max_eval": 12,
            "hparams": {"lora": {"r": 2}}, "protocol": {"lr_points": 1}, **kw}  # one LR: no selection needed


def write_preset(path: Path, p: dict) -> Path:
    path.write_text(json.dumps(p))
    return path


def fake_execute(spec, data_dir=None, device=None, progress=False, score=0.5, status="ok"):
    """A valid run record without training (what execute returns, with made-up numbers)."""
    from peftzoo.bench.record import EpochResult, RunRecord
    spec = spec.bind_data(data_dir)
    if status == "failed":
        return RunRecord(spec, "failed", {"peftzoo": "test"}, error="RuntimeError: made to fail")
    return RunRecord(spec, status, {"peftzoo": "test"}, [EpochResult({"score": score}, {"score": score}, epoch=1,
                                                                     loss=0.5)],
                     params={"target": None, "achieved": 10, "solver": None, "adapter": 10, "trainable": 20},
                     steps=2, median_step_s=0.01, peak_mem_mb=1.0, device="cpu", adapter_file_bytes=100,
                     data_skipped={"train": 0, "dev": 0})


def run_files(results: Path) -> list[Path]:
    return sorted(p for p in results.rglob("*.json") if not p.name.startswith("."))
