#!/usr/bin/env bash
# mypy on the package, as configured in pyproject.toml ([tool.mypy]); `make lint` runs it.
# mypy reads discover_ttt through the editable install's link tree (scripts/setup.sh); its messages
# name the repository's files instead (build/__editable__.*/discover_ttt/launch/x.py -> launch/x.py).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/mypy "$@" | sed -E \
  -e 's#^build/__editable__[^/]*/discover_ttt/(samplers|estimators|launch|problems)/#\1/#' \
  -e 's#^build/__editable__[^/]*/discover_ttt/#discover_core/#'
