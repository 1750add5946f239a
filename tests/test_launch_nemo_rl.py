"""The NeMo RL environment, dataset and advantage hook, doing by hand what NeMo RL does.

What NeMo RL does in one synchronous GRPO step (``grpo_train``), and these tests do
by hand: pull ``num_prompts_per_step`` data from the dataloader, repeat each
``num_generations_per_prompt`` times, sample, call the environment's ``step`` with
the message logs and their ``extra_env_info``, then compute advantages from
``total_reward`` (the hook we replace). A real local Ray runs the actor test; the
sources of each NeMo RL release are checked in tests/test_launch_nemo_rl_contract.py.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from discover_ttt.backend import Backend, Completion
from discover_ttt.estimators import entropic_adaptive
from discover_ttt.launch.nemo_rl.advantages import AdvantageMismatch, UnsupportedNemoRL, install
from discover_ttt.launch.nemo_rl.dataset import PuctDataset
from discover_ttt.launch.nemo_rl.environment import (
    DiscoveryEnvironment,
    EnvironmentOrderError,
    _EnvironmentReturn,
    environment_actor,
    make_environment_return,
)

TESTS = Path(__file__).parent
TOY = TESTS / "toy"
ROOT = TESTS.parent

VALID = "```python\ndef run():\n    return [{x}, 0.3, 0.3]\n```"
BROKEN = "```python\ndef run(:\n```"
NO_CODE = "I would rather not write code."


class FakeTokenizer:
    """The two calls the dataset makes on a Hugging Face tokenizer."""

    def __init__(self):
        self.calls = []

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True, **kwargs):
        self.calls.append(kwargs)
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"

    def __call__(self, text, return_tensors=None, add_special_tokens=False):
        return {"input_ids": torch.tensor([[ord(c) % 256 for c in text]])}


def toy_config(tmp_path: Path) -> dict:
    raw = yaml.safe_load((TOY / "config.yaml").read_text())
    raw["backend"]["path"] = str(TOY / "replies.jsonl")
    raw["run"]["output"] = str(tmp_path / "run")
    raw["run"]["rollouts"] = 3
    return raw


def message_logs(states, replies_per_state):
    """NeMo RL's repeated batch after generation: user prompt, then the sampled assistant message."""
    logs, metadata = [], []
    for state, replies in zip(states, replies_per_state, strict=True):
        for reply in replies:
            logs.append([{"role": "user", "content": "prompt"}, {"role": "assistant", "content": reply}])
            metadata.append({"state_id": state["state_id"], "step": state["step"]})
    return logs, metadata


@pytest.fixture
def env(tmp_path):
    e = DiscoveryEnvironment(toy_config(tmp_path))
    yield e
    e.shutdown()


def test_environment_scores_a_batch_and_writes_our_run_directory(env):
    states = env.next_states(2)
    assert [s["state_id"] for s in states] == ["seed0", "seed1"]
    assert states[0]["messages"][0]["content"].startswith("Improve")
    replies = [[VALID.format(x=0.31), BROKEN, NO_CODE], [VALID.format(x=0.9), VALID.format(x=0.3), NO_CODE]]
    logs, metadata = message_logs(states, replies)
    out = env.step(logs, metadata)

    assert out.rewards.shape == (6,) and out.terminateds.all()
    assert out.next_stop_strings == [None] * 6
    kinds = [m["outcome"] for m in out.metadata]
    assert kinds == ["valid", "syntax_error", "no_code", "valid", "valid", "no_code"]
    assert out.observations[1]["content"].startswith("syntax_error")
    assert out.rewards[1] == 0 and out.rewards[2] == 0 and out.rewards[0] > 0
    assert out.rewards[4] == pytest.approx(1.0)  # [0.3, 0.3, 0.3] scores 0, reward 1/(1+0)

    events = [json.loads(line) for line in (env.run_dir / "events.jsonl").read_text().splitlines()]
    rollouts = [e for e in events if e["type"] == "rollout"]
    assert [e["outcome"] for e in rollouts] == kinds
    step = [e for e in events if e["type"] == "step"][0]
    assert step["rollouts"] == 6 and step["valid_rate"] == pytest.approx(0.5)
    assert (env.disc.store.checkpoint_path(0) / "loop.json").exists()
    best = json.loads((env.run_dir / "best" / "score.json").read_text())
    assert best["score"] == pytest.approx(0.0) and best["verified"]["valid"]

    _, metrics = env.global_post_process_and_metrics({"batch": 1})
    assert metrics["discover/valid_rate"] == pytest.approx(0.5)
    assert metrics["discover/failures/no_code"] == 2


def test_advantages_are_the_estimators_per_puct_state(env):
    states = env.next_states(2)
    replies = [[VALID.format(x=0.31), VALID.format(x=0.5), NO_CODE], [VALID.format(x=0.9), NO_CODE, NO_CODE]]
    logs, metadata = message_logs(states, replies)
    # NeMo RL may hand rows over in any order: advantages follow the rows, grouped by state id
    order = [3, 0, 4, 1, 5, 2]
    out = env.step([logs[i] for i in order], [metadata[i] for i in order])
    last = env.last_step()
    rewards_B = np.array(last["rewards"])
    np.testing.assert_allclose(rewards_B, out.rewards.numpy(), rtol=1e-6)  # NeMo RL's rewards are float32
    for g in (0, 1):
        rows = [k for k, i in enumerate(order) if i // 3 == g]
        expected_G = entropic_adaptive(rewards_B[rows])
        np.testing.assert_allclose(np.array(last["advantages"])[rows], expected_G, rtol=1e-12, atol=1e-12)

    # the hook GRPO calls returns exactly those advantages, through either NeMo RL hook
    rewards_t = out.rewards.clone()
    old = types.SimpleNamespace(calculate_baseline_and_std_per_prompt=None, __name__="grpo")
    assert install(old, env) == "calculate_baseline_and_std_per_prompt"
    baseline, std = old.calculate_baseline_and_std_per_prompt(torch.zeros(6, 4), rewards_t, torch.ones(6), True)
    np.testing.assert_allclose((rewards_t - baseline).numpy(), last["advantages"], rtol=1e-6, atol=1e-6)
    assert torch.equal(std, torch.ones(6))
    new = types.SimpleNamespace(_create_advantage_estimator=None, __name__="grpo")
    assert install(new, env) == "_create_advantage_estimator"
    estimator = new._create_advantage_estimator({"name": "grpo"}, {})
    mask = torch.ones(6, 5)
    mask[:, -1] = 0
    per_token = estimator.compute_advantage(torch.arange(6), rewards_t, mask)
    np.testing.assert_allclose(per_token[:, 0].numpy(), last["advantages"], rtol=1e-6, atol=1e-6)
    assert torch.all(per_token[:, -1] == 0)

    with pytest.raises(AdvantageMismatch, match="reward scaling"):
        estimator.compute_advantage(torch.arange(6), rewards_t + 1, mask)
    with pytest.raises(UnsupportedNemoRL, match="neither"):
        install(types.SimpleNamespace(__name__="grpo"), env)


def test_dataset_yields_states_chosen_after_the_rewards(env):
    tokenizer = FakeTokenizer()
    dataset = PuctDataset(
        env, tokenizer, prompts_per_step=2, steps=3, chat_template_kwargs={"reasoning_effort": "high"}
    )
    assert len(dataset) == 6
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=0, collate_fn=list)
    batches = iter(loader)
    first = next(batches)
    assert [d["extra_env_info"]["state_id"] for d in first] == ["seed0", "seed1"]
    datum = first[0]
    assert datum["message_log"][0]["role"] == "user" and datum["length"] == len(datum["message_log"][0]["token_ids"])
    assert datum["task_name"] == "discover" and datum["loss_multiplier"] == 1.0
    assert tokenizer.calls[0] == {"reasoning_effort": "high"}

    # asked again before the step's rewards (NeMo RL's loader replays batches on restart): the same plan
    archive = len(env.disc.sampler.states)
    assert [s["state_id"] for s in env.next_states(2)] == ["seed0", "seed1"]
    assert len(env.disc.sampler.states) == archive

    states = [{"state_id": d["extra_env_info"]["state_id"], "step": 0} for d in first]
    logs, metadata = message_logs(states, [[VALID.format(x=0.3)] * 3, [NO_CODE] * 3])
    env.step(logs, metadata)
    second = next(batches)
    chosen = [d["extra_env_info"]["state_id"] for d in second]
    # PUCT now prefers the perfect child of seed0 ([0.3, 0.3, 0.3]); it blocks its ancestor
    assert chosen[0].startswith("t0-g0-")
    assert "seed0" not in chosen
    assert all(d["extra_env_info"]["step"] == 1 for d in second)


def test_resumes_its_run_directory(tmp_path):
    config = toy_config(tmp_path)
    first = DiscoveryEnvironment(config)
    states = first.next_states(2)
    logs, metadata = message_logs(states, [[VALID.format(x=0.3)] * 3, [NO_CODE] * 3])
    first.step(logs, metadata)
    first.shutdown()
    again = DiscoveryEnvironment(config)
    try:
        assert again.disc.step == 1
        assert [s["step"] for s in again.next_states(2)] == [1, 1]
    finally:
        again.shutdown()


def test_unknown_state_and_missing_selection_are_clear_errors(env):
    with pytest.raises(EnvironmentOrderError, match="no states are planned.*num_workers: 0"):
        env.step([], [])
    env.next_states(2)
    logs, metadata = message_logs([{"state_id": "nope", "step": 0}], [[NO_CODE]])
    with pytest.raises(EnvironmentOrderError, match="'nope'"):
        env.step(logs, metadata)


@pytest.fixture
def local_ray(ray_local):
    return ray_local  # the session's one local Ray (tests/conftest.py), whose jobs import the toy problem


def test_environment_actor_under_a_real_local_ray(local_ray, tmp_path):
    actor = environment_actor(toy_config(tmp_path))
    dataset = PuctDataset(actor, FakeTokenizer(), prompts_per_step=2, steps=2)
    loader = iter(torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=0, collate_fn=list))
    first = next(loader)
    states = [{"state_id": d["extra_env_info"]["state_id"], "step": 0} for d in first]
    logs, metadata = message_logs(states, [[VALID.format(x=0.3), BROKEN, NO_CODE], [VALID.format(x=0.5)] * 3])
    out = local_ray.get(actor.step.remote(logs, metadata))
    assert [m["outcome"] for m in out.metadata] == ["valid", "syntax_error", "no_code", "valid", "valid", "valid"]
    hook_module = types.SimpleNamespace(calculate_baseline_and_std_per_prompt=None, __name__="grpo")
    install(hook_module, actor)
    baseline, _ = hook_module.calculate_baseline_and_std_per_prompt(None, out.rewards, None)
    last = local_ray.get(actor.last_step.remote())
    np.testing.assert_allclose((out.rewards - baseline).numpy(), last["advantages"], rtol=1e-6, atol=1e-6)
    second = next(loader)
    assert second[0]["extra_env_info"]["step"] == 1
    local_ray.get(actor.shutdown.remote())
    assert (tmp_path / "run" / "checkpoints" / "step_000000" / "loop.json").exists()


def test_driver_without_nemo_rl_names_what_to_install(tmp_path):
    if importlib.util.find_spec("nemo_rl") is not None:
        pytest.skip("nemo_rl is installed here")
    from discover_ttt.errors import UserError
    from discover_ttt.launch.nemo_rl.driver import main

    with pytest.raises(UserError) as e:
        main(["--config", "x.yaml", "--discover-config", "y.yaml"])
    assert "NeMo RL" in str(e.value) and "discover-ttt" in str(e.value)


def test_importing_the_adapter_needs_neither_ray_nor_nemo_rl():
    code = (
        "import sys\n"
        "import discover_ttt.launch.nemo_rl.environment, discover_ttt.launch.nemo_rl.export\n"
        "import discover_ttt.launch.nemo_rl.advantages, discover_ttt.launch.nemo_rl.driver\n"
        "print([m for m in ('ray', 'nemo_rl') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- the real NeMo RL, where it installs ---------------------------------------------------------


@pytest.mark.skipif(importlib.util.find_spec("nemo_rl") is None, reason="nemo_rl is not installed here")
def test_contract_with_the_installed_nemo_rl():
    from nemo_rl.algorithms import grpo
    from nemo_rl.data.interfaces import DatumSpec
    from nemo_rl.environments.interfaces import EnvironmentInterface, EnvironmentReturn

    step = inspect.signature(EnvironmentInterface.step).parameters
    assert list(step)[:3] == ["self", "message_log_batch", "metadata"]
    built = make_environment_return(
        EnvironmentReturn,
        observations=[],
        metadata=[],
        next_stop_strings=[],
        rewards=torch.zeros(0),
        terminateds=torch.zeros(0),
        answers=[],
    )
    assert isinstance(built, EnvironmentReturn)
    assert {"message_log", "length", "extra_env_info", "loss_multiplier", "idx"} <= set(DatumSpec.__annotations__)
    assert hasattr(EnvironmentInterface, "global_post_process_and_metrics")
    # setup's and grpo_train's parameters and setup's results: the contract tier, from each release's sources
    hooks = [h for h in ("_create_advantage_estimator", "calculate_baseline_and_std_per_prompt") if hasattr(grpo, h)]
    assert hooks, "neither advantage hook exists in this NeMo RL"
    from nemo_rl.algorithms.utils import get_tokenizer  # noqa: F401
    from nemo_rl.distributed.virtual_cluster import init_ray  # noqa: F401
    from nemo_rl.models.generation import configure_generation_config  # noqa: F401
    from nemo_rl.utils.config import load_config, parse_hydra_overrides  # noqa: F401


def test_checkpoints_follow_the_loops_cadence_including_the_last_step(tmp_path):
    config = toy_config(tmp_path)
    config["run"].update(steps=1, save_every=2)  # the only step is the last: it is checkpointed anyway
    env = DiscoveryEnvironment(config)
    try:
        states = env.next_states(2)
        env.step(*message_logs(states, [[NO_CODE] * 3, [VALID.format(x=0.3)] * 3]))
        assert (env.disc.store.checkpoint_path(0) / "loop.json").exists()
    finally:
        env.shutdown()


# -- NeMo RL's EnvironmentReturn, whichever release --------------------------------------------------


def test_environment_return_is_built_with_the_fields_each_release_declares():
    from typing import NamedTuple

    class Five(NamedTuple):  # 0.3's fields
        observations: list
        metadata: list
        next_stop_strings: list
        rewards: object
        terminateds: object

    values = dict(
        observations=[{}], metadata=[None], next_stop_strings=[None], rewards=1, terminateds=2, answers=["code"]
    )
    assert make_environment_return(Five, **values) == Five([{}], [None], [None], 1, 2)
    six = make_environment_return(_EnvironmentReturn, **values)  # 0.4 on: answers, without a default
    assert six.answers == ["code"]
    # the stand-in is the newest release's EnvironmentReturn, field for field (checked against the
    # sources in the contract tier)
    assert _EnvironmentReturn._fields == (*Five._fields, "answers")

    class Seven(NamedTuple):
        observations: list
        metadata: list
        next_stop_strings: list
        rewards: object
        terminateds: object
        answers: list
        reasoning: list

    with pytest.raises(UnsupportedNemoRL, match=r"reasoning.*0\.3 to 0\.7"):
        make_environment_return(Seven, **values)


def test_step_answers_with_the_program_of_each_valid_rollout(env):
    states = env.next_states(2)
    logs, metadata = message_logs(states, [[VALID.format(x=0.3), NO_CODE, BROKEN], [NO_CODE] * 3])
    out = env.step(logs, metadata)
    assert "def run()" in out.answers[0] and out.answers[1:] == [None] * 5


# -- restarts: NeMo RL's loader replays batches --------------------------------------------------------


def _reply(state: dict, j: int) -> str:
    """A fixed reply for each (state, rollout): both runs sample the same completions."""
    x = 0.3 + 0.01 * ((sum(map(ord, state["state_id"])) + 7 * j) % 23)
    return NO_CODE if j == 2 else VALID.format(x=round(x, 4))


def _nemo_step(env: DiscoveryEnvironment, replays: int = 0) -> None:
    """One GRPO step as NeMo RL takes it; ``replays`` batches pulled and thrown away first (a restored loader)."""
    for _ in range(replays):
        env.next_states(2)
    states = env.next_states(2)
    env.step(*message_logs(states, [[_reply(s, j) for j in range(3)] for s in states]))


def _archive(run_dir: Path) -> tuple[list, list]:
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    rollouts = [
        (e["step"], e["parent_id"], e["child_id"], e["reward"], e["advantage"])
        for e in events
        if e["type"] == "rollout"
    ]
    last = sorted((run_dir / "checkpoints").iterdir())[-1]
    sampler = json.loads((last / "sampler.json").read_text())
    return rollouts, sampler


def test_a_restart_in_mid_run_gives_the_archive_of_an_uninterrupted_run(tmp_path):
    config = toy_config(tmp_path)
    config["run"].update(steps=4, save_every=1)
    whole = DiscoveryEnvironment({**config, "run": {**config["run"], "output": str(tmp_path / "whole")}})
    for _ in range(4):
        _nemo_step(whole)
    whole.shutdown()

    cut = {**config, "run": {**config["run"], "output": str(tmp_path / "cut")}}
    first = DiscoveryEnvironment(cut)
    _nemo_step(first)
    _nemo_step(first)
    first.next_states(2)  # step 2's batch was pulled when the job died
    first.shutdown()
    again = DiscoveryEnvironment(cut)
    assert again.disc.step == 2
    _nemo_step(again, replays=2)  # the restored loader fast-forwards through two batches first
    _nemo_step(again)
    again.shutdown()
    assert _archive(tmp_path / "cut") == _archive(tmp_path / "whole")


# -- the step's first half: on_selected and guarded prompts ----------------------------------------------


class _Recorder(Backend):
    """A backend that records the prompts of each step and samples a reply without code."""

    name = "recorder"

    def __init__(self):
        super().__init__()
        self.prompts = []

    def sample(self, prompts, n):
        self.prompts.append(prompts)
        return [[Completion(text=NO_CODE) for _ in range(n)] for _ in prompts]


def test_the_environment_plans_exactly_the_prompts_of_a_runs_step_0(tmp_path):
    from discover_ttt.config import load_config
    from discover_ttt.loop import Discovery
    from discover_ttt.progress import Reporter

    config = ROOT / "problems" / "autocorrelation" / "config.ac1.yaml"
    sets = [f"run.output={tmp_path / 'local'}", "run.rollouts=1", "sandbox.workers=1", "sandbox.isolation=none"]
    disc = Discovery(load_config(config, sets), reporter=Reporter())
    disc.backend = recorder = _Recorder()
    try:
        disc.start()
        disc.run_step(0)
    finally:
        disc.close()
    raw = yaml.safe_load(config.read_text())
    raw["run"].update(output=str(tmp_path / "nemo"), rollouts=1)
    raw["sandbox"].update(workers=1, isolation="none")
    env = DiscoveryEnvironment(raw)
    try:
        states = env.next_states(raw["run"]["groups"])
        assert [s["messages"] for s in states] == recorder.prompts[0]
        # the seeds were re-drawn (on_selected): the archive's own seeds would give other prompts
        seeds = {s.id: s for s in env.disc.sampler.states}
        assert [env.disc.problem.prompt(seeds[s["state_id"]]) for s in states] != recorder.prompts[0]
    finally:
        env.shutdown()


def test_a_failing_prompt_hook_is_that_groups_outcome(env, monkeypatch):
    prompt = env.disc.problem.prompt

    def broken(state):
        if state.id == "seed1":
            raise RuntimeError("no prompt for you")
        return prompt(state)

    monkeypatch.setattr(env.disc.problem, "prompt", broken)
    tokenizer = FakeTokenizer()
    dataset = PuctDataset(env, tokenizer, prompts_per_step=2, steps=1)
    data = [dataset.datum(s, i) for i, s in enumerate(env.next_states(2))]
    assert data[0]["loss_multiplier"] == 1.0 and data[1]["loss_multiplier"] == 0.0
    assert "no prompt for you" in data[1]["message_log"][0]["content"]
    states = [{"state_id": d["extra_env_info"]["state_id"], "step": 0} for d in data]
    out = env.step(*message_logs(states, [[VALID.format(x=0.3)] * 3, [VALID.format(x=0.3)] * 3]))
    kinds = [m["outcome"] for m in out.metadata]
    assert kinds[:3] == ["valid"] * 3 and kinds[3] != "valid" and len(set(kinds[3:])) == 1
    assert out.rewards[3:].eq(0).all()
