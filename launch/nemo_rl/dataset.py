"""Prompts for NeMo RL chosen by PUCT, one step at a time.

NeMo RL's GRPO pulls ``num_prompts_per_step`` data from its dataloader at the start
of every step. With ``data.num_workers: 0`` nothing is prefetched, so the first
datum of a step is pulled only after the previous step's rewards reached the
environment, and ``next_states`` asks PUCT for that step's states at exactly the
point where our own loop would. Each datum is a ``DatumSpec``
(``nemo_rl/data/interfaces.py``): one user message with its token ids, and the
state's id in ``extra_env_info`` so the environment knows which parent a rollout
came from.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

from torch.utils.data import IterableDataset

from .environment import TASK_NAME
from .remote import call


class PuctDataset(IterableDataset):
    """An endless stream of ``DatumSpec`` dicts whose prompts are PUCT's selections.

    ``env`` is the environment actor (or a :class:`DiscoveryEnvironment` in one process);
    ``chat_template_kwargs`` go to the tokenizer's chat template (e.g. ``reasoning_effort``
    for gpt-oss, ``enable_thinking`` for Qwen3), as our own backends pass them.
    """

    def __init__(
        self,
        env: Any,
        tokenizer: Any,
        prompts_per_step: int,
        steps: int,
        chat_template_kwargs: dict[str, Any] | None = None,
        task_name: str = TASK_NAME,
    ) -> None:
        super().__init__()
        self.env = env
        self.tokenizer = tokenizer
        self.prompts_per_step = prompts_per_step
        self.steps = steps
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        self.task_name = task_name

    def __len__(self) -> int:
        return self.steps * self.prompts_per_step

    def __iter__(self) -> Iterator[dict[str, Any]]:
        counter = itertools.count()
        while True:
            for state in call(self.env, "next_states", self.prompts_per_step):
                yield self.datum(state, next(counter))

    def datum(self, state: dict[str, Any], idx: int) -> dict[str, Any]:
        failed = state.get("prompt_failed")
        # a state whose prompt hook failed still fills its place in the batch (NeMo RL samples a fixed
        # number of prompts); the environment scores its rollouts as that failure and nothing trains on them
        messages = state["messages"] or [{"role": "user", "content": f"(no prompt: {failed})"}]
        text = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, **self.chat_template_kwargs
        )
        token_ids = self.tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"][0]
        return {
            "message_log": [{"role": "user", "content": text, "token_ids": token_ids}],
            "length": len(token_ids),
            "extra_env_info": {"state_id": state["state_id"], "step": state["step"], "group": state["group"]},
            "loss_multiplier": 0.0 if failed else 1.0,
            "idx": idx,
            "task_name": self.task_name,
        }
