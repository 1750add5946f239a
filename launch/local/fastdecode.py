"""Decoding steps of a Llama-family model written out in a few tensor operations, for the CPU.

Why: after the prefill, a CPU decoding step of transformers' generic forward spends most of
its time outside the matrix products that must read the weights (module calls, GQA's
``repeat_kv`` copies of the key/value cache, separate q/k/v and gate/up products), and every
rollout of a group reads its own copy of the shared prompt's keys and values. This module
computes the same function with

- one product for q, k and v and one for gate and up (the weights concatenated once per
  ``sample`` call, after the adapter was folded into them: ``Trainer.merged_for_sampling``);
- grouped-query attention without copies (the query heads of a key/value head as one axis);
- the prompt's keys/values kept once per distinct prompt, not once per rollout: the scores
  of a rollout are [q·K_prompt, q·K_generated], one softmax over both.

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

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from ..lora.budget import Piece
from .sampling import sample_loop


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


class LlamaDecoder:
    """The decoding step of one Llama-family model, weights gathered once (per ``sample`` call)."""

    def __init__(self, model) -> None:
        inner = _inner(model)
        cfg, body = inner.config, inner.model
        self.model = model
        self.embed = body.embed_tokens.weight
        # (in, out) layouts: on the CPU x @ W_t with W_t contiguous is about twice as fast as x @ W.T
        self.head_t = inner.lm_head.weight.T.contiguous()
        self.norm_w, self.eps = body.norm.weight, float(body.norm.variance_epsilon)
        self.inv_freq = body.rotary_emb.inv_freq.float()
        self.rope_scale = float(getattr(body.rotary_emb, "attention_scaling", 1.0))
        self.H, self.KV = int(cfg.num_attention_heads), int(cfg.num_key_value_heads)
        self.Dh = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads)
        self.I = int(cfg.intermediate_size)
        self.layers = []
        for layer in body.layers:
            att, mlp = layer.self_attn, layer.mlp
            self.layers.append(
                (
                    layer.input_layernorm.weight,
                    torch.cat([_weight(att.q_proj), _weight(att.k_proj), _weight(att.v_proj)]).T.contiguous(),
                    _weight(att.o_proj).T.contiguous(),
                    layer.post_attention_layernorm.weight,
                    torch.cat([_weight(mlp.gate_proj), _weight(mlp.up_proj)]).T.contiguous(),
                    _weight(mlp.down_proj).T.contiguous(),
                )
            )

    def _rms(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))

    @staticmethod
    def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin

    def step(self, tok_B, pos_B, t: int, runs, prompt_kv, gen_kv) -> torch.Tensor:
        """Logits (B, V) after feeding ``tok_B`` at positions ``pos_B``; its keys/values are written
        at generated index ``t``. ``runs``: (start, end, u) row ranges sharing distinct prompt u."""
        B, H, KV, Dh = tok_B.shape[0], self.H, self.KV, self.Dh
        G = H // KV
        freqs_BD = pos_B[:, None].float() * self.inv_freq[None]
        emb_BD = torch.cat((freqs_BD, freqs_BD), dim=-1)
        cos_B1D = (emb_BD.cos() * self.rope_scale)[:, None]
        sin_B1D = (emb_BD.sin() * self.rope_scale)[:, None]
        scale = Dh**-0.5
        x_BD = self.embed[tok_B]
        for li, (w_in, w_qkv, w_o, w_post, w_gu, w_down) in enumerate(self.layers):
            qkv = self._rms(x_BD, w_in) @ w_qkv
            q_BHD = self._rope(qkv[:, : H * Dh].view(B, H, Dh), cos_B1D, sin_B1D)
            k_BKD = self._rope(qkv[:, H * Dh : (H + KV) * Dh].view(B, KV, Dh), cos_B1D, sin_B1D)
            gen_k, gen_v = gen_kv[li]
            gen_k[:, :, t] = k_BKD
            gen_v[:, :, t] = qkv[:, (H + KV) * Dh :].view(B, KV, Dh)
            q_BKGD = q_BHD.view(B, KV, G, Dh) * scale
            out_BKGD = torch.empty_like(q_BKGD)
            for start, end, u in runs:
                pk_KPD, pv_KPD = prompt_kv[li][u]
                n, P = end - start, pk_KPD.shape[1]
                # the run's rows and query heads as one axis per key/value head: plain batched
                # products against the one copy of the prompt's keys/values
                q_KMD = q_BKGD[start:end].transpose(0, 1).reshape(KV, n * G, Dh)
                s_prompt = torch.bmm(q_KMD, pk_KPD.transpose(1, 2)).view(KV, n, G, P).transpose(0, 1)
                s_gen = torch.matmul(q_BKGD[start:end], gen_k[start:end, :, : t + 1].transpose(-1, -2))
                a = torch.cat((s_prompt, s_gen), dim=-1).softmax(dim=-1)  # (n, KV, G, P + t + 1)
                a_KMP = a[..., :P].transpose(0, 1).reshape(KV, n * G, P)
                from_prompt = torch.bmm(a_KMP, pv_KPD).view(KV, n, G, Dh).transpose(0, 1)
                out_BKGD[start:end] = from_prompt + torch.matmul(a[..., P:], gen_v[start:end, :, : t + 1])
            x_BD = x_BD + out_BKGD.reshape(B, H * Dh) @ w_o
            gu = self._rms(x_BD, w_post) @ w_gu
            x_BD = x_BD + (F.silu(gu[:, : self.I]) * gu[:, self.I :]) @ w_down
        return self._rms(x_BD, self.norm_w) @ self.head_t


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
) -> list[Piece]:
    """``sampling.decode`` with ``LlamaDecoder`` steps: the same contract, and the same draws for the
    same logits (``sampling.sample_loop`` with the caller's generator). ``decoder``: one already built
    for ``model`` with its current weights (a caller decoding several batches gathers them once)."""
    from ..lora.compat import output_cache

    decoder = decoder or LlamaDecoder(model)
    distinct: dict[tuple[int, ...], int] = {}
    row_to_distinct = [distinct.setdefault(tuple(r), len(distinct)) for r in rows]
    # prefill each distinct prompt alone (no padding): its keys/values, kept once
    prompt_kv: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in decoder.layers]
    last_logits = []
    for row in distinct:
        out = model(input_ids=torch.tensor([row]), use_cache=True, logits_to_keep=1)
        cache = output_cache(out)
        for li in range(len(decoder.layers)):
            k, v = _layer_kv(cache, li)
            prompt_kv[li].append((k[0], v[0]))
        last_logits.append(out.logits[0, -1])
    B = len(rows)
    budget_B = torch.tensor(list(budgets))
    T = max(1, int(budget_B.max().item()))
    gen_kv = [
        (torch.zeros(B, decoder.KV, T, decoder.Dh), torch.zeros(B, decoder.KV, T, decoder.Dh)) for _ in decoder.layers
    ]
    runs = _runs(row_to_distinct)
    pos_B = torch.tensor([len(r) for r in rows])

    def next_logits(tok_B: torch.Tensor, step: int) -> torch.Tensor:
        return decoder.step(tok_B, pos_B + step, step, runs, prompt_kv, gen_kv)

    first_BV = torch.stack([last_logits[u] for u in row_to_distinct])
    return sample_loop(
        first_BV,
        next_logits,
        budget_B,
        temperature=temperature,
        top_p=top_p,
        stop_ids=stop_ids,
        pad_id=pad_id,
        generator=generator,
        on_step=on_step,
    )


def _layer_kv(cache, li: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and values of layer ``li`` from a transformers cache, across its releases."""
    layers = getattr(cache, "layers", None)
    if layers is not None:
        return layers[li].keys, layers[li].values
    return cache.key_cache[li], cache.value_cache[li]
