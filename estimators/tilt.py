"""Entropic advantages: the method's estimator and its constant-β ablation.

The objective is J_β = log E[exp(β R)]; its gradient weights each sample by
w = exp(βR) / E[exp(βR)], so the advantage is A = w − 1. The expectation is
estimated leave-one-out within the group:

    e_n    = exp(β (r_n − max r))
    Z_{−n} = Σ_{m≠n} e_m / (k − 1)
    A_n    = e_n / (Z_{−n} + 1e-12) − 1

``entropic_adaptive`` picks β per group so that the tilted distribution
q_β = softmax(β r) sits at KL(q_β ‖ uniform) = ln 2, which makes the advantages
invariant to positive affine transforms of the rewards (while β < 2^20).
Everything is computed in float64.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

LN2 = math.log(2.0)
BETA_MAX = 1e6  # the bracket stops doubling once hi reaches this, so hi ends at 2^20
BISECTION_STEPS = 60
LOO_EPS = 1e-12
SMALL_GROUP = 4  # below this the adaptive β is unstable (k = 2 gives A ≈ 1e12)

_warned_small_group = False


def _as_rewards(rewards) -> np.ndarray:
    rewards_G = np.asarray(rewards, dtype=np.float64)
    if rewards_G.ndim != 1:
        raise ValueError(
            f"an estimator takes one group's rewards as a 1-D array, got shape {rewards_G.shape}; "
            "call it once per group."
        )
    if not np.all(np.isfinite(rewards_G)):
        raise ValueError(
            f"rewards must be finite, got {rewards_G[~np.isfinite(rewards_G)][:3].tolist()} among them; "
            "give failed rollouts a reward of 0 rather than NaN or inf."
        )
    return rewards_G


def kl_to_uniform(rewards, beta: float) -> float:
    """KL(softmax(β r) ‖ uniform) = Σ q_n log q_n + log k, in nats."""
    rewards_G = np.asarray(rewards, dtype=np.float64)
    k = rewards_G.size
    if k < 2:
        return 0.0
    logits_G = beta * (rewards_G - rewards_G.max())  # ≤ 0, the max entry is exactly 0
    log_z = math.log(np.exp(logits_G).sum())  # the sum is ≥ 1, so this never underflows
    log_q_G = logits_G - log_z
    q_G = np.exp(log_q_G)
    return float(np.dot(q_G, log_q_G) + math.log(k))


def check_kl_target(kl_target: float, k: int) -> float:
    """``kl_target`` if a group of ``k`` rewards can reach it, else a ValueError that says why.

    KL(softmax(β r) ‖ uniform) lies in [0, ln k): a target ≤ 0 would ask for β = 0
    (no learning signal), and one ≥ ln k is never reached, so β would end at the cap
    and the best sample's advantage near 1e12. The one exception is the method's own
    edge, ln 2 with k = 2: kept as the reference runs it, with the small-group warning.
    """
    target = float(kl_target)
    if not (math.isfinite(target) and target > 0):
        raise ValueError(
            f"kl_target must be a finite number > 0 (nats; the method uses ln 2 ≈ 0.693), got {kl_target!r}"
        )
    if k >= 2 and target >= math.log(k) and not (k == 2 and target == LN2):
        raise ValueError(
            f"kl_target {target:g} is out of reach for a group of {k} rewards: KL to uniform stays below "
            f"ln {k} = {math.log(k):.4g}, so β would run to its cap and the best sample's advantage to about 1e12. "
            f"Use a kl_target below {math.log(k):.4g}, or more than {math.exp(target):.3g} rollouts per group."
        )
    return target


def solve_beta(rewards, kl_target: float = LN2) -> float:
    """The β at which KL(softmax(β r) ‖ uniform) reaches ``kl_target``.

    KL(β) rises monotonically from 0 (β = 0) towards ln(k/m), m = the number of
    rewards tied at the maximum. Bracket: hi = 1, doubled while hi < 1e6 and
    KL(hi) < target; if the target is still out of reach, return hi (= 2^20, the
    "best effort" β: this happens when at least half the group ties at the max,
    and for constant groups). Otherwise 60 bisection steps on [0, hi], returning
    the upper end, so KL(β) ≥ target. Fewer than 2 rewards: β = 0. A target that
    no group of this size can reach is a ValueError (``check_kl_target``).
    """
    rewards_G = _as_rewards(rewards)
    kl_target = check_kl_target(kl_target, rewards_G.size)
    if rewards_G.size < 2:
        return 0.0
    hi = 1.0
    if kl_to_uniform(rewards_G, hi) < kl_target:
        while hi < BETA_MAX and kl_to_uniform(rewards_G, hi) < kl_target:
            hi *= 2.0
        if kl_to_uniform(rewards_G, hi) < kl_target:
            return hi
    lo = 0.0
    for _ in range(BISECTION_STEPS):
        mid = 0.5 * (lo + hi)
        if kl_to_uniform(rewards_G, mid) < kl_target:
            lo = mid
        else:
            hi = mid
    return hi


def _leave_one_out(rewards_G: np.ndarray, beta: float) -> np.ndarray:
    """A_n = e_n / (Z_{−n} + 1e-12) − 1 with the LOO mean Z_{−n} of the other e_m."""
    k = rewards_G.size
    if k < 2 or rewards_G.max() == rewards_G.min():
        return np.zeros(k, dtype=np.float64)  # no signal: exactly zero, not ≈ −1e-12
    e_G = np.exp(beta * (rewards_G - rewards_G.max()))
    # Σ_{m≠n} e_m from prefix and suffix sums: no cancellation when e_n dominates
    # the group (large β), where Σe − e_n would lose all its digits.
    before_G = np.concatenate(([0.0], np.cumsum(e_G)[:-1]))
    after_G = np.concatenate((np.cumsum(e_G[::-1])[-2::-1], [0.0]))
    z_loo_G = (before_G + after_G) / (k - 1)
    return e_G / (z_loo_G + LOO_EPS) - 1.0


def entropic_adaptive(rewards, *, kl_target: float = LN2) -> np.ndarray:
    """Entropic advantages with β solved per group (the method's default).

    β = solve_beta(rewards, kl_target), then the leave-one-out formula of the
    module docstring. Fewer than 2 rewards, or all equal: zeros. A ``kl_target`` ≤ 0,
    or one the group size cannot reach (≥ ln k), is a ValueError. Warns once when
    a group has fewer than 4 rewards: β is then ill-conditioned (k = 2 with
    distinct rewards gives the better sample A ≈ 1e12).
    """
    global _warned_small_group
    rewards_G = _as_rewards(rewards)
    check_kl_target(kl_target, rewards_G.size)  # also for constant groups: a bad setting fails at once
    if 0 < rewards_G.size < SMALL_GROUP and not _warned_small_group:
        _warned_small_group = True
        warnings.warn(
            f"entropic_adaptive got a group of {rewards_G.size} rewards; with fewer than {SMALL_GROUP} the "
            "solved β is unstable (2 distinct rewards give an advantage near 1e12). "
            "Use more rollouts per group or a constant-β estimator.",
            RuntimeWarning,
            stacklevel=2,
        )
    if rewards_G.size < 2 or rewards_G.max() == rewards_G.min():
        return np.zeros(rewards_G.size, dtype=np.float64)
    return _leave_one_out(rewards_G, solve_beta(rewards_G, kl_target))


def entropic(rewards, *, beta: float = 2.0) -> np.ndarray:
    """Entropic advantages with a constant β (the "constant β = 2" ablation)."""
    return _leave_one_out(_as_rewards(rewards), float(beta))
