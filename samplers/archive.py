"""Archive rules shared by the samplers: values, lineage, deduplication keys (the interface: ``base.py``)."""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import Any

import numpy as np

from discover_ttt.state import State


def checked_value(state: State) -> float | None:
    """The value a sampler archives: a finite float, or None for a state without one.

    A string, a bool, NaN or an infinity is refused rather than ranked (``"5"`` would
    compare as a number; NaN would sort anywhere). The state's value is stored back as
    a Python float, so that ``state_dict()`` stays JSON with numpy values.
    """
    v = state.value
    if v is None:
        return None
    if isinstance(v, (str, bytes, bool)) or not hasattr(v, "__float__"):
        raise TypeError(f"state {state.id!r}: value must be a number or None, got {type(v).__name__} {v!r}")
    v = float(v)
    if not math.isfinite(v):
        raise ValueError(f"state {state.id!r}: value must be finite, got {v}; use None for a state without a value")
    state.value = v
    return v


def check_count(k: int) -> int:
    """``select``'s k: a count, 0 or more."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"select(k): k is the number of states to pick, 0 or more, got {k!r}")
    return int(k)


def plain(x: Any) -> Any:
    """``x`` with numpy arrays and scalars turned into lists and numbers, tuples into lists (JSON data)."""
    if isinstance(x, dict):
        return {k: plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    if hasattr(x, "tolist") and hasattr(x, "dtype"):
        return x.tolist()
    return x


def value_of(state: State) -> float | None:
    """The state's value as a float, or None when it has none (None or NaN)."""
    v = state.value
    if v is None:
        return None
    v = float(v)
    return None if math.isnan(v) else v


def link_to_parent(child: State, parent: State) -> None:
    """Make ``child``'s lineage start at ``parent`` (the archive relies on it for blocking and pruning)."""
    parents = [parent.id, *parent.parents]
    if child.parents != parents:
        child.parents = parents
        child.parent_values = [parent.value, *parent.parent_values]


def _canonical(x: Any) -> Hashable:
    """A hashable form of a JSON-like construction; equal constructions give equal keys."""
    if hasattr(x, "tolist"):  # numpy arrays and scalars
        x = x.tolist()
    if isinstance(x, (list, tuple)):
        flat = tuple(x)
        try:
            hash(flat)  # the common case, a flat list of numbers: no per-element Python work
            return flat
        except TypeError:
            return tuple(_canonical(item) for item in x)
    if isinstance(x, dict):
        return ("__dict__", tuple(sorted((str(k), _canonical(v)) for k, v in x.items())))
    return x


def dedup_key(state: State) -> Hashable | None:
    """The construction when there is one, else the code, else None (never deduplicated)."""
    c = state.construction
    if c is not None and not (hasattr(c, "__len__") and len(c) == 0):
        return ("construction", _canonical(c))
    if state.code:
        return ("code", state.code)
    return None


class KeyIndex:
    """Which archived states hold which dedup key.

    Only the key's hash is kept per state (constructions can have 10^5 numbers);
    on a hash hit the keys are recomputed and compared, so collisions are harmless.
    """

    def __init__(self) -> None:
        self._by_hash: dict[int, list[State]] = {}
        self._hash_of: dict[str, int] = {}

    def find(self, state: State, key: Hashable | None) -> State | None:
        if key is None:
            return None
        for other in self._by_hash.get(hash(key), ()):
            if dedup_key(other) == key:
                return other
        return None

    def add(self, state: State, key: Hashable | None) -> None:
        if key is None:
            return
        h = hash(key)
        self._by_hash.setdefault(h, []).append(state)
        self._hash_of[state.id] = h

    def remove(self, state: State) -> None:
        h = self._hash_of.pop(state.id, None)
        if h is None:
            return
        bucket = self._by_hash[h]
        bucket[:] = [s for s in bucket if s.id != state.id]
        if not bucket:
            del self._by_hash[h]
