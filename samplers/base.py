"""The Sampler interface: what a state sampler plugin implements.

A sampler keeps the archive of states and picks the ones each step's rollouts start
from. The engine (``discover_core/step.py``) drives it in this order, and uses nothing
else:

1. It sets two attributes once, after building the sampler:
   ``accept`` (``State -> bool``): the problem's archive filter (``keep_in_archive``);
   a child it refuses is counted, never archived. ``make_states`` (``k -> list[State]``):
   ``k`` fresh initial states from the problem, for samplers that start from scratch.
   Either may be None (accept everything; no fresh states).
2. ``seed(states)``: the initial states (the problem's, or a warm start's), once, before
   the first step. Seeds have distinct ids; a sampler may refuse (ValueError) an id it
   already holds.
3. Each step: ``select(k)`` returns up to ``k`` states (``k`` = ``run.groups``), one per
   group; fewer is allowed (the step runs fewer groups), as is calling ``make_states``.
   The engine may hand the problem's ``on_selected`` copy (same id) to ``record`` as
   the parent.
4. ``record(parent, child)`` once per rollout, in rollout order: ``child`` is the new
   State of a valid rollout (``child.value`` set, ``child.parents`` its lineage) or None
   for a failed one. Every call is a visit of ``parent``.
5. ``end_step()`` after the step's last ``record``: prune, flush statistics.
6. ``states``: the archived states (a list, or a property giving one); the run logs its
   length as ``archive_size``.
7. ``state_dict()`` (JSON data) at every checkpoint, ``load_state_dict(d)`` on a fresh
   sampler when a run resumes: the resumed sampler must select what the original would.
8. ``best()``: the archived state with the highest value, or None (for callers using the
   sampler as a library).

Values are "higher is better" (a minimised score is stored negated); a state without
one is never archived. The built-in samplers (``puct.py``, ``simple.py``) and their
shared archive rules (``archive.py``) follow this; a new one is a class registered
through the ``register_samplers`` hook, its ``__init__`` keywords being its config keys.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol, runtime_checkable

from discover_ttt.state import State


@runtime_checkable
class Sampler(Protocol):
    """A state sampler, as the engine drives it (the module docstring gives the order)."""

    accept: Callable[[State], bool] | None
    make_states: Callable[[int], list[State]] | None

    @property
    def states(self) -> list[State]: ...
    def seed(self, states: Iterable[State]) -> None: ...
    def select(self, k: int) -> list[State]: ...
    def record(self, parent: State, child: State | None) -> None: ...
    def end_step(self) -> None: ...
    def best(self) -> State | None: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, d: dict[str, Any]) -> None: ...
