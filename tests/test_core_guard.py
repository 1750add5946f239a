"""The hook guard: what a plugin's hooks may return, and what the engine makes of it."""

import json
from pathlib import Path

import numpy as np
import pytest

from discover_ttt import guard
from discover_ttt.guard import BadReturn, PluginHookError, check_states
from discover_ttt.loop import run_config
from discover_ttt.progress import Reporter
from discover_ttt.state import State

CONFIG = Path(__file__).parent / "toy" / "config.yaml"


class Minimise:
    def value(self, score):
        return -float(score)


def seed_values(*states):
    return guard.HookGuard(Minimise(), "p", 1.0, None).seed_values(list(states))


# -- seeds: the engine maps score to value ----------------------------------------------------
def test_a_seed_gets_its_value_from_its_score():
    (seed,) = seed_values(State(score=90.0))
    assert seed.value == -90.0


def test_a_seed_value_that_disagrees_with_the_score_is_refused():
    with pytest.raises(PluginHookError, match=r"value 90 but value\(score 90\) = -90.*State\(score=score"):
        seed_values(State(value=90.0, score=90.0))
    (ok,) = seed_values(State(value=-90.0, score=90.0))  # consistent: kept
    assert ok.value == -90.0


@pytest.mark.parametrize("bad", ["5", True])
def test_a_seed_value_must_be_a_number(bad):
    with pytest.raises(BadReturn, match="finite number"):
        check_states(1)([State(value=bad)])


@pytest.mark.parametrize("behaviour", ["raise", float("inf")])
def test_a_broken_value_hook_stops_the_start_naming_it(tmp_path, monkeypatch, behaviour):
    import toy_problem

    def value(self, score):
        if behaviour == "raise":
            raise RuntimeError("value is broken")
        return behaviour

    monkeypatch.setattr(toy_problem.ToyProblem, "value", value)
    sets = [f"run.output={tmp_path / 'run'}", "sandbox.isolation=none", "run.steps=1"]
    with pytest.raises(PluginHookError, match=r"toy_problem.*value\(\)"):
        run_config(CONFIG, sets, reporter=Reporter())


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


# -- a hook's traceback -------------------------------------------------------------------------
def _rollouts(run_dir):
    lines = (Path(run_dir) / "events.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["type"] == "rollout"]


def _divide(x):
    return 1 / x


def test_a_raising_hook_leaves_its_last_frames_in_the_event_and_the_debug_log(tmp_path, monkeypatch, caplog):
    import toy_problem

    def evaluate(self, program, state, sandbox):
        return _divide(0)

    monkeypatch.setattr(toy_problem.ToyProblem, "evaluate", evaluate)
    sets = [f"run.output={tmp_path / 'run'}", "sandbox.isolation=none", "run.steps=1", "run.groups=1", "run.rollouts=4"]
    with caplog.at_level("DEBUG", logger="discover"):
        summary = run_config(CONFIG, sets, reporter=Reporter())
    (event, *_) = _rollouts(summary.run_dir)
    assert event["reason"] == "problem plugin 'toy_problem', hook evaluate() raised ZeroDivisionError: division by zero"
    frames = event["traceback"]
    assert "test_core_guard.py" in frames and "in _divide" in frames and "return 1 / x" in frames
    assert frames.rstrip().endswith("ZeroDivisionError: division by zero")
    assert len(frames) <= guard.TRACEBACK_CHARS
    debug = [r.getMessage() for r in caplog.records if r.levelname == "DEBUG"]
    assert any("in _divide" in m for m in debug)


def test_the_frames_kept_are_bounded():
    def deep(n):
        return deep(n - 1) if n else {}["missing" * 1000]

    try:
        deep(50)
    except KeyError as e:
        text = guard.last_frames(e)
    assert text.count('File "') <= guard.TRACEBACK_FRAMES and len(text) <= guard.TRACEBACK_CHARS


def test_a_bad_return_has_no_traceback():
    hooks = guard.HookGuard(object(), "p", 1.0, None)
    assert hooks.failed("prompt", BadReturn("expected chat messages")).traceback == ""


def test_a_broken_initial_states_is_printed_once(tmp_path, monkeypatch, caplog):
    import toy_problem

    def initial_states(self, rng, k):
        return _divide(0)

    monkeypatch.setattr(toy_problem.ToyProblem, "initial_states", initial_states)
    sets = [f"run.output={tmp_path / 'run'}", "sandbox.isolation=none", "run.steps=1"]
    with caplog.at_level("DEBUG", logger="discover"), pytest.raises(PluginHookError) as err:
        run_config(CONFIG, sets, reporter=Reporter())
    assert "\n" not in str(err.value) and "discover -v" in str(err.value)
    assert not [r for r in caplog.records if r.levelname == "WARNING" and "initial_states" in r.getMessage()]
    assert any("in _divide" in r.getMessage() for r in caplog.records if r.levelname == "DEBUG")
