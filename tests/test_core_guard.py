"""The hook guard: what a plugin's hooks may return, and what the engine makes of it."""

import json
from pathlib import Path

import numpy as np
import pytest

from discover_ttt.guard import BadReturn, PluginHookError, check_states
from discover_ttt.loop import run_config
from discover_ttt.progress import Reporter
from discover_ttt.state import State

CONFIG = Path(__file__).parent / "toy" / "config.yaml"


def negate(score):
    return -float(score)


# -- seeds: the engine maps score to value ----------------------------------------------------
def test_a_seed_gets_its_value_from_its_score():
    (seed,) = check_states(1, negate)([State(score=90.0)])
    assert seed.value == -90.0


def test_a_seed_value_that_disagrees_with_the_score_is_refused():
    with pytest.raises(BadReturn, match=r"value 90 but value\(score 90\) = -90.*State\(score=score"):
        check_states(1, negate)([State(value=90.0, score=90.0)])
    (ok,) = check_states(1, negate)([State(value=-90.0, score=90.0)])  # consistent: kept
    assert ok.value == -90.0


@pytest.mark.parametrize("bad", ["5", True])
def test_a_seed_value_must_be_a_number(bad):
    with pytest.raises(BadReturn, match="finite number"):
        check_states(1)([State(value=bad)])


def test_a_minimising_plugin_that_stores_its_score_as_value_cannot_start(tmp_path, monkeypatch):
    import toy_problem

    def initial_states(self, rng, k):
        return [State(value=float(i + 1), score=float(i + 1), construction=[0.0] * 3) for i in range(k)]

    monkeypatch.setattr(toy_problem.ToyProblem, "maximize", False)
    monkeypatch.setattr(toy_problem.ToyProblem, "initial_states", initial_states)
    sets = [f"run.output={tmp_path / 'run'}", "sandbox.isolation=none", "run.steps=1"]
    with pytest.raises(PluginHookError, match=r"initial_states\(\).*leave value unset"):
        run_config(CONFIG, sets, reporter=Reporter())


def test_a_minimising_run_archives_seeds_with_negated_values(tmp_path, monkeypatch):
    """Seeds given by score alone: the archive ranks them as it ranks children, smallest score best."""
    import toy_problem

    def initial_states(self, rng, k):
        return [State(score=float(10 * (i + 1)), construction=[0.0] * 3) for i in range(k)]

    monkeypatch.setattr(toy_problem.ToyProblem, "maximize", False)
    monkeypatch.setattr(toy_problem.ToyProblem, "initial_states", initial_states)
    sets = [f"run.output={tmp_path / 'run'}", "sandbox.isolation=none", "run.steps=1", "run.groups=2"]
    summary = run_config(CONFIG, sets, reporter=Reporter())
    ckpt = sorted((summary.run_dir / "checkpoints").glob("step_*"))[-1]
    archived = json.loads((ckpt / "sampler.json").read_text())["states"]
    seeds = {s["id"]: s for s in archived if not s["parents"]}
    assert {s["score"]: s["value"] for s in seeds.values()} == {10.0: -10.0, 20.0: -20.0}
    assert np.isfinite(summary.best_value) and summary.best_value == -summary.best_score
