"""The State: one candidate solution in the archive.

Pure Python on purpose: samplers and estimators import this module and must stay
light (no pydantic, no torch).
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from typing import Any


def new_id() -> str:
    return uuid.uuid4().hex


@dataclass
class State:
    """A candidate solution.

    ``value`` is higher-is-better (a minimised score is stored negated) and may be
    ``None`` for a state that was never scored. ``score`` is the problem's own
    number (for Erdős, C5). ``parents`` lists ancestor ids, most recent first, so
    ``parents[0]`` is the direct parent; seeds have none.
    """

    id: str = field(default_factory=new_id)
    value: float | None = None
    score: float | None = None
    construction: Any = None
    code: str = ""
    stdout: str = ""
    step: int = -1
    parents: list[str] = field(default_factory=list)
    parent_values: list[float | None] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def is_seed(self) -> bool:
        return not self.parents

    def child(self, **fields: Any) -> State:
        """A new state whose lineage starts at this one."""
        return State(
            parents=[self.id, *self.parents],
            parent_values=[self.value, *self.parent_values],
            **fields,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> State:
        return cls(**d)
