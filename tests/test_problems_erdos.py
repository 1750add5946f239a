"""The Erdős problem plugin: seeds, prompts, rewards, and evaluate() on realistic programs."""

import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from discover_ttt.parsing import with_preamble
from discover_ttt.plugins import get_plugins
from discover_ttt.problems.erdos import ErdosProblem
from discover_ttt.problems.erdos.problem import PREAMBLE
from discover_ttt.problems.erdos.verifier import c5_direct
from discover_ttt.state import State

PROGRAMS = Path(__file__).parent / "data" / "programs" / "erdos"


# -- a stand-in with the sandbox's run() signature, for when discover_ttt.sandbox is absent ---------


@dataclass
class StandInResult:
    ok: bool
    value: Any = None
    kind: str | None = None
    stdout: str = ""
    stderr: str = ""
    seconds: float = 0.0
    error: str = ""


_DRIVER = r"""
import json, sys
import numpy as np
spec = json.loads(open(sys.argv[1]).read())
namespace = {"__name__": "__program__", **spec["inject"]}
exec(compile(spec["source"], "<program>", "exec"), namespace)
value = namespace[spec["entry"]](*spec["args"], **spec["kwargs"])
def plain(x):
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    return x.item() if isinstance(x, np.generic) else x
with open(spec["out"], "w") as f:
    json.dump(plain(value), f)
"""


class StandInSandbox:
    """Runs a program in a plain subprocess (no isolation): enough to exercise evaluate()."""

    workers = 1

    def run(self, source, entry="run", *, args=(), kwargs=None, inject=None, timeout_s=None, memory_mb=None):
        with tempfile.TemporaryDirectory() as tmp:
            spec_path, out = Path(tmp) / "spec.json", Path(tmp) / "out.json"
            spec = {
                "source": source,
                "entry": entry,
                "args": list(args),
                "kwargs": kwargs or {},
                "inject": inject or {},
                "out": str(out),
            }
            spec_path.write_text(json.dumps(spec))
            t0 = time.perf_counter()
            try:
                proc = subprocess.run(
                    [sys.executable, "-c", _DRIVER, str(spec_path)], capture_output=True, text=True, timeout=timeout_s
                )
            except subprocess.TimeoutExpired as e:
                return StandInResult(
                    False, kind="timeout", stdout=e.stdout or "", error=f"timed out after {timeout_s}s"
                )
            seconds = time.perf_counter() - t0
            if proc.returncode != 0:
                last = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
                return StandInResult(False, None, "exception", proc.stdout, proc.stderr, seconds, last)
            return StandInResult(True, json.loads(out.read_text()), None, proc.stdout, proc.stderr, seconds)

    def close(self):
        pass


def _real_sandbox():
    try:
        from discover_ttt.sandbox import Sandbox
    except ImportError:
        pytest.skip("discover_ttt.sandbox is not available")
    return Sandbox(timeout_s=30, memory_mb=1024, workers=1, preload=("numpy",))  # what the programs here import


@pytest.fixture(scope="module", params=["stand-in", "real"])
def sandbox(request):
    box = StandInSandbox() if request.param == "stand-in" else _real_sandbox()
    yield box
    box.close()


def program(name):
    problem = ErdosProblem()
    parsed = problem.parse((PROGRAMS / name).read_text())
    return parsed


def seed_state(n=60, seed=0):
    """A seed of length n (drawn until one has it)."""
    problem = ErdosProblem()
    rng = np.random.default_rng(seed)
    while True:
        (state,) = problem.initial_states(rng, 1)
        if len(state.construction) == n:
            return state


@pytest.fixture
def fast_problem():
    # generous for programs that finish; the timeout test uses its own short budget
    return ErdosProblem(ErdosProblem.Params(budget_s=5.0, timeout_margin_s=0.5))


# -- registration, params ---------------------------------------------------------------------------


def test_registered_under_its_name():
    entry = get_plugins().get("problems", "erdos")
    assert entry.obj is ErdosProblem


def test_params_reject_unknown_keys():
    with pytest.raises(ValueError, match="budget"):
        ErdosProblem.Params(budgets=3)


def load_with_available_backend(path):
    """Validate a shipped config; until the local backend registers, check it by its import path."""
    from discover_ttt.config import load_config

    overrides = []
    if "local" not in get_plugins().registries["backends"].entries:
        overrides = ["backend.name=discover_ttt.launch.local.backend:LocalBackend"]
    return load_config(path, overrides)


def test_paper_config_is_accepted():
    loaded = load_with_available_backend(Path(__file__).parents[1] / "problems" / "erdos" / "config.paper.yaml")
    assert loaded.params["problem"].budget_s == 1000
    run = loaded.config.run
    assert (run.groups, run.rollouts, run.steps) == (8, 64, 50)
    assert loaded.config.sandbox.timeout_s == 1000 + loaded.params["problem"].timeout_margin_s  # the problem's
    assert loaded.config.sandbox.cpus == loaded.params["problem"].cpus == 2


# -- seeds, archive, reward ---------------------------------------------------------------------------


def test_initial_states_follow_the_reference():
    states = ErdosProblem().initial_states(np.random.default_rng(0), 200)
    lengths = {len(s.construction) for s in states}
    assert min(lengths) >= 40 and max(lengths) <= 99 and len(lengths) > 30
    for s in states:
        h = np.array(s.construction)
        assert s.code == "" and s.is_seed
        assert h.sum() == pytest.approx(len(h) / 2, rel=1e-12)
        assert 0.0 <= h.min() and h.max() <= 1.0
        assert h.max() - h.min() < 0.8  # 0.5 + (u - mean u), u ~ U(-0.4, 0.4)
        assert s.score == c5_direct(h) and s.value == -s.score


def test_initial_states_never_leave_the_bounds():
    # about one draw in a thousand leaves [0, 1]; it is redrawn
    states = ErdosProblem().initial_states(np.random.default_rng(3), 3000)
    assert len(states) == 3000
    assert all(0.0 <= min(s.construction) and max(s.construction) <= 1.0 for s in states)


def test_initial_states_are_reproducible():
    a = ErdosProblem().initial_states(np.random.default_rng(7), 3)
    b = ErdosProblem().initial_states(np.random.default_rng(7), 3)
    assert [s.construction for s in a] == [s.construction for s in b]


def test_reward_and_value():
    p = ErdosProblem()
    assert p.reward(0.38) == pytest.approx(1 / (1e-8 + 0.38))
    assert p.value(0.38) == -0.38 and not p.maximize


def test_long_constructions_are_not_archived():
    p = ErdosProblem()
    assert p.keep_in_archive(State(construction=[0.5] * 1000))
    assert not p.keep_in_archive(State(construction=[0.5] * 1001))


def test_construction_from_record_formats():
    p = ErdosProblem()
    assert p.construction_from_record([0.1, 0.2]) == [0.1, 0.2]
    assert p.construction_from_record({"values": [0.1]}) == [0.1]
    assert p.construction_from_record({"construction": {"values": [0.3]}}) == [0.3]
    assert p.construction_from_record({"h": [0.4, 0.6], "c5": 0.5, "note": "x"}) == [0.4, 0.6]
    with pytest.raises(ValueError, match="values"):
        p.construction_from_record({"centers": []})


# -- prompt -----------------------------------------------------------------------------------------------


def test_seed_prompt_names_budget_cpus_target_and_the_injected_array():
    p = ErdosProblem(ErdosProblem.Params(budget_s=120, cpus=3, target=0.3809))
    state = seed_state()
    (msg,) = p.prompt(state)
    text = msg["content"]
    assert msg["role"] == "user"
    assert "budget_s=120" in text and "Return within 120 seconds" in text and "3 CPU cores" in text
    assert "initial_h_values" in text and f"n = {len(state.construction)} samples" in text
    assert "evaluate_erdos_solution" in text
    assert f"Target: 0.3809. Current gap: {state.score - 0.3809:.10f}" in text
    assert "Write code to optimise this construction." in text


def test_child_prompt_shows_code_before_after_and_stdout_tail():
    p = ErdosProblem()
    parent = seed_state()
    child = parent.child(
        value=-0.39, score=0.39, construction=[0.5] * 80, code="def run():\n    return 1\n", stdout="x" * 600 + "END"
    )
    text = p.prompt(child)[0]["content"]
    assert "def run():\n    return 1" in text
    assert f"{parent.score:.10f} -> 0.3900000000" in text
    assert "x" * 497 + "END" in text and "x" * 498 + "END" not in text  # the last 500 characters
    assert "n = 80 samples" in text
    assert "genuinely different" in text


# -- the preamble -----------------------------------------------------------------------------------------


def test_preamble_defines_the_helpers_and_keeps_line_numbers():
    source = "from __future__ import annotations\n\ndef run():\n    raise RuntimeError('line 4')\n"
    full = with_preamble(PREAMBLE, source)
    namespace = {"initial_h_values": [0.5, 0.5]}
    exec(compile(full, "<program>", "exec"), namespace)
    assert isinstance(namespace["initial_h_values"], np.ndarray)
    assert namespace["evaluate_erdos_solution"]([0.0, 1.0, 1.0, 0.0], 0.5, 4) == c5_direct([0, 1, 1, 0])
    with pytest.raises(RuntimeError) as info:
        namespace["run"]()
    tb = info.tb
    while tb.tb_next is not None:
        tb = tb.tb_next
    assert tb.tb_lineno == 4 + 1  # the program's line 4, shifted by the one preamble line


def test_preamble_without_a_parent():
    namespace = {}
    exec(compile(with_preamble(PREAMBLE, "x = 1\n"), "<program>", "exec"), namespace)
    assert namespace["initial_h_values"] is None


# -- evaluate() on realistic programs ---------------------------------------------------------------------


def test_perturb_and_project_improves_c5(sandbox, fast_problem):
    state = seed_state()
    prog = program("01_perturb_and_project.md")
    out = fast_problem.evaluate(prog, state, sandbox)
    assert out.__class__.__name__ == "Evaluation", out
    assert out.score < state.score - 0.02
    h = np.array(out.construction)
    assert len(h) == len(state.construction)  # it started from the injected parent
    assert out.score == pytest.approx(c5_direct(h), rel=1e-12)
    assert out.metrics["c5_reported"] == pytest.approx(out.score, abs=1e-4)
    assert "C5 =" in out.stdout and out.code == prog.source


def test_syntax_error_is_caught_by_parse():
    out = program("02_syntax_error.md")
    assert out.kind == "syntax_error" and "line" in out.reason


def test_no_code_is_caught_by_parse():
    assert program("06_no_code.md").kind == "no_code"


def test_timeout(sandbox):
    short = ErdosProblem(ErdosProblem.Params(budget_s=0.5, timeout_margin_s=0.5))
    t0 = time.perf_counter()
    out = short.evaluate(program("03_timeout.md"), seed_state(), sandbox)
    assert out.kind == "timeout"
    assert time.perf_counter() - t0 < 10


def test_nan_is_an_invalid_construction(sandbox, fast_problem):
    out = fast_problem.evaluate(program("04_nan.md"), seed_state(), sandbox)
    assert out.kind == "invalid_construction" and "NaN" in out.reason


def test_false_c5_is_an_invalid_construction(sandbox, fast_problem):
    out = fast_problem.evaluate(program("05_false_c5.md"), seed_state(), sandbox)
    assert out.kind == "invalid_construction" and "does not match" in out.reason and "0.3" in out.reason


def test_exception_and_wrong_return_shape(sandbox, fast_problem):
    p = fast_problem
    boom = p.parse("```python\ndef run():\n    return 1 / 0\n```")
    out = p.evaluate(boom, seed_state(), sandbox)
    assert out.kind == "exception" and "ZeroDivisionError" in out.reason
    two = p.parse("```python\ndef run():\n    return [0.5] * 4, 0.5\n```")
    out = p.evaluate(two, seed_state(), sandbox)
    assert out.kind == "invalid_construction" and "(h_values, c5_bound, n_points)" in out.reason


def test_rescaled_array_is_the_archived_construction(sandbox, fast_problem):
    src = "```python\nimport numpy as np\ndef run():\n    h = np.full(50, 0.4)\n    return h, 0.5, 50\n```"
    out = fast_problem.evaluate(fast_problem.parse(src), seed_state(), sandbox)
    assert out.construction == pytest.approx([0.5] * 50, rel=1e-15)
    assert sum(out.construction) == pytest.approx(25.0, rel=1e-15)
    assert out.score == pytest.approx(0.5 * 0.5 * 50 * 2 / 50)


def test_plot_writes_a_png(tmp_path):
    p = ErdosProblem()
    path = tmp_path / "h.png"
    p.plot(seed_state().construction, str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
