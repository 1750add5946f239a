"""Every step records how many distinct completions each group holds, and warns of copies:
a backend whose group shares one seed returns identical samples, which carry no signal."""

from __future__ import annotations

import json
import logging

from discover_ttt.backend import Backend, Completion
from discover_ttt.config import load_config
from discover_ttt.loop import Discovery
from discover_ttt.progress import Reporter
from discover_ttt.step import Rollout, distinct_per_group
from discover_ttt.trackers import step_scalars


class CopyingBackend(Backend):
    """Group 0 gets n copies of one text; group 1 distinct texts."""

    name = "copying"

    def sample(self, prompts, n):
        return [[Completion(text="aaa" if g == 0 else f"e{j}") for j in range(n)] for g in range(len(prompts))]


def rollout(group: int, completion: Completion) -> Rollout:
    return Rollout(group=group, index=0, parent=None, completion=completion)  # type: ignore[arg-type]


def test_distinct_counts_tokens_or_text_and_skips_what_was_not_sampled():
    rollouts = [
        rollout(0, Completion("x", tokens=[1, 2])),
        rollout(0, Completion("y", tokens=[1, 2])),  # same tokens, different text: a copy
        rollout(0, Completion("z", tokens=[3])),
        rollout(1, Completion("same")),
        rollout(1, Completion("same")),
        rollout(1, Completion("", finish_reason="prompt_too_long")),
        rollout(2, Completion("", finish_reason="prompt_failed")),
    ]
    assert distinct_per_group(rollouts, 3) == [(2, 3), (1, 2), (0, 0)]


def test_a_step_logs_distinct_completions_and_warns_of_copies(tmp_path, caplog):
    raw = {
        "problem": {"name": "vowel_problem:VowelProblem"},
        "backend": {"name": "test_core_step_distinct:CopyingBackend"},
        "sandbox": {"workers": 1, "isolation": "none", "timeout_s": 5, "preload": []},
        "run": {"steps": 1, "groups": 2, "rollouts": 4, "output": str(tmp_path / "run")},
        "log": {"progress": "none"},
    }
    disc = Discovery(load_config(tmp_path, raw=raw), reporter=Reporter())
    disc.start()
    with caplog.at_level(logging.WARNING, logger="discover"):
        run_dir = disc.run().run_dir
    (step,) = [e for e in map(json.loads, (run_dir / "events.jsonl").read_text().splitlines()) if e["type"] == "step"]
    assert step["distinct_completions"] == [1, 4]
    scalars = step_scalars(step)  # what the experiment trackers receive
    assert (scalars["distinct/min"], scalars["distinct/mean"]) == (1.0, 2.5)
    assert "step 0: groups holding identical completions (group 0: 1 of 4)" in caplog.text


def test_the_local_backend_draws_a_group_independently():
    """One generator runs through a whole sample call, so a group's rows are distinct draws."""
    from discover_ttt.launch.local import LocalBackend, LocalParams

    b = LocalBackend(LocalParams(model="tiny-random", device="cpu", max_new_tokens=8))
    (group,) = b.sample([[{"role": "user", "content": "hi"}]], 8)
    assert len({tuple(c.tokens) for c in group}) == 8
