"""The Problem interface: what a problem plugin implements.

A problem turns a state into a prompt, a model reply into a program, and a
program into a scored construction. The loop never looks inside constructions;
it only reads ``Evaluation.score`` and asks the problem for ``reward`` and
``value``.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from .state import State

if TYPE_CHECKING:  # pragma: no cover
    from .sandbox import Sandbox

#: Every way a rollout can fail. ``no_code`` and ``syntax_error`` come from
#: ``parse``; the next five are the sandbox's failure kinds; the last is the
#: verifier's.
FAILURE_KINDS = (
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


_FUTURE_IMPORT = re.compile(r"^from __future__ import[^\n]*$", re.MULTILINE)


def with_preamble(preamble: str, source: str) -> str:
    """``source`` with ``preamble`` executed first, on one added line.

    Running the preamble through one ``exec`` line keeps the program's own line
    numbers (in tracebacks the model will read) off by exactly one; future
    imports, which must come first, are moved onto that line.
    """
    futures = _FUTURE_IMPORT.findall(source)
    body = _FUTURE_IMPORT.sub("", source)
    head = "; ".join([*futures, f"exec(compile({preamble!r}, '<preamble>', 'exec'))"])
    return head + "\n" + body


_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)```", re.DOTALL)


def last_code_block(text: str, languages: tuple[str, ...] = ("python", "py", "")) -> str | None:
    """The last fenced code block in ``text`` whose language tag is in ``languages``.

    Only the final answer matters (the model may sketch code while thinking), so
    the last block wins, as in the reference.
    """
    blocks = [body for lang, body in _FENCE.findall(text) if lang.lower() in languages]
    return blocks[-1] if blocks else None


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

    def __init__(self, params: Any = None) -> None:
        self.params = params

    # -- states ---------------------------------------------------------------
    def initial_states(self, rng: np.random.Generator, k: int) -> list[State]:
        raise NotImplementedError

    def keep_in_archive(self, state: State) -> bool:
        """Whether a valid child may enter the archive (length limits and the like)."""
        return True

    # -- model I/O --------------------------------------------------------------
    def prompt(self, state: State) -> list[dict[str, str]]:
        """Chat messages ([{"role": ..., "content": ...}]) for one rollout from ``state``."""
        raise NotImplementedError

    def parse(self, text: str) -> Program | Invalid:
        source = last_code_block(text)
        if source is None:
            return Invalid("no_code", "the reply contains no ```python code block")
        try:
            tree = ast.parse(source)
        except SyntaxError as e:
            return Invalid("syntax_error", f"line {e.lineno}: {e.msg}")
        defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        if self.entry not in defined:
            return Invalid("syntax_error", f"the program defines no top-level function {self.entry}()")
        return Program(source=source, entry=self.entry)

    # -- scoring ----------------------------------------------------------------
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

    def plot(self, construction: Any, path: str) -> None:
        """Write a picture of ``construction`` to ``path`` (PNG)."""
        raise NotImplementedError(f"problem {self.name!r} has no picture")
