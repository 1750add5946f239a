"""Every config shipped under problems/ validates, and the Erdős starter program is a valid attempt."""

from pathlib import Path

import numpy as np
import pytest

from discover_ttt.components import build
from discover_ttt.config import load_config
from discover_ttt.plugins import get_plugins
from discover_ttt.problem import Evaluation, Program

ROOT = Path(__file__).parents[1]
CONFIGS = sorted((ROOT / "problems").glob("*/config*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_config_validates(path):
    loaded = load_config(path)
    assert loaded.config.run.output.is_absolute()


def test_erdos_starter_code_improves_its_seed():
    from discover_ttt.sandbox import Sandbox

    problem = build(get_plugins().get("problems", "erdos").obj, {"budget_s": 20, "cpus": 1, "starter_code": True})
    seed = problem.initial_states(np.random.default_rng(0), 1)[0]
    assert "def run(" in seed.code and "initial_h_values" in seed.code
    assert "Here is the last program" in problem.prompt(seed)[0]["content"]
    with Sandbox(timeout_s=30, workers=1, isolation="none", preload=("numpy",)) as sandbox:  # all it imports
        outcome = problem.evaluate(Program(seed.code), seed, sandbox)
    assert isinstance(outcome, Evaluation), outcome
    assert outcome.score < seed.score


def test_erdos_seeds_have_no_code_by_default():
    problem = build(get_plugins().get("problems", "erdos").obj, {})
    assert all(s.code == "" for s in problem.initial_states(np.random.default_rng(1), 3))
