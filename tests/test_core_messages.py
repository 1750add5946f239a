"""Messages that must say what really happened: truncated replies, finished runs, the sandbox page."""

import ast
import inspect
import re
import shutil
from pathlib import Path

import pytest

from discover_ttt.errors import UserError
from discover_ttt.loop import resume_run, run_config
from discover_ttt.problem import Invalid, Problem, Program
from discover_ttt.progress import Reporter
from discover_ttt.sandbox import run_program

ROOT = Path(__file__).parents[1]
TOY_CONFIG = ROOT / "tests" / "toy" / "config.yaml"


@pytest.mark.parametrize(
    "text",
    [
        "Here is my program:\n```python\nimport numpy as np\n\ndef run():\n    x = np.zeros(",
        "Use ```numpy```, then:\n```py\ndef run():\n    return [",
        "```\ndef run():\n",
    ],
)
def test_a_reply_cut_inside_a_code_block_says_truncated(text):
    out = Problem().parse(text)
    assert isinstance(out, Invalid) and out.kind == "no_code"
    assert "truncated" in out.reason and "max_new_tokens" in out.reason


@pytest.mark.parametrize("text", ["I am not sure.", "Use ```numpy``` here.", "```text\nabc\n```"])
def test_a_reply_without_code_still_says_no_code(text):
    out = Problem().parse(text)
    assert isinstance(out, Invalid) and "contains no" in out.reason and "truncated" not in out.reason


def test_a_closed_block_still_parses():
    assert isinstance(Problem().parse("```python\ndef run():\n    return 1\n```"), Program)


def _finished_run(tmp_path):
    out = tmp_path / "run"
    sets = [f"run.output={out}", "run.steps=1", "sandbox.isolation=none", "log.progress=none"]
    run_config(TOY_CONFIG, sets, reporter=Reporter())
    return out, sets


def test_resuming_a_finished_run_says_how_to_extend_it(tmp_path):
    out, sets = _finished_run(tmp_path)
    with pytest.raises(UserError) as e:
        resume_run(out)
    msg = str(e.value)
    assert "is finished" in msg and "completed 1 step(s)" in msg
    assert f"discover resume {out} --set run.steps=2" in msg
    with pytest.raises(UserError, match=r"--resume --set run\.steps=2"):
        run_config(TOY_CONFIG, sets, resume=True, reporter=Reporter())
    # and the suggested command does continue it
    summary = resume_run(out, ["run.steps=2"], reporter=Reporter())
    assert summary.steps_done == 2


def test_sandbox_page_calls_run_program_with_its_required_arguments():
    """Every run_program(...) call on docs/sandbox.md binds to the real signature (memory_mb is required)."""
    text = (ROOT / "docs" / "sandbox.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    sig = inspect.signature(run_program)
    calls = [
        node
        for block in blocks
        for node in ast.walk(ast.parse(block))
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "run_program"
    ]
    assert calls
    for call in calls:
        sig.bind(*[None] * len(call.args), **{k.arg: None for k in call.keywords})


def stop_before_first_checkpoint(run_dir: Path) -> None:
    """Leave ``run_dir`` as a run killed inside step 0 leaves it: config, marker and events, no checkpoint."""
    shutil.rmtree(run_dir / "checkpoints")
    shutil.rmtree(run_dir / "best", ignore_errors=True)
    with (run_dir / "events.jsonl").open("a") as f:
        f.write('{"type": "rollout", "step": 0}\n')


def test_a_failed_start_leaves_nothing_and_a_run_stopped_in_its_first_step_resumes(tmp_path):
    """A backend that fails to start leaves no folder, so the same run.output starts cleanly; a run
    stopped before its first checkpoint starts again from step 0 in place, through either command."""
    out = tmp_path / "run"
    sets = [f"run.output={out}", "run.steps=1", "sandbox.isolation=none", "log.progress=none"]
    with pytest.raises(UserError, match="cannot read replay file"):
        run_config(TOY_CONFIG, [*sets, f"backend.path={tmp_path / 'missing.jsonl'}"], reporter=Reporter())
    assert not out.exists()  # nothing half-started to resume or to hide
    summary = run_config(TOY_CONFIG, sets, reporter=Reporter())
    assert summary.run_dir == out and summary.steps_done == 1 and summary.rollouts > 0  # the name is free
    stop_before_first_checkpoint(out)
    summary = resume_run(out, reporter=Reporter())  # discover resume
    assert summary.steps_done == 1 and summary.rollouts > 0
    stop_before_first_checkpoint(out)
    summary = run_config(TOY_CONFIG, sets, resume=True, reporter=Reporter())  # discover run --resume
    assert summary.steps_done == 1 and (out / "checkpoints").is_dir()
