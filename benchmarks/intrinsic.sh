#!/usr/bin/env bash
# Reproduces results/intrinsic/mnist-fc-did.*: d_90 for MNIST with Li et al.'s FC net (DID), 3 seeds, relative
# (90% of full FT, as Li et al.) and gap (trivial + 90% of full FT's gain over it). Needs PEFTZOO_DATA_DIR (mnist/).
# A rerun resumes from the scores cached in the JSON. The language-model d_90s: python benchmarks/lm_d90.py.
set -euo pipefail
PZ=${PZ:-peftzoo}
OUT=${OUT:-results/intrinsic}
$PZ d90 --task mnist --net fc --method did --dmin 100 --dmax 10000 --per-decade 2 --bisect 4 --seeds 0 1 2 \
    --epochs 5 --batch-size 128 --lr 0.05 --full-lr 0.001 --definition relative gap --out "$OUT" -q "$@"
