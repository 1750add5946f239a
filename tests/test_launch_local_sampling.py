"""The pieces that make CPU decoding fast give the same draws as the plain forms they replace:
the nucleus found among the top candidates, the draw by inverting the cumulative sum, the reserved
key/value cache, and the adapter folded into the weights while sampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_launch_local_backend import PROMPTS, fixed_completion, make_backend

from discover_ttt.backend import TrainItem
from discover_ttt.launch.local import LocalBackend, LocalParams, sampling
from discover_ttt.launch.lora.compat import reserve
from discover_ttt.launch.lora.tiny import tiny_model_and_tokenizer


@pytest.mark.parametrize("top_p", [1.0, 0.9, 0.5])
@pytest.mark.parametrize("candidates", [4, 1024])  # 4: the top candidates rarely hold top_p: full sort
def test_sample_tokens_draws_inside_the_nucleus_with_its_logprob(monkeypatch, top_p, candidates):
    monkeypatch.setattr(sampling, "NUCLEUS_CANDIDATES", candidates)
    gen = torch.Generator().manual_seed(0)
    logits_BV = torch.randn(16, 300, generator=gen) * 2
    ref_BV = sampling.nucleus_logprobs(logits_BV, 0.7, top_p)
    model_BV = torch.log_softmax(logits_BV / 0.7, dim=-1)
    for _ in range(20):
        tok_B, logq_B, logp_B = sampling.sample_tokens(
            logits_BV, 0.7, top_p, torch.rand(16, generator=gen, dtype=torch.float64)
        )
        picked_B = ref_BV.gather(1, tok_B[:, None]).squeeze(1)
        assert torch.isfinite(picked_B).all()  # never outside the nucleus
        torch.testing.assert_close(logq_B, picked_B, atol=1e-5, rtol=0)
        # and the log-prob before the cut: the model's tempered distribution
        torch.testing.assert_close(logp_B, model_BV.gather(1, tok_B[:, None]).squeeze(1), atol=1e-6, rtol=0)


@pytest.mark.parametrize("candidates", [2, 1024])
def test_sample_tokens_frequencies_follow_q(monkeypatch, candidates):
    monkeypatch.setattr(sampling, "NUCLEUS_CANDIDATES", candidates)
    logits_BV = torch.tensor([[2.0, 1.5, 1.0, 0.0, -1.0, -3.0]]).repeat(20_000, 1)
    q = sampling.nucleus_logprobs(logits_BV[:1], 0.8, 0.95).exp()[0].numpy()
    u_B = torch.rand(len(logits_BV), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    tok_B, _, _ = sampling.sample_tokens(logits_BV, 0.8, 0.95, u_B)
    freq = np.bincount(tok_B.numpy(), minlength=6) / len(tok_B)
    assert q[-1] == 0 and freq[-1] == 0  # the last token is outside the 0.95 nucleus
    assert np.all(np.abs(freq - q) <= 4 * np.sqrt(q * (1 - q) / len(tok_B)) + 1e-9), (freq, q)  # 4 standard errors


def test_sample_tokens_is_a_pure_function_of_the_uniforms():
    logits_BV = torch.randn(4, 500, generator=torch.Generator().manual_seed(3))
    u_B = sampling.draw_uniforms(4, 1, torch.Generator().manual_seed(5), "cpu")[:, 0]
    a = sampling.sample_tokens(logits_BV, 1.0, 0.9, u_B)
    b = sampling.sample_tokens(logits_BV, 1.0, 0.9, u_B.clone())
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("top_p", [1.0, 0.6])
def test_sample_tokens_inverts_the_cumulative_sum_at_u(top_p):
    """u anywhere inside a token's interval of the cumulative sum picks that token;
    u at the very top never picks a token of probability 0."""
    logits_BV = torch.tensor([[0.0, 1.0, float("-inf"), 2.0, float("-inf")]])
    q = sampling.nucleus_logprobs(logits_BV, 1.0, top_p).exp()[0].double()
    order = [3, 1, 0] if top_p < 1 else [0, 1, 3]  # the nucleus is searched by rank, the whole vocabulary by id
    kept = [i for i in order if q[i] > 0]
    edge = 0.0
    for i in kept:
        lo, edge = edge, edge + float(q[i])
        for u in (lo + 1e-6, (lo + edge) / 2, edge - 1e-6):  # inside token i's interval
            tok, logq, _ = sampling.sample_tokens(logits_BV, 1.0, top_p, torch.tensor([u], dtype=torch.float64))
            assert int(tok) == i and abs(float(logq) - math.log(q[i])) < 1e-6, (u, i)
    top = torch.tensor([1.0 - 1e-17], dtype=torch.float64)  # rounds to 1.0 · total
    assert int(sampling.sample_tokens(logits_BV, 1.0, top_p, top)[0]) == kept[-1]


def test_reserved_cache_returns_what_concatenation_would():
    from transformers.cache_utils import DynamicCache

    gen = torch.Generator().manual_seed(0)
    plain, reserved = DynamicCache(), DynamicCache()
    first = [torch.randn(2, 3, 5, 4, generator=gen) for _ in range(2)]
    for cache in (plain, reserved):
        cache.update(*first, layer_idx=0)
    reserve(reserved, capacity=7)
    for step in range(6):  # past the reserved room: the buffer grows
        k, v = torch.randn(2, 3, 1, 4, generator=gen), torch.randn(2, 3, 1, 4, generator=gen)
        want, got = plain.update(k, v, layer_idx=0), reserved.update(k, v, layer_idx=0)
        assert torch.equal(want[0], got[0]) and torch.equal(want[1], got[1])
        assert reserved.get_seq_length() == 6 + step
    reserved.batch_select_indices(torch.tensor([1, 1]))  # keys replaced from outside
    plain.batch_select_indices(torch.tensor([1, 1]))
    k = v = torch.ones(2, 3, 1, 4)
    assert torch.equal(plain.update(k, v, layer_idx=0)[0], reserved.update(k, v, layer_idx=0)[0])


def test_decoding_is_the_same_with_and_without_the_reserved_cache(monkeypatch):
    b = make_backend()
    rows = [b.prompt_tokens(PROMPTS[0])] * 2 + [b.prompt_tokens(PROMPTS[1])] * 2

    def run():
        gen = torch.Generator().manual_seed(0)
        pieces = sampling.decode(b.model, rows, [10] * 4, temperature=1.0, top_p=0.9, stop_ids=set(), pad_id=0,
                                 generator=gen)  # fmt: skip
        return [(p.tokens, p.logprobs) for p in pieces]

    fast = run()
    monkeypatch.setattr(sampling, "reserve", lambda cache, capacity: None)
    assert run() == fast


def test_folding_for_sampling_leaves_every_weight_as_it_was_and_keeps_the_samplers_logprobs():
    b = make_backend(lr=1e-2, kl_coef=0.0)
    b.train([TrainItem(fixed_completion(b, "7"), 1.0), TrainItem(fixed_completion(b, "x"), -1.0)])
    before = {n: p.detach().clone() for n, p in b.model.named_parameters()}
    for _ in range(10):
        with b.trainer.merged_for_sampling():
            pass
    for n, p in b.model.named_parameters():
        assert torch.equal(p, before[n]), n  # bit for bit: a resumed run samples what the first one did
    with b.trainer.merged_for_sampling():
        merged_weight = next(m.base_layer.weight for m in b.model.modules() if hasattr(m, "base_layer"))
        assert not torch.equal(merged_weight, before[_base_weight_name(b)])  # the trained adapter is in the weights
    sampled = [c for g in b.sample(PROMPTS, 2) for c in g]
    for c, lp in zip(sampled, b.logprobs(sampled), strict=True):
        np.testing.assert_allclose(c.logprobs, lp, atol=1e-4)


def test_no_merge_in_half_precision():
    model, tok = tiny_model_and_tokenizer(seed=0)
    b = LocalBackend(LocalParams(seed=7, lr=1e-2), model=model.to(torch.bfloat16), tokenizer=tok)
    for p in b.trainer.trainable:
        torch.nn.init.normal_(p, std=0.1)  # an adapter that is not zero
    weights = [m.base_layer.weight for m in b.model.modules() if hasattr(m, "base_layer")]
    before = [w.detach().clone() for w in weights]
    with b.trainer.merged_for_sampling():
        assert all(torch.equal(w, w0) for w, w0 in zip(weights, before, strict=True))


def _base_weight_name(b: LocalBackend) -> str:
    return next(n for n, _ in b.model.named_parameters() if n.endswith("base_layer.weight"))


@pytest.mark.parametrize("block", [16, 128])
def test_invert_cumsum_agrees_with_one_running_sum(monkeypatch, block):
    """The two-level search (block sums, then inside one block) picks the index one float64 running
    sum picks, across blocks, with zeros (outside a nucleus) and a width that is no multiple of a block."""
    monkeypatch.setattr(sampling, "DRAW_BLOCK", block)
    gen = torch.Generator().manual_seed(0)
    p_BK = torch.rand(4, 1000, generator=gen) ** 8  # a few tokens hold most of the mass
    p_BK[:, 990:] = 0.0
    p_BK[1, :500] = 0.0
    u_B = torch.rand(4 * 500, generator=gen, dtype=torch.float64).view(500, 4)
    for u in [*u_B, torch.zeros(4, dtype=torch.float64), torch.full((4,), 1 - 1e-17, dtype=torch.float64)]:
        cdf_BK = p_BK.double().cumsum(dim=-1)
        want = torch.searchsorted(cdf_BK, u[:, None] * cdf_BK[:, -1:], right=True).clamp(max=989)
        got = sampling.invert_cumsum(p_BK, u)
        assert torch.equal(got, want), (u, got, want)
        assert bool((p_BK.gather(-1, got) > 0).all())  # never an index without mass
