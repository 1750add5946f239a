"""A text task for the learning test: the reply is scored by its share of vowels.

score = (vowels among the reply's characters) / (its length), in [0, 1], higher is better;
an empty reply scores 0. The frozen tiny random model writes about one vowel in ten; no
code is run, the reply itself is the construction, so a step costs only sampling and the
update. The prompt shows the parent's reply, so PUCT reuse has something to build on.
"""

from __future__ import annotations

from discover_ttt.problem import Evaluation, Problem, Program, Verification
from discover_ttt.state import State

VOWELS = set("aeiouAEIOU")


def vowel_share(text: str) -> float:
    return sum(c in VOWELS for c in text) / max(1, len(text))


class VowelProblem(Problem):
    name = "vowels"
    maximize = True

    def initial_states(self, rng, k):
        return [State(value=0.0, score=0.0, construction="") for _ in range(k)]

    def prompt(self, state):
        return [{"role": "user", "content": f"Vowels: {state.construction[:16]}"}]

    def parse(self, text):
        return Program(source=text)  # not run: evaluate() scores the text itself

    def evaluate(self, program, state, sandbox):
        return Evaluation(score=vowel_share(program.source), construction=program.source)

    def verify(self, construction):
        if not isinstance(construction, str):
            return Verification(False, None, "a construction is a string")
        return Verification(True, vowel_share(construction))

    def reward(self, score):
        return float(score)
