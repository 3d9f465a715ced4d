"""Train every SST-2 run the claims need (cached under --work): LoRA r = 4, 8, 64 and full fine-tuning, 3 seeds."""
import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from sst2 import Setup, run  # noqa: E402

RUNS = [("lora", r) for r in (8, 64, 4)] + [("full", None)]
SEEDS = (0, 1, 2)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--work", default="local-results/claims")
    p.add_argument("--data-dir", default=os.environ.get("PEFTZOO_DATA_DIR"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # the machine is shared: one thread is faster than two fighting others
    for seed in SEEDS:
        for method, r in RUNS:
            t = time.perf_counter()
            out = run(method, seed, r, Setup(), Path(args.work), args.data_dir)
            print(f"{out['name']}: acc {out['score']:.4f}, {time.perf_counter() - t:.0f} s", flush=True)


if __name__ == "__main__":
    main()
