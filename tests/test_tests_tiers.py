"""The test tiers: the fast tier's budget check on CI, the tier expressions in pyproject.toml and the
Makefile, and the coverage comparison of the tiers."""

import os
from pathlib import Path

import pytest
import tiers
import tomllib

pytest_plugins = ["pytester"]
ROOT = Path(__file__).parent.parent


def test_verdict_fails_only_the_fast_tier_on_ci_past_one_and_a_half_budgets():
    limit = tiers.FAST_BUDGET_S * tiers.OVER_BUDGET
    assert tiers.verdict(limit - 1, fast=True, ci=True) is None
    assert "more than 1.5 x its 120 s budget" in tiers.verdict(limit + 1, fast=True, ci=True)
    assert tiers.verdict(limit + 1, fast=False, ci=True) is None  # the rest has no budget
    assert tiers.verdict(limit + 1, fast=True, ci=False) is None  # a busy laptop is no failure


@pytest.mark.parametrize("ci, code", [("true", 1), ("", 0)])
def test_a_fast_tier_session_over_budget_fails_on_ci(pytester, monkeypatch, ci, code):
    pytester.makeconftest("from tiers import pytest_sessionfinish, pytest_sessionstart, pytest_terminal_summary\n")
    pytester.makepyfile("def test_passes():\n    pass\n")
    monkeypatch.setattr(tiers, "FAST_BUDGET_S", 1e-6)
    monkeypatch.setenv("CI", ci)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-m", tiers.FAST)
    assert result.ret == code
    assert ("FAILED (time budget): the fast tier took" in result.stdout.str()) == bool(code)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-m", "slow")  # another selection
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED


def test_the_tier_expressions_are_the_ones_pyproject_and_the_makefile_use():
    addopts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["addopts"]
    assert f"-m '{tiers.FAST}'" in addopts and "--durations=15" in addopts
    makefile = (ROOT / "Makefile").read_text()
    assert f"-m '{tiers.REST}'" in makefile
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["markers"]
    assert sorted(m.split(":")[0] for m in declared) == sorted(tiers.MARKERS)


def test_compare_gives_the_fast_tiers_share_of_the_lines_either_tier_covers():
    root = "/r"
    fast = {"/r/discover_core/a.py": {1, 2, 3}, "/r/launch/b.py": {1}}
    rest = {"/r/discover_core/a.py": {3, 4}, "/r/launch/b.py": {1, 2, 3}, "/r/launch/c.py": {1, 2, 3, 4}}
    share, rows = tiers.compare(fast, rest, root)
    assert share == pytest.approx(4 / 11)  # 3 of 4 lines in discover_core, 1 of 7 in launch
    assert rows[1].split() == ["discover_core", "3", "4", "75%"]
    assert rows[2].split() == ["launch", "1", "7", "14%"]
    assert rows[-1].split() == ["total", "4", "11", "36%"]


def test_the_session_gives_torch_and_blas_one_thread_unless_told_otherwise():
    torch = pytest.importorskip("torch")
    assert "OMP_NUM_THREADS" in os.environ  # tests/conftest.py sets it before torch is imported
    assert torch.get_num_threads() == int(os.environ["OMP_NUM_THREADS"])
