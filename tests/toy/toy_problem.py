"""A tiny problem for the loop's tests: three numbers, as close to 0.3 as possible.

score = -Σ (x_i - 0.3)², maximised. Programs define ``run()`` and may read the
parent's numbers from the global ``parent``.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict

from discover_ttt import hookimpl
from discover_ttt.problem import Evaluation, Invalid, Problem, Verification
from discover_ttt.state import State


class ToyProblem(Problem):
    name = "toy"
    maximize = True

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        size: int = 3

    def initial_states(self, rng, k):
        states = []
        for _ in range(k):
            x = rng.uniform(0, 1, self.params.size).tolist()
            score = self.verify(x).score
            states.append(State(value=score, score=score, construction=x))
        return states

    def prompt(self, state):
        return [{"role": "user", "content": f"Improve {state.construction} (score {state.score})."}]

    def evaluate(self, program, state, sandbox):
        # no timeout_s: the toy states no budget, so the config's sandbox.timeout_s applies
        result = sandbox.run(program.source, program.entry, inject={"parent": state.construction})
        if not result.ok:
            return Invalid.from_sandbox(result)
        v = self.verify(result.value)
        if not v.valid:
            return Invalid("invalid_construction", v.reason, result.stdout)
        return Evaluation(score=v.score, construction=[float(x) for x in result.value], stdout=result.stdout)

    def verify(self, construction):
        if not isinstance(construction, list) or len(construction) != self.params.size:
            return Verification(False, None, f"expected a list of {self.params.size} numbers")
        try:
            xs = [float(x) for x in construction]
        except (TypeError, ValueError):
            return Verification(False, None, "entries must be numbers")
        if not all(math.isfinite(x) for x in xs):
            return Verification(False, None, "entries must be finite")
        return Verification(True, -sum((x - 0.3) ** 2 for x in xs))

    def reward(self, score):
        return 1.0 / (1.0 + (-score))


@hookimpl
def register_problems(register):
    register(ToyProblem)


class LongCodeToy(ToyProblem):
    """The toy problem whose first seed carries a long program, quoted whole in its prompt
    (for the test of prompts longer than the token budget)."""

    name = "toy_long_code"

    class Params(ToyProblem.Params):
        long_code_chars: int = 3000

    def initial_states(self, rng, k):
        states = super().initial_states(rng, k)
        if states:
            states[0].code = "# padding\n" * (self.params.long_code_chars // 10)
        return states

    def prompt(self, state):
        text = super().prompt(state)[0]["content"]
        if state.code:
            text += f"\nLast program:\n```python\n{state.code}\n```"
        return [{"role": "user", "content": text}]
