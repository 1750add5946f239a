"""The ablation samplers: ε-greedy over the best states, and no reuse at all."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from discover_ttt.state import State

from .archive import KeyIndex, check_count, checked_value, dedup_key, link_to_parent, plain, value_of


def _sort_value(state: State) -> float:
    v = value_of(state)
    return -np.inf if v is None else v


class Greedy:
    """ε-greedy: each slot takes, with probability ε, a uniformly random archived
    state, else the best state not picked yet (cycling once all are picked).

    The archive holds valid, new children (same filter and deduplication as PUCT).
    At the end of each step it keeps the best child of each parent, then the best
    ``k`` states by value, k = the size of the last selection (the reference keeps
    the top ``groups_per_step``). Seeds get no protection. Randomness comes from
    the sampler's own generator, saved in ``state_dict``.
    """

    name = "greedy"

    def __init__(self, epsilon: float = 0.0, seed: int = 0) -> None:
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"Greedy: epsilon is a probability in [0, 1], got {epsilon!r}")
        self.epsilon = float(epsilon)
        self.rng = np.random.default_rng(seed)
        self.accept: Callable[[State], bool] | None = None
        self.make_states: Callable[[int], list[State]] | None = None
        self._states: list[State] = []
        self._ids: set[str] = set()  # ids of the archived states
        self._seed_ids: set[str] = set()
        self._keys = KeyIndex()
        self._k: int | None = None  # size of the last selection

    @property
    def states(self) -> list[State]:
        return list(self._states)

    def seed(self, states: Iterable[State]) -> None:
        for state in states:
            checked_value(state)  # a string or NaN value is refused, not ranked
            if state.id in self._ids:
                continue
            self._seed_ids.add(state.id)
            self._ids.add(state.id)
            self._states.append(state)
            self._keys.add(state, dedup_key(state))

    def select(self, k: int) -> list[State]:
        if check_count(k) == 0:
            return []
        if not self._states and self.make_states is not None:
            self.seed(self.make_states(k))
        if not self._states:
            return []
        self._k = k
        ranked = sorted(self._states, key=_sort_value, reverse=True)  # stable: archive order among ties
        picked: list[State] = []
        next_best = 0
        for _ in range(k):
            if self.epsilon > 0 and len(ranked) > 1 and self.rng.random() < self.epsilon:
                picked.append(ranked[int(self.rng.integers(len(ranked)))])
                continue
            taken = {s.id for s in picked}
            if len(taken) >= len(ranked):
                picked.append(ranked[next_best % len(ranked)])  # everything is taken: cycle
                next_best += 1
                continue
            while ranked[next_best % len(ranked)].id in taken:
                next_best += 1
            picked.append(ranked[next_best % len(ranked)])
            next_best += 1
        return picked

    def record(self, parent: State, child: State | None = None) -> None:
        if child is None or checked_value(child) is None:
            return
        if self.accept is not None and not self.accept(child):
            return
        key = dedup_key(child)
        if child.id in self._ids or self._keys.find(child, key) is not None:
            return
        link_to_parent(child, parent)
        self._states.append(child)
        self._ids.add(child.id)
        self._keys.add(child, key)

    def end_step(self) -> None:
        best_child: dict[str, State] = {}
        roots: list[State] = []
        for s in self._states:
            if not s.parents:
                roots.append(s)
            elif s.parents[0] not in best_child or _sort_value(s) > _sort_value(best_child[s.parents[0]]):
                best_child[s.parents[0]] = s
        survivors = {s.id for s in roots} | {s.id for s in best_child.values()}
        kept = [s for s in self._states if s.id in survivors]
        if self._k is not None and len(kept) > self._k:
            top = {s.id for s in sorted(kept, key=_sort_value, reverse=True)[: self._k]}
            kept = [s for s in kept if s.id in top]
        kept_ids = {s.id for s in kept}
        for s in self._states:
            if s.id not in kept_ids:
                self._keys.remove(s)
        self._states = kept
        self._ids = kept_ids

    def best(self) -> State | None:
        return max(self._states, key=_sort_value, default=None)

    def state_dict(self) -> dict[str, Any]:
        return {
            "type": "greedy",
            "params": {"epsilon": self.epsilon},
            "states": [plain(s.to_dict()) for s in self._states],
            "seeds": sorted(self._seed_ids),
            "k": self._k,
            "rng": self.rng.bit_generator.state,
        }

    def load_state_dict(self, d: dict[str, Any]) -> None:
        self._states = [State.from_dict(sd) for sd in d["states"]]
        self._ids = {s.id for s in self._states}
        self._seed_ids = set(d.get("seeds", ()))
        self._keys = KeyIndex()
        for s in self._states:
            self._keys.add(s, dedup_key(s))
        self._k = d.get("k")
        if "rng" in d:
            self.rng.bit_generator.state = d["rng"]

    @classmethod
    def from_state_dict(cls, d: dict[str, Any]) -> Greedy:
        sampler = cls(**d.get("params", {}))
        sampler.load_state_dict(d)
        return sampler


class NoReuse:
    """Every group starts from a fresh initial state: nothing generated is reused.

    ``select(k)`` calls ``make_states(k)`` when set, else cycles through the seeds.
    Recorded children only feed ``best()``.
    """

    name = "no_reuse"

    def __init__(self) -> None:
        self.accept: Callable[[State], bool] | None = None
        self.make_states: Callable[[int], list[State]] | None = None
        self._seeds: list[State] = []
        self._best: State | None = None
        self._next = 0  # next seed to hand out when cycling

    @property
    def states(self) -> list[State]:
        return list(self._seeds)

    def _consider(self, state: State) -> None:
        if value_of(state) is not None and (self._best is None or _sort_value(state) > _sort_value(self._best)):
            self._best = state

    def seed(self, states: Iterable[State]) -> None:
        for s in states:
            checked_value(s)
            self._seeds.append(s)
            self._consider(s)

    def select(self, k: int) -> list[State]:
        if check_count(k) == 0:
            return []
        if self.make_states is not None:
            fresh = list(self.make_states(k))
            for s in fresh:
                self._consider(s)
            return fresh
        if not self._seeds:
            return []
        picked = [self._seeds[(self._next + i) % len(self._seeds)] for i in range(k)]
        self._next = (self._next + k) % len(self._seeds)
        return picked

    def record(self, parent: State, child: State | None = None) -> None:
        if child is None or checked_value(child) is None:
            return
        if self.accept is not None and not self.accept(child):
            return
        link_to_parent(child, parent)
        self._consider(child)

    def end_step(self) -> None:
        pass

    def best(self) -> State | None:
        return self._best if self._best is not None else (self._seeds[0] if self._seeds else None)

    def state_dict(self) -> dict[str, Any]:
        return {
            "type": "no_reuse",
            "seeds": [plain(s.to_dict()) for s in self._seeds],
            "best": None if self._best is None else plain(self._best.to_dict()),
            "next": self._next,
        }

    def load_state_dict(self, d: dict[str, Any]) -> None:
        self._seeds = [State.from_dict(sd) for sd in d["seeds"]]
        self._best = None if d.get("best") is None else State.from_dict(d["best"])
        self._next = int(d.get("next", 0))

    @classmethod
    def from_state_dict(cls, d: dict[str, Any]) -> NoReuse:
        sampler = cls()
        sampler.load_state_dict(d)
        return sampler
