"""The update: per-token advantages with KL shaping, and the importance-sampling loss.

For rollout i with scalar advantage A_i, completion tokens t, sampler log-probs ℓ^samp,
base-model log-probs ℓ^base (adapter disabled) and learner log-probs ℓ^θ:

    mask_{i,t} = 1 on sampled tokens, 0 on forced tokens          (Project rule, §2.3)
    A_{i,t}    = A_i · mask_{i,t}
    d_{i,t}    = ℓ^samp_{i,t} − ℓ^base_{i,t},   d̄ = mean of d over every masked token of the batch
    A_{i,t}   += λ · mask_{i,t} · (d̄ − d_{i,t})                  (KL shaping, §5.2)
    or, with ``kl_in_reward`` (the TTRL form: the KL enters the rollout's reward, r_i − λ·K_i):
    K_i        = Σ_t mask_{i,t} · d_{i,t},   K̄ = mean of K_i over the batch
    A_{i,t}    = mask_{i,t} · (A_i − λ · (K_i − K̄))
    L(θ)       = − Σ_i Σ_t exp(ℓ^θ_{i,t} − ℓ^samp_{i,t}) · A_{i,t}  (token sum, no clipping, no normalisation, §5.1)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch


def completion_logprobs(
    model, sequences: Sequence[tuple[Sequence[int], Sequence[int]]], temperature: float = 1.0
) -> list[torch.Tensor]:
    """log_softmax(logits / T) of each completion token given everything before it.

    ``sequences`` holds (prompt_tokens, completion_tokens) pairs; they are right-padded
    into one batch, and only the logits from the first completion position on are kept
    (``logits_to_keep``), so the vocabulary-sized tensor covers completions, not prompts.
    Gradients flow when called outside ``torch.no_grad``.
    """
    device = next(model.parameters()).device
    rows = [list(p) + list(c) for p, c in sequences]
    B, L = len(rows), max(len(r) for r in rows)
    first = min(len(p) for p, _ in sequences) - 1  # position whose logits predict the earliest completion token
    if first < 0:
        raise ValueError("every sequence needs at least one prompt token")
    ids_BL = torch.zeros((B, L), dtype=torch.long, device=device)
    mask_BL = torch.zeros((B, L), dtype=torch.long, device=device)
    for b, row in enumerate(rows):
        ids_BL[b, : len(row)] = torch.tensor(row, dtype=torch.long, device=device)
        mask_BL[b, : len(row)] = 1
    logits_BKV = model(input_ids=ids_BL, attention_mask=mask_BL, logits_to_keep=L - first, use_cache=False).logits
    out = []
    for b, (p, c) in enumerate(sequences):
        start = len(p) - 1 - first
        logits_CV = logits_BKV[b, start : start + len(c)].float() / temperature
        target_C = torch.tensor(list(c), dtype=torch.long, device=device)
        out.append(logits_CV.gather(1, target_C[:, None]).squeeze(1) - torch.logsumexp(logits_CV, dim=-1))
    return out


def token_advantages(
    advantages: Sequence[float],
    masks: Sequence[torch.Tensor],
    sampler_logprobs: Sequence[torch.Tensor],
    base_logprobs: Sequence[torch.Tensor] | None,
    kl_coef: float,
    kl_in_reward: bool = False,
) -> tuple[list[torch.Tensor], float]:
    """Per-token advantages A_{i,t} (module docstring) and d̄, the sampled-minus-base log-prob mean.

    ``masks[i]`` is a float 0/1 tensor over rollout i's completion tokens. Without base
    log-probs (or with λ = 0) there is no shaping and d̄ is reported as nan.

    ``kl_in_reward``: one penalty per rollout instead of per token. Centring K at its batch mean
    makes A_i − λ(K_i − K̄) the mean-baseline advantage of the penalised reward r_i − λK_i
    whenever A_i is that of r_i; a batch with equal KL everywhere is left as it is.
    """
    token_adv = [float(a) * m for a, m in zip(advantages, masks, strict=True)]
    if base_logprobs is None or kl_coef == 0:
        return token_adv, float("nan")
    d = [(s - b) * m for s, b, m in zip(sampler_logprobs, base_logprobs, masks, strict=True)]
    n_masked = sum(float(m.sum()) for m in masks)
    d_mean = sum(float(x.sum()) for x in d) / max(n_masked, 1.0)
    if kl_in_reward:
        kl_i = [float(x.sum()) for x in d]
        kl_mean = sum(kl_i) / len(kl_i)
        return [a - kl_coef * (k - kl_mean) * m for a, k, m in zip(token_adv, kl_i, masks, strict=True)], d_mean
    return [a + kl_coef * m * (d_mean - x) for a, x, m in zip(token_adv, d, masks, strict=True)], d_mean


@dataclass
class Shaped:
    """What one update needs per kept rollout, built by ``shape_batch`` for every training backend."""

    sampler_logprobs: list[torch.Tensor]  # ℓ^samp over the completion tokens
    sampled_masks: list[torch.Tensor]  # 1 on sampled tokens, 0 on forced ones (advantage and KL mean)
    loss_masks: list[torch.Tensor]  # tokens whose ratios are reported (forced ones too in faithful mode)
    advantages: list[torch.Tensor]  # A_{i,t}, KL shaping included
    kl_sampler_base: float  # d̄ (nan without shaping)


def shape_batch(
    completions: Sequence,
    advantages: Sequence[float],
    base_logprobs: Callable[[], Sequence[torch.Tensor]],
    kl_coef: float,
    train_forced_tokens: bool,
    device: str = "cpu",
    kl_in_reward: bool = False,
) -> Shaped:
    """Per-token advantages of the rollouts in one update, the same for every training backend.

    ``completions`` are ``discover_ttt.backend.Completion`` objects with tokens and sampler
    log-probs; ``base_logprobs()`` returns ℓ^base of each completion and is called only when
    λ > 0; ``kl_in_reward`` picks the per-rollout form of the penalty (``token_advantages``).
    Faithful mode (``train_forced_tokens``) also gives forced tokens the rollout's
    advantage, as the reference does; they stay out of the KL mean either way.
    """
    sampler_lp = [torch.tensor(c.logprobs, dtype=torch.float32, device=device) for c in completions]
    for c, lp in zip(completions, sampler_lp, strict=True):
        if len(lp) != len(c.tokens):
            raise ValueError(
                f"a completion has {len(c.tokens)} tokens but {len(lp)} sampler log-probs; "
                "training needs both (backends that see only text cannot be trained on)."
            )
    sampled_masks, loss_masks = [], []
    for c in completions:
        forced = c.forced or [False] * len(c.tokens)
        sampled = torch.tensor([0.0 if f else 1.0 for f in forced], dtype=torch.float32, device=device)
        sampled_masks.append(sampled)
        loss_masks.append(torch.ones_like(sampled) if train_forced_tokens else sampled)
    base_lp = [torch.as_tensor(b, dtype=torch.float32, device=device) for b in base_logprobs()] if kl_coef > 0 else None
    adv_tok, d_mean = token_advantages(advantages, sampled_masks, sampler_lp, base_lp, kl_coef, kl_in_reward)
    if train_forced_tokens:
        adv_tok = [a + float(adv) * (1.0 - m) for a, adv, m in zip(adv_tok, advantages, sampled_masks, strict=True)]
    return Shaped(sampler_lp, sampled_masks, loss_masks, adv_tok, d_mean)


def is_loss(learner_logprobs: torch.Tensor, sampler_logprobs: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """− Σ_t exp(ℓ^θ_t − ℓ^samp_t) · A_t for one rollout (summed over rollouts by the caller)."""
    return -(torch.exp(learner_logprobs - sampler_logprobs) * advantages).sum()
