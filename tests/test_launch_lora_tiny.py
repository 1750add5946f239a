"""The tiny random model can express a learned preference, and its frozen self is close to uniform."""

from __future__ import annotations

import math

import torch

from discover_ttt.launch.lora.tiny import preference_ceiling, tiny_model, tiny_model_and_tokenizer, tiny_tokenizer

VOWELS = "aeiouAEIOU"


def vowel_ids(tok) -> list[int]:
    return [tok.convert_tokens_to_ids(c) for c in VOWELS]


def test_an_adapter_could_make_vowels_likely():
    model, tok = tiny_model_and_tokenizer()
    assert preference_ceiling(model, vowel_ids(tok)) > 0.8


def test_a_head_at_llamas_init_scale_could_not():
    """The measurement itself: at Llama's init scale (std 0.02, as a head tied to the embeddings is) the vowels stay near uniform."""
    tok = tiny_tokenizer()
    assert preference_ceiling(tiny_model(len(tok), head_std=0.02), vowel_ids(tok)) < 0.2


def test_the_frozen_model_is_close_to_uniform():
    model, tok = tiny_model_and_tokenizer()
    ids = torch.randint(3, len(tok), (8, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits, -1)
    entropy = float(-(logp.exp() * logp).sum(-1).mean())
    assert entropy > 0.9 * math.log(len(tok))
    assert float(logp.exp()[..., vowel_ids(tok)].sum(-1).mean()) < 0.13


def test_the_same_seed_builds_the_same_model():
    a, _ = tiny_model_and_tokenizer(0)
    b, _ = tiny_model_and_tokenizer(0)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
