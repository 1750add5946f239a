"""A problem whose reward depends on the reply's text alone, so that a tiny random model's
groups carry signal and the loop can be tested with a backend that trains.

score = share of the letters a–m among the reply's characters (higher is better); no code
is run, the reply itself is the construction. ``constant: true`` scores every reply 1.0,
which makes every group constant.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from discover_ttt.problem import Evaluation, Problem, Program, Verification
from discover_ttt.state import State

FIRST_HALF = set("abcdefghijklm")


def share(text: str) -> float:
    return sum(c in FIRST_HALF for c in text) / max(1, len(text))


class TextProblem(Problem):
    name = "text"
    maximize = True

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        constant: bool = False

    def initial_states(self, rng, k):
        return [State(value=0.0, score=0.0, construction=f"seed {i}") for i in range(k)]

    def prompt(self, state):
        return [{"role": "user", "content": f"Letters, please. Best: {state.construction[:12]}"}]

    def parse(self, text):
        return Program(source=text)  # not run: evaluate() scores the text itself

    def evaluate(self, program, state, sandbox):
        score = self.verify(program.source).score
        return Evaluation(score=score, construction=program.source)

    def verify(self, construction):
        if not isinstance(construction, str):
            return Verification(False, None, "a construction is a string")
        return Verification(True, 1.0 if self.params.constant else share(construction))

    def reward(self, score):
        return float(score)
