"""Does CPU bf16 autocast keep the scores? The brief's job (SST-2, 2,000 examples, 1 epoch, MiniLM, batch 16,
length 64, all of dev) for full FT and LoRA r=8, fp32 and bf16 alternating, per seed; writes the dev accuracy, the
median step time and the run's wall time of each.

    python benchmarks/bf16_scores.py --runs full:0 full:1 lora:2
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from peftzoo.bench.runner import execute
from peftzoo.bench.spec import RunSpec

OUT = Path(__file__).resolve().parents[1] / "results" / "speed" / "bf16_scores.json"
LR = {"full": 5e-5, "lora": 2e-3}
HP = {"full": {}, "lora": {"r": 8, "alpha": 16}}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", nargs="+", default=["full:0", "lora:0", "full:1", "lora:1"], help="METHOD:SEED")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    out = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {"runs": []}
    for i, item in enumerate(args.runs):
        method, seed = item.split(":")
        for prec in (("fp32", "bf16") if i % 2 == 0 else ("bf16", "fp32")):
            spec = RunSpec(suite="speed", task="SST-2", method=method, seed=int(seed), hparams=HP[method],
                           lr=LR[method], epochs=1, batch_size=16, max_len=64, max_train=2000, precision=prec)
            rec = execute(spec, data_dir=args.data_dir, progress=False)
            row = {"method": method, "seed": int(seed), "precision": prec, "status": rec.status,
                   "accuracy": rec.history[-1].dev.get("accuracy") if rec.ok else None,
                   "median_step_s": rec.median_step_s, "throughput_ex_s": rec.throughput_ex_s, "wall_s": rec.wall_s,
                   "train_eval_s": rec.train_s, "error": rec.error}
            out["runs"].append(row)
            print(row, flush=True)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
