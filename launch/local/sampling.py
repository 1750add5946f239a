"""Sampling for the local backend: a KV-cached decode loop that keeps each sampled token's
log-prob (the two-phase thinking budget around it lives in ``discover_ttt.launch.lora.budget``).

Log-probs. The sampler log-prob of token t is log q(t), q the distribution actually
sampled from: softmax(logits / T), restricted to the top-p nucleus and renormalised.
The learner scores tokens with log_softmax(logits / T) too (lora/objective.py), so on-policy
the importance ratio exp(ℓ^θ − ℓ^samp) is 1 up to numerics when top_p = 1 (the paper's
setting: T = 1, no nucleus); with top_p < 1 it equals the kept nucleus mass (≤ 1).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..lora.budget import Piece
from ..lora.compat import cache_kwargs, output_cache, reserve


def nucleus_logprobs(logits_BV: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """log q over the whole vocabulary: tempered log-softmax, then (top_p < 1) the nucleus
    renormalised, −inf outside it. The reference form of what ``sample_tokens`` draws from."""
    logp_BV = torch.log_softmax(logits_BV.float() / temperature, dim=-1)
    if top_p >= 1.0:
        return logp_BV
    sorted_BV, order_BV = logp_BV.sort(dim=-1, descending=True)
    kept_BV = torch.full_like(logp_BV, float("-inf")).scatter(-1, order_BV, _nucleus_of_sorted(sorted_BV, top_p))
    return torch.log_softmax(kept_BV, dim=-1)


def _nucleus_of_sorted(sorted_BK: torch.Tensor, top_p: float) -> torch.Tensor:
    """Log-probs sorted in descending order → −inf past the smallest prefix holding ``top_p``
    of the mass (at least one token is kept)."""
    p_BK = sorted_BK.exp()
    return sorted_BK.masked_fill(p_BK.cumsum(dim=-1) - p_BK >= top_p, float("-inf"))


#: Tokens among which ``sample_tokens`` looks for the nucleus first: a full sort of a
#: 50k-token vocabulary costs ~8× a top-k of this size on a CPU, at every decoding step.
NUCLEUS_CANDIDATES = 1024


def sample_tokens(
    logits_BV: torch.Tensor, temperature: float, top_p: float, u_B: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One token per row drawn from q (see ``nucleus_logprobs``), its log q, and its log-prob under
    the tempered distribution before the top-p cut (the model's, ``Completion.model_logprobs``).

    The nucleus is taken from the ``NUCLEUS_CANDIDATES`` most likely tokens when they hold
    ``top_p`` of the mass in every row (the usual case), else from a full sort: the same
    set either way. The draw inverts q's cumulative sum at ``u_B`` (one uniform in [0, 1) per
    row, float64): token i is picked when cdf_{i−1} ≤ u · cdf_last < cdf_i, so with probability
    q_i. One number per row and position, drawn before decoding (``draw_uniforms``), is what lets
    a speculative decoder that checks several positions at once (``fastdecode``) draw exactly
    the tokens a one-token-at-a-time loop draws.
    """
    logits_BV = logits_BV.float()
    logp_BV = torch.log_softmax(logits_BV if temperature == 1.0 else logits_BV / temperature, dim=-1)
    ids_BK = None
    logq_BK = logp_BV
    if top_p < 1.0:
        top_BK, ids_BK = logp_BV.topk(min(NUCLEUS_CANDIDATES, logp_BV.shape[-1]), dim=-1)
        if top_BK.shape[-1] < logp_BV.shape[-1] and bool((top_BK.exp().cumsum(dim=-1)[:, -1] < top_p).any()):
            top_BK, ids_BK = logp_BV.sort(dim=-1, descending=True)
        logq_BK = torch.log_softmax(_nucleus_of_sorted(top_BK, top_p), dim=-1)
        # the sum is taken in token order, not in order of probability: two nearly equal
        # probabilities swap ranks under a rounding difference, token ids never do, so logits that
        # agree to rounding (another loop, another batch shape) pick the same token for the same u
        ids_BK, by_id_BK = ids_BK.sort(dim=-1)
        logq_BK = logq_BK.gather(-1, by_id_BK)
    pick_B1 = invert_cumsum(logq_BK.exp(), u_B)
    tok_B1 = pick_B1 if ids_BK is None else ids_BK.gather(-1, pick_B1)
    return tok_B1.squeeze(1), logq_BK.gather(-1, pick_B1).squeeze(1), logp_BV.gather(-1, tok_B1).squeeze(1)


#: Width of the blocks ``invert_cumsum`` sums first.
DRAW_BLOCK = 128


def invert_cumsum(p_BK: torch.Tensor, u_B: torch.Tensor) -> torch.Tensor:
    """(B, 1) indices i with cdf_{i−1} ≤ u·cdf_last < cdf_i, cdf the running sum of each row of the
    non-negative ``p_BK``: index i with probability p_i / Σp for u uniform in [0, 1).

    In float64 (a float32 running sum over 50k tokens would lose the small ones) and in two levels:
    the sums of blocks of ``DRAW_BLOCK`` entries, their running sum, then the running sum inside the
    one block it lands in. A running sum over the whole vocabulary is one sequential pass per row
    (2.7 ms a step for 8 rows on the CPU default); block sums vectorise. The two levels round the
    sums differently from one sequential pass, by ~1e-16 of the total: where u lands is the same
    to that precision."""
    B, K = p_BK.shape
    C = DRAW_BLOCK
    nb = -(-K // C)
    if nb * C != K:
        p_BK = torch.cat((p_BK, p_BK.new_zeros(B, nb * C - K)), dim=1)
    p_BNC = p_BK.view(B, nb, C)
    cum_BN = p_BNC.sum(dim=-1, dtype=torch.float64).cumsum(dim=-1)
    total_B1 = cum_BN[:, -1:].contiguous()
    target_B1 = u_B.to(cum_BN)[:, None] * total_B1
    # u · total rounds up to the total once in a while: the first block reaching it has mass
    block_B1 = torch.minimum(
        torch.searchsorted(cum_BN, target_B1, right=True), torch.searchsorted(cum_BN, total_B1, right=False)
    )
    before_B1 = torch.where(block_B1 > 0, cum_BN.gather(-1, (block_B1 - 1).clamp(min=0)), 0.0)
    inner_BC = p_BNC.gather(1, block_B1[:, :, None].expand(B, 1, C))[:, 0].double().cumsum(dim=-1) + before_B1
    # the block's own running sum may end a rounding below the target: then its last entry with mass
    last_B1 = torch.searchsorted(inner_BC, inner_BC[:, -1:].contiguous(), right=False)
    pick_B1 = torch.minimum(torch.searchsorted(inner_BC, target_B1, right=True), last_B1)
    return block_B1 * C + pick_B1


def draw_uniforms(rows: int, positions: int, generator: torch.Generator, device) -> torch.Tensor:
    """The (rows, positions) uniforms of one decode call: row b's token at generated position t is
    drawn with u[b, t], whichever loop computes its logits (and however many positions at a time)."""
    return torch.rand((rows, max(positions, 1)), generator=generator, dtype=torch.float64, device=device)


@torch.no_grad()
def decode(
    model,
    rows: Sequence[Sequence[int]],
    budgets: Sequence[int],
    *,
    temperature: float,
    top_p: float,
    stop_ids: set[int],
    pad_id: int,
    generator: torch.Generator,
    on_step: Callable[[int, int, int], None] | None = None,
) -> list[Piece]:
    """Sample up to ``budgets[b]`` tokens after each token row (left-padded into one batch).

    ``on_step(new_tokens, stopped, exhausted)`` after each decoding step: tokens added
    this step, rows that sampled a stop token, rows that used up their budget.
    """
    device = next(model.parameters()).device
    # The R rollouts of a prompt share their prompt: prefill each distinct row once, then
    # copy its KV cache to every row that uses it.
    distinct: dict[tuple[int, ...], int] = {}
    row_to_distinct = [distinct.setdefault(tuple(r), len(distinct)) for r in rows]
    U, L = len(distinct), max(len(r) for r in rows)
    ids_UL = torch.full((U, L), pad_id, dtype=torch.long, device=device)
    mask_UL = torch.zeros((U, L), dtype=torch.long, device=device)
    for u, row in enumerate(distinct):
        ids_UL[u, L - len(row) :] = torch.tensor(row, dtype=torch.long, device=device)
        mask_UL[u, L - len(row) :] = 1
    pos_UL = (mask_UL.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=ids_UL, attention_mask=mask_UL, position_ids=pos_UL, use_cache=True, logits_to_keep=1)
    index_B = torch.tensor(row_to_distinct, dtype=torch.long, device=device)
    cache = output_cache(out)
    if U < len(rows):
        cache.batch_select_indices(index_B)
    budget_B = torch.tensor(list(budgets), device=device)
    reserve(cache, L + int(budget_B.max().item()))
    logits_BV, mask_BL, pos_B1 = out.logits[index_B, -1], mask_UL[index_B], pos_UL[index_B, -1:]
    B = len(rows)

    def next_logits(tok_B: torch.Tensor, step: int) -> torch.Tensor:
        nonlocal cache, mask_BL
        mask_BL = torch.cat([mask_BL, torch.ones((B, 1), dtype=mask_BL.dtype, device=device)], dim=1)
        out = model(
            input_ids=tok_B[:, None],
            attention_mask=mask_BL,
            position_ids=pos_B1 + step + 1,
            use_cache=True,
            **cache_kwargs(model, cache),
        )
        cache = output_cache(out)
        return out.logits[:, -1]

    return sample_loop(
        logits_BV,
        next_logits,
        budget_B,
        temperature=temperature,
        top_p=top_p,
        stop_ids=stop_ids,
        pad_id=pad_id,
        generator=generator,
        on_step=on_step,
    )


def sample_loop(
    logits_BV: torch.Tensor,
    next_logits: Callable[[torch.Tensor, int], torch.Tensor],
    budget_B: torch.Tensor,
    *,
    temperature: float,
    top_p: float,
    stop_ids: set[int],
    pad_id: int,
    generator: torch.Generator,
    on_step: Callable[[int, int, int], None] | None = None,
) -> list[Piece]:
    """Draw a token per row from ``logits_BV``, record it with its log-prob, stop rows that sampled a
    stop token or used their budget, and ask ``next_logits(tok_B, step)`` for the next step's logits
    (finished rows are fed ``pad_id``). The draw (``sample_tokens``) and the row rule (``Rows``) are
    those of every decode loop, so they draw alike."""
    device = logits_BV.device
    rows = Rows(budget_B.tolist(), stop_ids, on_step)
    u_BT = draw_uniforms(budget_B.shape[0], int(budget_B.max().item()), generator, device)
    for step in range(int(budget_B.max().item())):
        live = rows.live()
        tok_B, logq_B, logp_B = sample_tokens(logits_BV, temperature, top_p, u_BT[:, step])
        tok_l, logq_l, logp_l = tok_B.tolist(), logq_B.tolist(), logp_B.tolist()
        rows.report([rows.take(b, [tok_l[b]], [logq_l[b]], [logp_l[b]]) for b in live])
        if not rows.live():
            break
        done_B = torch.tensor(rows.done, device=device)
        logits_BV = next_logits(torch.where(done_B, torch.full_like(tok_B, pad_id), tok_B), step)
    return rows.pieces


class Rows:
    """The rows of one decode call: their pieces, and the rule every decode loop applies to what a
    row draws — tokens are appended until a stop token (kept, the row stops) or the row's budget."""

    def __init__(self, budgets: Sequence[int], stop_ids: set[int], on_step: Callable[[int, int, int], None] | None):
        self.budget = [max(0, int(n)) for n in budgets]
        self.stop = set(stop_ids)
        self.on_step = on_step
        self.pieces = [Piece() for _ in self.budget]
        self.done = [n <= 0 for n in self.budget]

    def live(self) -> list[int]:
        return [b for b, d in enumerate(self.done) if not d]

    def take(
        self, b: int, drawn: Sequence[int], logq: Sequence[float], logp: Sequence[float]
    ) -> tuple[int, bool, bool]:
        """Append row b's drawn tokens up to a stop token or its budget: (added, stopped, exhausted)."""
        piece, added = self.pieces[b], 0
        for tok, lq, lp in zip(drawn, logq, logp, strict=True):
            piece.tokens.append(tok)
            piece.logprobs.append(lq)
            piece.model_logprobs.append(lp)
            added += 1
            if tok in self.stop:
                piece.stopped = self.done[b] = True
                return added, True, False
            if len(piece.tokens) >= self.budget[b]:
                self.done[b] = True
                return added, False, True
        return added, False, False

    def report(self, counts: Sequence[tuple[int, bool, bool]]) -> None:
        """``on_step(tokens added, rows stopped, rows that used their budget)`` for one step's ``take``s."""
        if self.on_step is not None:
            self.on_step(sum(c[0] for c in counts), sum(c[1] for c in counts), sum(c[2] for c in counts))
