"""Loop settings that change what a run records: checkpoint cadence and pruning, constant
groups, estimator options and the estimator's runtime arguments. Each test would fail if
the setting were ignored."""

import json
from pathlib import Path

import numpy as np
import pytest

from discover_ttt.estimators import entropic_adaptive, grpo_nsr, solve_beta
from discover_ttt.loop import run_config
from discover_ttt.progress import Reporter

TOY = Path(__file__).parent / "toy"


def code(body):
    return f"```python\n{body}\n```"


def good(x):
    return code(f"def run():\n    return [{x}, 0.3, 0.3]")


NO_CODE = "no code today"


def run(tmp_path, replies, *overrides):
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "replies.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in replies))
    sets = [f"run.output={tmp_path / 'run'}", "sandbox.isolation=none", f"backend.path={path}", *overrides]
    summary = run_config(TOY / "config.yaml", sets, reporter=Reporter())
    lines = (summary.run_dir / "events.jsonl").read_text().splitlines()
    return summary, [json.loads(line) for line in lines]


def group_rewards(events, step, group):
    rows = [e for e in events if e["type"] == "rollout" and e["step"] == step and e["group"] == group]
    return np.array([e["reward"] for e in rows]), np.array([e["advantage"] for e in rows]), rows


# group 0 has signal (two valid, two failures); group 1 is constant (every rollout fails)
MIXED_AND_CONSTANT = [good(0.31), NO_CODE, good(0.9), NO_CODE, NO_CODE, NO_CODE, NO_CODE, NO_CODE]


def checkpoint_steps(run_dir):
    return sorted(int(p.name.split("_")[1]) for p in (run_dir / "checkpoints").iterdir() if p.name.startswith("step_"))


def test_save_every_writes_every_nth_step_and_the_last(tmp_path):
    summary, _ = run(tmp_path, MIXED_AND_CONSTANT, "run.steps=5", "run.save_every=2", "run.keep_checkpoints=10")
    assert checkpoint_steps(summary.run_dir) == [1, 3, 4]  # steps 2 and 4 (1-based), and the final step


def test_keep_checkpoints_prunes_the_oldest(tmp_path):
    summary, _ = run(tmp_path, MIXED_AND_CONSTANT, "run.steps=4", "run.keep_checkpoints=1")
    assert checkpoint_steps(summary.run_dir) == [3]
    summary, _ = run(tmp_path / "b", MIXED_AND_CONSTANT, "run.steps=4", "run.keep_checkpoints=3")
    assert checkpoint_steps(summary.run_dir) == [1, 2, 3]


@pytest.mark.parametrize("drop", [True, False])
def test_drop_constant_groups(tmp_path, drop):
    _, events = run(tmp_path, MIXED_AND_CONSTANT, "run.steps=1", f"run.drop_constant_groups={str(drop).lower()}")
    step = [e for e in events if e["type"] == "step"][0]
    assert step["groups_kept"] == ([0] if drop else [0, 1])
    assert [g["constant"] for g in step["group_stats"]] == [False, True]
    rewards_0, advantages_0, _ = group_rewards(events, 0, 0)
    np.testing.assert_allclose(advantages_0, entropic_adaptive(rewards_0), rtol=1e-12)


def test_estimator_options_reach_the_estimator(tmp_path):
    kl_target = 0.3  # not ln 2
    _, events = run(
        tmp_path,
        MIXED_AND_CONSTANT,
        "run.steps=1",
        "estimator.name=entropic_adaptive",
        f"estimator.kl_target={kl_target}",
    )
    rewards_0, advantages_0, _ = group_rewards(events, 0, 0)
    np.testing.assert_allclose(advantages_0, entropic_adaptive(rewards_0, kl_target=kl_target), rtol=1e-12)
    assert not np.allclose(advantages_0, entropic_adaptive(rewards_0))  # ln 2 would give other advantages
    beta = [e for e in events if e["type"] == "step"][0]["group_stats"][0]["beta"]
    assert beta == pytest.approx(solve_beta(rewards_0, kl_target), rel=1e-12)
    assert beta != pytest.approx(solve_beta(rewards_0), rel=1e-3)


def test_estimators_get_correct_and_scores_at_run_time(tmp_path):
    # w_pos ≠ w_neg, so the estimator must know which rollouts were valid (correct=) ...
    _, events = run(tmp_path, MIXED_AND_CONSTANT, "run.steps=1", "estimator.name=grpo_nsr", "estimator.w_pos=0.25")
    rewards_0, advantages_0, rows = group_rewards(events, 0, 0)
    correct_0 = np.array([e["outcome"] == "valid" for e in rows])
    assert correct_0.tolist() == [True, False, True, False]
    np.testing.assert_allclose(advantages_0, grpo_nsr(rewards_0, w_pos=0.25, correct=correct_0), rtol=1e-12)
    # ... and with a threshold it judges the raw verifier scores (scores=), not the rewards
    threshold = -0.01  # only [0.31, 0.3, 0.3] (score −1e-4) passes; [0.9, ...] scores −0.36
    _, events = run(
        tmp_path / "b",
        MIXED_AND_CONSTANT,
        "run.steps=1",
        "estimator.name=grpo_nsr",
        "estimator.w_pos=0.25",
        f"estimator.correct_threshold={threshold}",
    )
    rewards_0, advantages_0, rows = group_rewards(events, 0, 0)
    scores_0 = np.array([np.nan if e["score"] is None else e["score"] for e in rows])
    expected = grpo_nsr(rewards_0, w_pos=0.25, correct_threshold=threshold, scores=scores_0)
    np.testing.assert_allclose(advantages_0, expected, rtol=1e-12)
    # judged on rewards instead (all > −0.01) every sample would count as correct: a different answer
    assert not np.allclose(advantages_0, grpo_nsr(rewards_0, w_pos=0.25, correct_threshold=threshold))
