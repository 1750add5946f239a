"""The autocorrelation inequalities AC1 and AC2: bounds from step functions (``reference-algorithm.md`` §6.4).

ac1: score = 2n max(conv(a, a)) / (Σa)², minimised; value = −score; reward = 1 / (1e-8 + score).
ac2: score = ‖f∗f‖₂² / (‖f∗f‖₁ ‖f∗f‖∞), maximised; value = reward = score.

States carry their construction (the scored, clamped heights) as a list of
floats; a child's program receives its parent's as the numpy array
``height_sequence_1``. Seeds are one random height repeated U{1000..7999}
times, with a starter linear-programming program as their last code; with
``rerandomize_seeds`` a selected seed is drawn afresh from the run's RNG each
time (the reference re-draws it with an unseeded RNG).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import ConfigDict, Field

from discover_ttt.parsing import ProgramBudget, numbers_from_record, with_preamble
from discover_ttt.problem import Evaluation, Invalid, Problem, Program, ProgramLimits, Verification
from discover_ttt.state import State

from . import prompts
from .verifier import InvalidSequence, ac1_bound, ac2_bound, check_sequence

_VERIFIER = Path(__file__).with_name("verifier.py").read_text()
_INJECT = (
    "\nheight_sequence_1 = globals().get('height_sequence_1')\n"
    "if height_sequence_1 is not None:\n"
    "    height_sequence_1 = np.asarray(height_sequence_1, dtype=np.float64)\n"
)
#: appended to every program: calls the entry and checks the types of what it returned
#: inside the sandbox, where a numpy array or a bool item can still be told apart
_CHECKED_ENTRY = "_discover_checked_entry"
_CHECKER = """

def {checked}():
    result = {entry}()
    if not isinstance(result, list):
        return {{"rejected": "{entry}() must return a Python list; it returned a "
                + type(result).__module__ + "." + type(result).__qualname__
                + " (convert a numpy array with .tolist())"}}
    for i, x in enumerate(result):
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            return {{"rejected": "item " + str(i) + " of the returned list is a " + type(x).__name__
                    + "; every item must be an int or a float"}}
    return result
"""

#: marks seeds drawn at random (re-randomised when selected, if the option is on)
RANDOM_SEED = "random_seed"


class AutocorrelationProblem(Problem):
    """Shared by AC1 and AC2: contract, seeds, archive limits, evaluation."""

    bound_name: ClassVar[str] = ""
    statement: ClassVar[str] = ""
    evaluate_doc: ClassVar[str] = ""
    evaluate_fn: ClassVar[str] = ""
    starter: ClassVar[str] = ""
    #: programs may use cvxpy: the sandbox imports it once per fork server
    sandbox_preload: ClassVar[tuple[str, ...]] = ("cvxpy",)

    class Params(ProgramBudget):
        model_config = ConfigDict(extra="forbid")

        min_archive_len: int = Field(1000, ge=1, description="shorter constructions are scored, not archived")
        max_archive_len: int = Field(100000, ge=1, description="longer constructions are scored, not archived")
        target: float | None = Field(
            None, gt=0, description="the bound the prompt names as the goal (None: the paper's)"
        )
        starter_code: bool = Field(True, description="seeds carry the starter linear-programming program as last code")
        rerandomize_seeds: bool = Field(
            True, description="a selected random seed is re-drawn (length and height) from the run's RNG"
        )

    default_target: ClassVar[float] = 1.0

    def __init__(self, params: Params | None = None) -> None:
        super().__init__(params if params is not None else self.Params())
        self.preamble = _VERIFIER + f"\nevaluate_sequence = {self.evaluate_fn}\n" + _INJECT

    def target(self) -> float:
        """The bound the prompt names as the goal: the ``target`` parameter, else the paper's."""
        return self.params.target if self.params.target is not None else self.default_target

    # -- the bound -----------------------------------------------------------------
    def bound(self, heights: np.ndarray) -> float:
        raise NotImplementedError

    # -- states ---------------------------------------------------------------
    def _random_seed(self, rng: np.random.Generator) -> State:
        height, n = float(rng.random()), int(rng.integers(1000, 8000))
        construction = [height] * n
        score = self.bound(check_sequence(construction))
        return State(
            value=self.value(score),
            score=score,
            construction=construction,
            code=self.seed_code(),
            metrics={RANDOM_SEED: True},
        )

    def seed_code(self) -> str:
        """The starter linear-programming program (with ``starter_code``), else none."""
        return self.starter.format(budget_s=f"{self.program_limits().seconds:g}") if self.params.starter_code else ""

    def initial_states(self, rng: np.random.Generator, k: int) -> list[State]:
        """One random height repeated U{1000..7999} times, from the run's RNG (the reference's seed)."""
        return [self._random_seed(rng) for _ in range(k)]

    def on_selected(self, state: State, rng: np.random.Generator) -> State:
        """A selected random seed, re-drawn: same id and lineage, a new construction, value and score."""
        if not (self.params.rerandomize_seeds and state.metrics.get(RANDOM_SEED)):
            return state
        fresh = self._random_seed(rng)
        return dataclasses.replace(
            state, construction=fresh.construction, value=fresh.value, score=fresh.score, metrics=dict(fresh.metrics)
        )

    def keep_in_archive(self, state: State) -> bool:
        c = state.construction
        return c is not None and self.params.min_archive_len <= len(c) <= self.params.max_archive_len

    def size_limit(self, construction: Any) -> str | None:
        limit = self.params.max_archive_len
        if isinstance(construction, (list, tuple)) and len(construction) > limit:
            return f"{len(construction)} heights, more than the {limit} of problem.max_archive_len"
        return None

    # -- model I/O --------------------------------------------------------------
    def prompt(self, state: State) -> list[dict[str, str]]:
        limits = self.program_limits()
        better = "higher" if self.maximize else "lower"
        parts = [
            self.statement.format(
                entry=self.entry,
                budget_s=f"{limits.seconds:g}",
                cpus=limits.cpus,
                target=self.target(),
                evaluate_doc=self.evaluate_doc,
            ).strip()
        ]
        context = ["## Current state", f"You are iteratively optimising the {self.bound_name}."]
        after = state.score
        if state.code:
            context.append(prompts.LAST_CODE.format(code=state.code.strip("\n")))
            before = state.parent_values[0] if state.parent_values else None
            if before is not None and after is not None:
                before_score = before if self.maximize else -before
                context.append(
                    prompts.BEFORE_AFTER.format(
                        what=self.bound_name.capitalize(), better=better, before=_fmt(before_score), after=_fmt(after)
                    )
                )
            elif after is not None:
                context.append(prompts.CURRENT.format(what=self.bound_name, better=better, after=_fmt(after)))
        elif after is not None:
            context.append(prompts.CURRENT.format(what=self.bound_name, better=better, after=_fmt(after)))
        if after is not None:
            target = self.target()
            gap = target - after if self.maximize else after - target
            context.append(prompts.TARGET.format(target=target, gap=_fmt(gap)))
        if state.construction is not None:
            context.append(prompts.LENGTH.format(n=len(state.construction)))
        if state.stdout:
            context.append(prompts.OUTPUT.format(stdout=state.stdout[-500:]))
        context.append(prompts.DIFFERENT if state.code else prompts.NO_CODE)
        parts += ["\n\n".join(context), prompts.ANSWER]
        return [{"role": "user", "content": "\n\n".join(parts)}]

    # -- scoring ----------------------------------------------------------------
    def program_limits(self) -> ProgramLimits:
        """``budget_s`` seconds (the sandbox allows ``timeout_margin_s`` more) and ``cpus`` cores per program."""
        return self.params.limits()

    def evaluate(self, program: Program, state: State, sandbox: Any) -> Evaluation | Invalid:
        source = with_preamble(self.preamble, program.source) + _CHECKER.format(
            checked=_CHECKED_ENTRY, entry=program.entry
        )
        result = sandbox.run(
            source,
            entry=_CHECKED_ENTRY,
            inject={"height_sequence_1": state.construction},
            timeout_s=self.program_limits().timeout_s,
        )
        if not result.ok:
            return Invalid.from_sandbox(result)
        value = result.value
        if isinstance(value, dict) and "rejected" in value:
            return Invalid("invalid_construction", str(value["rejected"]), stdout=result.stdout)
        try:
            heights = check_sequence(value)
            score = self.bound(heights)
        except InvalidSequence as e:
            return Invalid("invalid_construction", str(e), stdout=result.stdout)
        if not np.isfinite(score):
            return Invalid("invalid_construction", f"the computed bound is {score!r}", stdout=result.stdout)
        return Evaluation(
            score=score,
            construction=heights.tolist(),
            stdout=result.stdout,
            metrics={"n": int(heights.size)},
            code=program.source,
        )

    def verify(self, construction: Any) -> Verification:
        """Recompute the bound from the heights alone (the same checks as during runs)."""
        if isinstance(construction, tuple):
            construction = list(construction)
        try:
            heights = check_sequence(construction)
        except InvalidSequence as e:
            return Verification(valid=False, score=None, reason=str(e))
        score = self.bound(heights)
        if not np.isfinite(score):
            return Verification(valid=False, score=None, reason=f"the computed bound is {score!r}")
        return Verification(valid=True, score=score, metrics={"n": int(heights.size), "sum": float(heights.sum())})

    # -- extras -------------------------------------------------------------------
    def construction_from_record(self, record: Any) -> Any:
        """The heights from a bare list, {"values": [...]}, or a whole record with "construction"."""
        return numbers_from_record(record, ("construction", "values", "heights", "sequence"), self.name)

    def plot(self, construction: Any, path: str) -> None:
        """The step function f on [-1/4, 1/4] and its autoconvolution f∗f on [-1/2, 1/2], bound in the title."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        check = self.verify(construction)
        a = check_sequence(construction) if check.valid else np.asarray(construction, dtype=np.float64)
        n = a.size
        c = np.fft.irfft(np.fft.rfft(a, 2 * n) ** 2, 2 * n)[: 2 * n - 1] if n else a
        from discover_ttt.plotting import drawn_as, envelope

        fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 5), dpi=150)
        # a line through the block centres (long constructions drawn in blocks, with their min-max band)
        mean_M, lo_M, hi_M, bounds = envelope(a)
        x = -0.25 + (bounds[:-1] + bounds[1:]) / (4 * max(n, 1))
        top.fill_between(x, mean_M, step="mid", alpha=0.35, color="tab:blue", linewidth=0)
        if mean_M.size < n:
            top.fill_between(x, lo_M, hi_M, step="mid", alpha=0.25, color="tab:blue", linewidth=0)
        top.plot(x, mean_M, drawstyle="steps-mid", color="tab:blue", linewidth=0.5)
        top.set(xlim=(-0.25, 0.25), xlabel="x", ylabel="f(x)")
        cmean, clo, chi, cb = envelope(c)
        t = -0.5 + (cb[:-1] + cb[1:]) / (2 * (c.size + 1)) + 0.5 / (c.size + 1)
        if cmean.size < c.size:
            bottom.fill_between(t, clo, chi, alpha=0.25, color="tab:red", linewidth=0)
        bottom.plot(t, cmean, color="tab:red", linewidth=0.8)
        bottom.set(xlim=(-0.5, 0.5), xlabel="t", ylabel="(f∗f)(t), unnormalised")
        title = f"{self.name}, n = {n}{drawn_as(n)}: " + (
            f"{self.symbol} {check.score:.10f}" if check.valid else f"invalid ({check.reason[:60]})"
        )
        top.set_title(title, fontsize=10)
        fig.tight_layout()
        fig.savefig(path, format="png")
        plt.close(fig)

    symbol: ClassVar[str] = ""


class AC1Problem(AutocorrelationProblem):
    """First autocorrelation inequality: minimise 2n·max(conv(a, a))/(Σa)², an upper bound on C1."""

    name = "ac1"
    maximize = False
    entry = "propose_candidate"
    bound_name = "upper bound on C1"
    symbol = "C1 ≤"
    statement = prompts.AC1_STATEMENT
    evaluate_doc = prompts.AC1_EVALUATE_DOC
    evaluate_fn = "evaluate_ac1"
    starter = prompts.STARTER_AC1
    default_target = 1.5030

    def bound(self, heights: np.ndarray) -> float:
        return ac1_bound(heights)

    def reward(self, score: float) -> float:
        return 1.0 / (1e-8 + float(score))


class AC2Problem(AutocorrelationProblem):
    """Second autocorrelation inequality: maximise ‖f∗f‖₂²/(‖f∗f‖₁‖f∗f‖∞), a lower bound on C2."""

    name = "ac2"
    maximize = True
    entry = "construct_function"
    bound_name = "lower bound on C2"
    symbol = "C2 ≥"
    statement = prompts.AC2_STATEMENT
    evaluate_doc = prompts.AC2_EVALUATE_DOC
    evaluate_fn = "evaluate_ac2"
    starter = prompts.STARTER_AC2
    default_target = 0.97

    def bound(self, heights: np.ndarray) -> float:
        return ac2_bound(heights)


def _fmt(x: float | None) -> str:
    return "none" if x is None else f"{x:.10f}"
