"""Advantage estimators: plain functions from one group's rewards to advantages.

    from discover_ttt.estimators import entropic_adaptive
    advantages_G = entropic_adaptive(rewards_G)   # float64, same shape

Imports nothing heavier than numpy. See docs/library.md; the contract an estimator meets
(and how it asks for the group's ``scores`` or ``correct`` flags) is ``discover_core/estimator.py``.
"""

from .baselines import grpo, grpo_nsr, mean_baseline
from .tilt import entropic, entropic_adaptive, kl_to_uniform, solve_beta

__all__ = ["entropic_adaptive", "entropic", "mean_baseline", "grpo", "grpo_nsr", "solve_beta", "kl_to_uniform"]
