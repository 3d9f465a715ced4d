"""Claim 10's d_90 searches (``peftzoo d90``), one seed per search so each seed gives its own d_90 and the spread
over seeds gives a confidence interval. Skips a search whose JSON is already there."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SEEDS = (0, 1, 2)
# name -> extra d90 arguments; every search: DID, MNIST, Li et al.'s nets, the settings of benchmarks/intrinsic.sh
CASES = {
    "fc-10k": ["--net", "fc"],
    "fc-5k": ["--net", "fc", "--max-train", "5000"],
    "lenet-10k": ["--net", "lenet"],
}
COMMON = ["--task", "mnist", "--method", "did", "--dmin", "30", "--dmax", "10000", "--per-decade", "2", "--bisect", "4",
          "--epochs", "5", "--batch-size", "128", "--lr", "0.05", "--full-lr", "0.001", "-q"]


def command(case: str, seed: int, out: Path) -> list[str]:
    return ["peftzoo", "d90", *COMMON, *CASES[case], "--seeds", str(seed), "--out", str(out / f"{case}-s{seed}")]


def result_path(case: str, seed: int, out: Path) -> Path:
    net = CASES[case][1]
    return out / f"{case}-s{seed}" / f"mnist-{net}-did.json"


def run_all(out: Path, data_dir: str | None) -> dict:
    res = {}
    for case in CASES:
        for seed in SEEDS:
            path = result_path(case, seed, out)
            if not path.is_file():
                cmd = command(case, seed, out)
                cmd = [sys.executable, "-m", "peftzoo", *cmd[1:]] + (["--data-dir", data_dir] if data_dir else [])
                subprocess.run(cmd, check=True)
            res[(case, seed)] = json.loads(path.read_text())
    return res
