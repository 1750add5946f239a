"""Only the final answer of a thinking model's completion is parsed (reasoning drafts never run)."""

import json
from pathlib import Path

import pytest

from discover_ttt.backend import Completion
from discover_ttt.final_answer import split_final_answer
from discover_ttt.loop import run_config
from discover_ttt.progress import Reporter

CONFIG = Path(__file__).parent / "toy" / "config.yaml"
DRAFT = "```python\ndef run():\n    return [0.3, 0.3, 0.3]\n```"
ANSWER = "```python\ndef run():\n    return [0.3, 0.3, 0.31]\n```"


@pytest.mark.parametrize(
    "text, reasoning, answer",
    [
        ("plain reply " + ANSWER, "", "plain reply " + ANSWER),
        ("<think>try " + DRAFT + "</think>\n\nfinal " + ANSWER, "<think>try " + DRAFT, "\n\nfinal " + ANSWER),
        # Qwen3 template that already opened the tag: only the closing tag is in the completion
        ("try " + DRAFT + "\n</think>\n" + ANSWER, "try " + DRAFT + "\n", "\n" + ANSWER),
        # gpt-oss (harmony) with its special tokens
        (
            "<|channel|>analysis<|message|>try "
            + DRAFT
            + "<|end|><|start|>assistant<|channel|>final<|message|>"
            + ANSWER
            + "<|return|>",
            "<|channel|>analysis<|message|>try " + DRAFT + "<|end|><|start|>assistant",
            ANSWER,
        ),
        # the same decoded without special tokens
        ("analysistry " + DRAFT + "assistantfinal" + ANSWER, "analysistry " + DRAFT, ANSWER),
        # a final channel with a constrained format
        ("<|channel|>final <|constrain|>json<|message|>" + ANSWER, "", ANSWER),
        # a thinking phase that never ended: no answer at all
        ("<think>try " + DRAFT, "<think>try " + DRAFT, ""),
        ("<|channel|>analysis<|message|>try " + DRAFT, "<|channel|>analysis<|message|>try " + DRAFT, ""),
    ],
)
def test_split_final_answer(text, reasoning, answer):
    assert split_final_answer(text) == (reasoning, answer)


def test_split_when_the_backend_knows_the_model_thinks_first():
    assert split_final_answer("try " + DRAFT, starts_in_reasoning=True) == ("try " + DRAFT, "")
    assert split_final_answer("try</think>" + ANSWER, starts_in_reasoning=True) == ("try", ANSWER)


def test_completion_fills_both_parts():
    c = Completion("<think>x</think>y")
    assert (c.reasoning, c.answer) == ("<think>x", "y")
    kept = Completion("anything", reasoning="r", answer="a")
    assert (kept.reasoning, kept.answer) == ("r", "a")


def test_loop_parses_only_the_answer(tmp_path):
    replies = [
        "<think>a draft " + DRAFT + "</think>\nSorry, no program this time.",  # the draft must not run
        "<think>a draft " + DRAFT + "</think>\nHere it is:\n" + ANSWER,
        "<think>" + DRAFT + " and the thinking never ended",
    ]
    path = tmp_path / "replies.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in replies))
    sets = [f"run.output={tmp_path / 'run'}", "sandbox.isolation=none", f"backend.path={path}"]
    sets += ["run.steps=1", "run.groups=1", "run.rollouts=3"]
    summary = run_config(CONFIG, sets, reporter=Reporter())
    lines = (summary.run_dir / "events.jsonl").read_text().splitlines()
    ev = [e for e in map(json.loads, lines) if e["type"] == "rollout"]
    assert [e["outcome"] for e in ev] == ["no_code", "valid", "no_code"]
    assert ev[1]["score"] == pytest.approx(-(0.01**2))  # the answer's program, not the draft's
    # events keep the whole completion and the answer that was parsed
    assert ev[1]["text"] == replies[1] and ev[1]["answer"] == "\nHere it is:\n" + ANSWER


def test_local_completions_are_split():
    from discover_ttt.launch.lora.budget import Rollout, to_completions
    from discover_ttt.launch.lora.tiny import tiny_tokenizer

    tok = tiny_tokenizer()
    texts = ["draft " + DRAFT + "</think>" + ANSWER, "draft " + DRAFT]
    rollouts = [Rollout(tok.encode(t, add_special_tokens=False), [], [], "stop") for t in texts]
    ((a, b),) = to_completions(tok, [[1, 2]], rollouts, thinking=True)
    assert (a.answer, b.answer) == (ANSWER, "") and b.reasoning == texts[1]
    ((c, _),) = to_completions(tok, [[1, 2]], rollouts, thinking=False)
    assert c.answer == ANSWER
