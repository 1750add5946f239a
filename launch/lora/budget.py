"""Sampling under the two-phase thinking budget (Ref §2.3), shared by every backend that
samples token by token (local, vLLM, Tinker): the budget arithmetic, the forced end of a
truncated thinking phase, and the grouping of rollouts into ``Completion`` objects. Each
backend supplies only its own ``generate(rows, budgets)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from discover_ttt.backend import Completion
from discover_ttt.final_answer import split_final_answer

OUT_OF_THINKING = "... okay, I am out of thinking tokens. I need to send my final message now."
#: (text forced after a truncated thinking phase, marker showing the answer had already begun)
THINKING_STYLES = {
    "think_tags": ("\n\n" + OUT_OF_THINKING + "\n</think>\n\n", "</think>"),
    "gpt_oss": (
        OUT_OF_THINKING + "<|end|><|start|>assistant<|channel|>final<|message|>",
        "<|channel|>final<|message|>",
    ),
}
GPT_OSS_END = "<|end|>"
#: finish reason of a rollout whose prompt left no room to sample
PROMPT_TOO_LONG = "prompt_too_long"
#: Tokens kept free at the end of the context window (as the reference does).
CONTEXT_MARGIN = 50


def call_seed(seed: int, call: int) -> int:
    """The seed of the ``call``-th ``sample`` call: a pure function of (run seed, call index),
    so a resumed run that restores the call counter draws the same tokens."""
    import numpy as np

    return int(np.random.SeedSequence([seed, call]).generate_state(1, dtype=np.uint64)[0] >> 1)


def chat_prompt_tokens(tokenizer, messages: list[dict[str, str]], template_kwargs: dict) -> list[int]:
    """The chat template applied to ``messages``, ending with the assistant header, as token ids."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **template_kwargs)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


@dataclass
class Piece:
    """Tokens sampled for one row, their sampler log-probs, and whether a stop token ended it."""

    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    stopped: bool = False
    model_logprobs: list[float] = field(default_factory=list)  # before the top-p cut (``Completion``)


@dataclass
class Rollout:
    """A finished completion in token space: sampled and forced tokens, in order."""

    tokens: list[int]
    logprobs: list[float]
    forced: list[bool]
    finish_reason: str
    model_logprobs: list[float] = field(default_factory=list)


Generate = Callable[[list[list[int]], list[int]], list[Piece]]


def sample_with_budget(
    generate: Generate,
    prompts: list[list[int]],
    tokenizer,
    *,
    max_new_tokens: int,
    context_window: int,
    thinking_budget: int | None,
    thinking_style: str,
) -> list[Rollout]:
    """Sample one completion per prompt row, with the two-phase thinking budget when it is on.

    Phase 1 gets min(max_new_tokens, thinking_budget − prompt) tokens (without a budget:
    min(max_new_tokens, context_window − prompt − 50)). A row that stops in phase 1 is
    done. A row that ran out: if its answer has begun (the style's marker occurred) it
    just continues; otherwise the forced text is appended (log-prob 0, ``forced``) and it
    continues. Phase 2 gets context_window − prompt − phase 1 − forced − 50 tokens.
    A prompt that leaves no phase-1 token is not sampled: its rollout is empty, with
    finish reason ``prompt_too_long``.
    """
    caps = [
        context_window - len(p) - CONTEXT_MARGIN if thinking_budget is None else thinking_budget - len(p)
        for p in prompts
    ]
    # A prompt that leaves no room is a failed rollout, not an error: its parent is visited, the run goes on.
    room = [i for i, cap in enumerate(caps) if cap >= 1]
    first_pieces = generate([prompts[i] for i in room], [min(max_new_tokens, caps[i]) for i in room]) if room else []
    first: list[Piece | None] = [None] * len(prompts)
    for i, got in zip(room, first_pieces, strict=True):
        first[i] = got
    rollouts = [
        Rollout([], [], [], PROMPT_TOO_LONG)
        if p is None
        else Rollout(
            list(p.tokens),
            list(p.logprobs),
            [False] * len(p.tokens),
            "stop" if p.stopped else "length",
            list(p.model_logprobs),
        )
        for p in first
    ]
    if thinking_budget is None:
        return rollouts
    forced_text, marker = THINKING_STYLES[thinking_style]
    again, rows, budgets2 = [], [], []
    for i, (prompt, piece) in enumerate(zip(prompts, first, strict=True)):
        if piece is None or piece.stopped:
            continue
        text = tokenizer.decode(piece.tokens, skip_special_tokens=False)
        forced: list[int] = []
        if marker not in text:
            body = forced_text
            if thinking_style == "gpt_oss" and text.endswith(GPT_OSS_END):
                body = forced_text.replace(GPT_OSS_END, "", 1)
            forced = tokenizer.encode(body, add_special_tokens=False)
        budget = context_window - len(prompt) - len(piece.tokens) - len(forced) - CONTEXT_MARGIN
        rollouts[i].tokens += forced
        rollouts[i].logprobs += [0.0] * len(forced)
        rollouts[i].model_logprobs += [0.0] * len(forced)
        rollouts[i].forced += [True] * len(forced)
        if budget >= 1:
            again.append(i)
            rows.append(list(prompt) + list(piece.tokens) + forced)
            budgets2.append(budget)
    for i, piece in zip(again, generate(rows, budgets2) if rows else [], strict=True):
        rollouts[i].tokens += piece.tokens
        rollouts[i].logprobs += piece.logprobs
        rollouts[i].model_logprobs += piece.model_logprobs
        rollouts[i].forced += [False] * len(piece.tokens)
        rollouts[i].finish_reason = "stop" if piece.stopped else "length"
    return rollouts


def to_completions(tokenizer, prompt_rows: list[list[int]], rollouts: list[Rollout], thinking: bool):
    """Group ``rollouts`` (prompt i's are rows i·n … i·n+n−1) into Completions, text split into
    reasoning and answer; ``thinking`` (a thinking budget is set) means a completion without an
    end-of-thinking marker never reached its answer."""
    n = len(rollouts) // max(1, len(prompt_rows))
    out: list[list[Completion]] = []
    for i, prompt in enumerate(prompt_rows):
        group = []
        for r in rollouts[i * n : (i + 1) * n]:
            text = tokenizer.decode(r.tokens, skip_special_tokens=True)
            reasoning, answer = split_final_answer(text, starts_in_reasoning=thinking)
            # model log-probs travel only when every sampled token has one (a decode loop records them)
            model_lp = r.model_logprobs if len(r.model_logprobs) == len(r.tokens) else None
            group.append(
                Completion(
                    text, list(prompt), r.tokens, r.logprobs, r.forced, r.finish_reason, reasoning, answer, model_lp
                )
            )
        out.append(group)
    return out


def budgeted_completions(
    generate: Generate, rows: list[list[int]], prompt_rows: list[list[int]], tokenizer, params, meter
):
    """``sample_with_budget`` over ``rows`` (prompt i's rollouts are rows i·n … i·n+n−1) with
    the budgets in ``params``, then ``to_completions``; every rollout is reported done."""
    rollouts = sample_with_budget(
        generate,
        rows,
        tokenizer,
        max_new_tokens=params.max_new_tokens,
        context_window=params.context_window,
        thinking_budget=params.thinking_budget,
        thinking_style=params.thinking_style,
    )
    meter.finish()
    return to_completions(tokenizer, prompt_rows, rollouts, thinking=params.thinking_budget is not None)
