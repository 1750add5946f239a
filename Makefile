# Two commands do everything on a fresh clone:
#   make run    set up (if needed) and run the main job: Erdős on the CPU default
#   make test   set up (if needed), lint and run the tests
.PHONY: setup run test test-all lint dist

setup:
	@scripts/setup.sh

run: setup
	.venv/bin/discover run problems/erdos/config.yaml

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

test: lint
	.venv/bin/pytest

# A wheel of discover-ttt in dist/, to install elsewhere: pip install 'dist/discover_ttt-<version>-py3-none-any.whl[extra]'
dist: setup
	.venv/bin/python -m pip wheel -q --no-deps --no-build-isolation -w dist .
	@ls dist/discover_ttt-*.whl

# Everything, including tests marked slow (model loading, full CPU runs).
test-all: setup
	.venv/bin/pytest -m ''
