"""A small problem without a verifier, rewarded by majority vote: "what is the 10th prime?".

Nothing checks the answer; a rollout is rewarded when its program returns the number
most of its group returned (``discover_ttt.ttrl``). Numbers agree when they are equal
to 6 decimals, so 29 and 29.0 are the same answer.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from discover_ttt.problem import Invalid
from discover_ttt.state import State
from discover_ttt.ttrl import MajorityVoteProblem


class TenthPrime(MajorityVoteProblem):
    name = "tenth_prime"

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        timeout_s: float = 5.0

    def initial_states(self, rng, k):
        return [State(value=0.0, score=0.0) for _ in range(k)]

    def prompt(self, state):
        return [{"role": "user", "content": "Write a Python function run() that returns the 10th prime number."}]

    def answer(self, program, state, sandbox):
        result = sandbox.run(program.source, program.entry, timeout_s=self.params.timeout_s)
        if not result.ok:
            return Invalid.from_sandbox(result)
        if isinstance(result.value, bool) or not isinstance(result.value, (int, float)):
            return Invalid("invalid_construction", f"run() must return a number; it returned {result.value!r:.60}")
        return result.value

    def answer_key(self, answer):
        return round(float(answer), 6)
