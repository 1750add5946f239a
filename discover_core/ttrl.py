"""Rewards without a verifier (test-time RL, TTRL): agreement with the group's majority answer.

For a problem whose programs produce answers that nothing can check, the group
itself is the judge (Zuo et al., "TTRL: Test-Time Reinforcement Learning", 2025).
For the G rollouts of one group, with answers a_1..a_G (none for a failed one)
and the problem's comparison key k(a):

    majority = the most common key among the valid answers (a tie goes to the key seen first)
    score_i  = 1 if k(a_i) == majority else 0,     reward_i = score_i;  failures get 0

A group of one agrees with itself. ``MajorityVoteProblem`` implements the
``evaluate_group`` hook this way; a subclass says how to get a rollout's answer
(``answer``) and when two answers agree (``answer_key``). ``majority_vote`` is
the rule alone, for problems that score groups in their own way.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .problem import Evaluation, Invalid, Problem, Program
from .state import State


def majority_vote(
    answers: list[Any | Invalid], key: Callable[[Any], Hashable] = lambda a: a, stdouts: list[str] | None = None
) -> list[Evaluation | Invalid]:
    """One outcome per answer: Evaluation(score 1 or 0) for an answer, the Invalid itself for a failure.

    An answer whose key cannot be computed (``key`` raises) counts as a failure of kind
    ``invalid_construction``. Each Evaluation's construction is the answer; its metrics hold
    the majority key, its votes and the number of valid answers.
    """
    keys: list[Hashable | Invalid] = []
    for a in answers:
        if isinstance(a, Invalid):
            keys.append(a)
            continue
        try:
            k = key(a)
            hash(k)
        except Exception as e:  # noqa: BLE001 - a bad answer is a failed rollout
            keys.append(Invalid("invalid_construction", f"the answer {a!r:.80} cannot be compared: {e}"))
        else:
            keys.append(k)
    valid = [k for k in keys if not isinstance(k, Invalid)]
    counts = Counter(valid)
    majority = max(counts, key=lambda k: (counts[k], -valid.index(k))) if valid else None
    out: list[Evaluation | Invalid] = []
    for i, (a, k) in enumerate(zip(answers, keys, strict=True)):
        if isinstance(k, Invalid):
            out.append(k)
            continue
        metrics = {"majority": repr(majority), "votes": counts[majority], "answers": len(valid)}
        stdout = stdouts[i] if stdouts else ""
        out.append(Evaluation(score=float(k == majority), construction=a, stdout=stdout, metrics=metrics))
    return out


class MajorityVoteProblem(Problem):
    """A problem rewarded by majority vote within each group (module docstring).

    Subclasses implement ``answer`` (run one program, return its answer, a JSON value,
    or an Invalid) and may override ``answer_key`` (default: the answer itself), plus
    ``initial_states`` and ``prompt`` as any problem.
    """

    maximize = True

    def answer(self, program: Program, state: State, sandbox: Any) -> Any | Invalid:
        """The answer of one program (run it in ``sandbox``), or an Invalid saying why there is none."""
        raise NotImplementedError

    def answer_key(self, answer: Any) -> Hashable:
        """What two answers must share to agree (e.g. a number rounded, a string normalised)."""
        return answer

    def evaluate_group(
        self, programs: list[Program | Invalid], state: State, sandbox: Any
    ) -> list[Evaluation | Invalid]:
        def one(p: Program | Invalid) -> tuple[Any, str]:
            if isinstance(p, Invalid):
                return p, p.stdout
            out = self.answer(p, state, sandbox)
            return (out, out.stdout) if isinstance(out, Invalid) else (out, "")

        workers = max(1, min(len(programs), int(getattr(sandbox, "workers", 1) or 1)))
        with ThreadPoolExecutor(workers) as pool:
            results = list(pool.map(one, programs))
        return majority_vote([a for a, _ in results], self.answer_key, [s for _, s in results])

    def evaluate(self, program: Program, state: State, sandbox: Any) -> Evaluation | Invalid:
        """A rollout scored alone is a group of one: any answer agrees with itself."""
        return self.evaluate_group([program], state, sandbox)[0]
