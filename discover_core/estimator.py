"""The estimator contract: what an advantage estimator plugin implements.

An estimator is a plain function from one group's rewards to its advantages::

    def my_estimator(rewards, my_param: float = 1.0, *, scores=None, correct=None) -> np.ndarray:
        ...

- ``rewards``: the group's G rewards, float64, shape (G,), in rollout order (a failed
  rollout's reward is 0). It is the first parameter.
- Config params: every other parameter, except the two below, is a key of the
  estimator's config section (``estimator: {name: my_estimator, my_param: 0.5}``),
  validated by a model built from the signature (unknown keys are refused) and bound once.
- Runtime inputs, asked for by name: an estimator that names ``scores`` gets each
  rollout's verified score (float64 (G,), NaN for a failure); one that names ``correct``
  gets whether each rollout was valid (bool (G,)). One that names neither gets neither.
  They are never config keys (``RUNTIME_ARGS``).
- It returns G advantages, one per reward, in order (anything ``np.asarray`` makes a
  float64 (G,) array of).
- The engine drops a group whose rewards are all equal before training
  (``run.drop_constant_groups``); the estimator still sees it.

Registered with ``register(fn, stats=..., check=...)`` (the ``register_estimators``
hook), two optional companions, both given the config params as keywords:

- ``stats(rewards, **params) -> dict``: numbers for the group's entry in the step event
  (the entropic estimators' β);
- ``check(rollouts, **params) -> None``: at config time, a ``ValueError`` for params that
  groups of ``rollouts`` rewards make meaningless.

``BoundEstimator`` is the engine's side: the function with its params and what it asks for.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

#: inputs the engine supplies at call time to an estimator that names them, never read from a config
RUNTIME_ARGS = ("scores", "correct")


class Estimator(Protocol):
    """``advantages_G = estimator(rewards_G, **params, [scores=scores_G], [correct=correct_G])``."""

    def __call__(self, rewards: np.ndarray, /, **kwargs: Any) -> Any: ...


class EstimatorStats(Protocol):
    """``stats(rewards_G, **params) -> dict`` of numbers for the group's log entry."""

    def __call__(self, rewards: np.ndarray, /, **params: Any) -> dict[str, Any]: ...


class EstimatorCheck(Protocol):
    """``check(rollouts, **params)``: raise ``ValueError`` for params groups of ``rollouts`` cannot use."""

    def __call__(self, rollouts: int, /, **params: Any) -> None: ...


def runtime_args(fn: Callable[..., Any]) -> frozenset[str]:
    """The runtime inputs (``RUNTIME_ARGS``) that ``fn`` names among its parameters: how it asks for them."""
    try:
        names = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a builtin or C callable without a signature asks for nothing
        return frozenset()
    return frozenset(name for name in RUNTIME_ARGS if name in names)


@dataclass(frozen=True)
class BoundEstimator:
    """A registered estimator with its config params: what a step calls, once per group."""

    fn: Estimator
    params: dict[str, Any] = field(default_factory=dict)
    stats: EstimatorStats | None = None
    asks: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "asks", runtime_args(self.fn))

    def advantages(self, rewards_G: np.ndarray, *, scores_G: np.ndarray, correct_G: np.ndarray) -> np.ndarray:
        """The group's advantages, float64 (G,); ``scores_G`` and ``correct_G`` reach it only if it asks."""
        given = {"scores": scores_G, "correct": correct_G}
        runtime = {name: given[name] for name in self.asks}
        return np.asarray(self.fn(rewards_G, **self.params, **runtime), dtype=np.float64)

    def group_stats(self, rewards_G: np.ndarray) -> dict[str, Any]:
        """What ``stats`` says about the group (nothing without ``stats`` or rewards)."""
        if self.stats is None or not len(rewards_G):
            return {}
        return dict(self.stats(rewards_G, **self.params))
