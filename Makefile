# Two commands do everything on a fresh clone:
#   make run    set up (if needed) and run the main job: Erdős on the CPU default
#   make test   set up (if needed), lint and run the fast tier of the tests (make test-all: every test)
.PHONY: setup run test test-all lint dist

setup:
	@scripts/setup.sh

run: setup
	.venv/bin/discover run problems/erdos/config.yaml

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	scripts/typecheck.sh

# The fast tier (unit and fast integration tests; budget 120 s with lint, DEVELOPERS.md).
test: lint
	.venv/bin/pytest

# A wheel of discover-ttt in dist/, to install elsewhere: pip install 'dist/discover_ttt-<version>-py3-none-any.whl[extra]'
dist: setup
	rm -rf build/lib build/bdist.*  # setuptools would ship a module deleted since the last build from here
	.venv/bin/python -m pip wheel -q --no-deps --no-build-isolation -w dist .
	@ls dist/discover_ttt-*.whl

# Every test once: lint, the fast tier, then the rest (slow, ray, browser, contract), both under
# coverage, and the fast tier's share of the lines the whole suite covers (tests/tiers.py).
test-all: lint
	COVERAGE_FILE=.coverage.fast .venv/bin/pytest --cov --cov-report=
	COVERAGE_FILE=.coverage.rest .venv/bin/pytest -m 'slow or ray or browser or contract' --cov --cov-report=
	.venv/bin/python tests/tiers.py .coverage.fast .coverage.rest
