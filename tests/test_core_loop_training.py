"""The loop with a backend that trains: the local backend on the tiny random model.

The text problem (tests/toy/text_problem.py) scores the reply's letters, so groups carry
signal without any code being written. These tests check what the replay backend cannot:
that training items are the kept groups' rollouts with the loop's advantages, that the
adapter moves, that constant steps skip the update, and that a run killed mid-step
resumes to the same adapter, optimizer and sample counter as a run that never stopped.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from recording_backend import RecordingBackend, SimulatedKill
from safetensors.torch import load_file

from discover_ttt.loop import resume_run, run_config
from discover_ttt.progress import Reporter

CONFIG = {
    "problem": {"name": "text_problem:TextProblem"},
    "backend": {
        "name": "recording_backend:RecordingBackend",
        "model": "tiny-random",
        "device": "cpu",
        "temperature": 1.0,
        "max_new_tokens": 12,
        "sample_batch_size": 8,
        "lora_rank": 4,
        "lr": 0.05,  # large, so that one step visibly moves the adapter of the tiny model
        "kl_coef": 0.1,
        "micro_batch_size": 3,  # fewer than a step's items: gradients accumulate over micro-batches
    },
    "sampler": {"name": "puct"},
    "estimator": {"name": "entropic_adaptive"},
    "sandbox": {"workers": 1, "isolation": "none", "timeout_s": 5, "preload": []},  # no program is run
    "run": {"steps": 3, "groups": 2, "rollouts": 4, "seed": 0, "keep_checkpoints": 3},
    "log": {"progress": "none"},
}


@pytest.fixture(autouse=True)
def fresh_recorder():
    RecordingBackend.batches = []
    RecordingBackend.die_at_sample_call = None
    yield
    RecordingBackend.die_at_sample_call = None


def write_config(tmp_path: Path, **problem) -> Path:
    config = json.loads(json.dumps(CONFIG))
    config["problem"].update(problem)
    config["run"]["output"] = str(tmp_path / "run")
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def events(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]


def adapter(run_dir: Path, step: int) -> dict[str, torch.Tensor]:
    folder = run_dir / "checkpoints" / f"step_{step:06d}" / "backend"
    (weights,) = folder.rglob("adapter_model.safetensors")
    return load_file(str(weights))


def optimizer_state(run_dir: Path, step: int) -> dict:
    (path,) = (run_dir / "checkpoints" / f"step_{step:06d}" / "backend").rglob("optimizer.pt")
    return torch.load(path, weights_only=False)


def test_training_items_are_the_kept_groups_with_the_loops_advantages(tmp_path):
    summary = run_config(write_config(tmp_path), reporter=Reporter())
    ev = events(summary.run_dir)
    steps = [e for e in ev if e["type"] == "step"]
    assert len(steps) == 3 and len(RecordingBackend.batches) == sum(bool(s["groups_kept"]) for s in steps)
    batches = iter(RecordingBackend.batches)
    for s in steps:
        if not s["groups_kept"]:
            assert s["train"] == {"skipped": "every group had constant rewards"}
            continue
        kept = [e for e in ev if e["type"] == "rollout" and e["step"] == s["step"] and e["group"] in s["groups_kept"]]
        assert next(batches) == [(e["text"], e["advantage"]) for e in kept]
        assert s["train"]["rollouts"] == len(kept)
        assert any(e["advantage"] != 0 for e in kept)  # the groups carried signal
        assert 0.5 < s["train"]["ratio_mean"] < 2.0  # on-policy: the learner agrees with the sampler
    # the adapter starts at B = 0 and moves with each update
    first, last = adapter(summary.run_dir, 0), adapter(summary.run_dir, 2)
    lora_b = [k for k in first if "lora_B" in k]
    assert lora_b and any(first[k].abs().sum() > 0 for k in lora_b)
    assert any(not torch.equal(first[k], last[k]) for k in first)


def test_constant_steps_record_the_skipped_update(tmp_path):
    summary = run_config(write_config(tmp_path, constant=True), reporter=Reporter())
    steps = [e for e in events(summary.run_dir) if e["type"] == "step"]
    assert [s["groups_kept"] for s in steps] == [[], [], []]
    assert all(s["train"] == {"skipped": "every group had constant rewards"} for s in steps)
    assert RecordingBackend.batches == []
    assert all(g["constant"] for s in steps for g in s["group_stats"])


def test_killed_mid_step_resumes_to_the_same_training_run(tmp_path):
    plain = run_config(write_config(tmp_path / "plain"), reporter=Reporter())
    plain_batches = RecordingBackend.batches
    RecordingBackend.batches = []

    config = write_config(tmp_path / "killed")
    RecordingBackend.die_at_sample_call = 2  # dies as step 2 starts sampling: steps 0 and 1 are checkpointed
    with pytest.raises(SimulatedKill):
        run_config(config, reporter=Reporter())
    run_dir = tmp_path / "killed" / "run"
    assert [e["step"] for e in events(run_dir) if e["type"] == "step"] == [0, 1]  # the kill landed in step 2
    RecordingBackend.die_at_sample_call = None
    resumed = resume_run(run_dir, reporter=Reporter())

    assert RecordingBackend.batches[-1] == plain_batches[-1]  # step 2 trained on the same rollouts
    strip = [{k: v for k, v in e.items() if k != "seconds"} for e in events(plain.run_dir)]
    again = [{k: v for k, v in e.items() if k != "seconds"} for e in events(resumed.run_dir)]
    for e in strip + again:
        e.get("train", {}).pop("train_seconds", None)
    assert again == strip  # texts, rewards, advantages, archive, train metrics
    a, b = adapter(plain.run_dir, 2), adapter(resumed.run_dir, 2)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    oa, ob = optimizer_state(plain.run_dir, 2), optimizer_state(resumed.run_dir, 2)
    assert oa["steps"] == ob["steps"] == 3
    for sa, sb in zip(oa["optimizer"]["state"].values(), ob["optimizer"]["state"].values(), strict=True):
        assert torch.equal(sa["exp_avg"], sb["exp_avg"]) and torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])
    # the sample counter (which seeds each sample call) continued from the checkpoint
    for run_dir in (plain.run_dir, resumed.run_dir):
        counters = [
            json.loads((run_dir / "checkpoints" / f"step_{t:06d}" / "backend" / "rng.json").read_text())
            for t in range(3)
        ]
        assert [c["sample_calls"] for c in counters] == [1, 2, 3]
