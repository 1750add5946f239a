"""Saved constructions read back: for ``discover verify`` and ``plot``, and for warm starts.

A file is a record (a JSON object whose ``construction`` holds the construction),
a run's ``best/construction.json``, or a bare JSON value such as a list of
numbers; the problem's ``construction_from_record`` makes sense of what is inside.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

from .config import ConfigError
from .guard import BadReturn, json_safe
from .state import State


def read_construction(problem: Any, file: str | Path) -> Any:
    """The construction in ``file``, as the problem understands it; ConfigError if there is none."""
    try:
        data = json.loads(Path(file).read_text())
    except OSError as e:
        raise ConfigError(f"cannot read {file}: {e.strerror or e}.") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{file} is not JSON: {e.msg} at line {e.lineno}.") from None
    except RecursionError:
        raise ConfigError(
            f"{file} is nested too deeply to be a construction (lists within lists, too many levels)."
        ) from None
    if isinstance(data, dict) and "construction" in data:
        data = data["construction"]
    try:
        construction = problem.construction_from_record(data)
        return json_safe(construction)  # numpy arrays become lists; a set or an object is refused
    except (ValueError, TypeError, KeyError, BadReturn) as e:
        raise ConfigError(f"{file} does not hold a {problem.name} construction: {e}") from None
    except RecursionError:
        raise ConfigError(f"{file} does not hold a {problem.name} construction: it is nested too deeply.") from None
    except Exception as e:  # noqa: BLE001 - a plugin bug: one paragraph naming the hook
        raise ConfigError(
            f"{file}: problem {problem.name!r}, hook construction_from_record() raised {type(e).__name__}: {e}"
        ) from None


def warm_start_states(problem: Any, file: str | Path, k: int) -> list[State]:
    """``k`` seeds holding the construction in ``file`` (``problem: {init_from: FILE}``), verified first.

    As the reference's "best available" start: every seed is the same construction, with
    the problem's seed code as its last code; value and score are the verifier's.
    """
    where = f"problem.init_from: {file}"
    try:
        construction = read_construction(problem, file)
    except ConfigError as e:
        raise ConfigError(f"problem.init_from: {e}") from None
    too_large = problem.size_limit(construction) if hasattr(problem, "size_limit") else None
    if too_large:
        raise ConfigError(
            f"{where} holds a construction too large for a warm start: {too_large}. Every program of the run "
            "would be handed it; start from a smaller construction or raise that limit."
        )
    try:
        check = problem.verify(construction)
    except NotImplementedError:
        raise ConfigError(
            f"{where}: problem {problem.name!r} has no verify(), so a warm start cannot be checked."
        ) from None
    except Exception as e:  # noqa: BLE001 - a plugin bug: one paragraph naming the hook
        raise ConfigError(f"{where}: problem {problem.name!r}, hook verify() raised {type(e).__name__}: {e}") from None
    score = check.score
    if not check.valid or score is None or not math.isfinite(score):
        raise ConfigError(
            f"{where} holds a construction that the {problem.name} verifier rejects ({check.reason or repr(score)}); "
            "a run starts only from a construction that verifies."
        )
    code = problem.seed_code()
    return [
        State(
            value=problem.value(score),
            score=score,
            construction=copy.deepcopy(construction),
            code=code,
            metrics={"init_from": str(file)},
        )
        for _ in range(k)
    ]
