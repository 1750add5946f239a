"""A parent whose prompt leaves no room in the token budget: a failed visit, never a crash."""

import json
import subprocess

import pytest

from discover_ttt.launch.lora.budget import sample_with_budget
from discover_ttt.launch.lora.tiny import tiny_tokenizer
from discover_ttt.parsing import bounded_code

CONFIG = """\
problem: {{name: "toy_problem:LongCodeToy", long_code_chars: 3000}}
backend: {{name: local, model: tiny-random, device: cpu, thinking_budget: 200, max_new_tokens: 6,
  context_window: 330, micro_batch_size: 2}}
sampler: {{name: puct}}
estimator: {{name: entropic_adaptive}}
sandbox: {{timeout_s: 5, workers: 2, isolation: none}}
run: {{steps: 1, groups: 2, rollouts: 2, seed: 0, output: {out}}}
log: {{progress: plain}}
"""


@pytest.mark.slow  # two runs of the local backend in subprocesses
def test_run_and_resume_with_a_parent_whose_prompt_is_too_long(tmp_path, discover_bin, toy_env):
    out = tmp_path / "run"
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(out=out))
    first = subprocess.run([discover_bin, "run", str(config)], env=toy_env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-3000:]
    # the resumed run selects the same parent again (it is one of two states)
    again = subprocess.run(
        [discover_bin, "resume", str(out), "--set", "run.steps=3"], env=toy_env, capture_output=True, text=True
    )
    assert again.returncode == 0, again.stderr[-3000:]
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    rollouts = [e for e in events if e["type"] == "rollout"]
    assert {e["step"] for e in rollouts} == {0, 1, 2}
    too_long = [e for e in rollouts if e["outcome"] == "prompt_too_long"]
    assert too_long and all(e["parent_id"] == "seed0" and e["reward"] == 0 and e["text"] == "" for e in too_long)
    assert "no room" in too_long[0]["reason"]
    assert {e["step"] for e in too_long} == {0, 1, 2}
    assert all(e["parent_id"] != "seed0" for e in rollouts if e["outcome"] != "prompt_too_long")
    steps = [e for e in events if e["type"] == "step"]
    assert all(s["failures"].get("prompt_too_long", 0) == 2 for s in steps)
    # every failed rollout counted as a visit of its parent
    sampler = json.loads((out / "checkpoints" / "step_000002" / "sampler.json").read_text())
    assert sampler["n"]["seed0"] == len(too_long)


def test_sample_with_budget_skips_rows_without_room():
    tok = tiny_tokenizer()
    calls = []

    def generate(rows, budgets):
        calls.append((len(rows), budgets))
        from discover_ttt.launch.lora.budget import Piece

        return [Piece([5] * b, [-1.0] * b, True) for b in budgets]

    out = sample_with_budget(
        generate,
        [[1] * 10, [1] * 500, [1] * 20],
        tok,
        max_new_tokens=4,
        context_window=1024,
        thinking_budget=100,
        thinking_style="think_tags",
    )
    assert calls == [(2, [4, 4])]
    assert [r.finish_reason for r in out] == ["stop", "prompt_too_long", "stop"]
    assert out[1].tokens == [] and out[1].logprobs == []


def test_bounded_code_keeps_head_and_tail():
    code = "\n".join(f"line {i}" for i in range(1000))
    cut = bounded_code(code, 500)
    assert len(cut) <= 500
    lines = cut.splitlines()
    assert lines[0] == "line 0" and lines[-1] == "line 999"
    omitted = next(line for line in lines if "left out" in line)
    assert f"{1000 - len(lines) + 1} lines" in omitted
    assert bounded_code("short\ncode", 500) == "short\ncode"
    # a huge literal in the middle does not stop the tail from being kept
    big = "import numpy as np\nH = [" + "0.5, " * 10000 + "]\ndef run():\n    return H\n"
    lines = bounded_code(big, 300).splitlines()
    assert lines[0] == "import numpy as np" and lines[-1] == "    return H" and len("\n".join(lines)) <= 300


def test_erdos_prompt_is_bounded():
    import numpy as np

    from discover_ttt.problems.erdos.problem import ErdosProblem

    problem = ErdosProblem(ErdosProblem.Params(max_code_chars=2000))
    state = problem.initial_states(np.random.default_rng(0), 1)[0]
    state.code = "x = 1\n" * 100000
    short = problem.prompt(state)[0]["content"]
    state.code = "x = 1\n"
    assert len(short) < len(problem.prompt(state)[0]["content"]) + 2100


def test_problem_params_default():
    from discover_ttt.problems.circle_packing.problem import CirclePackingProblem

    assert CirclePackingProblem.Params().max_code_chars == 16000
