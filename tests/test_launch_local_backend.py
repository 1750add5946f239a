"""The local backend on a tiny random Llama (no weights are loaded)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from discover_ttt.backend import Completion, TrainItem
from discover_ttt.launch.local import LocalBackend, LocalParams
from discover_ttt.launch.lora import objective
from discover_ttt.launch.lora.tiny import tiny_model_and_tokenizer

PROMPTS = [[{"role": "user", "content": "Write a number."}], [{"role": "user", "content": "Another, longer prompt."}]]


def make_backend(**overrides) -> LocalBackend:
    model, tok = tiny_model_and_tokenizer(seed=0)
    params = {"max_new_tokens": 16, "sample_batch_size": 4, "seed": 7} | overrides
    return LocalBackend(LocalParams(**params), model=model, tokenizer=tok)


def fixed_completion(backend: LocalBackend, text: str) -> Completion:
    """A completion with exact sampler log-probs (those of the current model, as on-policy)."""
    prompt = backend.prompt_tokens(PROMPTS[0])
    tokens = backend.tokenizer(text, add_special_tokens=False)["input_ids"] + [backend.tokenizer.eos_token_id]
    c = Completion(text, prompt, tokens, [0.0] * len(tokens), [False] * len(tokens))
    c.logprobs = backend.logprobs([c])[0]
    return c


def test_defaults_follow_the_project_rules():
    b = make_backend()
    cfg = b.model.peft_config["default"]
    assert (cfg.r, cfg.lora_alpha, cfg.lora_dropout) == (32, 32, 0.0)
    assert set(cfg.target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    group = b.trainer.optimizer.param_groups[0]
    assert isinstance(b.trainer.optimizer, torch.optim.Adam)
    assert (group["lr"], group["betas"], group["eps"], group["weight_decay"]) == (4e-5, (0.9, 0.95), 1e-8, 0.0)
    assert b.params.kl_coef == 0.1 and b.params.temperature == 1.0 and b.params.thinking_budget is None
    # only adapter weights train
    assert all("lora_" in n for n, p in b.model.named_parameters() if p.requires_grad)


def test_params_reject_unknown_keys():
    with pytest.raises(Exception, match="lora_rnak"):
        LocalParams(lora_rnak=8)


def test_sample_shapes_and_sampler_logprobs_match_the_learner():
    b = make_backend()
    out = b.sample(PROMPTS, 3)
    assert [len(g) for g in out] == [3, 3]
    for i, group in enumerate(out):
        for c in group:
            assert c.prompt_tokens == b.prompt_tokens(PROMPTS[i])
            assert 1 <= len(c.tokens) <= 16
            assert len(c.logprobs) == len(c.tokens) == len(c.forced) and not any(c.forced)
            assert c.finish_reason == ("stop" if c.tokens[-1] in b.stop_ids else "length")
            assert all(lp <= 0 for lp in c.logprobs)
    comps = [c for g in out for c in g]
    # on-policy at T = 1 the IS ratio is 1: the sampler's log-probs are the learner's
    for c, lp in zip(comps, b.logprobs(comps), strict=True):
        np.testing.assert_allclose(c.logprobs, lp, atol=1e-4)


def test_sampler_logprobs_are_tempered_and_nucleus_renormalised():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    full = objective_free_logsoftmax(logits / 0.5)
    np.testing.assert_allclose(_nucleus(logits, 0.5, 1.0), full, atol=1e-6)
    p = np.exp(full)
    kept = _nucleus(logits, 0.5, 0.9)
    n_keep = int(np.searchsorted(np.cumsum(p), 0.9) + 1)
    np.testing.assert_allclose(np.exp(kept[:n_keep]), p[:n_keep] / p[:n_keep].sum(), atol=1e-6)
    assert np.all(np.isneginf(kept[n_keep:]))


def objective_free_logsoftmax(x):
    x = x.numpy()[0].astype(np.float64)
    return x - np.log(np.exp(x - x.max()).sum()) - x.max()


def _nucleus(logits, t, top_p):
    from discover_ttt.launch.local.sampling import nucleus_logprobs

    return nucleus_logprobs(logits, t, top_p).numpy()[0]


def test_one_train_step_raises_positive_and_lowers_negative():
    b = make_backend(lr=1e-3, kl_coef=0.0)
    pos, neg = fixed_completion(b, "42"), fixed_completion(b, "no")
    before = [sum(lp) for lp in b.logprobs([pos, neg])]
    metrics = b.train([TrainItem(pos, 1.0), TrainItem(neg, -1.0)])
    after = [sum(lp) for lp in b.logprobs([pos, neg])]
    assert after[0] > before[0] + 1e-3
    assert after[1] < before[1] - 1e-3
    assert metrics["ratio_mean"] == pytest.approx(1.0, abs=1e-4)
    # token-sum loss at ratio 1: −(Σ_pos A − Σ_neg |A|) = −(n_pos − n_neg)
    assert metrics["loss"] == pytest.approx(-(len(pos.tokens) - len(neg.tokens)), abs=1e-3)
    assert metrics["tokens"] == len(pos.tokens) + len(neg.tokens)


def test_sampling_after_train_uses_the_updated_adapter():
    b = make_backend(lr=1e-2)
    c = fixed_completion(b, "7")
    b.train([TrainItem(c, 1.0), TrainItem(fixed_completion(b, "x"), -1.0)])
    sampled = [s for g in b.sample(PROMPTS, 2) for s in g]
    for s, lp in zip(sampled, b.logprobs(sampled), strict=True):
        np.testing.assert_allclose(s.logprobs, lp, atol=1e-4)  # sampled from the trained adapter
    base = b.logprobs(sampled, base=True)
    assert any(not np.allclose(s.logprobs, lp, atol=1e-3) for s, lp in zip(sampled, base, strict=True))


def test_token_advantages_against_a_hand_computation():
    adv = [1.5, -0.5]
    samp = [torch.tensor([-1.0, -2.0, -0.5]), torch.tensor([-0.2, -3.0])]
    base = [torch.tensor([-1.2, -1.0, -0.5]), torch.tensor([-0.1, -2.0])]
    masks = [torch.tensor([1.0, 1.0, 0.0]), torch.tensor([1.0, 1.0])]  # third token of rollout 0 forced
    lam = 0.1
    # d on masked tokens: 0.2, -1.0 | -0.1, -1.0 → mean -0.475
    d_mean = (0.2 - 1.0 - 0.1 - 1.0) / 4
    expect0 = [1.5 + lam * (d_mean - 0.2), 1.5 + lam * (d_mean + 1.0), 0.0]
    expect1 = [-0.5 + lam * (d_mean + 0.1), -0.5 + lam * (d_mean + 1.0)]
    got, got_mean = objective.token_advantages(adv, masks, samp, base, lam)
    assert got_mean == pytest.approx(d_mean)
    np.testing.assert_allclose(got[0].numpy(), expect0, atol=1e-6)
    np.testing.assert_allclose(got[1].numpy(), expect1, atol=1e-6)
    unshaped, nan = objective.token_advantages(adv, masks, samp, None, lam)
    np.testing.assert_allclose(unshaped[0].numpy(), [1.5, 1.5, 0.0])
    assert math.isnan(nan)


def test_train_shapes_advantages_with_base_logprobs(monkeypatch):
    b = make_backend(lr=1e-2, kl_coef=0.1)
    b.train([TrainItem(fixed_completion(b, "1"), 1.0), TrainItem(fixed_completion(b, "2"), -1.0)])
    comps = [c for g in b.sample(PROMPTS[:1], 3) for c in g]  # the adapter now differs from the base
    seen = {}
    real = objective.token_advantages

    def spy(*args):
        seen["out"] = real(*args)
        return seen["out"]

    monkeypatch.setattr(objective, "token_advantages", spy)
    advs = [1.0, 0.0, -1.0]
    base = b.logprobs(comps, base=True)
    b.train([TrainItem(c, a) for c, a in zip(comps, advs, strict=True)])
    d = [np.array(c.logprobs) - np.array(lp) for c, lp in zip(comps, base, strict=True)]
    d_mean = np.concatenate(d).mean()
    assert abs(d_mean) > 1e-4
    got, got_mean = seen["out"]
    assert got_mean == pytest.approx(d_mean, abs=1e-5)
    for a, di, g in zip(advs, d, got, strict=True):
        np.testing.assert_allclose(g.numpy(), a + 0.1 * (d_mean - di), atol=1e-5)


def test_forced_tokens_get_zero_advantage_and_logprob_zero(monkeypatch):
    b = make_backend(thinking_budget=40, max_new_tokens=64, context_window=300, kl_coef=0.1)
    comps = [c for g in b.sample(PROMPTS[:1], 2) for c in g]
    forced_runs = [c for c in comps if any(c.forced)]
    assert forced_runs, "with a 40-token thinking budget the random model never stops in time"
    for c in forced_runs:
        k = c.forced.index(True)
        n_forced = sum(c.forced)
        assert all(c.forced[k : k + n_forced]) and all(lp == 0.0 for lp in c.logprobs[k : k + n_forced])
        forced_text = b.tokenizer.decode(c.tokens[k : k + n_forced])
        assert "out of thinking tokens" in forced_text and forced_text.rstrip().endswith("</think>")
        assert len(c.prompt_tokens) + k == 40  # phase 1 ends at the thinking budget
        assert len(c.prompt_tokens) + len(c.tokens) <= 300 - 50
    seen = {}
    real = objective.is_loss

    def spy(learner, sampler, adv):
        seen.setdefault("adv", []).append(adv.detach().clone())
        return real(learner, sampler, adv)

    monkeypatch.setattr(objective, "is_loss", spy)
    b.train([TrainItem(c, 2.0) for c in comps])
    for c, adv in zip(comps, seen["adv"], strict=True):
        forced = torch.tensor(c.forced)
        assert torch.all(adv[forced] == 0.0)
        assert torch.all(adv[~forced] != 0.0)


def test_faithful_mode_gives_forced_tokens_the_rollout_advantage(monkeypatch):
    b = make_backend(thinking_budget=40, max_new_tokens=64, context_window=300, kl_coef=0.0, train_forced_tokens=True)
    comps = [c for c in b.sample(PROMPTS[:1], 2)[0] if any(c.forced)]
    seen = []
    real = objective.is_loss
    monkeypatch.setattr(objective, "is_loss", lambda lp, s, a: seen.append(a.clone()) or real(lp, s, a))
    b.train([TrainItem(c, 2.0) for c in comps])
    assert seen and all(torch.all(a == 2.0) for a in seen)


def test_save_then_load_gives_identical_logprobs_and_samples(tmp_path):
    a = make_backend(lr=1e-2)
    first = [c for g in a.sample(PROMPTS, 2) for c in g]
    a.train([TrainItem(c, float(i % 2) * 2 - 1) for i, c in enumerate(first)])
    a.save(tmp_path / "ckpt")
    probe = first[:3]
    lp_a = a.logprobs(probe)
    next_a = a.sample(PROMPTS, 2)
    a.train([TrainItem(c, 1.0) for c in next_a[0]])
    after_a = a.sample(PROMPTS, 2)

    b = make_backend(lr=1e-2)
    assert not np.allclose(np.concatenate(b.logprobs(probe)), np.concatenate(lp_a))
    b.load(tmp_path / "ckpt")
    for x, y in zip(b.logprobs(probe), lp_a, strict=True):
        np.testing.assert_array_equal(x, y)
    next_b = b.sample(PROMPTS, 2)
    assert [[c.tokens for c in g] for g in next_b] == [[c.tokens for c in g] for g in next_a]
    # optimizer moments were restored too: the next update lands on the same weights
    b.train([TrainItem(c, 1.0) for c in next_b[0]])
    after_b = b.sample(PROMPTS, 2)
    assert [[c.tokens for c in g] for g in after_b] == [[c.tokens for c in g] for g in after_a]
    for ga, gb in zip(after_a, after_b, strict=True):
        for ca, cb in zip(ga, gb, strict=True):
            np.testing.assert_allclose(ca.logprobs, cb.logprobs, atol=1e-6)


def test_sampling_is_deterministic_per_seed_and_call():
    a, b = make_backend(), make_backend()
    assert [c.tokens for c in a.sample(PROMPTS[:1], 3)[0]] == [c.tokens for c in b.sample(PROMPTS[:1], 3)[0]]
    second = [c.tokens for c in a.sample(PROMPTS[:1], 3)[0]]
    assert second != [c.tokens for c in make_backend().sample(PROMPTS[:1], 3)[0]] or len(second[0]) == 0
    assert [c.tokens for c in make_backend(seed=8).sample(PROMPTS[:1], 3)[0]] != [
        c.tokens for c in make_backend().sample(PROMPTS[:1], 3)[0]
    ]


def test_empty_batch_skips_the_step():
    b = make_backend()
    assert b.train([])["skipped"] == 1.0
    assert b.trainer.steps == 0


def test_train_rejects_text_only_completions():
    b = make_backend()
    c = Completion("text", b.prompt_tokens(PROMPTS[0]), [5, 6, 7], [], [])
    with pytest.raises(ValueError, match="sampler log-probs"):
        b.train([TrainItem(c, 1.0)])


def test_gradient_checkpointing_gives_the_same_update():
    plain, ckpt = make_backend(lr=1e-2, kl_coef=0.0), make_backend(lr=1e-2, kl_coef=0.0, gradient_checkpointing=True)
    batch = lambda b: [TrainItem(fixed_completion(b, "12"), 1.0), TrainItem(fixed_completion(b, "ab"), -1.0)]  # noqa: E731
    m1, m2 = plain.train(batch(plain)), ckpt.train(batch(ckpt))
    assert m1["grad_norm"] == pytest.approx(m2["grad_norm"], rel=1e-4)
    assert not ckpt.model.training
    probe = [fixed_completion(plain, "x")]
    np.testing.assert_allclose(plain.logprobs(probe)[0], ckpt.logprobs(probe)[0], atol=1e-5)


def test_decode_matches_transformers_greedy_generate_with_left_padding():
    from discover_ttt.launch.local.sampling import decode

    b = make_backend()
    rows = [b.prompt_tokens(PROMPTS[0]), b.prompt_tokens(PROMPTS[1])]  # different lengths: left padding
    gen = torch.Generator().manual_seed(0)
    pieces = decode(
        b.model, rows, [12, 12], temperature=1e-4, top_p=1.0, stop_ids=set(), pad_id=0, generator=gen
    )  # T → 0 is greedy
    for row, piece in zip(rows, pieces, strict=True):
        ids = torch.tensor([row])
        with b.model.disable_adapter():  # the zero-initialised adapter changes nothing; generate on the base
            ref = b.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=12,
                do_sample=False,
                eos_token_id=None,
            )
        assert piece.tokens == ref[0, len(row) :].tolist()


def test_sampling_progress_counts_rollouts_and_tokens():
    b = make_backend()
    seen = []
    b.set_progress(seen.append)
    out = b.sample(PROMPTS, 3)
    assert seen[0].done == 0 and seen[-1].done == seen[-1].total == 6
    assert [p.done for p in seen] == sorted(p.done for p in seen) and len(seen) > 3  # reported while decoding
    assert seen[-1].tokens == sum(len(c.tokens) for g in out for c in g)


def test_sampling_and_training_raise_no_deprecation_warnings():
    """Nothing the user cannot act on: no deprecated keyword (transformers' past_key_values) is passed."""
    import warnings

    b = make_backend(kl_coef=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        comps = [c for g in b.sample(PROMPTS, 2) for c in g]
        b.train([TrainItem(c, a) for c, a in zip(comps, [1.0, -1.0, 0.5, -0.5], strict=True)])
