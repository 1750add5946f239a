"""Sampler log-probs that are NaN or ±inf never reach the loss: the trainer leaves such rollouts
out of the step, and ``shape_batch`` refuses them with a clear error."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from discover_ttt.backend import Completion, TrainItem  # noqa: E402
from discover_ttt.launch.lora import objective  # noqa: E402
from discover_ttt.launch.lora.params import TrainerParams  # noqa: E402
from discover_ttt.launch.lora.trainer import Trainer  # noqa: E402

PROMPT = [5, 6, 7, 8]


def item(logprobs, advantage=1.0):
    tokens = list(range(20, 20 + len(logprobs)))
    return TrainItem(Completion("x", PROMPT, tokens, list(logprobs)), advantage)


def adapter(t: Trainer) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in t.model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_rollout_with_a_non_finite_logprob_is_left_out_of_the_step(bad):
    t = Trainer(TrainerParams(model="tiny-random", device="cpu", lr=1e-2))
    before = adapter(t)
    metrics = t.train([item([-1.0, bad, -2.0], 1.0), item([-1.0, -1.5], -1.0), item([-0.5, -0.7, -0.9], 0.5)])
    after = adapter(t)
    assert metrics["dropped_nonfinite"] == 1.0 and metrics["rollouts"] == 2.0 and metrics["tokens"] == 5.0
    assert math.isfinite(metrics["loss"]) and math.isfinite(metrics["grad_norm"])
    assert all(bool(torch.isfinite(w).all()) for w in after.values())
    assert any(not torch.equal(before[n], after[n]) for n in before)  # the finite rollouts still trained


def test_a_batch_of_only_non_finite_rollouts_skips_the_step():
    t = Trainer(TrainerParams(model="tiny-random", device="cpu", lr=1e-2))
    before = adapter(t)
    metrics = t.train([item([math.nan, -1.0]), item([-1.0, -math.inf])])
    assert metrics["skipped"] == 1.0 and metrics["dropped_nonfinite"] == 2.0
    assert all(torch.equal(before[n], w) for n, w in adapter(t).items())


def test_shape_batch_refuses_non_finite_logprobs():
    c = Completion("x", PROMPT, [20, 21, 22], [-1.0, -1.0, math.nan])
    with pytest.raises(ValueError, match=r"not finite.*positions \[2\]"):
        objective.shape_batch([c], [1.0], lambda: [], kl_coef=0.0, train_forced_tokens=False)
