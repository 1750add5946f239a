"""The training forward: each group's prompt run once, log-probs in chunks over positions."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from discover_ttt.backend import Completion, TrainItem  # noqa: E402
from discover_ttt.launch.lora import objective  # noqa: E402
from discover_ttt.launch.lora.params import TrainerParams  # noqa: E402
from discover_ttt.launch.lora.tiny import tiny_model_and_tokenizer  # noqa: E402
from discover_ttt.launch.lora.trainer import Trainer  # noqa: E402

PROMPTS = [[3, 9, 14, 27, 5, 8], [4, 4, 30, 42, 7]]
COMPLETIONS = [[[11, 12, 13, 2], [20], [21, 22, 23, 24, 25, 26, 2]], [[31, 32], [33, 34, 35, 2]]]


def trainer(**overrides) -> Trainer:
    model, tok = tiny_model_and_tokenizer(seed=0)
    params = TrainerParams(model="tiny-random", lr=1e-2, micro_batch_size=2, **overrides)
    t = Trainer(params, model=model, tokenizer=tok)
    with torch.no_grad():  # a non-zero adapter, so that gradients reach both LoRA matrices
        for name, p in t.model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(len(name))) * 0.05)
    return t


def sequences():
    return [(p, c) for p, cs in zip(PROMPTS, COMPLETIONS, strict=True) for c in cs]


def loss_and_grads(t: Trainer, shared: bool):
    seqs = sequences()
    advantages = [1.0, -0.5, 0.25, -1.0, 2.0]
    t.model.zero_grad(set_to_none=True)
    total = 0.0
    if shared:
        for prompt, idx in objective.group_by_prompt([p for p, _ in seqs]):
            prefix = objective.SharedPrefix(t.model, prompt, trainable=True)
            for k in range(0, len(idx), 2):  # micro-batches of 2 inside a group
                rows = idx[k : k + 2]
                lps = prefix.logprobs([seqs[i][1] for i in rows], 0.7, chunk=3)
                loss = sum(-(lp.exp() * advantages[i]).sum() for i, lp in zip(rows, lps, strict=True))
                loss.backward()
                total += float(loss.detach())
            prefix.backward()
    else:
        for i, seq in enumerate(seqs):
            (lp,) = objective.completion_logprobs(t.model, [seq], 0.7)
            loss = -(lp.exp() * advantages[i]).sum()
            loss.backward()
            total += float(loss.detach())
    grads = {n: p.grad.clone() for n, p in t.model.named_parameters() if p.requires_grad}
    return total, grads


def test_shared_prefix_loss_and_gradients_equal_per_rollout():
    t = trainer()
    loss_shared, g_shared = loss_and_grads(t, shared=True)
    loss_each, g_each = loss_and_grads(t, shared=False)
    assert loss_shared == pytest.approx(loss_each, rel=1e-5)
    assert g_shared.keys() == g_each.keys() and len(g_each) > 0
    for name, g in g_each.items():
        assert g.abs().max() > 0 or "lora_A" not in name
        torch.testing.assert_close(g_shared[name], g, rtol=1e-4, atol=1e-6, msg=name)


def test_logprobs_match_the_models_own_logits():
    t = trainer()
    seqs = sequences()
    with torch.no_grad():
        got = t.logprobs(seqs, temperature=0.7)
        for (p, c), lp in zip(seqs, got, strict=True):
            logits = t.model(input_ids=torch.tensor([p + c])).logits[0, len(p) - 1 : len(p) - 1 + len(c)].float()
            want = torch.log_softmax(logits / 0.7, -1).gather(1, torch.tensor(c)[:, None]).squeeze(1)
            torch.testing.assert_close(lp, want, rtol=1e-5, atol=1e-5)
        # the base pass disables the adapter
        base = t.logprobs(seqs[:1], temperature=0.7, base=True)[0]
        assert not torch.allclose(base, got[0])


def test_chunked_token_logprobs_equal_one_piece_with_gradients():
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 50, bias=False)
    hidden = torch.randn(11, 8, requires_grad=True)
    target = torch.randint(0, 50, (11,))
    whole = objective.token_logprobs(head, hidden, target, 0.9, chunk=100)
    (g_whole,) = torch.autograd.grad(whole.sum(), hidden)
    pieces = objective.token_logprobs(head, hidden, target, 0.9, chunk=4)
    (g_pieces,) = torch.autograd.grad(pieces.sum(), hidden)
    torch.testing.assert_close(pieces, whole)
    torch.testing.assert_close(g_pieces, g_whole)


@pytest.mark.parametrize("head_kind", ["plain", "bias", "softcap"])
def test_chunked_token_logprobs_give_the_gradients_of_log_softmax(head_kind):
    """Chunks of a plain head go through the hand-written backward (logits recomputed once, no logits
    kept), other heads through checkpointing: both give log_softmax's values and gradients, the
    head's own weight included."""
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 50, bias=head_kind == "bias")
    softcap = 3.0 if head_kind == "softcap" else None
    hidden = torch.randn(11, 8, requires_grad=True)
    target = torch.randint(0, 50, (11,))
    got = objective.token_logprobs(head, hidden, target, 0.9, softcap=softcap, chunk=4)
    g_got = torch.autograd.grad((got * torch.arange(11.0)).sum(), [hidden, head.weight])
    logits = head(hidden).float()
    if softcap:
        logits = softcap * torch.tanh(logits / softcap)
    want = torch.log_softmax(logits / 0.9, dim=-1).gather(1, target[:, None]).squeeze(1)
    g_want = torch.autograd.grad((want * torch.arange(11.0)).sum(), [hidden, head.weight])
    torch.testing.assert_close(got, want)
    for a, b in zip(g_got, g_want, strict=True):
        torch.testing.assert_close(a, b)


def test_train_step_is_the_same_with_and_without_prefix_sharing():
    """Gradient checkpointing runs every rollout whole: the two paths must give one update."""
    shared, whole = trainer(), trainer(gradient_checkpointing=True)
    items = [
        TrainItem(Completion("", p, c, [-3.0] * len(c), [False] * len(c)), a)
        for (p, c), a in zip(sequences(), [1.0, -1.0, 0.5, -0.5, 1.0], strict=True)
    ]
    m1, m2 = shared.train(items), whole.train(items)
    assert m1["loss"] == pytest.approx(m2["loss"], rel=1e-5)
    assert m1["grad_norm"] == pytest.approx(m2["grad_norm"], rel=1e-4)
    assert m1["ratio_mean"] == pytest.approx(m2["ratio_mean"], rel=1e-5)
