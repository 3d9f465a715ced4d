#!/usr/bin/env bash
# Reproduces results/intrinsic/: d_90 for MNIST with Li et al.'s FC net (DID), and for the embedded
# all-MiniLM-L6-v2 on MRPC and SST-2 (SAID, capped training sets), pretrained and with random weights.
# Needs PEFTZOO_DATA_DIR (GLUE + mnist/). About 30-40 minutes on 2 CPU cores.
set -euo pipefail
PZ=${PZ:-peftzoo}
OUT=${OUT:-results/intrinsic}
$PZ d90 --task mnist --net fc --method did --dmin 100 --dmax 10000 --per-decade 2 --bisect 4 --seeds 0 1 2 \
    --epochs 5 --batch-size 128 --lr 0.05 --full-lr 0.001 --out "$OUT" -q
for task in MRPC SST-2; do
  for init in "" "--random-init"; do
    $PZ d90 --task $task --method said --grid 200 1000 10000 100000 --bisect 1 --seeds 0 --epochs 2 \
        --batch-size 16 --max-len 64 --max-train 640 --max-eval 408 --lr 0.02 --full-lr 5e-5 $init --out "$OUT" -q
  done
done
python - "$OUT" <<'PY'
import json, sys
from pathlib import Path
from peftzoo.intrinsic.d90 import plot
out = Path(sys.argv[1])
for task in ("mrpc", "sst-2"):
    rs = {p.stem: json.loads(p.read_text()) for p in sorted(out.glob(f"{task}-*-said.json"))}
    if rs:
        plot(rs, out / f"{task}-pretrained-vs-random.png", title=f"{task.upper()} SAID")
PY
