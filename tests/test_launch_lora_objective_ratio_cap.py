"""Truncated importance sampling (``ratio_cap``): the capped loss and its gradient by hand, and
the trainer using it only when asked."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from discover_ttt.backend import Completion, TrainItem  # noqa: E402
from discover_ttt.launch.lora import objective  # noqa: E402
from discover_ttt.launch.lora.params import TrainerParams  # noqa: E402
from discover_ttt.launch.lora.trainer import Trainer  # noqa: E402

LEARNER = [-1.0, -2.0, -0.5]
SAMPLER = [-1.5, -1.9, -2.0]
ADV = [1.0, -2.0, 0.5]


def test_capped_loss_and_gradient_match_a_hand_computation():
    cap = 1.2
    lp = torch.tensor(LEARNER, dtype=torch.float64, requires_grad=True)
    loss = objective.truncated_is_loss(lp, torch.tensor(SAMPLER, dtype=torch.float64), torch.tensor(ADV), cap)
    loss.backward()
    # ratios e^0.5 = 1.649 (capped to 1.2), e^-0.1 = 0.905, e^1.5 = 4.482 (capped to 1.2)
    weights = [min(math.exp(a - b), cap) for a, b in zip(LEARNER, SAMPLER, strict=True)]
    assert weights[0] == cap and weights[2] == cap and weights[1] == pytest.approx(math.exp(-0.1))
    assert float(loss.detach()) == pytest.approx(-sum(w * a for w, a in zip(weights, ADV, strict=True)), rel=1e-12)
    # d/dℓ_t of −w_t·A_t·e^(ℓ_t − sg(ℓ_t)) = −w_t·A_t
    assert lp.grad.tolist() == pytest.approx([-w * a for w, a in zip(weights, ADV, strict=True)], rel=1e-12)


def test_a_cap_no_ratio_reaches_is_the_uncapped_loss():
    args = [torch.tensor(SAMPLER, dtype=torch.float64), torch.tensor(ADV, dtype=torch.float64)]
    a = torch.tensor(LEARNER, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(LEARNER, dtype=torch.float64, requires_grad=True)
    capped, plain = objective.truncated_is_loss(a, *args, cap=100.0), objective.is_loss(b, *args)
    capped.backward()
    plain.backward()
    assert float(capped) == pytest.approx(float(plain), rel=1e-12)
    assert a.grad.tolist() == pytest.approx(b.grad.tolist(), rel=1e-12)


def _step(ratio_cap):
    params = TrainerParams(model="tiny-random", device="cpu", lr=1e-3, kl_coef=0.0, ratio_cap=ratio_cap)
    t = Trainer(params)
    prompt, tokens = [5, 6, 7, 8], [20, 21, 22, 23]
    (learner,) = t.logprobs([(prompt, tokens)])
    # sampler log-probs 1 nat below the learner's on the first two tokens (ratio e), equal on the others
    sampler = [float(x) - (1.0 if k < 2 else 0.0) for k, x in enumerate(learner)]
    metrics = t.train([TrainItem(Completion("x", prompt, tokens, sampler), 1.5)])
    return metrics, learner


def test_the_trainer_caps_the_ratio_only_when_asked():
    assert TrainerParams().ratio_cap is None
    plain, learner = _step(None)
    assert "ratio_capped" not in plain
    assert plain["ratio_max"] == pytest.approx(math.e, rel=1e-4)  # the statistics logged either way
    assert plain["loss"] == pytest.approx(-1.5 * (2 * math.e + 2), rel=1e-4)
    capped, _ = _step(2.0)
    assert capped["ratio_capped"] == pytest.approx(0.5)
    assert capped["ratio_max"] == pytest.approx(math.e, rel=1e-4)  # the ratio itself, before the cap
    assert capped["loss"] == pytest.approx(-1.5 * (2 * 2.0 + 2), rel=1e-4)
