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
    or, with a ratio cap C (truncated importance sampling, off by default), ρ = exp(ℓ^θ − ℓ^samp):
    L_C(θ)     = − Σ_i Σ_t min(ρ_{i,t}, C) · A_{i,t},  ∇L_C = − Σ_i Σ_t min(ρ_{i,t}, C) · A_{i,t} · ∇ℓ^θ_{i,t}
    (the weight is capped, not the gradient cut: a token above C still moves ℓ^θ, with weight C)

Sampler log-probs must be finite: one NaN makes the loss NaN and Adam writes NaN into every
adapter weight. ``shape_batch`` refuses them; the trainer drops such rollouts before.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint

#: Positions turned into log-probs at once. The [chunk, vocab] float32 logits are the largest
#: tensors of a step (8192 positions × 152k vocabulary = 5 GB), so they are made one chunk at a
#: time and, under autograd, recomputed in the backward pass: peak memory follows the chunk,
#: not the completion length.
LOGPROB_CHUNK = 512


def _decoder_and_head(model):
    """(decoder stack, output head, final-logit soft-cap or None) of a causal LM, peft-wrapped or not."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    softcap = getattr(base.config.get_text_config(), "final_logit_softcapping", None)
    return base.get_decoder(), base.get_output_embeddings(), softcap


def _chunk_logprobs(head, hidden_TH, target_T, temperature: float, softcap: float | None) -> torch.Tensor:
    if softcap or getattr(head, "bias", None) is not None:
        logits_TV = head(hidden_TH).float()
        if softcap:
            logits_TV = softcap * torch.tanh(logits_TV / softcap)
        logits_TV = logits_TV / temperature
    else:
        # head(h) / T = head(h / T) for a linear head without bias: dividing the hidden states
        # (positions × width) spares a pass over the logits (positions × vocabulary), rounding aside
        logits_TV = head(hidden_TH / temperature).float()
    return logits_TV.gather(1, target_T[:, None]).squeeze(1) - torch.logsumexp(logits_TV, dim=-1)


class _PlainHeadLogprobs(torch.autograd.Function):
    """log_softmax(h Wᵀ)[target] for a chunk of positions and a linear head without bias, keeping no
    logits for the backward.

    ∂ℓ_t/∂logits_t = onehot(target_t) − softmax(logits_t), so the backward recomputes the chunk's
    logits once and turns them into g·(onehot − softmax) in place (sub, exp, scale, one scatter), then
    one product for ∂/∂h (and one for ∂/∂W if the head trains). A checkpointed chunk instead reruns the
    forward and then logsumexp's and gather's backwards, each with its own [chunk, vocab] buffer: on the
    CPU default, 467–523 → 351 ms a 512-position chunk, forward and backward, the same numbers.
    """

    @staticmethod
    def forward(ctx, hidden_TH, weight_VH, target_T):
        logits_TV = (hidden_TH @ weight_VH.T).float()
        lse_T = torch.logsumexp(logits_TV, dim=-1)
        ctx.save_for_backward(hidden_TH, weight_VH, target_T, lse_T)
        return logits_TV.gather(1, target_T[:, None]).squeeze(1) - lse_T

    @staticmethod
    def backward(ctx, grad_T):
        hidden_TH, weight_VH, target_T, lse_T = ctx.saved_tensors
        g_TV = (hidden_TH @ weight_VH.T).float()
        g_TV.sub_(lse_T[:, None]).exp_().mul_(-grad_T[:, None])  # −g·softmax
        g_TV.scatter_add_(1, target_T[:, None], grad_T[:, None])  # + g·onehot
        g_TV = g_TV.to(weight_VH.dtype)
        d_hidden = g_TV @ weight_VH if ctx.needs_input_grad[0] else None
        d_weight = g_TV.T @ hidden_TH if ctx.needs_input_grad[1] else None
        return d_hidden, d_weight, None


def token_logprobs(
    head, hidden_TH: torch.Tensor, target_T: torch.Tensor, temperature: float, softcap=None, chunk=LOGPROB_CHUNK
) -> torch.Tensor:
    """log_softmax(head(h_t) / T)[target_t] for every position t, ``chunk`` positions at a time."""
    T = hidden_TH.shape[0]
    if T <= chunk:  # one piece: nothing to save by recomputing it
        return _chunk_logprobs(head, hidden_TH, target_T, temperature, softcap)
    plain = type(head) is torch.nn.Linear and head.bias is None and not softcap
    pieces = []
    for s in range(0, T, chunk):
        args = (head, hidden_TH[s : s + chunk], target_T[s : s + chunk], temperature, softcap)
        if not torch.is_grad_enabled():
            pieces.append(_chunk_logprobs(*args))
        elif plain:  # the logits made again once in the backward, straight into their gradient
            pieces.append(_PlainHeadLogprobs.apply(args[1] / temperature, head.weight, args[2]))
        else:  # keep only the hidden states; the backward recomputes the logits
            pieces.append(checkpoint(_chunk_logprobs, *args, use_reentrant=False))
    return torch.cat(pieces)


def completion_logprobs(
    model,
    sequences: Sequence[tuple[Sequence[int], Sequence[int]]],
    temperature: float = 1.0,
    chunk: int = LOGPROB_CHUNK,
) -> list[torch.Tensor]:
    """log_softmax(logits / T) of each completion token given everything before it.

    ``sequences`` holds (prompt_tokens, completion_tokens) pairs; they are right-padded
    into one batch and run through the decoder stack; the output head is applied only
    at completion positions, ``chunk`` positions at a time (``token_logprobs``).
    Gradients flow when called outside ``torch.no_grad``.
    """
    decoder, head, softcap = _decoder_and_head(model)
    device = next(model.parameters()).device
    rows = [list(p) + list(c) for p, c in sequences]
    B, L = len(rows), max(len(r) for r in rows)
    if min(len(p) for p, _ in sequences) < 1:
        raise ValueError("every sequence needs at least one prompt token")
    ids_BL = torch.zeros((B, L), dtype=torch.long, device=device)
    mask_BL = torch.zeros((B, L), dtype=torch.long, device=device)
    for b, row in enumerate(rows):
        ids_BL[b, : len(row)] = torch.tensor(row, dtype=torch.long, device=device)
        mask_BL[b, : len(row)] = 1
    hidden_BLH = decoder(input_ids=ids_BL, attention_mask=mask_BL, use_cache=False).last_hidden_state
    out = []
    for b, (p, c) in enumerate(sequences):
        target_C = torch.tensor(list(c), dtype=torch.long, device=device)
        out.append(
            token_logprobs(head, hidden_BLH[b, len(p) - 1 : len(p) - 1 + len(c)], target_C, temperature, softcap, chunk)
        )
    return out


class SharedPrefix:
    """A group's prompt run once; its keys/values serve every rollout of the group.

    The R rollouts of a group share their prompt, so its forward pass (with gradient
    through the LoRA when training) is done once instead of R times. Exact, not an
    approximation: causal attention makes the prompt's keys/values independent of what
    follows, and the completions attend to them as in a full forward pass.

    With ``trainable``, the completions see detached copies of the prefix outputs (the
    keys/values of every layer and the last prompt position's hidden state) and
    gradients collect on those copies over any number of micro-batches; ``backward``
    then carries them through the prompt's graph once. The result equals the per-rollout
    gradient up to float rounding.
    """

    def __init__(self, model, prompt: Sequence[int], trainable: bool = False) -> None:
        from transformers import DynamicCache

        from .compat import cache_kwargs, output_cache

        self.model = model
        self.decoder, self.head, self.softcap = _decoder_and_head(model)
        self.device = next(model.parameters()).device
        self.config = self.decoder.config
        ids_1P = torch.tensor([list(prompt)], dtype=torch.long, device=self.device)
        out = self.decoder(
            input_ids=ids_1P, use_cache=True, **cache_kwargs(self.decoder, DynamicCache(config=self.config))
        )
        cache = output_cache(out)
        self.length = ids_1P.shape[1]
        self.outputs = [t for layer in cache.layers for t in (layer.keys, layer.values)]
        self.outputs.append(out.last_hidden_state[0, -1])
        self.trainable = trainable
        self.inputs = [t.detach().requires_grad_() for t in self.outputs] if trainable else self.outputs

    def logprobs(self, completions: Sequence[Sequence[int]], temperature: float, chunk: int = LOGPROB_CHUNK):
        """Log-probs of each completion's tokens after the prompt (``completion_logprobs`` semantics)."""
        from transformers import DynamicCache

        from .compat import cache_kwargs

        B, C = len(completions), max(len(c) for c in completions)
        h_last = self.inputs[-1]
        hidden_BCH = None
        if C > 1:  # the completions' own positions; the first token is predicted from the prompt's last
            cache = DynamicCache(config=self.config)
            for i in range(len(self.inputs) // 2):
                k, v = self.inputs[2 * i], self.inputs[2 * i + 1]
                cache.update(k.expand(B, *k.shape[1:]), v.expand(B, *v.shape[1:]), i)
            ids_BC = torch.zeros((B, C - 1), dtype=torch.long, device=self.device)  # right padding: causal, unseen
            for b, c in enumerate(completions):
                ids_BC[b, : len(c) - 1] = torch.tensor(list(c[:-1]), dtype=torch.long, device=self.device)
            pos_BC = torch.arange(self.length, self.length + C - 1, device=self.device).expand(B, -1)
            hidden_BCH = self.decoder(
                input_ids=ids_BC, position_ids=pos_BC, use_cache=True, **cache_kwargs(self.decoder, cache)
            ).last_hidden_state
        out = []
        for b, c in enumerate(completions):
            hidden_CH = h_last[None] if hidden_BCH is None else torch.cat([h_last[None], hidden_BCH[b, : len(c) - 1]])
            hidden_CH = hidden_CH[: len(c)]
            target_C = torch.tensor(list(c), dtype=torch.long, device=self.device)
            out.append(token_logprobs(self.head, hidden_CH, target_C, temperature, self.softcap, chunk))
        return out

    def backward(self) -> None:
        """Carry the gradients gathered on the prefix copies through the prompt's forward pass."""
        pairs = [(o, i.grad) for o, i in zip(self.outputs, self.inputs, strict=True) if i.grad is not None]
        if pairs:
            torch.autograd.backward([o for o, _ in pairs], [g for _, g in pairs])
        self.outputs = self.inputs = []


def group_by_prompt(prompts: Sequence[Sequence[int]]) -> list[tuple[list[int], list[int]]]:
    """(prompt, indices of the rows that have it), in order of first appearance."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault(tuple(p), []).append(i)
    return [(list(p), idx) for p, idx in groups.items()]


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
        if not bool(torch.isfinite(lp).all()):
            bad = torch.nonzero(~torch.isfinite(lp)).flatten()[:3].tolist()
            raise ValueError(
                f"a completion's sampler log-probs are not finite (NaN or ±inf at token positions {bad}); "
                "they would make the loss NaN and spoil the adapter. The sampler returned them: check its "
                "precision (dtype) and settings; such rollouts must be left out of the update."
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


def truncated_is_loss(
    learner_logprobs: torch.Tensor, sampler_logprobs: torch.Tensor, advantages: torch.Tensor, cap: float
) -> torch.Tensor:
    """− Σ_t min(ρ_t, C) · A_t for one rollout, with gradient − Σ_t min(ρ_t, C) · A_t · ∇ℓ^θ_t.

    Written as w · exp(ℓ^θ − stop_grad(ℓ^θ)) with w = min(ρ, C) held constant: the second
    factor is 1 in value and carries ∇ℓ^θ, so below the cap the gradient is the uncapped
    loss's, ρ · A · ∇ℓ^θ, and above it the weight is C (truncated importance sampling).
    """
    weight = torch.exp(learner_logprobs - sampler_logprobs).detach().clamp(max=cap)
    return -(weight * torch.exp(learner_logprobs - learner_logprobs.detach()) * advantages).sum()
