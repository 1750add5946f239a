"""GRPO's advantages replaced by our estimator's, grouped by PUCT state.

NeMo RL computes GRPO advantages from ``repeated_batch["total_reward"]`` grouped by
identical prompt. The method needs the entropic adaptive-β estimator (or whichever
``estimator`` our config names) per PUCT state, with our constant-group rules. Our
environment has already computed exactly those advantages when it scored the batch
(``Step.finish`` in ``discover_ttt.step``), in the same row order, so the hook only fetches them and
checks that the rewards it is given are the rewards the environment returned.

NeMo RL has no public hook for this. The driver rebinds, in its own process and
nowhere in NeMo RL's files, the one name ``grpo_train`` resolves in
``nemo_rl.algorithms.grpo``:

- ``_create_advantage_estimator`` (NeMo RL ≥ 0.6): it returns our object, whose
  ``compute_advantage(prompt_ids, rewards, mask, **kwargs)`` gives the advantages;
- ``calculate_baseline_and_std_per_prompt`` (NeMo RL 0.3–0.5): we return
  baseline = rewards − A and std = 1, so ``rewards − baseline`` (divided by 1 when
  ``normalize_rewards`` is on) is A.
"""

from __future__ import annotations

from typing import Any

from discover_ttt.errors import UserError

from .remote import call
from .versions import UnsupportedNemoRL, refusal  # noqa: F401 - UnsupportedNemoRL: raised here


class AdvantageMismatch(UserError):
    """The rewards GRPO holds are not those the environment returned for its last batch."""


class EnvironmentAdvantages:
    """The advantages our environment computed for the batch GRPO is about to train on."""

    def __init__(self, env: Any) -> None:
        self.env = env

    def advantages(self, rewards_B):
        import torch

        last = call(self.env, "last_step")
        if last is None:
            raise AdvantageMismatch("GRPO asked for advantages before the environment scored any batch.")
        env_rewards_B = torch.tensor(last["rewards"], dtype=torch.float64)
        got_B = rewards_B.detach().to("cpu", torch.float64).reshape(-1)
        if got_B.shape != env_rewards_B.shape or not torch.allclose(got_B, env_rewards_B, rtol=1e-6, atol=1e-6):
            raise AdvantageMismatch(
                f"GRPO's rewards for this batch ({got_B.numel()} values) are not the rewards the discover "
                f"environment returned for step {last['step']} ({env_rewards_B.numel()} values). Keep NeMo RL's "
                "reward scaling, reward shaping and dynamic sampling off and one rollout turn per step, as "
                "`discover export nemo-rl` writes the config."
            )
        return torch.tensor(last["advantages"], dtype=rewards_B.dtype, device=rewards_B.device)

    # NeMo RL 0.3–0.5: nemo_rl.algorithms.utils.calculate_baseline_and_std_per_prompt
    def baseline_and_std(self, prompts, rewards_B, valid_mask, leave_one_out_baseline: bool = True):
        import torch

        advantages_B = self.advantages(rewards_B)
        return rewards_B - advantages_B, torch.ones_like(rewards_B)

    # NeMo RL ≥ 0.6: the object _create_advantage_estimator returns
    def compute_advantage(self, prompt_ids, rewards, mask, **kwargs):
        advantages_B = self.advantages(rewards)
        if mask is not None and mask.dim() > 1:  # per-token advantages, zero outside the loss mask
            return advantages_B.unsqueeze(-1) * mask
        return advantages_B


def install(grpo_module: Any, env: Any) -> str:
    """Point ``grpo_module``'s advantage step at ``env``; returns which hook was used.

    ``grpo_module``: NeMo RL's ``nemo_rl.algorithms.grpo`` module (any release), whose attributes we replace.
    """
    hook = EnvironmentAdvantages(env)
    if hasattr(grpo_module, "_create_advantage_estimator"):
        grpo_module._create_advantage_estimator = lambda *args, **kwargs: hook
        return "_create_advantage_estimator"
    if hasattr(grpo_module, "calculate_baseline_and_std_per_prompt"):
        grpo_module.calculate_baseline_and_std_per_prompt = hook.baseline_and_std
        return "calculate_baseline_and_std_per_prompt"
    raise refusal(
        f"{getattr(grpo_module, '__name__', grpo_module)} has neither _create_advantage_estimator nor "
        "calculate_baseline_and_std_per_prompt, the two places the adapter sets our advantages"
    )
