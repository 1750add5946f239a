"""The compact CPU decoding step (launch/local/fastdecode.py) computes the model transformers computes:
the same log-probs to float32 rounding, the same draws, the updated adapter right after an update."""

from __future__ import annotations

import dataclasses

import pytest

torch = pytest.importorskip("torch")

from discover_ttt.backend import TrainItem  # noqa: E402
from discover_ttt.launch.local import LocalBackend, LocalParams, fastdecode  # noqa: E402
from discover_ttt.launch.local.sampling import decode  # noqa: E402
from discover_ttt.launch.lora.tiny import tiny_model_and_tokenizer  # noqa: E402

SETTINGS = dict(temperature=1.0, top_p=1.0, stop_ids={10**6}, pad_id=0)
# two distinct prompts of different lengths, rollouts of a prompt side by side (as the backend lays them out),
# then one prompt again after another: every shape of the runs of shared prompts
ROWS = [[5, 6, 7, 8, 9]] * 3 + [[11, 12, 13]] * 2 + [[5, 6, 7, 8, 9]]


def full_forward_logprobs(model, row, tokens):
    ids = torch.tensor([list(row) + list(tokens)])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
    return [float(logp[len(row) - 1 + i, t]) for i, t in enumerate(tokens)]


# as the backend lays rollouts out (prompt by prompt, as many each): the prompts stacked, the shorter one padded
STACKED = [[5, 6, 7, 8, 9]] * 3 + [[11, 12, 13]] * 3
# prompts sharing a beginning longer than SHARED_MIN (a system message and problem statement), their rests
# of unequal length: the beginning is prefilled once and read once a step, each rest copied to its rows
BEGINNING = [(7 * i) % 40 + 3 for i in range(fastdecode.SHARED_MIN + 5)]
SHARED = [BEGINNING + [5, 6]] * 3 + [BEGINNING + [11]] * 3
# rows of two prompts alternating, one prompt the beginning of the other
NESTED = [BEGINNING + [5, 6], BEGINNING] * 3


@pytest.mark.parametrize("draft_tokens", [0, 4], ids=["one-position", "guesses"])
@pytest.mark.parametrize("budgets", [[16] * 6, [16, 3, 9, 0, 16, 5]], ids=["equal", "rows-finish-early"])
@pytest.mark.parametrize(
    "rows", [ROWS, STACKED, SHARED, NESTED], ids=["runs", "stacked", "shared-beginning", "nested-interleaved"]
)
def test_same_logprobs_and_draws_as_the_generic_loop(rows, budgets, draft_tokens):
    torch.manual_seed(0)
    model, _ = tiny_model_and_tokenizer()
    assert fastdecode.unsupported_reason(model) is None
    generic = decode(model, rows, budgets, generator=torch.Generator().manual_seed(3), **SETTINGS)
    fast = fastdecode.fast_decode(
        model, rows, budgets, generator=torch.Generator().manual_seed(3), draft_tokens=draft_tokens, **SETTINGS
    )
    assert [p.tokens for p in fast] == [p.tokens for p in generic]
    assert [len(p.tokens) for p in fast] == budgets
    for row, piece in zip(rows, fast, strict=True):
        ref = full_forward_logprobs(model, row, piece.tokens)
        assert max((abs(a - b) for a, b in zip(ref, piece.logprobs, strict=True)), default=0.0) < 1e-5


def test_a_shared_beginning_is_prefilled_once_to_the_same_keys():
    torch.manual_seed(0)
    model, _ = tiny_model_and_tokenizer()
    prompts = [tuple(r) for r in (SHARED[0], SHARED[3], BEGINNING[:-2])]
    kv, logits, shared = fastdecode._prefill(model, prompts, 2)
    assert shared == len(BEGINNING) - 3  # every prompt keeps at least its last token apart
    alone, alone_logits, none_shared = fastdecode._prefill(model, prompts[:1], 2)
    assert none_shared == 0
    for li in range(2):
        for got, want in zip(kv[li][0], alone[li][0], strict=True):
            assert got.shape == want.shape and torch.allclose(got, want, atol=1e-5)
    assert torch.allclose(logits[0], alone_logits[0], atol=1e-5)
    # fewer than SHARED_MIN tokens in common: each prompt alone
    assert fastdecode._prefill(model, [tuple(r) for r in (ROWS[0], ROWS[3])], 2)[2] == 0


def test_budgets_and_stops_per_row():
    torch.manual_seed(0)
    model, _ = tiny_model_and_tokenizer()
    pieces = fastdecode.fast_decode(model, ROWS[:3], [0, 4, 9], generator=torch.Generator().manual_seed(1), **SETTINGS)
    assert [len(p.tokens) for p in pieces] == [0, 4, 9]
    first = pieces[2].tokens[0]
    again = fastdecode.fast_decode(
        model, ROWS[:3], [0, 4, 9], generator=torch.Generator().manual_seed(1), **{**SETTINGS, "stop_ids": {first}}
    )
    assert again[2].tokens == [first] and again[2].stopped


def test_runs_of_shared_prompts():
    assert fastdecode._runs([0, 0, 0, 1, 1, 0]) == [(0, 3, 0), (3, 5, 1), (5, 6, 0)]
    kv = [[(torch.zeros(1, 4, 2), torch.zeros(1, 4, 2)), (torch.zeros(1, 3, 2), torch.zeros(1, 3, 2))]]
    assert fastdecode.PromptCache(kv, [0, 0, 1, 1]).stacked
    assert not fastdecode.PromptCache(kv, [0, 0, 1]).stacked  # unequal runs
    assert not fastdecode.PromptCache(kv, [0, 1, 0, 1]).stacked  # interleaved


def test_other_models_keep_the_generic_loop():
    torch.manual_seed(0)
    model, _ = tiny_model_and_tokenizer()
    assert "float32" in fastdecode.unsupported_reason(model.to(torch.bfloat16))
    model.config.model_type = "qwen3"
    assert "Llama" in fastdecode.unsupported_reason(model)


def backend(**overrides) -> LocalBackend:
    torch.manual_seed(0)
    model, tokenizer = tiny_model_and_tokenizer()
    defaults = dict(model="tiny-random", max_new_tokens=12, temperature=1.0, top_p=1.0, lr=1e-2, lora_rank=4)
    return LocalBackend(LocalParams(**(defaults | overrides)), model=model, tokenizer=tokenizer)


PROMPTS = [[{"role": "user", "content": "Write a number."}], [{"role": "user", "content": "Another prompt."}]]


def ratio_gap(be: LocalBackend, groups) -> float:
    flat = [c for g in groups for c in g]
    learner = be.logprobs(flat)
    return max(abs(a - b) for c, lp in zip(flat, learner, strict=True) for a, b in zip(c.logprobs, lp, strict=True))


def test_backend_ratio_is_one_before_and_after_an_update():
    be = backend()
    groups = be.sample(PROMPTS, 3)
    assert ratio_gap(be, groups) < 1e-5  # importance ratio exp(ℓ_learner − ℓ_sampler) = 1 before any update
    batch = [TrainItem(c, adv) for g in groups for c, adv in zip(g, [1.0, -0.5, -0.5], strict=True)]
    be.train(batch)
    # the next sample call folds the updated adapter: the sampler is the learner again
    assert ratio_gap(be, be.sample(PROMPTS, 3)) < 1e-5


def test_backend_same_seed_same_samples_either_path():
    fast = [c.tokens for g in backend().sample(PROMPTS, 2) for c in g]
    assert fast == [c.tokens for g in backend().sample(PROMPTS, 2) for c in g]
    generic = [c.tokens for g in backend(fast_decode=False).sample(PROMPTS, 2) for c in g]
    assert fast == generic


# -- several positions per step (guessed tokens) ---------------------------------------------

REPEATING = [[5, 6, 7, 8, 9, 10, 11] * 4] * 2 + [[12, 13, 14] * 5] * 2


def decode_with(model, draft_tokens: int, temperature: float = 0.1):  # low: the random model repeats itself
    steps = []
    pieces = fastdecode.fast_decode(
        model,
        REPEATING,
        [24, 30, 17, 30],
        temperature=temperature,
        top_p=0.9,
        stop_ids={10**6},
        pad_id=0,
        generator=torch.Generator().manual_seed(2),
        draft_tokens=draft_tokens,
        on_step=lambda *counts: steps.append(counts),
    )
    return pieces, steps


def test_guesses_change_no_draw_and_save_steps():
    torch.manual_seed(0)
    model, _ = tiny_model_and_tokenizer()
    plain, plain_steps = decode_with(model, 0)
    guessed, guessed_steps = decode_with(model, 4)
    assert [p.tokens for p in guessed] == [p.tokens for p in plain]
    for a, b in zip(plain, guessed, strict=True):
        assert max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs, strict=True)) < 1e-5
    assert [len(p.tokens) for p in guessed] == [24, 30, 17, 30]  # budgets hold with several tokens a step
    assert len(guessed_steps) < len(plain_steps)  # guesses were drawn as guessed: fewer steps
    assert sum(s[0] for s in guessed_steps) == sum(s[0] for s in plain_steps) == 101  # every token reported once


def test_guessed_steps_stop_at_a_stop_token():
    torch.manual_seed(0)
    model, _ = tiny_model_and_tokenizer()
    plain, _ = decode_with(model, 0)
    stop = plain[1].tokens[12]  # a token drawn mid-row: every row stops at its first draw of it
    kwargs = dict(temperature=0.1, top_p=0.9, pad_id=0, stop_ids={stop})
    results = [
        fastdecode.fast_decode(
            model, REPEATING, [24, 30, 17, 30], generator=torch.Generator().manual_seed(2), draft_tokens=k, **kwargs
        )
        for k in (0, 4)
    ]
    assert [p.tokens for p in results[0]] == [p.tokens for p in results[1]]
    assert results[1][1].tokens[-1] == stop and results[1][1].stopped and len(results[1][1].tokens) <= 13


def test_drafter_guesses_what_followed_the_latest_longest_match():
    d = fastdecode.Drafter([[1, 2, 3, 4, 9, 2, 3, 5, 7]])
    assert d.guess(0, 3) == ([], 0)  # 7 occurred nowhere before
    d.extend(0, [2, 3])  # ends with 2 3: seen twice; the latest (… 2 3 5) wins, and 7 2 3 is longer than 2 3
    assert d.guess(0, 3) == ([5, 7, 2], 2)
    d.extend(0, [5])  # 2 3 5 occurred once: the 3-token match
    assert d.guess(0, 2) == ([7, 2], 3)
    assert d.guess(0, 0) == ([], 0)


def test_positions_per_step_weighs_chances_against_cost():
    eight = [[1, 2, 3, 4]] * 8
    assert fastdecode.positions_per_step([[]] * 8, [0.5] * 8) == 1  # nothing guessed
    assert fastdecode.positions_per_step(eight, [0.05] * 8) == 1  # guesses rarely drawn: not worth a wider step
    assert fastdecode.positions_per_step(eight, [0.95] * 8) == 5  # nearly always drawn: every guess
    record = fastdecode.GuessRecord()
    assert record.chance(3) == 0.5
    record.add(3, checked=8, kept=8)
    record.fade()
    assert record.chance(3) > 0.8 and record.chance(1) == 0.5


@pytest.mark.parametrize("rows", [1, 8, 11, 16, 70])
def test_packed_products_equal_the_plain_product(rows):
    gen = torch.Generator().manual_seed(0)
    weight_OI, x_MI = torch.randn(40, 24, generator=gen), torch.randn(rows, 24, generator=gen)
    torch.testing.assert_close(fastdecode._Weight(weight_OI)(x_MI), x_MI @ weight_OI.T, atol=1e-5, rtol=1e-5)


# -- the first step's KL reference from the sampler -------------------------------------------


@pytest.mark.parametrize("fast", [True, False])
def test_first_update_takes_the_base_logprobs_from_the_sampler(monkeypatch, fast):
    """While the adapter is zero the sampler's log-probs before the top-p cut are the base model's:
    the first update needs no base pass and moves the adapter as the pass would have."""
    kwargs = dict(top_p=0.8, kl_coef=0.5, fast_decode=fast)
    be, ref = backend(**kwargs), backend(**kwargs)
    groups = be.sample(PROMPTS, 3)
    flat = [c for g in groups for c in g]
    assert be.trainer.adapter_is_zero()
    base = be.logprobs(flat, base=True)
    for c, lp in zip(flat, base, strict=True):
        assert (
            c.model_logprobs is not None and max(abs(a - b) for a, b in zip(c.model_logprobs, lp, strict=True)) < 1e-5
        )
    passes = []
    original = be.trainer.logprobs
    monkeypatch.setattr(be.trainer, "logprobs", lambda *a, **k: passes.append(k) or original(*a, **k))
    batch = [TrainItem(c, adv) for g in groups for c, adv in zip(g, [1.0, -0.5, -0.5], strict=True)]
    stats = be.train(batch)
    assert passes == []  # no base pass
    stripped = [TrainItem(dataclasses.replace(it.completion, model_logprobs=None), it.advantage) for it in batch]
    ref_stats = ref.train(stripped)  # the same update with the base pass
    assert abs(stats["kl_sampler_base"] - ref_stats["kl_sampler_base"]) < 1e-5
    for p, q in zip(be.trainer.trainable, ref.trainer.trainable, strict=True):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-4)
    assert not be.trainer.adapter_is_zero()
    be.train(batch)
    assert passes and passes[0].get("base")  # a trained adapter: the base pass again


def test_rows_read_a_shared_beginning_once(monkeypatch):
    made = []
    original = fastdecode.PromptCache

    def spy(kv, row_to_distinct):
        made.append(([k.shape[1] for k, _ in kv[0]], row_to_distinct))
        return original(kv, row_to_distinct)

    monkeypatch.setattr(fastdecode, "PromptCache", spy)
    torch.manual_seed(0)
    model, _ = tiny_model_and_tokenizer()
    fastdecode.fast_decode(model, SHARED, [4] * 6, generator=torch.Generator().manual_seed(0), **SETTINGS)
    fastdecode.fast_decode(model, STACKED, [4] * 6, generator=torch.Generator().manual_seed(0), **SETTINGS)
    # the beginning once for all rows; prompts with nothing in common each once
    assert made == [([len(BEGINNING)], [0] * 6), ([5, 3], [0, 0, 0, 1, 1, 1])]
