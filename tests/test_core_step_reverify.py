"""The host's re-verification has the last word: a rollout whose construction passes in the sandbox
but fails the problem's ``verify`` on the host is invalid (reward 0, not archived, never the best),
and the run's summary counts the disagreements."""

import json
import textwrap

import pytest

from discover_ttt.loop import run_config
from discover_ttt.progress import Reporter

PROBLEM = '''
import math
from pydantic import BaseModel, ConfigDict
from discover_ttt.problem import Evaluation, Invalid, Problem, Verification
from discover_ttt.state import State


def closeness(xs):
    return -sum((float(x) - 0.3) ** 2 for x in xs)


class Forgeable(Problem):
    """The sandbox's evaluation trusts the program's numbers (as a checker fooled by a forged verdict
    would); the host's verify refuses the forged one, [0.3, 0.3, 0.3]."""

    name = "forgeable"
    maximize = True

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")

    def initial_states(self, rng, k):
        return [State(value=closeness([0.0] * 3), score=closeness([0.0] * 3), construction=[0.0] * 3) for _ in range(k)]

    def prompt(self, state):
        return [{"role": "user", "content": "three numbers near 0.3"}]

    def evaluate(self, program, state, sandbox):
        result = sandbox.run(program.source, program.entry)
        if not result.ok:
            return Invalid.from_sandbox(result)
        return Evaluation(score=closeness(result.value), construction=result.value)

    def verify(self, construction):
        if construction == [0.3, 0.3, 0.3]:
            return Verification(False, None, "forged: this construction was never computed")
        return Verification(True, closeness(construction))

    def reward(self, score):
        return 1.0 / (1.0 - score)
'''


def test_a_construction_the_host_refuses_is_invalid_and_never_the_best(tmp_path):
    (tmp_path / "forgeable.py").write_text(PROBLEM)
    replies = [
        "```python\ndef run():\n    return [0.3, 0.3, 0.3]\n```",  # the forged best
        "```python\ndef run():\n    return [0.31, 0.3, 0.3]\n```",  # honest, a little worse
        "```python\ndef run():\n    return [0.3, 0.3, 0.3]\n```",
        "```python\ndef run():\n    return [0.35, 0.3, 0.3]\n```",
    ]
    (tmp_path / "replies.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in replies))
    config = tmp_path / "config.yaml"
    config.write_text(
        textwrap.dedent(
            f"""
            problem: {{name: "forgeable:Forgeable"}}
            backend: {{name: replay, path: {tmp_path / "replies.jsonl"}}}
            sandbox: {{timeout_s: 5, memory_mb: 1024, workers: 2, isolation: none, preload: [numpy]}}
            run: {{steps: 1, groups: 1, rollouts: 4, seed: 0, output: {tmp_path / "run"}}}
            log: {{progress: none}}
            """
        )
    )
    summary = run_config(config, [], reporter=Reporter())
    events = [json.loads(line) for line in (summary.run_dir / "events.jsonl").read_text().splitlines()]
    rollouts = [e for e in events if e["type"] == "rollout"]
    forged = [e for e in rollouts if "[0.3, 0.3, 0.3]" in e["text"]]
    assert len(forged) == 2
    for e in forged:
        assert e["outcome"] == "invalid_construction" and "re-verification" in e["reason"], e
        assert e["reward"] == 0 and not e["archived"] and e["child_id"] is None
    assert summary.reverify_disagreed == 2
    best = json.loads((summary.run_dir / "best" / "score.json").read_text())
    assert json.loads((summary.run_dir / "best" / "construction.json").read_text()) == [0.31, 0.3, 0.3]
    assert best["verified"]["valid"] and summary.best_score == pytest.approx(-(0.01**2))
    assert "2 re-verifications disagreed" in Reporter.summary_line(summary)
