"""State samplers: which archived candidates the next rollouts start from.

    from discover_ttt.samplers import PUCT, State
    sampler = PUCT(c=1.0, max_states=1000, children_per_parent=2)
    sampler.seed(initial_states)
    parents = sampler.select(8)
    sampler.record(parent, child_or_None)   # once per rollout
    sampler.end_step()

Imports nothing heavier than numpy. See docs/library.md.
"""

from discover_ttt.state import State

from .archive import dedup_key
from .base import Sampler
from .puct import PUCT
from .simple import Greedy, NoReuse

__all__ = ["PUCT", "Greedy", "NoReuse", "Sampler", "State", "dedup_key"]
