"""Hostile replies and misbehaving plugins: every rollout is recorded, the run goes on."""

import json
import time
from pathlib import Path

import numpy as np
import pytest

from discover_ttt import guard
from discover_ttt.guard import PluginHookError
from discover_ttt.loop import run_config
from discover_ttt.parsing import code_blocks, last_code_block
from discover_ttt.problem import Evaluation, Problem, Program
from discover_ttt.progress import Reporter

TOY = Path(__file__).parent / "toy"
CONFIG = TOY / "config.yaml"


def events(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "events.jsonl").read_text().splitlines()]


def rollouts(run_dir):
    return [e for e in events(run_dir) if e["type"] == "rollout"]


def run(tmp_path, *overrides, replies=None):
    sets = [f"run.output={tmp_path / 'run'}", "sandbox.isolation=none", *overrides]
    if replies is not None:
        sets.append(f"backend.path={replies}")
    return run_config(CONFIG, sets, reporter=Reporter())


# -- parsing ------------------------------------------------------------------------------
def test_fence_flood_is_linear():
    flood = "```python " * 200_000  # one line of fence markers: minutes with the old regex
    t0 = time.process_time()
    assert last_code_block(flood) is None
    assert last_code_block(flood + "\n```python\ndef run(): pass\n```") == ""  # fences pair up in order
    assert time.process_time() - t0 < 2


def test_code_blocks_match_the_fence_rules():
    text = "think\n```py\na = 1\n```\nthen ```python  extra\nb = 2\n```\n```js\nc\n```\n```\nd\n```"
    assert code_blocks(text) == [("py", "a = 1\n"), ("python", "b = 2\n"), ("js", "c\n"), ("", "d\n")]
    assert last_code_block(text) == "d\n"
    assert last_code_block("```python\nno end") is None


HOSTILE = {
    "nested.txt": "```python\ndef run():\n    return " + "(" * 50_000 + "1" + ")" * 50_000 + "\n```",
    "chain.txt": "```python\ndef run():\n    return " + "+".join(["1"] * 45_000) + "\n```",
    "attrs.txt": "```python\ndef run():\n    return a" + ".b" * 45_000 + "\n```",
    "unary.txt": "```python\ndef run():\n    return " + "-" * 40_000 + "1\n```",
    "fences.txt": "```python " * 100_000,
    "fences2.txt": "```\n" * 100_000,
    "huge.txt": "```python\ndef run():\n    return [0.3, 0.3, 0.3]\n" + "#" * 200_000 + "\n```",
    "nul.txt": "```python\ndef run():\n    return 1\x00\n```",
    "zz_good.py": "def run():\n    return [0.3, 0.3, 0.31]\n",
}


def test_hostile_replies_are_all_recorded(tmp_path):
    folder = tmp_path / "replies"
    folder.mkdir()
    for name, text in HOSTILE.items():
        (folder / name).write_text(text)
    (folder / "surrogate.txt").write_bytes(b"```python\ndef run():\n    return '\xed\xa0\x80'\n```")  # not UTF-8
    n = len(HOSTILE) + 1
    t0 = time.process_time()
    summary = run(tmp_path, "run.steps=1", "run.groups=1", f"run.rollouts={n}", replies=folder)
    assert time.process_time() - t0 < 20  # host CPU time, not wall time: programs run elsewhere
    ev = rollouts(summary.run_dir)
    assert len(ev) == n
    by_outcome = [e["outcome"] for e in ev]
    assert by_outcome.count("valid") == 1, [(e["outcome"], e["reason"]) for e in ev]
    assert set(by_outcome) <= {"valid", "syntax_error", "no_code"}
    assert all(e["reason"] for e in ev if e["outcome"] != "valid")


def test_parse_caps_and_parser_errors():
    p = Problem()
    assert p.parse("x" * (p.max_reply_chars + 1)).kind == "no_code"
    big = p.parse("```python\n" + "#" * (p.max_code_chars + 1) + "\n```")
    assert big.kind == "syntax_error" and "characters" in big.reason
    assert p.parse("```python\nx = '\ud800'\ndef run(): pass\n```").kind == "syntax_error"
    assert p.parse("```python\nx = " + "not " * 100_000 + "1\n```").kind == "syntax_error"


# -- plugin hooks -----------------------------------------------------------------------------
GOOD = "```python\ndef run():\n    return [0.3, 0.3, 0.31]\n```"


def _replies(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"text": GOOD}) + "\n")
    return path


def broken(hook, behaviour):
    """A replacement for ToyProblem.<hook> that raises or returns the wrong thing."""

    def fn(self, *args):
        if behaviour == "raise":
            raise RuntimeError(f"{hook} is broken")
        return behaviour(*args) if callable(behaviour) else behaviour

    return fn


@pytest.mark.parametrize(
    "hook,behaviour",
    [
        ("prompt", "raise"),
        ("prompt", "just a string"),
        ("parse", "raise"),
        ("parse", {"source": "def run(): pass"}),
        ("evaluate", "raise"),
        ("evaluate", {"score": 1.0}),
        ("evaluate", Evaluation(score=float("nan"), construction=[0.3])),
        ("evaluate", Evaluation(score=1.0, construction={0.3, 0.2})),
        ("evaluate_group", "raise"),
        ("evaluate_group", [Evaluation(score=1.0, construction=[1])]),  # wrong number of results
        ("evaluate_group", "not a list"),
        ("reward", "raise"),
        ("reward", "high"),
        # value() is asked first for the seeds: a broken one stops the start (tests/test_core_guard.py)
        ("keep_in_archive", "raise"),
        ("keep_in_archive", "yes"),
    ],
)
def test_a_misbehaving_hook_is_an_invalid_rollout_naming_it(tmp_path, monkeypatch, hook, behaviour):
    import toy_problem

    monkeypatch.setattr(toy_problem.ToyProblem, hook, broken(hook, behaviour))
    summary = run(tmp_path, "run.steps=2", "run.groups=1", "run.rollouts=2", replies=_replies(tmp_path))
    ev = rollouts(summary.run_dir)
    assert len(ev) == 4 and summary.steps_done == 2
    assert all(e["outcome"] == "exception" for e in ev), ev
    assert all("toy_problem" in e["reason"] and f"{hook}()" in e["reason"] for e in ev)


def test_numpy_constructions_are_stored_as_json(tmp_path, monkeypatch):
    import toy_problem

    def evaluate(self, program, state, sandbox):
        return Evaluation(score=np.float64(-0.01), construction=np.array([0.3, 0.3, 0.4]), metrics={"n": np.int64(3)})

    monkeypatch.setattr(toy_problem.ToyProblem, "evaluate", evaluate)
    summary = run(tmp_path, "run.steps=2", "run.groups=1", "run.rollouts=2", replies=_replies(tmp_path))
    assert [e["outcome"] for e in rollouts(summary.run_dir)] == ["valid"] * 4
    best = json.loads((summary.run_dir / "best" / "construction.json").read_text())
    assert best == [0.3, 0.3, 0.4]


@pytest.mark.parametrize("states", ["raise", None, [], "abc"])
def test_bad_initial_states_are_one_clear_error(tmp_path, monkeypatch, states):
    import toy_problem

    monkeypatch.setattr(toy_problem.ToyProblem, "initial_states", broken("initial_states", states))
    with pytest.raises(PluginHookError, match=r"toy_problem.*initial_states\(\)"):
        run(tmp_path, "run.steps=1", replies=_replies(tmp_path))


def test_evaluate_that_never_returns_is_a_timeout(tmp_path, monkeypatch):
    import toy_problem

    def forever(self, program, state, sandbox):
        time.sleep(3600)

    monkeypatch.setattr(toy_problem.ToyProblem, "evaluate", forever)
    monkeypatch.setattr(guard, "GRACE_S", 0.5)
    t0 = time.monotonic()
    summary = run(
        tmp_path, "run.steps=1", "run.groups=1", "run.rollouts=2", "sandbox.timeout_s=0.5", replies=_replies(tmp_path)
    )
    assert time.monotonic() - t0 < 60
    ev = rollouts(summary.run_dir)
    assert [e["outcome"] for e in ev] == ["timeout", "timeout"] and "evaluate()" in ev[0]["reason"]


def test_time_inside_the_sandbox_is_not_charged_to_the_plugin(tmp_path, monkeypatch):

    import toy_problem

    slow = "```python\nimport time\ndef run():\n    time.sleep(0.5)\n    return [0.3, 0.3, 0.31]\n```"
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"text": slow}) + "\n")
    evaluate = toy_problem.ToyProblem.evaluate

    def six_runs(self, program, state, sandbox):  # 3 s in the sandbox, each run within its 2 s limit
        for _ in range(5):
            sandbox.run(program.source, program.entry, inject={"parent": state.construction})
        return evaluate(self, program, state, sandbox)

    monkeypatch.setattr(toy_problem.ToyProblem, "evaluate", six_runs)
    monkeypatch.setattr(guard, "GRACE_S", 0.2)
    # the hook's deadline is the program's limit plus the grace (2.2 s), less than the 3 s spent in the sandbox
    summary = run(tmp_path, "run.steps=1", "run.groups=1", "run.rollouts=1", "sandbox.timeout_s=2", replies=path)
    assert [e["outcome"] for e in rollouts(summary.run_dir)] == ["valid"]


def test_program_check_accepts_a_program():
    assert isinstance(guard.check_program(Program(source="x")), Program)
    with pytest.raises(guard.BadReturn):
        guard.check_program(Program(source=b"x"))


@pytest.mark.parametrize(
    "behaviour,message", [("raise", "construction_from_record\\(\\) raised RuntimeError"), ({1, 2}, "not JSON data")]
)
def test_a_misbehaving_construction_from_record_is_one_paragraph(tmp_path, behaviour, message):
    from toy_problem import ToyProblem

    from discover_ttt.config import ConfigError
    from discover_ttt.records import read_construction

    class Broken(ToyProblem):
        construction_from_record = broken("construction_from_record", behaviour)

    path = tmp_path / "c.json"
    path.write_text("[0.1, 0.2, 0.3]")
    with pytest.raises(ConfigError, match=message):
        read_construction(Broken(ToyProblem.Params()), path)
    Broken.construction_from_record = lambda self, record: np.asarray(record)
    assert read_construction(Broken(ToyProblem.Params()), path) == [0.1, 0.2, 0.3]


@pytest.mark.parametrize("command", ["verify", "plot"])
def test_a_raising_verify_or_plot_is_one_paragraph_on_the_command_line(tmp_path, monkeypatch, command):
    import toy_problem
    from click.testing import CliRunner

    from discover_ttt.cli import cli

    monkeypatch.setattr(toy_problem.ToyProblem, command, broken(command, "raise"))
    path = tmp_path / "c.json"
    path.write_text("[0.1, 0.2, 0.3]")
    result = CliRunner().invoke(cli, [command, "toy_problem:ToyProblem", str(path)])
    assert result.exit_code == 2 and f"hook {command}() raised RuntimeError" in result.output
    assert "Traceback" not in result.output
