"""The Backend interface: where the model work of a run is done.

A backend samples completions for chat prompts and, if it can, takes one
training step on a batch of rollouts with their advantages. Heavy libraries
(torch, vllm, ...) are imported only inside the backend modules under
``launch/``, never here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar


@dataclass
class Completion:
    """One sampled completion.

    ``tokens``/``logprobs`` are the sampled token ids and the sampler's log-probs
    of them (empty for backends that see only text). ``forced`` marks tokens the
    backend inserted itself (a forced final answer): they get no advantage.
    """

    text: str
    prompt_tokens: list[int] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    forced: list[bool] = field(default_factory=list)
    finish_reason: str = "stop"

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "prompt_tokens": self.prompt_tokens,
            "tokens": self.tokens,
            "logprobs": self.logprobs,
            "forced": self.forced,
            "finish_reason": self.finish_reason,
        }


@dataclass
class TrainItem:
    """One rollout for the update: its completion and its scalar advantage."""

    completion: Completion
    advantage: float


class Backend:
    """Base class for backends.

    ``can_train`` False means ``train`` is never called and the run has no
    weight updates (best-of-N with reuse).
    """

    name: ClassVar[str] = ""
    can_train: ClassVar[bool] = False

    def __init__(self, params: Any = None) -> None:
        self.params = params

    def sample(self, prompts: list[list[dict[str, str]]], n: int) -> list[list[Completion]]:
        """``n`` completions for each chat prompt, in order: result[i][j] is rollout j of prompt i."""
        raise NotImplementedError

    def train(self, batch: list[TrainItem]) -> dict[str, float]:
        """One optimizer step on ``batch``; returns metrics (loss, kl, ...)."""
        raise NotImplementedError(f"backend {self.name!r} cannot train")

    def save(self, directory: Path) -> None:
        """Write everything needed to resume (adapter, optimizer, RNG, position) under ``directory``."""

    def load(self, directory: Path) -> None:
        """Restore what ``save`` wrote."""

    def close(self) -> None:
        """Release processes, memory and files."""
