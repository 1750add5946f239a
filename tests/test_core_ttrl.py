"""TTRL: majority-vote group rewards (discover_ttt.ttrl) on hand-made groups and on a small problem."""

import json
from pathlib import Path

from discover_ttt.config import load_config
from discover_ttt.loop import Discovery
from discover_ttt.problem import Evaluation, Invalid, Program
from discover_ttt.progress import Reporter
from discover_ttt.ttrl import majority_vote

HERE = Path(__file__).parent / "ttrl"


def rewards(outcomes):
    return [o.score if isinstance(o, Evaluation) else None for o in outcomes]


def test_the_majority_answer_is_rewarded_and_failures_get_nothing():
    failed = Invalid("timeout", "too slow")
    out = majority_vote([29, 29.0, 31, failed, 29.0000001], key=lambda a: round(float(a), 6))
    assert rewards(out) == [1.0, 1.0, 0.0, None, 1.0]
    assert out[3] is failed
    assert out[0].metrics == {"majority": "29.0", "votes": 3, "answers": 4} and out[2].construction == 31


def test_a_tie_goes_to_the_answer_seen_first():
    assert rewards(majority_vote(["b", "a", "a", "b"])) == [1.0, 0.0, 0.0, 1.0]
    assert rewards(majority_vote([7])) == [1.0]  # a group of one agrees with itself


def test_unkeyable_answers_and_all_failed_groups():
    out = majority_vote([[1, 2], [1, 2], 3])  # lists are not hashable: those two fail
    assert [type(o).__name__ for o in out] == ["Invalid", "Invalid", "Evaluation"] and out[2].score == 1.0
    assert "cannot be compared" in out[0].reason
    assert majority_vote([Invalid("no_code", "x")] * 2)[0].kind == "no_code"
    assert majority_vote([[1, 2], [1, 2]], key=tuple)[1].score == 1.0  # the problem says how to compare


REPLIES = [
    "```python\ndef run():\n    primes = [p for p in range(2, 100) if all(p % d for d in range(2, p))]\n    return primes[9]\n```",
    "```python\ndef run():\n    return 29.0\n```",
    "```python\ndef run():\n    return 31\n```",
    "The tenth prime is 29.",
    "```python\ndef run():\n    return 'twenty-nine'\n```",
]


def test_the_example_problem_rewards_agreement_through_the_loop(tmp_path):
    replies = tmp_path / "replies.jsonl"
    replies.write_text("".join(json.dumps(r) + "\n" for r in REPLIES))
    raw = {
        "problem": {"name": "majority_problem:TenthPrime"},
        "backend": {"name": "replay", "path": str(replies)},
        "estimator": {"name": "grpo"},
        "sandbox": {"timeout_s": 5, "memory_mb": 1024, "workers": 2, "isolation": "none", "preload": ["numpy"]},
        "run": {"steps": 1, "groups": 1, "rollouts": 5, "seed": 0, "output": str(tmp_path / "run")},
        "log": {"progress": "none"},
    }
    disc = Discovery(load_config(HERE, raw=raw), reporter=Reporter())
    disc.start()
    summary = disc.run()
    events = [json.loads(line) for line in (summary.run_dir / "events.jsonl").read_text().splitlines()]
    rollouts = sorted((e for e in events if e["type"] == "rollout"), key=lambda e: e["index"])
    assert [e["reward"] for e in rollouts] == [1.0, 1.0, 0.0, 0.0, 0.0]
    assert [e["outcome"] for e in rollouts] == ["valid", "valid", "valid", "no_code", "invalid_construction"]
    adv = [e["advantage"] for e in rollouts]
    assert adv[0] == adv[1] > 0 > adv[2] == adv[3] == adv[4]
    # a rollout evaluated alone is a group of one
    with disc.sandbox.__class__(timeout_s=5, workers=1, isolation="none", preload=("numpy",)) as sb:
        alone = disc.problem.evaluate(Program("def run():\n    return 31\n"), None, sb)
    assert alone.score == 1.0 and alone.construction == 31
