"""Where a thinking model's completion is cut into its reasoning and its final answer.

The one place this is decided: every backend (through ``Completion``, or itself when it
knows more, e.g. that the chat template already opened the think tag) uses
``split_final_answer``, and problems parse only the answer.
"""

from __future__ import annotations

import re

#: Where the final answer of a thinking model begins, in the order they are tried:
#: Qwen3-style think tags, gpt-oss's final channel (harmony) with its special tokens,
#: and the same decoded without special tokens ("...analysis text...assistantfinal...").
ANSWER_MARKERS = (
    re.compile(re.escape("</think>")),
    re.compile(re.escape("<|channel|>final") + r"(?:\s*<\|constrain\|>[^<]*)?" + re.escape("<|message|>")),
    re.compile(r"assistantfinal"),
)
#: The ways a completion can open in its reasoning (a model whose thinking never ended
#: has no answer at all).
REASONING_OPENERS = re.compile(r"\s*(?:<think>|(?:<\|start\|>assistant)?<\|channel\|>analysis)")
#: Harmony tokens that close the final message; not part of the answer.
_HARMONY_END = re.compile(r"(?:<\|return\|>|<\|end\|>|<\|call\|>)\s*$")


def split_final_answer(text: str, *, starts_in_reasoning: bool = False) -> tuple[str, str]:
    """(reasoning, answer) of a completion; problems parse only the answer.

    The answer starts after the first end-of-thinking marker (``</think>``, gpt-oss's
    ``<|channel|>final<|message|>`` or its decoded form ``assistantfinal``); the marker
    itself belongs to neither part. Without a marker the completion is all answer, unless
    it opens in its reasoning (``<think>``, a harmony analysis channel) or the backend
    knows the model thinks first (``starts_in_reasoning``, e.g. a chat template that
    already opened the think tag): then it is all reasoning and the answer is empty.
    """
    found = [m for m in (p.search(text) for p in ANSWER_MARKERS) if m is not None]
    if found:
        first = min(found, key=lambda m: m.start())
        return text[: first.start()], _HARMONY_END.sub("", text[first.end() :])
    if starts_in_reasoning or REASONING_OPENERS.match(text):
        return text, ""
    return "", text
