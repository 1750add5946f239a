"""The Problem interface: what a problem plugin implements.

A problem turns a state into a prompt, a model reply into a program, and a
program into a scored construction. The loop never looks inside constructions;
it only reads ``Evaluation.score`` and asks the problem for ``reward`` and
``value``.

This module holds the interface and the values it speaks (``Program``, ``Invalid``,
``Evaluation``, ``Verification``); helpers for writing a problem (code extraction,
prompt quoting, preambles, records) live in ``parsing.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from .state import State

if TYPE_CHECKING:  # pragma: no cover
    from .sandbox import Sandbox

#: Every way a rollout can fail. ``prompt_too_long`` comes from the backend (the
#: prompt left no room in the token budget, nothing was sampled); ``no_code`` and
#: ``syntax_error`` come from ``parse``; the next five are the sandbox's failure
#: kinds; the last is the verifier's.
FAILURE_KINDS = (
    "prompt_too_long",
    "no_code",
    "syntax_error",
    "exception",
    "timeout",
    "memory",
    "crash",
    "bad_output",
    "invalid_construction",
)


@dataclass
class Program:
    """Source code extracted from a model reply, and the function to call."""

    source: str
    entry: str = "run"
    language: str = "python"


@dataclass
class Invalid:
    """Why a reply or a construction was rejected. ``kind`` is one of FAILURE_KINDS."""

    kind: str
    reason: str
    stdout: str = ""
    traceback: str = ""  # the last frames of a hook's exception (bounded), for events.jsonl

    def __post_init__(self) -> None:
        if self.kind not in FAILURE_KINDS:
            raise ValueError(f"unknown failure kind {self.kind!r}; expected one of {FAILURE_KINDS}")

    @classmethod
    def from_sandbox(cls, result: Any) -> Invalid:
        """The failure of a program that did not finish (a ``SandboxResult`` with ``ok`` False)."""
        return cls(kind=result.kind or "crash", reason=result.error or "the program failed", stdout=result.stdout)


@dataclass
class Evaluation:
    """A valid, verified result: the verifier's score and the construction it scored."""

    score: float
    construction: Any
    stdout: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    code: str = ""


@dataclass
class Verification:
    """The outcome of re-checking a saved construction from scratch."""

    valid: bool
    score: float | None
    reason: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ProgramLimits:
    """The wall time and CPU cores one program gets, declared once by its problem.

    ``seconds`` is the budget the prompt states; the sandbox stops a program
    ``margin_s`` later (``timeout_s``), so one that stops right at its budget still
    returns its result (the reference: budget + 5 s). ``cpus`` is both the number the
    prompt states and the cores the sandbox gives (thread caps, CPU-time limit, Ray
    request). ``keys`` name the problem's params that set ``seconds`` and ``cpus``, for
    the error a config that also sets ``sandbox.timeout_s`` or ``sandbox.cpus`` gets.
    """

    seconds: float
    cpus: int
    margin_s: float = 5.0
    keys: tuple[str, str] = ("budget_s", "cpus")

    @property
    def timeout_s(self) -> float:
        """The sandbox's limit for one program: the stated budget plus the margin."""
        return self.seconds + self.margin_s


class Problem:
    """Base class for problem plugins.

    Subclasses set ``name`` and ``maximize``, may define a pydantic ``Params``
    model for their config section, and implement ``initial_states``, ``prompt``,
    ``evaluate`` and ``verify``. ``parse`` has a default that extracts the last
    ```python block and checks that it compiles and defines ``entry``.
    """

    name: ClassVar[str] = ""
    maximize: ClassVar[bool] = True
    #: the function the program must define (called with no arguments unless the
    #: problem passes some)
    entry: ClassVar[str] = "run"
    #: the ``score`` of a failed rollout, for logs (reward is always 0)
    worst_score: ClassVar[float | None] = None
    #: host-side cost caps: a longer reply is not searched, a longer program not parsed
    #: (parsing is superlinear on pathological code; these keep one reply under a second)
    max_reply_chars: ClassVar[int] = 2_000_000
    max_code_chars: ClassVar[int] = 100_000
    #: what one program needs besides its CPUs (``program_limits``), as Ray resource names and
    #: amounts (e.g. ``{"num_gpus": 1}`` for a kernel that owns one GPU while it runs);
    #: the Ray executor adds it to every program's resource request (docs/scaling.md); a problem
    #: whose needs depend on its params sets it per instance (the kernels problem on cuda)
    program_resources: dict[str, float] = {}
    #: modules the sandbox imports once for all programs of this problem (added to the config's preload)
    sandbox_preload: ClassVar[tuple[str, ...]] = ()

    def __init__(self, params: Any = None) -> None:
        self.params = params

    # -- states ---------------------------------------------------------------
    def initial_states(self, rng: np.random.Generator, k: int) -> list[State]:
        raise NotImplementedError

    def keep_in_archive(self, state: State) -> bool:
        """Whether a valid child may enter the archive (length limits and the like)."""
        return True

    def size_limit(self, construction: Any) -> str | None:
        """Why ``construction`` is larger than this problem takes, naming the limit and its parameter; else None.

        A warm start (``problem.init_from``) over the limit is refused and ``discover verify`` warns:
        programs handed such a parent would spend their whole budget on its size. The base takes any size.
        """
        return None

    def seed_code(self) -> str:
        """The last code of a seed made from a saved construction (``problem.init_from``): a starter program, or ""."""
        return ""

    def on_selected(self, state: State, rng: np.random.Generator) -> State:
        """The state a step's rollouts start from, given the one the sampler selected (default: itself).

        A problem may return a changed copy with the same id, e.g. a random seed drawn
        afresh; ``rng`` is the run's generator, so runs stay reproducible and resumable.
        """
        return state

    # -- model I/O --------------------------------------------------------------
    def prompt(self, state: State) -> list[dict[str, str]]:
        """Chat messages ([{"role": ..., "content": ...}]) for one rollout from ``state``."""
        raise NotImplementedError

    def parse(self, text: str) -> Program | Invalid:
        """The program in a model reply, or why there is none (default: ``parsing.program_from_reply``)."""
        from .parsing import program_from_reply  # parsing builds on this module's types

        return program_from_reply(text, self.entry, self.max_reply_chars, self.max_code_chars)

    # -- scoring ----------------------------------------------------------------
    def program_limits(self) -> ProgramLimits | None:
        """The time and CPUs one program gets, when this problem states them in its prompt.

        The one owner of those two numbers: the prompt, the sandbox call in ``evaluate``
        (``timeout_s=limits.timeout_s``), the run's sandbox (``cpus``) and the hook guard's
        deadline all read them, and a config may not set ``sandbox.timeout_s`` or
        ``sandbox.cpus`` to anything else. None (the default): the problem states no
        budget, and the config's ``sandbox.timeout_s`` and ``sandbox.cpus`` apply.
        """
        return None

    def evaluate(self, program: Program, state: State, sandbox: Sandbox) -> Evaluation | Invalid:
        """Run ``program`` (started from ``state``) in ``sandbox`` and verify what it returns."""
        raise NotImplementedError

    def evaluate_group(
        self, programs: list[Program | Invalid], state: State, sandbox: Sandbox
    ) -> list[Evaluation | Invalid] | None:
        """Optionally score a whole group together (majority votes, relative rewards).

        Return None (the default) to have the loop call ``evaluate`` per rollout.
        """
        return None

    def verify(self, construction: Any) -> Verification:
        """Recompute the score of a saved construction from scratch."""
        raise NotImplementedError

    def reward(self, score: float) -> float:
        """The reward of a valid rollout with this verified score (failures get 0)."""
        return float(score)

    def value(self, score: float) -> float:
        """Archive value: higher is better."""
        return float(score) if self.maximize else -float(score)

    # -- optional extras ---------------------------------------------------------
    def construction_from_record(self, record: Any) -> Any:
        """Turn a saved file's content (a fixture's ``construction`` or a bare list) into a construction."""
        return record

    def records(self) -> dict[str, float]:
        """Published scores to compare a run with, ``{who: score}`` (``discover report`` draws them)."""
        return {}

    def target(self) -> float | None:
        """The score the run aims at, if the problem names one (default: a ``target`` parameter)."""
        target = getattr(self.params, "target", None)
        return None if target is None else float(target)

    def plot(self, construction: Any, path: str) -> None:
        """Write a picture of ``construction`` to ``path`` (PNG)."""
        raise NotImplementedError(f"problem {self.name!r} has no picture")
