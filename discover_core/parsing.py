"""Helpers for problem plugins: reading a reply, quoting and assembling programs, reading records,
stating a program's budget.

None of this is part of the ``Problem`` interface (``problem.py``); a problem uses
what fits. ``program_from_reply`` is the default ``Problem.parse``.
"""

from __future__ import annotations

import ast
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .problem import Invalid, Program, ProgramLimits

# -- reading a reply ------------------------------------------------------------

_LANG = re.compile(r"[ \t]*([A-Za-z0-9_+-]*)")


def code_blocks(text: str) -> list[tuple[str, str]]:
    """Every fenced block in ``text`` as (language tag, body), in order.

    A fence opens at three backticks (anywhere on a line) and runs to the end of
    that line; the body runs to the next three backticks. A scan with ``str.find``
    instead of a regular expression: a long line of fence markers costs linear
    time, where a backtracking pattern took minutes.
    """
    blocks: list[tuple[str, str]] = []
    pos = 0
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
        lang = _LANG.match(text, start + 3, newline).group(1)  # type: ignore[union-attr]  # matches the empty string
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


def program_from_reply(text: str, entry: str, max_reply_chars: int, max_code_chars: int) -> Program | Invalid:
    """The program in a model reply: its last ```python block, if it parses and defines ``entry``.

    ``max_reply_chars`` and ``max_code_chars`` cap the host's work (a longer reply is not
    searched, a longer program not parsed: parsing is superlinear on pathological code).
    """
    if len(text) > max_reply_chars:
        return Invalid(
            "no_code", f"the reply has {len(text)} characters, more than the {max_reply_chars} searched for code"
        )
    source = last_code_block(text)
    if source is None:
        if opens_unclosed_block(text):
            return Invalid("no_code", TRUNCATED)
        return Invalid("no_code", "the reply contains no ```python code block")
    if len(source) > max_code_chars:
        return Invalid(
            "syntax_error", f"the program has {len(source)} characters, more than the {max_code_chars} allowed"
        )
    tree = parse_python(source)
    if isinstance(tree, Invalid):
        return tree
    defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    if entry not in defined:
        return Invalid("syntax_error", f"the program defines no top-level function {entry}()")
    return Program(source=source, entry=entry)


# -- quoting a program in a prompt, assembling the program that runs -----------------

#: Default cap on the parent program quoted in a prompt: about 5,000 tokens, a fifth of the
#: paper's 26,000-token prompt-and-thinking budget.
MAX_CODE_CHARS = 16000


def max_code_chars_field() -> Any:
    """The ``max_code_chars`` option of a problem's Params (see ``bounded_code``)."""
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


# -- reading a published record ------------------------------------------------------


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


# -- stating a program's budget ---------------------------------------------------------


class ProgramBudget(BaseModel):
    """The params of a problem whose prompt states a program's time and CPUs (Erdős, circle packing,
    autocorrelation): its ``Params`` subclass this, and its ``program_limits`` returns ``limits()``.
    """

    model_config = ConfigDict(extra="forbid")

    budget_s: float = Field(1000.0, gt=0, description="a program's time budget, stated in the prompt")
    cpus: int = Field(2, ge=1, description="CPU cores per program, stated in the prompt and given by the sandbox")
    timeout_margin_s: float = Field(5.0, ge=0, description="the sandbox stops a program this long after budget_s")

    def limits(self) -> ProgramLimits:
        return ProgramLimits(self.budget_s, self.cpus, margin_s=self.timeout_margin_s)
