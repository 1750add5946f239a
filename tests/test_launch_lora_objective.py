"""The update off-policy: loss and gradient at importance ratios ≠ 1, against a hand computation.

Completions are sampled at temperature 0.7 and top_p 0.9 (the CPU default's kind of
settings), then the adapter takes a step, so the same completions are no longer on-policy.
The expected loss is computed here from scratch, with nothing of the trainer's code: one
plain forward per rollout over prompt + completion, log_softmax(logits / T) at the
completion's positions (with the adapter, and without it for the base model), then

    d_t = ℓ^samp_t − ℓ^base_t,   d̄ = mean of d over all tokens of the batch
    A_t = A_i + λ (d̄ − d_t)
    L   = − Σ_i Σ_t exp(ℓ^θ_t − ℓ^samp_t) · A_t

and its gradient by autograd. The trainer's gradient is read just before its Adam step.
"""

from __future__ import annotations

import pytest
import torch

from discover_ttt.backend import TrainItem
from discover_ttt.launch.local import LocalBackend, LocalParams
from discover_ttt.launch.lora.tiny import tiny_model_and_tokenizer

# prompt lengths 34 and 45 tokens: the offset 44 − 33 = 11 differs from 44 XOR 33 = 13, so a bit trick cannot pass
PROMPTS = [
    [{"role": "user", "content": "Write a number."}],
    [{"role": "user", "content": "Another prompt, longer one"}],
]
T, TOP_P, KL = 0.7, 0.9, 0.1


def make_backend(**overrides) -> LocalBackend:
    model, tok = tiny_model_and_tokenizer(seed=0)
    params = {
        "max_new_tokens": 10,
        "sample_batch_size": 6,
        "seed": 3,
        "temperature": T,
        "top_p": TOP_P,
        "kl_coef": KL,
        "lora_rank": 4,
        "lr": 0.02,
        "micro_batch_size": 2,
    } | overrides
    return LocalBackend(LocalParams(**params), model=model, tokenizer=tok)


def items_of(backend: LocalBackend, advantages=(1.0, -0.5, 0.25, -1.0, 0.75, 0.5)) -> list[TrainItem]:
    completions = [c for group in backend.sample(PROMPTS, 3) for c in group]
    return [TrainItem(c, a) for c, a in zip(completions, advantages, strict=True)]


def capture_gradients(backend: LocalBackend) -> dict[str, torch.Tensor]:
    """Wrap the optimizer so the gradient it is about to apply is kept."""
    grads: dict[str, torch.Tensor] = {}
    names = {id(p): n for n, p in backend.model.named_parameters()}
    step = backend.trainer.optimizer.step

    def recording_step(*args, **kwargs):
        for group in backend.trainer.optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    grads[names[id(p)]] = p.grad.detach().clone()
        return step(*args, **kwargs)

    backend.trainer.optimizer.step = recording_step
    return grads


def completion_logprobs_by_hand(model, prompt: list[int], tokens: list[int]) -> torch.Tensor:
    ids = torch.tensor([prompt + tokens])
    logits = model(input_ids=ids).logits[0].float() / T
    # the logits at position p predict token p + 1
    lp = torch.log_softmax(logits[len(prompt) - 1 : len(prompt) - 1 + len(tokens)], dim=-1)
    return lp.gather(1, torch.tensor(tokens)[:, None]).squeeze(1)


def hand_loss(backend: LocalBackend, items: list[TrainItem]) -> torch.Tensor:
    model = backend.model
    with torch.no_grad(), model.disable_adapter():
        base = [completion_logprobs_by_hand(model, it.completion.prompt_tokens, it.completion.tokens) for it in items]
    samp = [torch.tensor(it.completion.logprobs) for it in items]
    d = [s - b for s, b in zip(samp, base, strict=True)]
    d_mean = torch.cat(d).mean()
    loss = torch.zeros(())
    for it, s, di in zip(items, samp, d, strict=True):
        learner = completion_logprobs_by_hand(model, it.completion.prompt_tokens, it.completion.tokens)
        adv = it.advantage + KL * (d_mean - di)
        loss = loss - (torch.exp(learner - s) * adv).sum()
    return loss


def test_loss_and_gradient_at_ratios_other_than_one():
    backend = make_backend()
    items = items_of(backend)
    assert all(not any(it.completion.forced) for it in items)
    backend.train(items)  # the adapter moves: the samples are now off-policy

    metrics_expected = {}
    backend.model.zero_grad(set_to_none=True)
    backend.model.train(False)
    loss = hand_loss(backend, items)
    loss.backward()
    expected = {n: p.grad.detach().clone() for n, p in backend.model.named_parameters() if p.grad is not None}
    backend.model.zero_grad(set_to_none=True)
    metrics_expected["loss"] = float(loss.detach())

    got = capture_gradients(backend)
    metrics = backend.train(items)
    assert abs(metrics["ratio_mean"] - 1.0) > 1e-3  # really off-policy (and top_p < 1 on top)
    assert metrics["loss"] == pytest.approx(metrics_expected["loss"], rel=1e-4, abs=1e-6)
    assert got.keys() == expected.keys() and expected
    for name in expected:
        scale = float(expected[name].abs().max())  # float32 sums in another order: compare at the tensor's scale
        torch.testing.assert_close(got[name], expected[name], rtol=1e-3, atol=1e-5 * scale, msg=name)


def test_micro_batches_accumulate_to_the_full_batch():
    one_at_a_time, all_at_once = make_backend(micro_batch_size=1), make_backend(micro_batch_size=6)
    items = items_of(one_at_a_time)
    # the same completions for both (identical models and seeds give identical samples)
    assert [it.completion.tokens for it in items] == [it.completion.tokens for it in items_of(all_at_once)]
    grads_a, grads_b = capture_gradients(one_at_a_time), capture_gradients(all_at_once)
    metrics_a, metrics_b = one_at_a_time.train(items), all_at_once.train(items)
    assert metrics_a["loss"] == pytest.approx(metrics_b["loss"], rel=1e-5)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name in grads_a:
        scale = float(grads_b[name].abs().max())  # float32 sums in another order: compare at the tensor's scale
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=1e-4, atol=1e-5 * scale, msg=name)
    for (_, pa), (_, pb) in zip(
        one_at_a_time.model.named_parameters(), all_at_once.model.named_parameters(), strict=True
    ):
        torch.testing.assert_close(pa, pb, rtol=1e-4, atol=1e-6)
