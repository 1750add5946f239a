"""A program's time and CPUs have one owner: the problem's ``program_limits()``.

The prompt states them, the sandbox call and the run's sandbox enforce them, the hook guard's
deadline follows them; a config may not say otherwise in its sandbox section.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import yaml

from discover_ttt.components import build
from discover_ttt.config import ConfigError, load_config
from discover_ttt.plugins import get_plugins
from discover_ttt.problem import Invalid, Problem, Program, ProgramLimits
from discover_ttt.sandbox.runner import SandboxResult

ROOT = Path(__file__).parents[1]
TOY = Path(__file__).parent / "toy"


def config(tmp_path, problem: dict, sandbox: dict | None = None, *overrides):
    raw = {
        "problem": problem,
        "backend": {"name": "replay", "path": str(TOY / "replies.jsonl")},
        "sandbox": {"workers": 1, "isolation": "none", **(sandbox or {})},
        "run": {"steps": 1, "groups": 1, "rollouts": 1, "output": str(tmp_path / "run")},
        "log": {"progress": "none"},
    }
    return load_config(tmp_path, list(overrides), raw=raw)


def test_the_problems_budget_sets_the_sandbox_and_a_run_states_it_once(tmp_path):
    loaded = config(tmp_path, {"name": "erdos", "budget_s": 20, "cpus": 3, "timeout_margin_s": 2})
    assert loaded.limits == ProgramLimits(20, 3, margin_s=2)
    assert (loaded.config.sandbox.timeout_s, loaded.config.sandbox.cpus) == (22, 3)
    resolved = loaded.resolved()
    assert "timeout_s" not in resolved["sandbox"] and "cpus" not in resolved["sandbox"]
    assert (resolved["problem"]["budget_s"], resolved["problem"]["cpus"]) == (20, 3)
    # a resume reads the run's own config back: the same limits, nothing to warn about
    again = load_config(tmp_path, raw=resolved)
    assert (again.config.sandbox.timeout_s, again.config.sandbox.cpus) == (22, 3)


@pytest.mark.parametrize(
    "sandbox, message",
    [
        ({"timeout_s": 30}, r"'sandbox.timeout_s' is 30 but 'problem.budget_s' \(20 s.*at 25 s\) sets it"),
        ({"cpus": 2}, r"'sandbox.cpus' is 2 but 'problem.cpus' \(1, .*\) sets it"),
    ],
)
def test_a_sandbox_section_that_contradicts_the_problem_is_an_error_naming_both_keys(tmp_path, sandbox, message):
    with pytest.raises(ConfigError, match=message) as e:
        config(tmp_path, {"name": "erdos", "budget_s": 20, "cpus": 1}, sandbox)
    assert "\n" not in str(e.value) and "remove sandbox.timeout_s and sandbox.cpus" in str(e.value)


def test_an_override_that_contradicts_the_problem_is_an_error_too(tmp_path):
    with pytest.raises(ConfigError, match="'sandbox.cpus' is 4 but 'problem.cpus'"):
        config(tmp_path, {"name": "circle_packing", "budget_s": 20, "cpus": 1}, None, "sandbox.cpus=4")


def test_an_old_config_that_repeats_the_problems_values_is_accepted_with_a_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="discover"):
        loaded = config(tmp_path, {"name": "ac1", "budget_s": 1000, "cpus": 2}, {"timeout_s": 1005, "cpus": 2})
    assert (loaded.config.sandbox.timeout_s, loaded.config.sandbox.cpus) == (1005, 2)
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "sandbox.timeout_s and sandbox.cpus repeat" in warning and "problem.budget_s, problem.cpus" in warning


def test_a_problem_without_limits_keeps_the_sandbox_section(tmp_path):
    loaded = config(tmp_path, {"name": "toy_problem:ToyProblem"}, {"timeout_s": 7, "cpus": 2})
    assert loaded.limits is None
    assert (loaded.config.sandbox.timeout_s, loaded.config.sandbox.cpus) == (7, 2)
    assert loaded.resolved()["sandbox"]["timeout_s"] == 7


def test_kernels_name_their_own_keys(tmp_path):
    with pytest.raises(ConfigError, match=r"'sandbox.cpus' is 1 but 'problem.threads' \(4"):
        config(tmp_path, {"name": "trimul", "threads": 4}, {"cpus": 1})
    loaded = config(tmp_path, {"name": "trimul", "timeout_s": 100, "threads": 2})
    assert (loaded.config.sandbox.timeout_s, loaded.config.sandbox.cpus) == (100, 2)  # no margin


class BadLimits(Problem):
    name = "bad_limits"

    def program_limits(self):
        return (10, 1)


def test_a_problem_whose_limits_are_not_program_limits_is_one_clear_error(tmp_path, monkeypatch):
    import sys
    import types

    module = types.ModuleType("bad_limits_module")
    module.BadLimits = BadLimits
    monkeypatch.setitem(sys.modules, "bad_limits_module", module)
    with pytest.raises(ConfigError, match=r"program_limits\(\) must return None or ProgramLimits"):
        config(tmp_path, {"name": "bad_limits_module:BadLimits"})


class RecordingSandbox:
    """Records the limit of every call and fails it as a timeout (nothing runs)."""

    def __init__(self):
        self.timeouts = []

    def run(self, source, entry="run", *, timeout_s=None, **kwargs):
        self.timeouts.append(timeout_s)
        return SandboxResult(False, kind="timeout", error="not run")


@pytest.mark.parametrize("name", ["erdos", "circle_packing", "ac1", "ac2"])
def test_prompt_and_sandbox_call_read_the_same_limits(name):
    problem = build(get_plugins().get("problems", name).obj, {"budget_s": 37, "cpus": 3, "timeout_margin_s": 4})
    state = problem.initial_states(np.random.default_rng(0), 1)[0]
    text = problem.prompt(state)[0]["content"]
    assert "Return within 37 seconds; you have 3 CPU cores." in text.replace("\\\n", "")
    sandbox = RecordingSandbox()
    problem.evaluate(Program("def run():\n    return 0\n", entry=problem.entry), state, sandbox)
    assert sandbox.timeouts == [41]


def test_the_hook_guard_follows_the_problems_limit(tmp_path, monkeypatch):
    """An evaluate hook that hangs is stopped at the problem's limit plus the grace, not sandbox.timeout_s's default."""
    import json
    import time

    from discover_ttt import guard
    from discover_ttt.loop import Discovery
    from discover_ttt.problems.erdos import ErdosProblem
    from discover_ttt.progress import Reporter

    def hangs(self, program, state, sandbox):
        time.sleep(5)
        return Invalid("exception", "returned after 5 s")

    monkeypatch.setattr(ErdosProblem, "evaluate", hangs)
    monkeypatch.setattr(guard, "GRACE_S", 0.2)
    loaded = config(tmp_path, {"name": "erdos", "budget_s": 0.5, "timeout_margin_s": 0.1})
    disc = Discovery(loaded, reporter=Reporter())
    disc.start()
    summary = disc.run()
    events = [json.loads(line) for line in (summary.run_dir / "events.jsonl").read_text().splitlines()]
    [rollout] = [e for e in events if e["type"] == "rollout"]
    assert rollout["outcome"] == "timeout" and "evaluate()" in rollout["reason"]


SHIPPED = sorted((ROOT / "problems").glob("*/config*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_configs_state_a_programs_limits_once(path, caplog):
    with caplog.at_level(logging.WARNING, logger="discover"):
        loaded = load_config(path)
    assert loaded.limits is not None  # every built-in problem declares them
    sandbox = yaml.safe_load(path.read_text()).get("sandbox") or {}
    assert "timeout_s" not in sandbox and "cpus" not in sandbox
    assert not [r for r in caplog.records if "repeat" in r.getMessage()]


def test_a_run_saved_with_the_old_two_key_form_resumes(tmp_path):
    """A run directory's config.yaml from before (sandbox.timeout_s 1005 beside budget_s 1000) is no change."""
    from discover_ttt.config import config_changes

    saved = config(tmp_path, {"name": "erdos", "budget_s": 1000, "cpus": 2}).resolved()
    saved["sandbox"].update(timeout_s=1005, cpus=2)  # what the run directory holds
    loaded = load_config(tmp_path, raw=saved)
    assert config_changes(saved, loaded.resolved()) == ([], [])
    # a changed budget is still a change
    edited = {
        **saved,
        "problem": {**saved["problem"], "budget_s": 900},
        "sandbox": {**saved["sandbox"], "timeout_s": 905},
    }
    assert config_changes(saved, load_config(tmp_path, raw=edited).resolved())[0] == ["problem.budget_s"]
