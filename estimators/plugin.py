"""Registers the built-in estimators, each with a ``stats`` callable for the run log."""

import numpy as np

from discover_ttt import hookimpl

from .baselines import grpo, grpo_nsr, mean_baseline
from .tilt import LN2, check_kl_target, entropic, entropic_adaptive, solve_beta


def _adaptive_stats(rewards, *, kl_target: float = LN2, **_params) -> dict:
    """β of the group; none for a constant group (zero advantages: no β was used, and solve_beta's cap would mislead)."""
    rewards_G = np.asarray(rewards, dtype=np.float64)
    if rewards_G.size < 2 or rewards_G.max() == rewards_G.min():
        return {}
    return {"beta": solve_beta(rewards_G, kl_target)}


def _adaptive_check(rollouts: int, *, kl_target: float = LN2, **_params) -> None:
    """At config time: a kl_target that groups of ``rollouts`` rewards cannot reach is a ValueError."""
    check_kl_target(kl_target, rollouts)


def _constant_stats(rewards, *, beta: float = 2.0, **_params) -> dict:
    return {"beta": float(beta)}


@hookimpl
def register_estimators(register):
    register(entropic_adaptive, stats=_adaptive_stats, check=_adaptive_check)
    register(entropic, stats=_constant_stats)
    register(mean_baseline)
    register(grpo)
    register(grpo_nsr)
