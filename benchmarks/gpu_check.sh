#!/usr/bin/env bash
# The GPU check: one prepared script, under 8 minutes on one GPU (benchmarks/gpu_check.py's header lists its parts).
#
# Here, once, before a device call (the device machine has no hub, no GLUE data and no embedded-model wheel):
#     PEFTZOO_DATA_DIR=../shared/data .venv/bin/python benchmarks/pack_model.py   # writes .model/ (ignored), ~45 MiB
# Then through the device tool, from the repo root (timeout_s 560: the check's budget is 450 s):
#     run(command="bash benchmarks/gpu_check.sh --copy-to $OUT", carry=[".model"], timeout_s=560)
# It writes results/gpu/ (gpu_check.md, gpu_check.json, logs/, speed/, bench/); --copy-to also puts the report and
# gpu_check.tar.gz of that folder where the tool brings them back. Without CUDA the CUDA parts are skipped with the
# reason and it exits 0; --device cpu is a dry run of every part at tiny sizes. Other options: --help.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 \
    TOKENIZERS_PARALLELISM=false
exec "$PYTHON" benchmarks/gpu_check.py "$@"
