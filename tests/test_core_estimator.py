"""The estimator contract (discover_core/estimator.py): params bound once, runtime inputs only to who asks."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from discover_ttt.components import build_estimator, params_model
from discover_ttt.estimator import RUNTIME_ARGS, BoundEstimator, runtime_args
from discover_ttt.estimators import entropic_adaptive, grpo_nsr
from discover_ttt.plugins import get_plugins

ROOT = Path(__file__).resolve().parents[1]
REWARDS_G = np.array([0.0, 0.5, 1.0, 0.25])
SCORES_G = np.array([np.nan, 0.5, 1.0, 0.25])
CORRECT_G = np.array([False, True, True, True])


def plain(rewards, scale: float = 1.0):
    return scale * (rewards - rewards.mean())


def wants_scores(rewards, *, scores):
    return np.nan_to_num(scores)


def takes_anything(rewards, **kwargs):
    assert kwargs == {}, kwargs  # **kwargs names neither input: it is given neither
    return rewards


def test_runtime_inputs_reach_only_an_estimator_that_names_them():
    call = dict(scores_G=SCORES_G, correct_G=CORRECT_G)
    assert BoundEstimator(plain, {"scale": 2.0}).advantages(REWARDS_G, **call).tolist() == [
        -0.875,
        0.125,
        1.125,
        -0.375,
    ]
    assert BoundEstimator(wants_scores).advantages(REWARDS_G, **call).tolist() == [0.0, 0.5, 1.0, 0.25]
    assert BoundEstimator(takes_anything).advantages(REWARDS_G, **call).tolist() == REWARDS_G.tolist()
    assert runtime_args(grpo_nsr) == {"scores", "correct"} and runtime_args(entropic_adaptive) == frozenset()
    assert runtime_args(len) == frozenset()  # no Python signature: asks for nothing


def test_a_registered_estimator_is_bound_with_its_params_and_stats():
    entry = get_plugins().get("estimators", "entropic_adaptive")
    params = params_model(entry.obj)(kl_target=0.3)
    bound = build_estimator(entry.obj, params, entry.extra.get("stats"))
    assert bound.params == {"kl_target": 0.3} and bound.asks == frozenset()
    got = bound.advantages(REWARDS_G, scores_G=SCORES_G, correct_G=CORRECT_G)
    np.testing.assert_allclose(got, entropic_adaptive(REWARDS_G, kl_target=0.3), rtol=1e-12)
    assert set(bound.group_stats(REWARDS_G)) == {"beta"} and bound.group_stats(np.array([])) == {}
    assert BoundEstimator(plain).group_stats(REWARDS_G) == {}  # no stats registered


def test_grpo_nsr_gets_the_correct_flags_it_names():
    entry = get_plugins().get("estimators", "grpo_nsr")
    bound = build_estimator(entry.obj, params_model(entry.obj)(w_pos=0.25))
    got = bound.advantages(REWARDS_G, scores_G=SCORES_G, correct_G=CORRECT_G)
    np.testing.assert_allclose(got, grpo_nsr(REWARDS_G, w_pos=0.25, correct=CORRECT_G), rtol=1e-12)


class Scaled:
    """An estimator written as a class: its __init__ keywords are the config keys, its instances are called."""

    def __init__(self, scale: float = 1.0):
        self.scale = scale

    def __call__(self, rewards, correct=None):
        return self.scale * correct.astype(float)


def test_a_class_estimator_is_built_once_and_called():
    bound = build_estimator(Scaled, params_model(Scaled)(scale=3.0))
    assert bound.asks == {"correct"}
    assert bound.advantages(REWARDS_G, scores_G=SCORES_G, correct_G=CORRECT_G).tolist() == [0.0, 3.0, 3.0, 3.0]


def test_runtime_inputs_are_never_config_keys():
    assert set(params_model(grpo_nsr).model_fields).isdisjoint(RUNTIME_ARGS)
    with pytest.raises(Exception, match="scores"):
        params_model(grpo_nsr)(scores=[1.0])


def test_the_runtime_inputs_are_named_in_one_place():
    """The contract's names are written once (estimator.RUNTIME_ARGS); the engine does not sniff partials."""
    pattern = re.compile(r"""["']scores["']\s*,\s*["']correct["']|["']correct["']\s*,\s*["']scores["']""")
    sources = [p for p in (ROOT / "discover_core").rglob("*.py") if pattern.search(p.read_text())]
    assert [p.name for p in sources] == ["estimator.py"]
    assert not [p for p in (ROOT / "discover_core").rglob("*.py") if ".keywords" in p.read_text()]
