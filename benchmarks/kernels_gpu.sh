#!/usr/bin/env bash
# The CUDA tier end to end on one GPU: the reference and the hand-written Triton kernel
# (benchmarks/kernels_triton.py) are checked on the 18 test cases and timed on the 7 benchmark
# shapes of the GPU MODE TriMul task, inside the sandbox (one GPU per slot, torch and Triton
# preloaded, RSS memory limit). Prints µs per benchmark shape and the geometric mean.
#
#   benchmarks/kernels_gpu.sh [GPU_ID]        # needs a CUDA build of torch and triton
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
"$PY" - <<'PYCHECK'
import sys
import torch
try:
    import triton
except ImportError:
    sys.exit("triton is not installed: pip install -e '.[kernels-cuda]' (with a CUDA build of torch)")
if not torch.cuda.is_available():
    sys.exit(f"no CUDA GPU visible to torch {torch.__version__}: this script needs one")
print(f"torch {torch.__version__}, triton {triton.__version__}, {torch.cuda.get_device_name(0)}")
PYCHECK
exec "$PY" benchmarks/kernels.py --device cuda --gpu "${1:-0}" "${@:2}"
