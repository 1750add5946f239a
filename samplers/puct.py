"""PUCT over an archive of candidate solutions (the method's state sampler).

For every archived state s, at selection time:

    R(s)     = value (None → −inf)
    scale    = max R − min R over non-seed states (all states while only seeds exist), floored at 1e-6
    P(s)     = (N − rank(s)) / Σ_s' (N − rank(s'))      rank 0 = best value, ties in archive order
    Q(s)     = m(s) if n(s) > 0 and s has had a valid child, else R(s)      (m = best child value: a max)
    score(s) = Q(s) + c · scale · P(s) · sqrt(1 + T/G) / (1 + n(s)/G)       (G = visit_normaliser, 1 by default)

n(s) counts the rollouts started from s or from any of its descendants (failed
ones included), T all rollouts. ``select(k)`` takes the top k by (score, R),
skipping every ancestor and descendant of a state already picked. ``end_step``
keeps the ``children_per_parent`` best children of each parent, then caps the
archive at ``max_states`` by value; seeds are never evicted. Statistics of
pruned states are kept.

Speed: per-state data live in numpy arrays indexed by a slot per known state
id, so scores are computed vectorised; ``record`` only appends the parent's
ancestor chain (cached per parent) to a list of pending visits, applied in
bulk before the next read. Per record the work is O(depth) plus hashing the
child's construction for deduplication.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, TypedDict

import numpy as np

from discover_ttt.state import State

from .archive import KeyIndex, check_count, checked_value, dedup_key, link_to_parent, plain, value_of

SCALE_FLOOR = 1e-6
_FIRST_BLOCK = 64  # candidates sorted up front by select(); the rest only if blocking exhausts them


class _ScoreTerms(TypedDict):
    """The PUCT score and its terms for every archived state (arrays by archive position)."""

    slots: np.ndarray
    score: np.ndarray
    value: np.ndarray
    Q: np.ndarray
    P: np.ndarray
    bonus: np.ndarray
    n: np.ndarray
    scale: float


def _descending(values: np.ndarray) -> np.ndarray:
    """argsort of ``values``, largest first, ties in index order (a stable sort, done faster).

    An unstable sort, then only the runs of equal values are put in index order:
    ties are few (typically the seeds), and a stable sort of 10^5 floats costs
    more than twice as much.
    """
    order = np.argsort(-values)
    sorted_vals = values[order]
    equal_next = sorted_vals[1:] == sorted_vals[:-1]
    if equal_next.any():
        run_G = np.cumsum(np.r_[True, ~equal_next])  # run id of each sorted position
        in_tie = np.r_[equal_next, False] | np.r_[False, equal_next]
        pos = np.flatnonzero(in_tie)
        order[pos] = order[pos][np.lexsort((order[pos], run_G[pos]))]
    return order


def _all_but_top(values: np.ndarray, count: int) -> np.ndarray:
    """Positions of everything except the ``count`` largest values (among ties, earlier positions win)."""
    if count >= values.size:
        return np.zeros(0, dtype=np.int64)
    if count <= 0:
        return np.arange(values.size)
    kth = -np.partition(-values, count - 1)[count - 1]  # the count-th largest value, in O(n)
    winners = values > kth
    tied = np.flatnonzero(values == kth)
    winners[tied[: count - int(winners.sum())]] = True
    return np.flatnonzero(~winners)


class PUCT:
    """PUCT state sampler with a pruned archive.

    Parameters
    ----------
    c:
        Exploration constant (paper: 1.0).
    max_states:
        Archive cap applied at the end of each step; seeds are always kept (paper: 1000).
    children_per_parent:
        Children kept per parent at the end of each step (paper: 2); 0 keeps all.
    visit_normaliser:
        G in sqrt(1 + T/G) / (1 + n/G). The published behaviour is G = 1; other
        values (e.g. the group size) are an ablation.
    """

    name = "puct"

    def __init__(
        self,
        c: float = 1.0,
        max_states: int = 1000,
        children_per_parent: int = 2,
        visit_normaliser: float = 1.0,
    ) -> None:
        if not c >= 0:
            raise ValueError(f"PUCT: c must be ≥ 0, got {c!r}")
        if max_states < 1:
            raise ValueError(f"PUCT: max_states must be ≥ 1, got {max_states!r}")
        if children_per_parent < 0:
            raise ValueError(f"PUCT: children_per_parent must be ≥ 0 (0 keeps all), got {children_per_parent!r}")
        if not visit_normaliser > 0:
            raise ValueError(f"PUCT: visit_normaliser must be > 0, got {visit_normaliser!r}")
        self.c = float(c)
        self.max_states = int(max_states)
        self.children_per_parent = int(children_per_parent)
        self.visit_normaliser = float(visit_normaliser)
        self.accept: Callable[[State], bool] | None = None
        self.make_states: Callable[[int], list[State]] | None = None
        self._reset()

    # -- storage ---------------------------------------------------------------------------
    def _reset(self) -> None:
        self.T = 0  # rollouts recorded so far
        self.last_selection: list[dict[str, Any]] = []  # score terms of the last select(), for logs
        self._slot: dict[str, int] = {}  # state id → slot, for every id seen (archived or not)
        self._ids: list[str] = []
        self._obj: list[State | None] = []  # the State while archived
        cap = 1024
        self._val = np.full(cap, -np.inf)
        self._n = np.zeros(cap, dtype=np.int64)
        self._m = np.full(cap, np.nan)  # NaN = no valid child yet
        self._parent = np.full(cap, -1, dtype=np.int64)  # direct parent's slot, -1 for seeds
        self._is_seed = np.zeros(cap, dtype=bool)
        self._arch = np.zeros(cap, dtype=np.int64)  # archived slots, in archive order
        self._n_arch = 0
        self._keys = KeyIndex()
        self._pending_visits: list[int] = []
        self._pending_best: list[tuple[int, float]] = []
        self._chains: dict[str, list[int]] = {}  # parent id → its slot and its ancestors' slots
        self._touched: set[int] = set()  # parents that gained archived children since the last prune

    def _grow(self, need: int) -> None:
        cap = len(self._val)
        if need <= cap:
            return
        new = max(need, 2 * cap)

        def grow(a: np.ndarray, fill: Any) -> np.ndarray:
            out = np.full(new, fill, dtype=a.dtype)
            out[:cap] = a
            return out

        self._val = grow(self._val, -np.inf)
        self._n = grow(self._n, 0)
        self._m = grow(self._m, np.nan)
        self._parent = grow(self._parent, -1)
        self._is_seed = grow(self._is_seed, False)

    def _slot_of(self, state_id: str, state: State | None = None) -> int:
        slot = self._slot.get(state_id)
        if slot is None:
            slot = len(self._ids)
            self._grow(slot + 1)
            self._slot[state_id] = slot
            self._ids.append(state_id)
            self._obj.append(None)
        if state is not None and self._obj[slot] is None:
            v = value_of(state)
            self._val[slot] = -np.inf if v is None else v
        return slot

    def _archive(self, state: State, slot: int, key) -> None:
        self._obj[slot] = state
        v = value_of(state)
        self._val[slot] = -np.inf if v is None else v
        self._keys.add(state, key)
        if self._n_arch == len(self._arch):
            self._arch = np.concatenate([self._arch, np.zeros(len(self._arch), dtype=np.int64)])
        self._arch[self._n_arch] = slot
        self._n_arch += 1

    def _flush(self) -> None:
        """Apply the visits and best-child values recorded since the last read."""
        if self._pending_visits:
            np.add.at(self._n, np.asarray(self._pending_visits, dtype=np.intp), 1)
            self._pending_visits.clear()
        if self._pending_best:
            slots, values = zip(*self._pending_best, strict=True)
            np.fmax.at(self._m, np.asarray(slots, dtype=np.intp), np.asarray(values))  # fmax: NaN = unset
            self._pending_best.clear()

    # -- the sampler protocol ------------------------------------------------------------------
    @property
    def states(self) -> list[State]:
        """The archived states, in archive order."""
        return [self._obj[s] for s in self._arch[: self._n_arch]]

    def __len__(self) -> int:
        return self._n_arch

    def seed(self, states: Iterable[State]) -> None:
        """Add initial states. Seeds are never pruned nor deduplicated, and are excluded from the scale.

        Raises ValueError for an id the archive already knows (two states with one id
        would share their statistics) and for a value that is not a finite number or None.
        """
        states = list(states)
        ids = [s.id for s in states]
        clash = next((i for i in ids if i in self._slot), None) or next(
            (i for n, i in enumerate(ids) if i in ids[:n]), None
        )
        if clash is not None:
            raise ValueError(f"PUCT.seed: the id {clash!r} is already used; give every state its own id")
        for state in states:
            checked_value(state)
        for state in states:
            slot = self._slot_of(state.id)
            self._is_seed[slot] = True
            self._parent[slot] = -1
            self._archive(state, slot, dedup_key(state))

    def record(self, parent: State, child: State | None = None) -> None:
        """Count one rollout from ``parent``; archive ``child`` when it is valid and new.

        Every rollout, failed (``child`` None) or not, adds a visit to the parent and
        all its ancestors and increments T. A child with a value also raises the
        parent's best-child value m; it enters the archive unless ``accept`` refuses
        it or an archived state has the same construction (or, without one, code).

        Raises ValueError, before counting anything, for a parent the archive has never
        held, a child whose id it already knows (even a pruned one's), and a child value
        that is not a finite number or None.
        """
        if parent.id not in self._slot:
            raise ValueError(
                f"PUCT.record: the parent {parent.id!r} was never in the archive; record children of selected states"
            )
        if child is not None:
            if child.id in self._slot:
                raise ValueError(
                    f"PUCT.record: the child's id {child.id!r} is already used; give every state its own id "
                    "(State() and state.child() draw a fresh one)"
                )
            checked_value(child)
        chain = self._chains.get(parent.id)
        if chain is None:
            chain = [self._slot_of(parent.id, parent)] + [self._slot_of(a) for a in parent.parents]
            self._chains[parent.id] = chain
        self._pending_visits.extend(chain)
        self.T += 1
        if child is None:
            return
        v = value_of(child)
        if v is None:
            return  # counted as a visit; never archived (as in the reference)
        self._pending_best.append((chain[0], v))
        if self.accept is not None and not self.accept(child):
            return
        slot = self._slot.get(child.id)
        if slot is not None and self._obj[slot] is not None:
            return  # already archived
        key = dedup_key(child)
        if self._keys.find(child, key) is not None:
            return
        link_to_parent(child, parent)
        slot = self._slot_of(child.id)
        self._parent[slot] = chain[0]
        self._touched.add(chain[0])
        self._archive(child, slot, key)

    def end_step(self) -> None:
        """Prune: best ``children_per_parent`` children per parent, then the cap. Stats are untouched."""
        self._flush()
        self._chains.clear()
        arch = self._arch[: self._n_arch]
        keep = np.ones(arch.size, dtype=bool)
        vals = self._val[arch]
        is_seed = self._is_seed[arch]
        if self.children_per_parent > 0 and self._touched:
            # Only parents that gained children since the last prune can hold too many.
            parent_of = self._parent[arch]
            touched = np.fromiter(self._touched, dtype=np.int64, count=len(self._touched))
            idx = np.flatnonzero(~is_seed & (parent_of >= 0) & np.isin(parent_of, touched))
            parents = parent_of[idx]
            # grouped by parent, best value first, archive order among ties (lexsort is stable)
            order = np.lexsort((-vals[idx], parents))
            sorted_parents = parents[order]
            starts = np.r_[True, sorted_parents[1:] != sorted_parents[:-1]]
            pos = np.arange(order.size)
            rank_in_group = pos - np.maximum.accumulate(np.where(starts, pos, 0))
            keep[idx[order[rank_in_group >= self.children_per_parent]]] = False
        self._touched.clear()
        if keep.sum() > self.max_states:
            room = max(0, self.max_states - int(is_seed.sum()))
            idx = np.flatnonzero(keep & ~is_seed)
            keep[idx[_all_but_top(vals[idx], room)]] = False
        if keep.all():
            return
        for slot in arch[~keep].tolist():
            self._keys.remove(self._obj[slot])
            self._obj[slot] = None
        kept = arch[keep]
        self._arch[: kept.size] = kept
        self._n_arch = kept.size

    # -- scores and selection ------------------------------------------------------------------
    def _score_terms(self) -> _ScoreTerms:
        self._flush()
        arch = self._arch[: self._n_arch]
        vals = self._val[arch]
        is_seed = self._is_seed[arch]
        n_total = arch.size
        pool = vals[~is_seed] if (~is_seed).any() else vals
        pool = pool[np.isfinite(pool)]
        scale = max(float(pool.max() - pool.min()), SCALE_FLOOR) if pool.size else 1.0
        ranks = np.empty(n_total, dtype=np.int64)
        ranks[_descending(vals)] = np.arange(n_total)
        prior = (n_total - ranks) / (n_total * (n_total + 1) / 2)
        n = self._n[arch]
        m = self._m[arch]
        q = np.where((n > 0) & ~np.isnan(m), m, vals)
        g = self.visit_normaliser
        bonus = self.c * scale * prior * math.sqrt(1.0 + self.T / g) / (1.0 + n / g)
        with np.errstate(invalid="ignore"):
            score = q + bonus  # −inf for value-less states that have no child value
        return {
            "slots": arch,
            "score": score,
            "value": vals,
            "Q": q,
            "P": prior,
            "bonus": bonus,
            "n": n,
            "scale": scale,
        }

    def score(self, state: State) -> float:
        """The state's current PUCT score (it must be archived)."""
        slot = self._slot.get(state.id)
        if slot is None or self._obj[slot] is None:
            raise KeyError(f"state {state.id!r} is not in the PUCT archive ({self._n_arch} states)")
        terms = self._score_terms()
        return float(terms["score"][np.flatnonzero(terms["slots"] == slot)[0]])

    def select(self, k: int) -> list[State]:
        """The top ``k`` states by (score, value); no picked state is an ancestor or descendant of another.

        Fewer than ``k`` come back when the archive holds fewer than ``k`` states no two
        of which share a lineage (with 3 seeds, ``select(8)`` returns 3 states); the
        caller runs fewer groups, or asks ``make_states`` for more. With an empty archive
        and ``make_states`` set, fresh states seed it first. ``k`` < 0 is a ValueError;
        ``select(0)`` returns [].
        """
        if check_count(k) == 0:
            return []
        if self._n_arch == 0 and self.make_states is not None:
            self.seed(self.make_states(k))
        if self._n_arch == 0:
            return []
        terms = self._score_terms()
        score, vals = terms["score"], terms["value"]
        picked: list[int] = []  # positions in the archive
        picked_states: list[State] = []
        picked_ids: set[str] = set()
        lineage: set[str] = set()  # picked states and their ancestors
        for pos in self._ranked(score, vals):
            state = self._obj[terms["slots"][pos]]
            assert state is not None  # an archived slot holds its State
            if k > 1 and (state.id in lineage or not picked_ids.isdisjoint(state.parents)):
                continue  # an ancestor or a descendant of a picked state
            picked.append(pos)
            picked_states.append(state)
            picked_ids.add(state.id)
            lineage.add(state.id)
            lineage.update(state.parents)
            if len(picked) == k:
                break
        self.last_selection = [
            {
                "id": state.id,
                "score": float(score[p]),
                "value": float(vals[p]),
                "Q": float(terms["Q"][p]),
                "P": float(terms["P"][p]),
                "bonus": float(terms["bonus"][p]),
                "n": int(terms["n"][p]),
                "scale": float(terms["scale"]),
            }
            for p, state in zip(picked, picked_states, strict=True)
        ]
        return picked_states

    @staticmethod
    def _ranked(score: np.ndarray, vals: np.ndarray):
        """Positions by (score, value) descending, archive order among ties; lazily, best block first."""
        n_total = score.size
        if n_total > 4 * _FIRST_BLOCK:
            # Everything scoring at least the block's worst comes first, in full order;
            # the rest is sorted only if the walk gets that far.
            threshold = -np.partition(-score, _FIRST_BLOCK - 1)[_FIRST_BLOCK - 1]
            head = np.flatnonzero(score >= threshold)
            yield from head[np.lexsort((-vals[head], -score[head]))]
            rest = np.flatnonzero(~(score >= threshold))
        else:
            rest = np.arange(n_total)
        yield from rest[np.lexsort((-vals[rest], -score[rest]))]

    # -- reporting -------------------------------------------------------------------------------
    def best(self) -> State | None:
        """The archived state with the highest value (the first one among ties)."""
        if self._n_arch == 0:
            return None
        arch = self._arch[: self._n_arch]
        return self._obj[arch[int(np.argmax(self._val[arch]))]]

    def visits(self, state_or_id: State | str) -> int:
        """n(s): rollouts started from the state or any of its descendants."""
        self._flush()
        slot = self._slot.get(state_or_id if isinstance(state_or_id, str) else state_or_id.id)
        return 0 if slot is None else int(self._n[slot])

    def best_child_value(self, state_or_id: State | str) -> float | None:
        """m(s): the best value among the state's valid children so far, or None."""
        self._flush()
        slot = self._slot.get(state_or_id if isinstance(state_or_id, str) else state_or_id.id)
        return None if slot is None or np.isnan(self._m[slot]) else float(self._m[slot])

    # -- persistence -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Archive (in order), seed ids, n, m and T: JSON-serialisable."""
        self._flush()
        used = len(self._ids)
        visited = np.flatnonzero(self._n[:used] > 0)
        with_child = np.flatnonzero(~np.isnan(self._m[:used]))
        states = self.states
        return {
            "type": "puct",
            "params": {
                "c": self.c,
                "max_states": self.max_states,
                "children_per_parent": self.children_per_parent,
                "visit_normaliser": self.visit_normaliser,
            },
            "states": [plain(s.to_dict()) for s in states],  # numpy values in constructions become JSON
            "seeds": [s.id for s in states if self._is_seed[self._slot[s.id]]],
            "n": {self._ids[i]: int(self._n[i]) for i in visited},
            "m": {self._ids[i]: float(self._m[i]) for i in with_child},
            "T": self.T,
        }

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Restore what ``state_dict`` saved (the constructor's parameters stay)."""
        self._reset()
        seeds = set(d.get("seeds", ()))
        for sd in d["states"]:
            state = State.from_dict(sd)
            slot = self._slot_of(state.id)
            if state.id in seeds:
                self._is_seed[slot] = True
            elif state.parents:
                self._parent[slot] = self._slot_of(state.parents[0])
                self._touched.add(int(self._parent[slot]))  # a mid-step save may hold unpruned children
            self._archive(state, slot, dedup_key(state))
        for state_id, count in d.get("n", {}).items():
            self._n[self._slot_of(state_id)] = int(count)
        for state_id, best in d.get("m", {}).items():
            self._m[self._slot_of(state_id)] = float(best)
        self.T = int(d.get("T", 0))

    @classmethod
    def from_state_dict(cls, d: dict[str, Any]) -> PUCT:
        sampler = cls(**d.get("params", {}))
        sampler.load_state_dict(d)
        return sampler
