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


#: Default cap on the parent program quoted in a prompt: about 5,000 tokens, a fifth of the
#: paper's 26,000-token prompt-and-thinking budget.
MAX_CODE_CHARS = 16000


def max_code_chars_field() -> Any:
    """The ``max_code_chars`` option of a problem's Params (see ``bounded_code``)."""
    from pydantic import Field

    return Field(
        MAX_CODE_CHARS,
        ge=200,
        description="the parent's program is quoted in the prompt up to this many characters (head and tail kept)",
    )


def bounded_code(code: str, max_chars: int) -> str:
    """``code`` cut to at most ``max_chars`` characters at line boundaries, for a prompt.

    A parent's program can be arbitrarily long, and a prompt longer than the token
    budget cannot be sampled from. The reference cuts long parent code too; we keep its
    head and its tail (imports and the entry point usually sit there) and put one
    comment line in place of the middle, saying how many lines were left out.
    """
    if len(code) <= max_chars:
        return code
    lines = code.splitlines()
    head: list[str] = []
    tail: list[str] = []
    budget = max(0, max_chars - 60) - 1  # room for the marker line
    top, bottom, open_sides = 0, len(lines) - 1, [True, True]
    while top <= bottom and any(open_sides):  # a line from the top, then one from the bottom, ...
        for side in (0, 1):
            if top > bottom or not open_sides[side]:
                continue
            line = lines[top] if side == 0 else lines[bottom]
            if len(line) + 1 > budget:
                open_sides[side] = False  # a line that does not fit ends this side (e.g. a huge literal)
                continue
            budget -= len(line) + 1
            if side == 0:
                head.append(line)
                top += 1
            else:
                tail.append(line)
                bottom -= 1
    omitted = len(lines) - len(head) - len(tail)
    return "\n".join([*head, f"# [... {omitted} lines of the program left out here ...]", *reversed(tail)])


_LANG = re.compile(r"[ \t]*([A-Za-z0-9_+-]*)")


def numbers_from_record(record: Any, keys: tuple[str, ...], what: str, *, sole_list: bool = False) -> Any:
    """The list of numbers inside a published record, for ``construction_from_record``.

    A record (a dict) gives the value under the first of ``keys`` found, searched again when
    that value is itself a record; failing those, with ``sole_list``, its one entry that is a
    list of numbers (``{"h": [...], "c5": 0.38}``; off by default, since another problem's
    record, e.g. a packing's radii, would pass for a construction). Anything else is returned
    as it is, for ``verify`` to judge. ``what`` names the construction in the error.
    """
    if not isinstance(record, dict):
        return record
    for key in keys:
        if key in record:
            return numbers_from_record(record[key], keys, what, sole_list=sole_list)
    if sole_list:
        lists = [v for v in record.values() if isinstance(v, list) and v and all(_is_number(x) for x in v)]
        if len(lists) == 1:
            return lists[0]
    raise ValueError(f"no {what} construction in this record: expected a key {keys[1]!r}; got {sorted(record)}")


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def code_blocks(text: str) -> list[tuple[str, str]]:
    """Every fenced block in ``text`` as (language tag, body), in order.

    A fence opens at three backticks (anywhere on a line) and runs to the end of
    that line; the body runs to the next three backticks. A scan with ``str.find``
    instead of a regular expression: a long line of fence markers costs linear
    time, where a backtracking pattern took minutes.
    """
    blocks, pos = [], 0
    while True:
        start = text.find("```", pos)
        if start < 0:
            return blocks
        newline = text.find("\n", start + 3)
        if newline < 0:
            return blocks
        end = text.find("```", newline + 1)
        if end < 0:  # no later fence can close either
            return blocks
        lang = _LANG.match(text, start + 3, newline).group(1)
        blocks.append((lang, text[newline + 1 : end]))
        pos = end + 3


def last_code_block(text: str, languages: tuple[str, ...] = ("python", "py", "")) -> str | None:
    """The last fenced code block in ``text`` whose language tag is in ``languages``.

    Only the final answer matters (the model may sketch code while thinking), so
    the last block wins, as in the reference.
    """
    blocks = [body for lang, body in code_blocks(text) if lang.lower() in languages]
    return blocks[-1] if blocks else None


def parse_python(source: str) -> ast.Module | Invalid:
    """``ast.parse`` that never raises: anything it throws is a ``syntax_error``.

    Deep nesting or long operator chains raise ``RecursionError`` or
    ``MemoryError``, lone surrogates ``UnicodeEncodeError``, NUL bytes
    ``ValueError`` (older Pythons); the program is rejected either way.
    """
    try:
        return ast.parse(source)
    except SyntaxError as e:
        return Invalid("syntax_error", f"line {e.lineno}: {e.msg}")
    except (RecursionError, MemoryError):
        return Invalid("syntax_error", "the program is nested too deeply to parse (very long expression chains)")
    except (ValueError, UnicodeError) as e:
        return Invalid("syntax_error", f"the program cannot be parsed: {type(e).__name__}: {str(e)[:200]}")


TRUNCATED = (
    "the reply was truncated: it opens a ```python code block that never closes, as when generation stops at "
    "the token limit (backend.max_new_tokens); raise the limit or ask for shorter programs"
)
_OPENING = re.compile(r"```[ \t]*(?:python|py)?[ \t]*\n", re.IGNORECASE)


def opens_unclosed_block(text: str) -> bool:
    """Whether ``text`` ends inside a code block: an odd number of fences, the last one an opening one."""
    fences = [m.start() for m in re.finditer(r"```", text)]
    return len(fences) % 2 == 1 and _OPENING.match(text, fences[-1]) is not None


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
    #: what one program needs besides ``sandbox.cpus`` CPUs, as Ray resource names and
    #: amounts (e.g. ``{"num_gpus": 1}`` for a kernel that owns one GPU while it runs);
    #: the Ray executor adds it to every program's resource request (docs/scaling.md)
    program_resources: ClassVar[dict[str, float]] = {}
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
        if len(text) > self.max_reply_chars:
            return Invalid(
                "no_code",
                f"the reply has {len(text)} characters, more than the {self.max_reply_chars} searched for code",
            )
        source = last_code_block(text)
        if source is None:
            if opens_unclosed_block(text):
                return Invalid("no_code", TRUNCATED)
            return Invalid("no_code", "the reply contains no ```python code block")
        if len(source) > self.max_code_chars:
            return Invalid(
                "syntax_error", f"the program has {len(source)} characters, more than the {self.max_code_chars} allowed"
            )
        tree = parse_python(source)
        if isinstance(tree, Invalid):
            return tree
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
