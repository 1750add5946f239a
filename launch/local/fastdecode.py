"""Decoding steps of a Llama-family model written out in a few tensor operations, for the CPU.

Why: after the prefill, a CPU decoding step of transformers' generic forward spends most of
its time outside the matrix products that must read the weights (module calls, GQA's
``repeat_kv`` copies of the key/value cache, separate q/k/v and gate/up products), and every
rollout of a group reads its own copy of the shared prompt's keys and values. This module
computes the same function with

- one product for q, k and v and one for gate and up (the weights concatenated once per
  ``sample`` call, after the adapter was folded into them: ``Trainer.merged_for_sampling``);
- grouped-query attention without copies (the query heads of a key/value head as one axis);
- the prompt's keys/values kept once per distinct prompt, not once per rollout: a rollout
  attends to [K_prompt, K_generated] under one softmax (``PromptCache``: the prompts stacked and
  attended with torch's flash-attention kernel, the two parts joined by their log-sum-exps);
  when the distinct prompts share a long beginning (system message, problem statement), that
  beginning is prefilled once and kept once for all rows, each row's own rest of its prompt
  copied ahead of its generated keys, whichever reads fewer keys a step;
- each RMSNorm's weight and the 1/√d_head of the scores folded into the weights of the product
  that follows them, once per call, instead of multiplied in at every step;
- the weights packed once for MKL's matrix product (``torch.ops.mkl._mkl_linear``) where torch has
  it: a product of a few rows with a weight is limited by reading the weight, and MKL's unpacked
  path reads it at about half the speed the packed one does;
- several positions per row in one step (speculative decoding, ``draft_tokens``, off by default):
  each row's next tokens are guessed by looking up its last few tokens earlier in its own prompt
  and completion (a program being rewritten copies runs of its parent), and one step computes
  the logits after the last sampled token and after each guess. On 2 CPU cores a step of 16 rows
  costs about 1.25 steps of 8 (the products become compute-bound), so guesses pay only when most
  are drawn as guessed; ``positions_per_step`` decides from the record so far.

Speculation changes no draw. Row b's token at generated position t is drawn by inverting q's
cumulative sum at a uniform u[b, t] drawn before decoding (``sampling.sample_tokens``). A step
draws the token after the last sampled one and after each guess; guesses are kept while they
equal the tokens drawn, and the first draw that differs is kept too. Every kept token was drawn
from the logits of its true prefix with its own u[b, t]: the tokens and log-probs are those of
the one-token loop whatever the guesses were, to float32 rounding of the logits (which can move
a draw landing within ~1e-6 of an edge of the cumulative sum: at temperature 1 an occasional
long-tail token is another long-tail token).

It is the same model: RMSNorm, rotary embedding (transformers' own ``inv_freq`` and
``attention_scaling``), SiLU MLP and the tied or untied head as in ``LlamaForCausalLM``, in
float32; the logits agree with transformers' forward to float32 rounding (about 1e-5, tested),
so the sampler log-probs stay those of the distribution sampled and the importance ratio
before an update is 1 to rounding, as before.

Used only where it is the same model by construction (``unsupported_reason`` is None): a
float32 Llama-architecture model on the CPU with default rotary embedding, no biases, the
adapter folded. Everything else (GPUs, Qwen3's q/k norms, sliding windows, bf16) keeps the
generic decode loop of ``sampling.py``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from ..lora.budget import Piece
from .sampling import Rows, draw_uniforms, sample_tokens

#: Longest run of last tokens looked up to guess what follows (the longest match found wins).
DRAFT_NGRAM = 3
#: Seconds of a step with S positions per row relative to one position, for 8 rows (SmolLM2-135M,
#: 2 CPU threads, 50–400 tokens generated, measured on the CPU default: the products of 16 rows cost
#: 1.2x those of 8, and attention and the draws grow with the positions). Only the shape matters:
#: it weighs how many positions a step checks against what it costs.
STEP_COST = (1.0, 1.25, 1.45, 1.67, 1.95)


def _inner(model):
    """The ``LlamaForCausalLM`` under a peft wrapper, or the model itself."""
    get = getattr(model, "get_base_model", None)
    return get() if callable(get) else model


def _weight(linear) -> torch.Tensor:
    """A projection's weight; for a LoRA-wrapped one its base weight (holding W + ΔW while folded)."""
    base = getattr(linear, "get_base_layer", None)
    return (base() if callable(base) else linear).weight


def unsupported_reason(model) -> str | None:
    """Why ``model`` cannot use this decoder (None: it can)."""
    inner = _inner(model)
    cfg = getattr(inner, "config", None)
    if cfg is None or getattr(cfg, "model_type", None) != "llama":
        return "not a Llama-architecture model"
    body = getattr(inner, "model", None)
    if body is None or not hasattr(body, "layers") or not hasattr(body, "rotary_emb"):
        return "unexpected module layout"
    if getattr(body.rotary_emb, "rope_type", "default") != "default":
        return "rotary scaling other than the default"
    if getattr(cfg, "attention_bias", False) or getattr(cfg, "mlp_bias", False):
        return "projection biases"
    if getattr(cfg, "hidden_act", "silu") != "silu" or getattr(cfg, "pretraining_tp", 1) != 1:
        return "activation or tensor-parallel layout"
    weight = inner.lm_head.weight
    if weight.device.type != "cpu" or weight.dtype != torch.float32:
        return "not float32 on the CPU"
    return None


def _mkl_packing() -> bool:
    return bool(getattr(torch._C, "has_mkl", False)) and hasattr(torch.ops.mkl, "_mkl_linear")


class _Weight:
    """x ↦ x Wᵀ for one (out, in) weight: MKL's packed product where torch has it, else a product
    with the transposed copy (on the CPU ``x @ W_t``, W_t contiguous, is about twice ``x @ W.T``).

    MKL packs a weight for a number of rows, and a product with exactly that many rows is the fast
    one (on the CPU default: 36 ms a step for 8 rows, 44 for 16, but 60–78 for 10 or 12 rows with
    the packing for 8): inputs are padded with zero rows up to the next of ``ROWS``, each
    packing made when first needed."""

    ROWS = (8, 16, 24, 32, 48, 64)

    def __init__(self, weight_OI: torch.Tensor) -> None:
        self.weight_OI = weight_OI.contiguous()
        self.packed: dict[int, torch.Tensor] = {}
        self.weight_IO = None if _mkl_packing() else self.weight_OI.T.contiguous()

    def __call__(self, x_MI: torch.Tensor) -> torch.Tensor:
        M = x_MI.shape[0]
        rows = next((r for r in self.ROWS if r >= M), None)
        if self.weight_IO is not None or rows is None:
            return x_MI @ (self.weight_IO if self.weight_IO is not None else self.weight_OI.T)
        packed = self.packed.get(rows)
        if packed is None:
            packed = self.packed[rows] = torch.ops.mkl._mkl_reorder_linear_weight(self.weight_OI, rows)
        if M < rows:
            x_MI = torch.cat((x_MI, x_MI.new_zeros(rows - M, x_MI.shape[1])))
        return torch.ops.mkl._mkl_linear(x_MI, packed, self.weight_OI, None, rows)[:M]


def _flash_attention():
    """torch's CPU flash-attention kernel, which also returns each query's log-sum-exp (None if absent)."""
    return getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


class PromptCache:
    """The keys/values of each distinct prompt, kept once, and attention of the rows to them.

    A rollout's attention runs over [K_prompt, K_generated] under one softmax. When every distinct
    prompt has the same number of rollouts, laid out prompt by prompt (how the backend lays them
    out), the prompts are stacked (padded to the longest, padding masked): one attention call per
    layer serves all of them, the rows of a prompt and their queries as one query axis. The prompt
    part and the generated part are computed apart, each with torch's flash-attention kernel
    (scores never written out: several positions a step multiply them), and joined by their
    log-sum-exps: out = o_gen + σ(lse_prompt − lse_gen)·(o_prompt − o_gen), which is the softmax
    over both. Otherwise each run of rows sharing a prompt is its own product.
    """

    def __init__(self, kv: list[list[tuple[torch.Tensor, torch.Tensor]]], row_to_distinct: list[int]) -> None:
        self.runs = _runs(row_to_distinct)
        self.kv = kv
        U = len(kv[0])
        sizes = {end - start for start, end, _ in self.runs}
        self.flash = _flash_attention()
        self.stacked = len(self.runs) == U and len(sizes) == 1 and self.flash is not None
        if not self.stacked:
            return
        self.U, self.n = U, sizes.pop()
        lengths = [k.shape[1] for k, _ in kv[0]]
        P = max(lengths)
        self.k_UKPD, self.v_UKPD = [], []
        for layer in kv:
            KV, Dh = layer[0][0].shape[0], layer[0][0].shape[2]
            k_UKPD, v_UKPD = torch.zeros(U, KV, P, Dh), torch.zeros(U, KV, P, Dh)
            for u, (k, v) in enumerate(layer):
                k_UKPD[u, :, : k.shape[1]], v_UKPD[u, :, : v.shape[1]] = k, v
            self.k_UKPD.append(k_UKPD)
            self.v_UKPD.append(v_UKPD)
        self.mask_U11P = None
        if min(lengths) < P:  # a shorter prompt's padding is never attended to
            pad_UP = torch.arange(P)[None] >= torch.tensor(lengths)[:, None]
            self.mask_U11P = torch.zeros(U, P).masked_fill_(pad_UP, float("-inf"))[:, None, None]

    def attend(self, li: int, q_BKXD, gen_k_BKTD, gen_v_BKTD, gen_mask_B1XT) -> torch.Tensor:
        """Attention output (B, KV, X, Dh) of queries ``q_BKXD`` (scaled) over the prompt's keys and the
        row's generated keys ``gen_k_BKTD`` (``gen_mask_B1XT`` hides those a query must not see)."""
        if not self.stacked:
            return self._attend_runs(li, q_BKXD, gen_k_BKTD, gen_v_BKTD, gen_mask_B1XT)
        B, KV, X, Dh = q_BKXD.shape
        U, n = self.U, self.n
        q_UKND = q_BKXD.view(U, n, KV, X, Dh).transpose(1, 2).reshape(U, KV, n * X, Dh)
        o_prompt, lse_prompt = self.flash(
            q_UKND, self.k_UKPD[li], self.v_UKPD[li], attn_mask=self.mask_U11P, scale=1.0
        )[:2]
        o_gen, lse_gen = self.flash(q_BKXD, gen_k_BKTD, gen_v_BKTD, attn_mask=gen_mask_B1XT, scale=1.0)[:2]
        # both parts seen as (U, n, KV, X, ·): views, no copies
        o_prompt_UNKXD = o_prompt.unflatten(2, (n, X)).transpose(1, 2)
        lse_prompt_UNKX = lse_prompt.unflatten(2, (n, X)).transpose(1, 2)
        share_UNKX1 = torch.sigmoid(lse_prompt_UNKX - lse_gen.unflatten(0, (U, n))).unsqueeze(-1)  # the prompt's mass
        out = torch.lerp(o_gen.unflatten(0, (U, n)), o_prompt_UNKXD, share_UNKX1)
        return out.reshape(B, KV, X, Dh)

    def _attend_runs(self, li: int, q_BKXD, gen_k_BKTD, gen_v_BKTD, gen_mask_B1XT) -> torch.Tensor:
        s_gen = torch.matmul(q_BKXD, gen_k_BKTD.transpose(-1, -2)) + gen_mask_B1XT
        KV, X, Dh = q_BKXD.shape[1:]
        out_BKXD = torch.empty_like(q_BKXD)
        for start, end, u in self.runs:
            pk_KPD, pv_KPD = self.kv[li][u]
            n, P = end - start, pk_KPD.shape[1]
            # the run's rows and queries as one axis per key/value head: plain batched products
            # against the one copy of the prompt's keys/values
            q_KND = q_BKXD[start:end].transpose(0, 1).reshape(KV, n * X, Dh)
            s_prompt = torch.bmm(q_KND, pk_KPD.transpose(1, 2)).view(KV, n, X, P).transpose(0, 1)
            a = torch.cat((s_prompt, s_gen[start:end]), dim=-1).softmax(dim=-1)  # (n, KV, X, P + T)
            a_KNP = a[..., :P].transpose(0, 1).reshape(KV, n * X, P)
            from_prompt = torch.bmm(a_KNP, pv_KPD).view(KV, n, X, Dh).transpose(0, 1)
            out_BKXD[start:end] = from_prompt + torch.matmul(a[..., P:], gen_v_BKTD[start:end])
        return out_BKXD


class LlamaDecoder:
    """The decoding step of one Llama-family model, weights gathered once (per ``sample`` call)."""

    def __init__(self, model) -> None:
        inner = _inner(model)
        cfg, body = inner.config, inner.model
        self.model = model
        self.embed = body.embed_tokens.weight
        self.eps = float(body.norm.variance_epsilon)
        # Each RMSNorm's weight scales the columns of the product after it, and 1/√d_head scales the
        # query rows: folded into the weights once, they cost no operation per step (rounding aside,
        # (w ⊙ x̂)Wᵀ = x̂(W diag w)ᵀ, and the rotary embedding is linear). So does the √d of the norm
        # itself: x / √(mean(x²) + ε) = √d · x / √(Σx² + d·ε) (``_rms``).
        d = int(cfg.hidden_size)
        self.head = _Weight(inner.lm_head.weight * (body.norm.weight * d**0.5))
        self.inv_freq = body.rotary_emb.inv_freq.float()
        self.rope_scale = float(getattr(body.rotary_emb, "attention_scaling", 1.0))
        self.H, self.KV = int(cfg.num_attention_heads), int(cfg.num_key_value_heads)
        self.Dh = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads)
        self.I = int(cfg.intermediate_size)
        scale = self.Dh**-0.5
        self.layers = []
        for layer in body.layers:
            att, mlp = layer.self_attn, layer.mlp
            qkv = torch.cat([_weight(att.q_proj) * scale, _weight(att.k_proj), _weight(att.v_proj)])
            gate_up = torch.cat([_weight(mlp.gate_proj), _weight(mlp.up_proj)])
            self.layers.append(
                (
                    _Weight(qkv * (layer.input_layernorm.weight * d**0.5)),
                    _Weight(_weight(att.o_proj)),
                    _Weight(gate_up * (layer.post_attention_layernorm.weight * d**0.5)),
                    _Weight(_weight(mlp.down_proj)),
                )
            )

    def _rms(self, x: torch.Tensor) -> torch.Tensor:
        """RMSNorm without its weight and without the factor √d (both folded into the next product):
        x / √(Σx² + d·ε). Written out, it is a millisecond a step faster than ``F.rms_norm``'s
        general kernel for these 8 × 576 inputs."""
        return x * (x * x).sum(dim=-1, keepdim=True).add_(self.eps * x.shape[-1]).rsqrt_()

    @staticmethod
    def _rope(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
        # transformers' x·cos + rotate_half(x)·sin, rotate_half(x) = [−x₂, x₁]: the sign moved into
        # the sine ([−sin₁, sin₂]) makes the rotation a roll, the same numbers in fewer operations
        return x * cos + x.roll(x.shape[-1] // 2, dims=-1) * signed_sin

    def step(self, tok_BS, pos_BS, start_B, prompts: PromptCache, gen_kv) -> torch.Tensor:
        """Logits (B·S, V) after feeding row b's S tokens ``tok_BS[b]`` at positions ``pos_BS[b]``;
        their keys/values are written at generated indices start_B[b] … start_B[b]+S−1, and query s
        of row b sees the generated keys up to index start_B[b]+s (what was written further along
        by an earlier step is stale and stays unseen). ``prompts``: the distinct prompts' keys/values."""
        (B, S), H, KV, Dh = tok_BS.shape, self.H, self.KV, self.Dh
        G, X = H // KV, S * (H // KV)  # X: a row's queries per key/value head, position-major
        freqs_MD = pos_BS.reshape(-1, 1).float() * self.inv_freq[None]
        emb_MD = torch.cat((freqs_MD, freqs_MD), dim=-1)
        half = emb_MD.shape[-1] // 2
        cos_M1D = (emb_MD.cos() * self.rope_scale)[:, None]
        sin_M1D = (emb_MD.sin() * self.rope_scale)[:, None]
        sin_M1D[..., :half] *= -1
        row_M = torch.arange(B).repeat_interleave(S)
        gen_M = (start_B[:, None] + torch.arange(S)).reshape(-1)
        # one position per row, all at one index (the one-position loop): a plain slice write
        at = int(start_B[0]) if S == 1 and bool((start_B == start_B[0]).all()) else None
        Tk = int(start_B.max()) + S
        # key j of row b is visible to query s iff j <= start_B[b] + s
        hidden_B1XT = (torch.arange(Tk)[None, None, :] > gen_M.view(B, S, 1)).repeat_interleave(G, dim=1)[:, None]
        mask_B1XT = torch.zeros(hidden_B1XT.shape).masked_fill_(hidden_B1XT, float("-inf"))
        x_MD = self.embed[tok_BS.reshape(-1)]
        for li, (w_qkv, w_o, w_gu, w_down) in enumerate(self.layers):
            qkv = w_qkv(self._rms(x_MD))
            M = qkv.shape[0]
            qk_MND = self._rope(qkv[:, : (H + KV) * Dh].view(M, H + KV, Dh), cos_M1D, sin_M1D)
            q_MHD, k_MKD = qk_MND[:, :H], qk_MND[:, H:]
            gen_k, gen_v = gen_kv[li]
            v_MKD = qkv[:, (H + KV) * Dh :].view(M, KV, Dh)
            if at is not None:
                gen_k[:, :, at], gen_v[:, :, at] = k_MKD, v_MKD
            else:
                gen_k[row_M, :, gen_M], gen_v[row_M, :, gen_M] = k_MKD, v_MKD
            # (B, KV, S·G, Dh): a row's query heads of one key/value head and its S positions as one axis
            q_BKXD = q_MHD.view(B, S, KV, G, Dh).transpose(1, 2).reshape(B, KV, X, Dh)  # scaled by its weights
            out_BKXD = prompts.attend(li, q_BKXD, gen_k[:, :, :Tk], gen_v[:, :, :Tk], mask_B1XT)
            att_MD = out_BKXD.view(B, KV, S, G, Dh).transpose(1, 2).reshape(M, H * Dh)
            x_MD += w_o(att_MD)
            gu = w_gu(self._rms(x_MD))
            x_MD += w_down(F.silu(gu[:, : self.I]) * gu[:, self.I :])
        return self.head(self._rms(x_MD))


class Drafter:
    """Guesses of what follows each row: the tokens that followed the most recent earlier
    occurrence of the row's last ``n`` tokens (n = ``DRAFT_NGRAM`` down to 1) in its prompt and
    completion. Kept as dictionaries from n-grams to where they last ended, updated per token."""

    def __init__(self, rows: Sequence[Sequence[int]], ngram: int = DRAFT_NGRAM) -> None:
        self.ngram = ngram
        self.ctx = [list(r) for r in rows]
        self.ends: list[dict[tuple[int, ...], int]] = []
        shared: dict[tuple[int, ...], dict[tuple[int, ...], int]] = {}
        for row in rows:  # rows of one prompt start from one index (copied)
            key = tuple(row)
            if key not in shared:
                ends: dict[tuple[int, ...], int] = {}
                for e in range(1, len(row)):  # n-grams ending before the last position
                    for n in range(1, min(ngram, e) + 1):
                        ends[tuple(row[e - n : e])] = e
                shared[key] = ends
            self.ends.append(dict(shared[key]))

    def extend(self, b: int, tokens: Sequence[int]) -> None:
        ctx, ends = self.ctx[b], self.ends[b]
        for t in tokens:
            e = len(ctx)  # the n-grams ending at the current end become earlier occurrences
            for n in range(1, min(self.ngram, e) + 1):
                ends[tuple(ctx[e - n : e])] = e
            ctx.append(t)

    def guess(self, b: int, k: int) -> tuple[list[int], int]:
        """Up to ``k`` guessed tokens for row b and the length of the match they come from (0: none)."""
        ctx, ends = self.ctx[b], self.ends[b]
        if k <= 0:
            return [], 0
        for n in range(min(self.ngram, len(ctx)), 0, -1):
            e = ends.get(tuple(ctx[len(ctx) - n :]))
            if e is not None:
                return ctx[e : e + k], n
        return [], 0


class GuessRecord:
    """How often guesses were drawn as guessed, by the length of the match they came from, the
    counts fading by ``FADE`` a step so that the record follows the text (a program copied from
    the prompt, then new code)."""

    FADE = 0.95

    def __init__(self) -> None:
        self.checked: dict[int, float] = {}
        self.kept: dict[int, float] = {}

    def add(self, n: int, checked: int, kept: int) -> None:
        self.checked[n] = self.checked.get(n, 0.0) + checked
        self.kept[n] = self.kept.get(n, 0.0) + kept

    def fade(self) -> None:
        for counts in (self.checked, self.kept):
            for n in counts:
                counts[n] *= self.FADE

    def chance(self, n: int) -> float:
        """The chance that a guess from an n-token match is drawn: (kept + 1) / (checked + 2)."""
        return (self.kept.get(n, 0.0) + 1.0) / (self.checked.get(n, 0.0) + 2.0)


def positions_per_step(guesses: Sequence[Sequence[int]], chances: Sequence[float]) -> int:
    """Positions per row for the next step: the S that maximises expected tokens per unit of cost.

    Row b keeps the token after its last one and then its guesses while they are drawn as
    guessed: with a_b the chance that one of its guesses is drawn, a step of S positions adds
    Σ_{j ≤ min(len(guess_b), S−1)} a_bʲ tokens in expectation, at the cost ``STEP_COST[S−1]``.
    Decided from the tokens alone, so the same seed gives the same steps (and the draws never
    depend on the guesses).
    """
    longest = max((len(g) for g in guesses), default=0)
    best, best_rate = 1, 0.0
    for S in range(1, min(longest + 1, len(STEP_COST)) + 1):
        expected = sum(sum(a**j for j in range(min(len(g), S - 1) + 1)) for g, a in zip(guesses, chances, strict=True))
        if expected / STEP_COST[S - 1] > best_rate * (1 + 1e-9):
            best, best_rate = S, expected / STEP_COST[S - 1]
    return best


def _runs(row_to_distinct: list[int]) -> list[tuple[int, int, int]]:
    """Maximal ranges of consecutive rows that share a distinct prompt: [(start, end, u), ...]."""
    runs: list[tuple[int, int, int]] = []
    for b, u in enumerate(row_to_distinct):
        if runs and runs[-1][2] == u and runs[-1][1] == b:
            runs[-1] = (runs[-1][0], b + 1, u)
        else:
            runs.append((b, b + 1, u))
    return runs


@torch.no_grad()
def fast_decode(
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
    decoder: LlamaDecoder | None = None,
    draft_tokens: int = 0,
) -> list[Piece]:
    """``sampling.decode`` with ``LlamaDecoder`` steps: the same contract, and the same draws for the
    same generator (module docstring). ``decoder``: one already built for ``model`` with its current
    weights (a caller decoding several batches gathers them once). ``draft_tokens``: guesses checked
    per row and step (0: one position per step)."""
    decoder = decoder or LlamaDecoder(model)
    distinct: dict[tuple[int, ...], int] = {}
    row_to_distinct = [distinct.setdefault(tuple(r), len(distinct)) for r in rows]
    prompt_kv, last_logits, shared = _prefill(model, list(distinct), len(decoder.layers))
    B = len(rows)
    book = Rows(budgets, stop_ids, on_step)  # the pieces and the stop/budget rule of every decode loop
    budget, pieces, done = book.budget, book.pieces, book.done
    T = max([1, *budget])
    u_BT = draw_uniforms(B, T, generator, "cpu")
    draft_tokens = max(0, int(draft_tokens))
    # Where a row's prompt is read from: the distinct prompts, each once (``PromptCache``), or, when
    # the distinct prompts share a long beginning, that beginning once for every row and each row's
    # own rest copied ahead of its generated keys, when that reads fewer keys a step
    rest_B = [len(rows[b]) - shared for b in range(B)]
    keys_read = sum(len(rows[start]) for start, _, _ in _runs(row_to_distinct))  # a prompt once per run of rows
    if len(distinct) > 1 and shared + sum(rest_B) < keys_read:
        prompts = PromptCache([[(layer[0][0][:, :shared], layer[0][1][:, :shared])] for layer in prompt_kv], [0] * B)
        read_B = [shared] * B  # prompt positions held in ``prompts`` for row b
    else:
        prompts = PromptCache(prompt_kv, row_to_distinct)
        rest_B, read_B = [0] * B, [len(r) for r in rows]
    # room for the prompt's rest, the budget and the guesses written past a row's budget
    gen_kv = [
        (
            torch.zeros(B, decoder.KV, max(rest_B) + T + draft_tokens, decoder.Dh),
            torch.zeros(B, decoder.KV, max(rest_B) + T + draft_tokens, decoder.Dh),
        )
        for _ in decoder.layers
    ]
    for b in range(B):
        if rest_B[b]:
            for (k, v), layer in zip(gen_kv, prompt_kv, strict=True):
                pk, pv = layer[row_to_distinct[b]]
                k[b, :, : rest_B[b]], v[b, :, : rest_B[b]] = pk[:, shared:], pv[:, shared:]
    drafter = Drafter(rows) if draft_tokens else None
    record = GuessRecord()

    # the first token of each row from its prompt's last logits
    first = [b for b in range(B) if not done[b]]
    if first:
        drawn_B = sample_tokens(
            torch.stack([last_logits[row_to_distinct[b]] for b in first]), temperature, top_p, u_BT[first, 0]
        )
        counts = [
            book.take(b, [t], [lq], [lp]) for b, t, lq, lp in zip(first, *(x.tolist() for x in drawn_B), strict=True)
        ]
        if drafter is not None:
            for b in first:
                drafter.extend(b, pieces[b].tokens[-1:])
        book.report(counts)
    while not all(done):
        # row b feeds its last sampled token and its guesses; a finished row feeds padding (unread)
        n_B = [len(p.tokens) for p in pieces]
        found = [
            ([], 0) if done[b] or drafter is None else drafter.guess(b, min(draft_tokens, budget[b] - n_B[b] - 1))
            for b in range(B)
        ]
        S = positions_per_step([g for g, _ in found], [record.chance(n) for _, n in found])
        guesses = [g[: S - 1] for g, _ in found]
        seqs = [([pieces[b].tokens[-1]] if pieces[b].tokens else [pad_id]) + guesses[b] for b in range(B)]
        tok_BS = torch.tensor([seq + [pad_id] * (S - len(seq)) for seq in seqs])
        # a finished row's keys are never read again: it writes where the live rows write
        # (a row's keys: the rest of its prompt, then its tokens; the fed token is at n_B − 1)
        live_start = max((rest_B[b] + n_B[b] - 1 for b in range(B) if not done[b]), default=0)
        start_B = torch.tensor([live_start if done[b] else rest_B[b] + max(n_B[b] - 1, 0) for b in range(B)])
        pos_BS = torch.tensor(read_B)[:, None] + start_B[:, None] + torch.arange(S)
        logits_BSV = decoder.step(tok_BS, pos_BS, start_B, prompts, gen_kv).view(B, S, -1)
        # draw every position that may be kept: after the last token and after each guess
        live = [b for b in range(B) if not done[b]]
        where = [(b, s) for b in live for s in range(len(guesses[b]) + 1)]
        rows_M = torch.tensor([b for b, _ in where])
        cols_M = torch.tensor([s for _, s in where])
        tok_M, logq_M, logp_M = sample_tokens(
            logits_BSV[rows_M, cols_M],
            temperature,
            top_p,
            u_BT[rows_M, torch.tensor([n_B[b] for b, _ in where]) + cols_M],
        )
        tok_l, logq_l, logp_l = tok_M.tolist(), logq_M.tolist(), logp_M.tolist()
        counts, i = [], 0
        for b in live:
            g = guesses[b]
            drawn, logq, logp = (x[i : i + len(g) + 1] for x in (tok_l, logq_l, logp_l))
            i += len(g) + 1
            kept = 1
            while kept <= len(g) and drawn[kept - 1] == g[kept - 1]:
                kept += 1  # guess kept-1 was drawn: the draw after it is valid too
            record.add(found[b][1], checked=min(len(g), kept), kept=kept - 1)  # guesses after a miss go unchecked
            counts.append(book.take(b, drawn[:kept], logq[:kept], logp[:kept]))
            if drafter is not None:
                drafter.extend(b, pieces[b].tokens[len(pieces[b].tokens) - counts[-1][0] :])
        book.report(counts)
        record.fade()
    return pieces


#: Fewest tokens at the beginning of every distinct prompt worth prefilling once for all of them.
SHARED_MIN = 32


@torch.no_grad()
def _prefill(model, prompts: list[tuple[int, ...]], layers: int):
    """Each prompt's keys and values (per layer, per prompt: (KV, length, Dh)), its last logits, and
    how many first tokens all prompts share (0 if fewer than ``SHARED_MIN``). With several prompts
    those first tokens are computed once: the prompts an engine sends share their system message and
    problem statement and differ in the parent shown. Each prompt keeps at least its last token
    apart, whose logits draw its first token."""
    from ..lora.compat import cache_kwargs, output_cache

    shared = 0
    if len(prompts) > 1:
        shortest = min(len(r) for r in prompts) - 1
        while shared < shortest and all(r[shared] == prompts[0][shared] for r in prompts):
            shared += 1
    if shared < SHARED_MIN:
        shared = 0
    beginning = None  # its cache; its logits are not needed (logits_to_keep=1 spares most of the head's product)
    if shared:
        beginning = output_cache(model(input_ids=torch.tensor([prompts[0][:shared]]), use_cache=True, logits_to_keep=1))
    kv: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in range(layers)]
    last_logits = []
    for u, row in enumerate(prompts):
        # the shared keys/values are extended in a copy, the last prompt may extend them in place
        past = (
            {}
            if beginning is None
            else cache_kwargs(model, beginning if u == len(prompts) - 1 else copy.deepcopy(beginning))
        )
        out = model(input_ids=torch.tensor([row[shared:]]), use_cache=True, logits_to_keep=1, **past)
        cache = output_cache(out)
        for li in range(layers):
            k, v = _layer_kv(cache, li)
            kv[li].append((k[0], v[0]))
        last_logits.append(out.logits[0, -1])
    return kv, last_logits, shared


def _layer_kv(cache, li: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and values of layer ``li`` from a transformers cache, across its releases."""
    layers = getattr(cache, "layers", None)
    if layers is not None:
        return layers[li].keys, layers[li].values
    return cache.key_cache[li], cache.value_cache[li]
