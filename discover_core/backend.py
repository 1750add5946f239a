"""The Backend interface: where the model work of a run is done.

A backend samples completions for chat prompts and, if it can, takes one
training step on a batch of rollouts with their advantages. Heavy libraries
(torch, vllm, ...) are imported only inside the backend modules under
``launch/``, never here.

``Completion`` splits its text into reasoning and answer with
``final_answer.split_final_answer``; problems parse only the answer.

Sampling progress (one callback for every backend)
--------------------------------------------------
``sample`` can take minutes. While it runs a backend reports how far it got by
calling ``self.report_sampling(done, total, tokens)`` with running totals *for
the current ``sample`` call*:

- ``done``: rollouts whose text is complete (0 … ``total``);
- ``total``: rollouts asked for in this call (``len(prompts) * n``);
- ``tokens``: completion tokens generated so far, finished or not (0 if unknown).

Call it as often as is cheap (every decoding step is fine), from any thread;
values must not decrease within one call. A backend that never calls it still
works: the loop reports ``done == total`` when ``sample`` returns. The loop
installs its listener with ``set_progress``; ``SamplingMeter`` keeps the running
totals for a backend whose work finishes in pieces (threads, batches, phases).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from .final_answer import split_final_answer


@dataclass
class Completion:
    """One sampled completion.

    ``text`` is everything the model wrote; ``reasoning`` and ``answer`` are its two
    parts (``split_final_answer``), filled from ``text`` unless the backend passes them.
    ``tokens``/``logprobs`` are the sampled token ids and the sampler's log-probs
    of them (empty for backends that see only text). ``forced`` marks tokens the
    backend inserted itself (a forced final answer): they get no advantage.
    ``finish_reason`` is "stop", "length", or "prompt_too_long" (nothing was sampled:
    the prompt left no room in the token budget). ``model_logprobs``, where a backend
    has them, are the same tokens' log-probs under the model's tempered distribution
    before any top-p cut (0 on forced tokens): equal to ``logprobs`` when top_p = 1; the
    local backend's trainer reads them as the base model's when the adapter is still zero.
    """

    text: str
    prompt_tokens: list[int] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    forced: list[bool] = field(default_factory=list)
    finish_reason: str = "stop"
    reasoning: str = ""
    answer: str | None = None
    model_logprobs: list[float] | None = None

    def __post_init__(self) -> None:
        if self.answer is None:
            self.reasoning, self.answer = split_final_answer(self.text)

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "reasoning": self.reasoning,
            "answer": self.answer,
            "prompt_tokens": self.prompt_tokens,
            "tokens": self.tokens,
            "logprobs": self.logprobs,
            "forced": self.forced,
            "finish_reason": self.finish_reason,
        }


@dataclass(frozen=True)
class SamplingProgress:
    """Running totals of one ``sample`` call (see the module docstring)."""

    done: int
    total: int
    tokens: int = 0


ProgressCallback = Callable[[SamplingProgress], None]


class SamplingMeter:
    """Thread-safe running totals for one ``sample`` call, forwarded to ``backend.report_sampling``.

    ``meter = self.sampling_meter(total)``, then ``meter.add(rollouts=k, tokens=m)``
    as pieces finish; ``meter.finish()`` at the end marks every rollout done.
    """

    def __init__(self, backend: Backend, total: int) -> None:
        self.backend, self.total = backend, total
        self.done = self.tokens = 0
        self._lock = threading.Lock()
        backend.report_sampling(0, total, 0)

    def add(self, rollouts: int = 0, tokens: int = 0) -> None:
        with self._lock:
            self.done = min(self.total, self.done + rollouts)
            self.tokens += tokens
            self.backend.report_sampling(self.done, self.total, self.tokens)

    def finish(self) -> None:
        self.add(rollouts=self.total - self.done)


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
        if getattr(params, "train", True) is False:
            # ``train: false``, the no-test-time-training ablation: the run samples the frozen
            # model with the same sampler, reuse and budget, and ``train`` is never called
            self.can_train = False  # type: ignore[misc]

    # -- sampling progress (see the module docstring) ------------------------------------
    _progress: ProgressCallback | None = None

    def set_progress(self, callback: ProgressCallback | None) -> None:
        """Install the listener ``report_sampling`` forwards to (the loop does this); None removes it."""
        self._progress = callback

    def report_sampling(self, done: int, total: int, tokens: int = 0) -> None:
        """Tell the listener how far the current ``sample`` call got (running totals)."""
        if self._progress is not None:
            self._progress(SamplingProgress(int(done), int(total), int(tokens)))

    def sampling_meter(self, total: int) -> SamplingMeter:
        return SamplingMeter(self, total)

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
