# Two commands do everything on a fresh clone:
#   make run    set up (if needed) and run the main job: Erdős on the CPU default
#   make test   set up (if needed), lint and run the tests
.PHONY: setup run test test-all lint

setup:
	@scripts/setup.sh

run: setup
	.venv/bin/discover run problems/erdos/config.yaml

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

test: lint
	.venv/bin/pytest

# Everything, including tests marked slow (model loading, full CPU runs).
test-all: setup
	.venv/bin/pytest -m ''
