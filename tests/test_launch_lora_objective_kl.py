"""kl_in_reward: the TTRL form of the KL penalty (one term per rollout, in its reward) against a hand computation."""

import numpy as np
import pytest
import torch

from discover_ttt.backend import TrainItem
from discover_ttt.launch.lora import objective
from discover_ttt.launch.lora.params import LocalParams


def test_kl_in_reward_against_a_hand_computation():
    adv = [1.5, -0.5, 0.25]
    samp = [torch.tensor([-1.0, -2.0, -0.5]), torch.tensor([-0.2, -3.0]), torch.tensor([-0.7])]
    base = [torch.tensor([-1.2, -1.0, -0.9]), torch.tensor([-0.1, -2.0]), torch.tensor([-0.7])]
    masks = [
        torch.tensor([1.0, 1.0, 0.0]),
        torch.tensor([1.0, 1.0]),
        torch.tensor([1.0]),
    ]  # token 3 of rollout 0 forced
    lam = 0.1
    # K_i = Σ masked (samp − base): 0.2 − 1.0 = −0.8 | −0.1 − 1.0 = −1.1 | 0.0;  K̄ = −1.9 / 3
    k = [-0.8, -1.1, 0.0]
    k_mean = sum(k) / 3
    expect = [
        [1.5 - lam * (k[0] - k_mean)] * 2 + [0.0],
        [-0.5 - lam * (k[1] - k_mean)] * 2,
        [0.25 - lam * (k[2] - k_mean)],
    ]
    got, d_mean = objective.token_advantages(adv, masks, samp, base, lam, kl_in_reward=True)
    for g, e in zip(got, expect, strict=True):
        np.testing.assert_allclose(g.numpy(), e, atol=1e-6)
    assert d_mean == pytest.approx((0.2 - 1.0 - 0.1 - 1.0 + 0.0) / 5)
    # = the mean-baseline advantage of the penalised reward r − λK when A is that of r
    r = np.array([2.0, 0.0, 1.25])
    a_plain = r - r.mean()
    got2, _ = objective.token_advantages(a_plain.tolist(), masks, samp, base, lam, kl_in_reward=True)
    penalised = r - lam * np.array(k)
    np.testing.assert_allclose([float(g[0]) for g in got2], penalised - penalised.mean(), atol=1e-6)
    # λ = 0: nothing changes
    plain, _ = objective.token_advantages(adv, masks, samp, base, 0.0, kl_in_reward=True)
    np.testing.assert_allclose(plain[1].numpy(), [-0.5, -0.5])


def test_the_backend_config_selects_it(monkeypatch):
    from test_launch_local_backend import PROMPTS, make_backend

    assert LocalParams().kl_in_reward is False
    b = make_backend(kl_coef=0.1, kl_in_reward=True)
    comps = [c for g in b.sample(PROMPTS[:1], 2) for c in g]
    seen = {}
    real = objective.token_advantages

    def spy(*args, **kwargs):
        seen["args"] = args
        return real(*args, **kwargs)

    monkeypatch.setattr(objective, "token_advantages", spy)
    b.train([TrainItem(c, a) for c, a in zip(comps, [1.0, -1.0], strict=True)])
    assert seen["args"][-1] is True
