"""Advantage estimators: the entropic β solve, leave-one-out values, baselines, registration."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import discover_ttt.estimators.tilt as entropic_module
from discover_ttt.components import build
from discover_ttt.estimators import (
    entropic,
    entropic_adaptive,
    grpo,
    grpo_nsr,
    kl_to_uniform,
    mean_baseline,
    solve_beta,
)
from discover_ttt.plugins import Plugins

ALL = [entropic_adaptive, entropic, mean_baseline, grpo]


@pytest.fixture(autouse=True)
def quiet_small_groups():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def groups(seed=0):
    """Typical groups: many failures (reward 0), continuous rewards, small and large k."""
    rng = np.random.default_rng(seed)
    out = []
    for k in (4, 8, 16, 64):
        out.append(rng.random(k))
        r = rng.random(k) * 3
        r[: k // 2] = 0.0
        out.append(r)
        out.append(rng.normal(size=k) * 1e-3 + 5.0)
    return out


def direct_kl(rewards, beta):
    q = np.array([math.exp(beta * x) for x in rewards])
    q /= q.sum()
    return sum(p * math.log(p * len(rewards)) for p in q if p > 0)


def test_kl_at_the_solved_beta_is_ln2():
    for rewards in groups():
        beta = solve_beta(rewards)
        assert 0 < beta < 2**20
        assert abs(kl_to_uniform(rewards, beta) - math.log(2)) <= 1e-9
        assert kl_to_uniform(rewards, beta) == pytest.approx(direct_kl(rewards - rewards.max(), beta), abs=1e-12)


def test_typical_regime_half_failures():
    # 32 failures (r = 0) and 32 valid rewards spread around 2.62: β is small (≈ 2.95), so the update
    # mostly separates valid from invalid rollouts. The root is checked against an independent solve
    # (Brent's method on the directly summed KL), not a range.
    from scipy.optimize import brentq

    rewards = np.r_[np.zeros(32), np.linspace(2.57, 2.67, 32)]
    beta = solve_beta(rewards)
    root = brentq(lambda b: direct_kl(rewards - rewards.max(), b) - math.log(2), 1e-3, 1e3, xtol=1e-14)
    assert beta == pytest.approx(root, rel=1e-9)
    assert 2.9 < beta < 3.0
    # with the 32 valid rewards exactly tied, q tends to uniform over those 32 as β → ∞, where KL = ln 2:
    # KL only approaches ln 2 from below (KL(3.7) ≈ 0.69249), so no small β solves it
    tied = np.r_[np.zeros(32), np.full(32, 2.62)]
    assert direct_kl(tied - tied.max(), 3.7) < math.log(2) - 5e-4
    assert solve_beta(tied) > 20


def test_unreachable_target_gives_the_bracket_cap():
    rewards = np.r_[np.ones(40), np.linspace(0.0, 0.5, 24)]  # 40 of 64 tied at the max: KL < ln(64/40) < ln 2
    assert solve_beta(rewards) == 2.0**20
    advantages = entropic_adaptive(rewards)
    np.testing.assert_allclose(advantages[:40], 63 / 39 - 1, rtol=1e-9)  # ≈ +0.615
    np.testing.assert_allclose(advantages[40:], -1.0, atol=1e-9)
    assert solve_beta([2.0, 2.0, 2.0, 1.0]) == 2.0**20


def test_two_distinct_rewards_give_the_huge_advantage():
    advantages = entropic_adaptive([0.0, 1.0])
    assert advantages[0] == pytest.approx(-1.0)
    assert advantages[1] == pytest.approx(1e12, rel=1e-5)  # KL saturates in float64 near β ≈ 40


@pytest.mark.parametrize("scale, shift", [(0.5, 0.0), (3.0, -7.0), (100.0, 2.0), (1e-3, 1e3)])
def test_invariant_to_positive_affine_transforms(scale, shift):
    for rewards in groups(seed=1):
        if solve_beta(rewards) * max(1.0, 1 / scale) >= 2**19:
            continue  # near the β cap the invariance no longer holds
        a = entropic_adaptive(rewards)
        b = entropic_adaptive(scale * rewards + shift)
        np.testing.assert_allclose(b, a, rtol=1e-7, atol=1e-9)
        beta_ratio = solve_beta(scale * rewards + shift) * scale / solve_beta(rewards)
        assert beta_ratio == pytest.approx(1.0, rel=1e-6)
    # constant β and the mean baseline are not invariant (that is the point of the adaptive β)
    r = np.array([0.0, 1.0, 2.0, 3.0])
    assert not np.allclose(entropic(3 * r), entropic(r))


def leave_one_out_direct(rewards, beta):
    k = len(rewards)
    m = max(rewards)
    e = [math.exp(beta * (x - m)) for x in rewards]
    return np.array([e[n] / (math.fsum(e[:n] + e[n + 1 :]) / (k - 1) + 1e-12) - 1 for n in range(k)])


def test_leave_one_out_against_a_direct_computation():
    for rewards in groups(seed=2):
        beta = solve_beta(rewards)
        np.testing.assert_allclose(entropic_adaptive(rewards), leave_one_out_direct(rewards, beta), rtol=1e-11)
        np.testing.assert_allclose(entropic(rewards, beta=2.0), leave_one_out_direct(rewards, 2.0), rtol=1e-11)
    # a dominant sample (large β): Σe − e_n would cancel, the direct sum does not
    rewards = np.array([0.0, 0.0, 0.0, 1.0])
    np.testing.assert_allclose(entropic(rewards, beta=30.0), leave_one_out_direct(rewards, 30.0), rtol=1e-9)


def test_entropic_advantages_are_self_normalised():
    # with β fixed, the LOO weights average to ≈ 1, so advantages average to ≈ 0 for large groups
    rewards = np.random.default_rng(5).random(4096)
    assert abs(entropic(rewards, beta=1.0).mean()) < 1e-3


@pytest.mark.parametrize("fn", ALL + [lambda r: grpo_nsr(r, correct_threshold=0.5)])
def test_constant_groups_and_tiny_groups_give_zeros(fn):
    for rewards in ([1.5] * 8, [0.0] * 64, [3.0, 3.0]):
        out = fn(np.array(rewards))
        assert out.dtype == np.float64 and out.shape == (len(rewards),)
        assert np.all(out == 0.0)
    assert fn(np.array([2.0])).tolist() == [0.0]
    assert fn(np.zeros(0)).shape == (0,)


def test_k_below_two_gives_beta_zero_and_bad_input_is_an_error():
    assert solve_beta([1.0]) == 0.0 and solve_beta([]) == 0.0
    with pytest.raises(ValueError, match="1-D"):
        entropic_adaptive(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="finite"):
        grpo([0.0, np.nan, 1.0])


def test_warns_once_for_groups_below_four(monkeypatch):
    monkeypatch.setattr(entropic_module, "_warned_small_group", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        entropic_adaptive([0.0, 1.0, 2.0])
        entropic_adaptive([0.0, 1.0])
        entropic_adaptive([0.0, 1.0, 2.0, 3.0])
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "3 rewards" in messages[0]


def test_mean_baseline_and_grpo():
    r = np.array([0.0, 1.0, 2.0, 5.0])
    np.testing.assert_allclose(mean_baseline(r), r - 2.0)
    std = math.sqrt(sum((x - 2.0) ** 2 for x in r) / 3)  # sample std, divisor k − 1
    np.testing.assert_allclose(grpo(r), (r - 2.0) / (std + 1e-6))
    np.testing.assert_allclose(grpo(r, normalize_std=False), r - 2.0)
    assert grpo(r).dtype == np.float64 and mean_baseline([1, 2]).dtype == np.float64


def test_grpo_nsr_weights_by_correctness():
    r = np.array([0.0, 0.2, 0.6, 1.0])
    base = grpo(r)
    np.testing.assert_allclose(grpo_nsr(r, correct_threshold=0.5), base)  # w = 1, 1 is GRPO
    np.testing.assert_allclose(grpo_nsr(r, w_pos=0.0, correct_threshold=0.6), [base[0], base[1], 0.0, 0.0])
    scores = np.array([np.nan, 3.0, 1.0, 2.0])  # raw scores; NaN = failed rollout, never correct
    np.testing.assert_allclose(
        grpo_nsr(r, w_pos=0.1, w_neg=2.0, correct_threshold=2.0, scores=scores),
        [2 * base[0], 0.1 * base[1], 2 * base[2], 0.1 * base[3]],
    )
    correct = np.array([False, True, True, False])
    np.testing.assert_allclose(
        grpo_nsr(r, w_pos=0.5, correct=correct, normalize_std=False),
        [r[0] - r.mean(), 0.5 * (r[1] - r.mean()), 0.5 * (r[2] - r.mean()), r[3] - r.mean()],
    )
    with pytest.raises(ValueError, match="correct"):
        grpo_nsr(r)


def test_registered_with_stats_and_buildable_from_config():
    import discover_ttt.estimators.plugin

    plugins = Plugins()
    plugins.add_module(discover_ttt.estimators.plugin, name="estimators")
    reg = plugins.registries["estimators"]
    assert set(reg.names()) >= {"entropic_adaptive", "entropic", "mean_baseline", "grpo", "grpo_nsr"}
    rewards = np.array([0.0, 0.0, 1.0, 2.0, 4.0])
    adaptive = reg.get("entropic_adaptive")
    assert adaptive.extra["stats"](rewards) == {"beta": solve_beta(rewards)}
    fn = build(reg.get("entropic").obj, {"beta": 0.5})
    assert reg.get("entropic").extra["stats"](rewards, **fn.keywords) == {"beta": 0.5}
    np.testing.assert_allclose(fn(rewards), entropic(rewards, beta=0.5))
    nsr = build(reg.get("grpo_nsr").obj, {"w_pos": 0.1, "correct_threshold": 1.0})
    assert "scores" not in nsr.keywords and "correct" not in nsr.keywords
    np.testing.assert_allclose(nsr(rewards, scores=rewards), grpo_nsr(rewards, w_pos=0.1, correct_threshold=1.0))
    with pytest.raises(Exception, match="betaa"):
        build(reg.get("entropic").obj, {"betaa": 1.0})
    assert discover_ttt.estimators.__all__


# -- the exact procedure of the spec, and the edges of the public API ------------------------------
def spec_solve_beta(rewards, kl_target=math.log(2)):
    """Reference-algorithm §4.2 as plainly as possible: hi = 1, doubled while hi < 1e6 and
    KL(hi) < target (then hi = 2^20 is returned if the target is still out of reach), else
    60 bisections on [0, hi] returning the upper end. KL summed directly."""
    r = np.asarray(rewards, dtype=np.float64)

    def kl(beta):
        return direct_kl(r - r.max(), beta)

    if r.size < 2:
        return 0.0
    hi = 1.0
    while hi < 1e6 and kl(hi) < kl_target:
        hi *= 2.0
    if kl(hi) < kl_target:
        return hi
    lo = 0.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if kl(mid) < kl_target else (lo, mid)
    return hi


def test_solve_beta_is_the_specs_procedure_to_the_last_bisection():
    rng = np.random.default_rng(5)
    cases = groups(seed=3) + [
        rng.random(16) * 10,  # KL(1) is already above ln 2: no doubling, bisection on [0, 1]
        np.r_[np.zeros(6), rng.random(10) * 40],
        np.array([0.0, 0.0, 0.0, 0.05, 0.1, 0.2, 0.21, 0.3]),
        np.r_[np.ones(40), np.linspace(0.0, 0.5, 24)],  # out of reach: 2^20
    ]
    for rewards in cases:
        for kl_target in (math.log(2), 0.3):
            got, want = solve_beta(rewards, kl_target), spec_solve_beta(rewards, kl_target)
            # the two KL sums differ in their last bits, which moves the root by a few ulps at most; a
            # different bracket (e.g. bisecting [0, 2^20] instead of [0, 2^k]) would end ~1e-12 away
            assert got == pytest.approx(want, rel=1e-14, abs=0), (rewards, kl_target, got, want)
    assert kl_to_uniform([1.0], 3.0) == 0.0 and kl_to_uniform([], 3.0) == 0.0


def test_the_first_small_group_of_a_process_warns_at_the_callers_line():
    code = (
        "import warnings\n"
        "warnings.simplefilter('always')\n"
        "from discover_ttt.estimators import entropic_adaptive\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    entropic_adaptive([])\n"
        "    entropic_adaptive([0.0, 1.0, 2.0, 3.0])\n"
        "    entropic_adaptive([0.0, 1.0, 2.0])  # line 8\n"
        "    entropic_adaptive([0.0, 1.0])\n"
        "print([(str(w.message)[:40], w.lineno) for w in caught])\n"
    )
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # only the group of 3 warns: not the empty one, not 4, and only once per process
    assert out.stdout.strip() == "[('entropic_adaptive got a group of 3 rewar', 8)]"


def test_estimator_options_are_keyword_only_with_the_documented_defaults():
    r = np.array([0.0, 0.5, 1.0, 3.0])
    for fn in (entropic_adaptive, entropic):
        with pytest.raises(TypeError):
            fn(r, 0.3)
    np.testing.assert_array_equal(entropic(r), entropic(r, beta=2.0))
    np.testing.assert_array_equal(entropic_adaptive(r), entropic_adaptive(r, kl_target=math.log(2)))
    with pytest.raises(ValueError, match=r"got \[nan, inf, -inf\] among them"):
        entropic_adaptive([np.nan, np.inf, -np.inf, np.nan, 1.0])


# -- settings that cannot work are refused --------------------------------------------------
@pytest.mark.parametrize("kl_target", [0.0, -0.5, float("nan"), float("inf")])
def test_a_kl_target_that_is_not_positive_is_refused(kl_target):
    r = np.array([0.0, 0.5, 1.0, 3.0])
    for fn in (entropic_adaptive, solve_beta):
        with pytest.raises(ValueError, match="kl_target must be a finite number > 0"):
            fn(r, kl_target=kl_target)
    with pytest.raises(ValueError, match="kl_target"):
        entropic_adaptive(np.ones(4), kl_target=0.0)  # even where the group is constant


def test_an_unreachable_kl_target_is_refused_rather_than_giving_1e12():
    r = np.array([0.0, 0.5, 1.0, 3.0])  # KL to uniform stays below ln 4 ≈ 1.386
    with pytest.raises(ValueError, match=r"out of reach for a group of 4 rewards.*ln 4 = 1.386"):
        entropic_adaptive(r, kl_target=1.5)
    assert np.abs(entropic_adaptive(r, kl_target=1.3)).max() < 1e6  # reachable: a bounded advantage
    # the method's own edge (ln 2 with two rewards) stays as the reference runs it, with its warning
    assert entropic_adaptive([0.0, 1.0])[1] == pytest.approx(1e12, rel=1e-5)
    with pytest.raises(ValueError, match="out of reach"):
        entropic_adaptive([0.0, 1.0], kl_target=0.7)


def test_a_constant_group_reports_no_beta():
    from discover_ttt.estimators.plugin import _adaptive_stats

    assert _adaptive_stats(np.full(8, 0.3)) == {} and _adaptive_stats([1.0]) == {}
    assert 0 < _adaptive_stats(np.array([0.0, 1.0, 2.0, 3.0]))["beta"] < 2**20


def test_a_config_with_an_unreachable_kl_target_is_a_config_error(tmp_path):
    from pathlib import Path

    from discover_ttt.config import ConfigError, load_config

    config = Path(__file__).parent / "toy" / "config.yaml"
    with pytest.raises(ConfigError, match=r"estimator 'entropic_adaptive' with run.rollouts=4: kl_target 1.5"):
        load_config(config, ["estimator.kl_target=1.5"])
    with pytest.raises(ConfigError, match="kl_target must be"):
        load_config(config, ["estimator.kl_target=0"])
    load_config(config, ["estimator.kl_target=1.0"])
