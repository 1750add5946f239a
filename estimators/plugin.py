"""Registers the built-in estimators, each with a ``stats`` callable for the run log."""

from discover_ttt import hookimpl

from .baselines import grpo, grpo_nsr, mean_baseline
from .tilt import LN2, entropic, entropic_adaptive, solve_beta


def _adaptive_stats(rewards, *, kl_target: float = LN2, **_params) -> dict:
    return {"beta": solve_beta(rewards, kl_target)}


def _constant_stats(rewards, *, beta: float = 2.0, **_params) -> dict:
    return {"beta": float(beta)}


@hookimpl
def register_estimators(register):
    register(entropic_adaptive, stats=_adaptive_stats)
    register(entropic, stats=_constant_stats)
    register(mean_baseline)
    register(grpo)
    register(grpo_nsr)
