"""The paper's ablations are config switches, and each changes exactly what it says.

Arms of the vowel task (tests/toy/vowel_problem.py) on ``tiny-random`` with the same seed:
all draw the same step-0 rollouts (common random numbers), then differ only in the switch —
``backend.train: false`` applies no update but keeps PUCT reuse; ``sampler: no_reuse`` starts
every group from a fresh seed but trains; best-of-N does neither; ``estimator: entropic``
with β = 2 keeps β constant; ``mean_baseline`` gives r − mean(r). ``train: false`` turns the
update off on every backend that trains (local, vLLM, Tinker).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from discover_ttt.config import load_config
from discover_ttt.loop import Discovery
from discover_ttt.progress import Reporter

STEPS, GROUPS, ROLLOUTS = 3, 2, 6
ABLATIONS = {
    "full": {},
    "frozen": {"backend.train": False},
    "no_reuse": {"sampler.name": "no_reuse"},
    "best_of_n": {"sampler.name": "no_reuse", "backend.train": False},
    "constant_beta": {"estimator.name": "entropic", "estimator.beta": 2.0},
    "expected_reward": {"estimator.name": "mean_baseline"},
}


def base_config(output: Path) -> dict:
    return {
        "problem": {"name": "vowel_problem:VowelProblem"},
        "backend": {
            "name": "local",
            "model": "tiny-random",
            "device": "cpu",
            "max_new_tokens": 6,
            "lora_rank": 4,
            "lr": 0.05,
            "kl_coef": 0.0,
        },
        "sampler": {"name": "puct"},
        "estimator": {"name": "entropic_adaptive"},
        "sandbox": {"workers": 1, "isolation": "none", "timeout_s": 5, "preload": []},
        "run": {"steps": STEPS, "groups": GROUPS, "rollouts": ROLLOUTS, "seed": 3, "output": str(output)},
        "log": {"progress": "none"},
    }


def with_switch(cfg: dict, switch: dict) -> dict:
    for dotted, value in switch.items():
        section, key = dotted.split(".")
        if key == "name":
            cfg[section] = {"name": value}
        else:
            cfg[section][key] = value
    return cfg


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """events and the last adapter of each arm"""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small is fastest on one thread
    root = tmp_path_factory.mktemp("ablations")
    out = {}
    try:
        for name, switch in ABLATIONS.items():
            disc = Discovery(load_config(raw=with_switch(base_config(root / name), switch)), reporter=Reporter())
            disc.start()
            run_dir = disc.run().run_dir
            events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
            (weights,) = (run_dir / "checkpoints" / f"step_{STEPS - 1:06d}" / "backend").rglob("*.safetensors")
            out[name] = (events, load_file(str(weights)))
    finally:
        torch.set_num_threads(threads)
    return out


def rollouts(events, step=None):
    return [e for e in events if e["type"] == "rollout" and (step is None or e["step"] == step)]


def steps(events):
    return [e for e in events if e["type"] == "step"]


def reused(events) -> bool:
    """some group started from a generated child, not a seed"""
    return any(not e["parent_id"].startswith("seed") for e in rollouts(events))


def updated(adapter) -> bool:
    return any(v.abs().sum() > 0 for k, v in adapter.items() if "lora_B" in k)  # B starts at zero


@pytest.mark.slow  # the runs fixture trains every arm of the table: seconds
def test_every_arm_draws_the_same_first_step(runs):
    texts = {name: [e["text"] for e in rollouts(events, 0)] for name, (events, _) in runs.items()}
    assert len({tuple(t) for t in texts.values()}) == 1, texts


@pytest.mark.slow  # the runs fixture trains every arm of the table: seconds
def test_the_full_method_trains_and_reuses(runs):
    events, adapter = runs["full"]
    assert updated(adapter) and reused(events) and all("loss" in s["train"] for s in steps(events))


@pytest.mark.slow  # the runs fixture trains every arm of the table: seconds
def test_frozen_applies_no_update_and_keeps_reuse_and_budget(runs):
    events, adapter = runs["frozen"]
    assert not updated(adapter)
    assert all(s["train"] == {} for s in steps(events))
    assert reused(events)
    assert len(rollouts(events)) == STEPS * GROUPS * ROLLOUTS


@pytest.mark.slow  # the runs fixture trains every arm of the table: seconds
def test_no_reuse_starts_every_group_from_a_seed_and_trains(runs):
    events, adapter = runs["no_reuse"]
    assert not reused(events) and updated(adapter)
    assert len({e["parent_id"] for e in rollouts(events)}) == STEPS * GROUPS  # a fresh seed per group


@pytest.mark.slow  # the runs fixture trains every arm of the table: seconds
def test_best_of_n_neither_trains_nor_reuses(runs):
    events, adapter = runs["best_of_n"]
    assert not reused(events) and not updated(adapter)
    assert len(rollouts(events)) == STEPS * GROUPS * ROLLOUTS


@pytest.mark.slow  # the runs fixture trains every arm of the table: seconds
def test_constant_beta_keeps_beta_at_two(runs):
    events, adapter = runs["constant_beta"]
    assert updated(adapter)
    assert {g["beta"] for s in steps(events) for g in s["group_stats"]} == {2.0}
    adaptive = {g["beta"] for s in steps(runs["full"][0]) for g in s["group_stats"]}
    assert adaptive != {2.0}  # the method's β is solved per group


@pytest.mark.slow  # the runs fixture trains every arm of the table: seconds
def test_expected_reward_advantages_are_reward_minus_mean(runs):
    events, _ = runs["expected_reward"]
    for s in steps(events):
        for g in s["groups_kept"]:
            group = [e for e in rollouts(events, s["step"]) if e["group"] == g]
            r = np.array([e["reward"] for e in group])
            assert np.allclose([e["advantage"] for e in group], r - r.mean())


# -- the switch on each backend that trains ------------------------------------------------------
def test_train_false_turns_the_update_off_on_the_local_and_vllm_backends(tmp_path):
    from test_launch_vllm import make as make_vllm

    from discover_ttt.launch.local import LocalBackend
    from discover_ttt.launch.lora.params import LocalParams

    assert LocalBackend(LocalParams(model="tiny-random", device="cpu")).can_train
    assert not LocalBackend(LocalParams(model="tiny-random", device="cpu", train=False)).can_train
    assert make_vllm(tmp_path / "a").can_train and not make_vllm(tmp_path / "b", train=False).can_train


def test_train_false_turns_the_update_off_on_tinker(tmp_path, monkeypatch):
    from test_launch_tinker import make as make_tinker

    monkeypatch.setenv("TINKER_API_KEY", "test-key")
    assert make_tinker(tmp_path / "a").can_train
    frozen = make_tinker(tmp_path / "b", train=False)
    assert not frozen.can_train
    frozen.sample([[{"role": "user", "content": "hi"}]], 2)
    assert not any(name.startswith("TrainingClient.forward") for name, _ in frozen.api.calls)


def test_every_config_line_of_the_ablation_table_is_a_valid_config(tmp_path):
    import re

    import yaml

    doc = (Path(__file__).parents[1] / "docs" / "configuration.md").read_text()
    table = doc.split("### Ablations: one switch each", 1)[1].split("\n### ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "`" in line.split("|")[2]]
    assert len(rows) >= 10
    for row in rows[1:]:  # the first is the defaults
        cfg = base_config(tmp_path / "run")
        for snippet in re.findall(r"`(\w+: \{[^`]*\})`", row.split("|")[2]):
            for section, values in yaml.safe_load(snippet).items():
                cfg[section] = values if "name" in values else {**cfg[section], **values}
        load_config(raw=cfg)  # raises ConfigError on a line that does not validate
