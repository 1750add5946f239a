"""Baseline-subtracted estimators: expected reward, GRPO and GRPO-NSR.

All work on one group's raw rewards r_1 … r_k, in float64; fewer than 2 rewards
give zeros (there is no baseline to compare against).
"""

from __future__ import annotations

import numpy as np

from .tilt import _as_rewards

EPS_STD = 1e-6


def mean_baseline(rewards) -> np.ndarray:
    """A_n = r_n − mean(r) (the "expected reward" ablation)."""
    rewards_G = _as_rewards(rewards)
    if rewards_G.size < 2:
        return np.zeros(rewards_G.size, dtype=np.float64)
    return rewards_G - rewards_G.mean()


def _grpo_base(rewards_G: np.ndarray, normalize_std: bool, eps_std: float) -> np.ndarray:
    centred_G = rewards_G - rewards_G.mean()
    if normalize_std:
        centred_G = centred_G / (rewards_G.std(ddof=1) + eps_std)  # sample std, as in verl
    return centred_G


def grpo(rewards, *, normalize_std: bool = True, eps_std: float = EPS_STD) -> np.ndarray:
    """A_n = (r_n − mean r) / (std r + 1e-6), std with divisor k − 1; without the division if not ``normalize_std``."""
    rewards_G = _as_rewards(rewards)
    if rewards_G.size < 2:
        return np.zeros(rewards_G.size, dtype=np.float64)
    return _grpo_base(rewards_G, normalize_std, eps_std)


def grpo_nsr(
    rewards,
    *,
    w_pos: float = 1.0,
    w_neg: float = 1.0,
    correct_threshold: float | None = None,
    normalize_std: bool = True,
    eps_std: float = EPS_STD,
    scores=None,
    correct=None,
) -> np.ndarray:
    """GRPO with separate weights for correct and incorrect samples.

        base_n = (r_n − mean r) / (std r + eps_std)   (or r_n − mean r without ``normalize_std``)
        A_n    = w_pos · base_n if correct_n else w_neg · base_n

    correct_n is ``scores[n] ≥ correct_threshold`` when a threshold is set
    (``scores`` are the raw verifier scores, NaN for failures, and default to the
    rewards), else the ``correct`` flags (the rollout was valid). w_pos = w_neg = 1
    is GRPO; w_pos = 0 trains on negative samples only.
    """
    rewards_G = _as_rewards(rewards)
    k = rewards_G.size
    if correct_threshold is not None:
        scores_G = rewards_G if scores is None else np.asarray(scores, dtype=np.float64)
        if scores_G.shape != rewards_G.shape:
            raise ValueError(f"grpo_nsr: scores have shape {scores_G.shape}, rewards {rewards_G.shape}")
        with np.errstate(invalid="ignore"):
            correct_G = scores_G >= correct_threshold  # NaN (a failure) is never correct
    elif correct is not None:
        correct_G = np.asarray(correct, dtype=bool)
        if correct_G.shape != rewards_G.shape:
            raise ValueError(f"grpo_nsr: correct has shape {correct_G.shape}, rewards {rewards_G.shape}")
    else:
        raise ValueError(
            "grpo_nsr needs to know which samples are correct: pass correct= (a bool per sample), "
            "or set correct_threshold to judge scores (or the rewards) against it."
        )
    if k < 2:
        return np.zeros(k, dtype=np.float64)
    base_G = _grpo_base(rewards_G, normalize_std, eps_std)
    return np.where(correct_G, w_pos * base_G, w_neg * base_G)
