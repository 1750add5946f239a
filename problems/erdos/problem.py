"""The Erdős minimum-overlap problem: minimise the C5 bound of a step function.

score = C5 (verified by ``verifier.py``), value = -C5, reward = 1 / (1e-8 + C5).
States carry their construction (the scored, rescaled array) as a list of
floats; a child's program receives its parent's as the numpy array
``initial_h_values``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ConfigDict, Field

from discover_ttt.parsing import (
    ProgramBudget,
    bounded_code,
    max_code_chars_field,
    numbers_from_record,
    with_preamble,
)
from discover_ttt.problem import Evaluation, Invalid, Problem, Program, ProgramLimits, Verification
from discover_ttt.state import State

from . import prompts
from .verifier import InvalidConstruction, check_h, erdos_c5, verify_erdos

#: the program's namespace gets the verifier's functions, then the parent's construction
PREAMBLE = (
    Path(__file__).with_name("verifier.py").read_text()
    + "\ninitial_h_values = globals().get('initial_h_values')\n"
    + "if initial_h_values is not None:\n"
    + "    initial_h_values = np.asarray(initial_h_values, dtype=np.float64)\n"
)


PUBLISHED = {
    "Haugland (2016)": 0.3809268534,
    "AlphaEvolve (2025)": 0.3809230351,
    "TTT-Discover (2026)": 0.3808753232,
}


def _fmt(x: float | None) -> str:
    return "none" if x is None else f"{x:.10f}"


class ErdosProblem(Problem):
    """Erdős minimum overlap: find h: [0, 2] -> [0, 1], ∫h = 1, minimising max_k ∫ h(x)(1 - h(x+k)) dx."""

    name = "erdos"
    maximize = False
    entry = "run"

    class Params(ProgramBudget):
        model_config = ConfigDict(extra="forbid")

        max_archive_points: int = Field(1000, ge=1, description="longer constructions are scored, not archived")
        target: float = Field(0.3808, gt=0, description="the C5 the prompt names as the goal")
        max_code_chars: int = max_code_chars_field()
        starter_code: bool = Field(
            False,
            description="seeds carry a working example program as their last code (for small models; "
            "the paper's seeds have none)",
        )

    def __init__(self, params: Params | None = None) -> None:
        super().__init__(params if params is not None else self.Params())

    def records(self) -> dict[str, float]:
        """C5 of the published constructions, recomputed by our verifier (README, "Published records")."""
        return dict(PUBLISHED)

    # -- states ---------------------------------------------------------------
    def initial_states(self, rng: np.random.Generator, k: int) -> list[State]:
        """Random constructions as the reference: n ~ U{40..99}, h = 0.5 + (u - mean u), u ~ U(-0.4, 0.4).

        h is not clipped, so about one draw in a thousand leaves [0, 1] (a large
        mean shift); such a draw is redrawn, as no verifier would accept it.
        """
        states: list[State] = []
        while len(states) < k:
            n = int(rng.integers(40, 100))
            u_N = rng.uniform(-0.4, 0.4, size=n)
            h_N = 0.5 + (u_N - u_N.mean())
            if h_N.min() < 0.0 or h_N.max() > 1.0:
                continue
            h_N, c5 = verify_erdos(h_N)
            states.append(State(value=-c5, score=c5, construction=h_N.tolist(), code=self.seed_code()))
        return states

    def seed_code(self) -> str:
        """The starter program (with ``starter_code``), else none, as the paper's seeds."""
        return prompts.STARTER.format(budget_s=f"{self.program_limits().seconds:g}") if self.params.starter_code else ""

    def keep_in_archive(self, state: State) -> bool:
        return state.construction is not None and len(state.construction) <= self.params.max_archive_points

    def size_limit(self, construction: Any) -> str | None:
        limit = self.params.max_archive_points
        if isinstance(construction, (list, tuple)) and len(construction) > limit:
            return f"{len(construction)} points, more than the {limit} of problem.max_archive_points"
        return None

    # -- model I/O --------------------------------------------------------------
    def prompt(self, state: State) -> list[dict[str, str]]:
        p, limits = self.params, self.program_limits()
        statement = prompts.STATEMENT.format(budget_s=f"{limits.seconds:g}", cpus=limits.cpus, target=p.target)
        parts = [statement.strip()]
        context = ["## Current state", "You are iteratively optimising the upper bound on C5."]
        if state.construction is not None:
            context.append(prompts.START_FROM.format(n=len(state.construction)))
        after = state.score if state.score is not None else (None if state.value is None else -state.value)
        if state.code:
            context.append(prompts.LAST_CODE.format(code=bounded_code(state.code.strip("\n"), p.max_code_chars)))
            before = state.parent_values[0] if state.parent_values else None
            if before is not None and state.construction is not None:
                context.append(prompts.BEFORE_AFTER.format(before=_fmt(-before), after=_fmt(after)))
            else:
                context.append(prompts.CURRENT.format(after=_fmt(after)))
        elif after is not None:
            context.append(prompts.CURRENT.format(after=_fmt(after)))
        if after is not None:
            context.append(prompts.TARGET.format(target=p.target, gap=_fmt(after - p.target)))
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
        result = sandbox.run(
            with_preamble(PREAMBLE, program.source),
            entry=program.entry,
            inject={"initial_h_values": state.construction},
            timeout_s=self.program_limits().timeout_s,
        )
        if not result.ok:
            return Invalid.from_sandbox(result)
        value = result.value
        if not isinstance(value, (list, tuple)) or len(value) != 3:
            return Invalid(
                "invalid_construction",
                f"run() must return (h_values, c5_bound, n_points); it returned {_describe(value)}",
                stdout=result.stdout,
            )
        h_values, c5_reported, n_points = value
        if c5_reported is None:
            return Invalid("invalid_construction", "run() returned no c5_bound (None)", stdout=result.stdout)
        # the FFT path for long arrays gives the exact formula's number, faster
        try:
            h_N, c5 = verify_erdos(h_values, c5_reported, n_points, fast=None)
        except InvalidConstruction as e:
            return Invalid("invalid_construction", str(e), stdout=result.stdout)
        return Evaluation(
            score=c5,
            construction=h_N.tolist(),
            stdout=result.stdout,
            metrics={"n": int(h_N.size), "c5_reported": float(c5_reported)},
            code=program.source,
        )

    def verify(self, construction: Any) -> Verification:
        """Recompute C5 from scratch (no reported value): the exact formula's number, through the
        FFT-located peak for long arrays (``verifier.c5_fft``), so a 10^6-point construction takes
        a fraction of a second, not the minutes of the O(n^2) sum."""
        try:
            h_N = check_h(construction)
        except InvalidConstruction as e:
            return Verification(valid=False, score=None, reason=str(e))
        c5 = erdos_c5(h_N)
        if not np.isfinite(c5) or c5 <= 0:
            return Verification(valid=False, score=None, reason=f"the computed C5 is {c5!r}")
        raw_sum = float(np.sum(np.asarray(construction, dtype=np.float64)))
        return Verification(
            valid=True,
            score=c5,
            metrics={"n": int(h_N.size), "sum": raw_sum, "rescaled": raw_sum != h_N.size / 2},
        )

    def reward(self, score: float) -> float:
        return 1.0 / (1e-8 + float(score))

    # -- extras -------------------------------------------------------------------
    def construction_from_record(self, record: Any) -> Any:
        """A list of h values from a bare list, {"values": [...]}, or a whole record with "construction"."""
        return numbers_from_record(record, ("construction", "values", "h_values"), "Erdős", sole_list=True)

    def plot(self, construction: Any, path: str) -> None:
        """The step function h on [0, 2], with its C5 in the title."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from discover_ttt.plotting import drawn_as, envelope

        check = self.verify(construction)
        h_N = check_h(construction) if check.valid else np.asarray(construction, dtype=np.float64)
        n = h_N.size
        mean_M, lo_M, hi_M, bounds = envelope(h_N)  # a long construction is drawn in blocks
        edges = 2.0 * bounds / max(n, 1)
        fig, ax = plt.subplots(figsize=(8, 3.2), dpi=150)
        ax.stairs(mean_M, edges, fill=True, alpha=0.35, color="tab:blue")
        if mean_M.size < n:
            ax.stairs(hi_M, edges, baseline=lo_M, fill=True, alpha=0.25, color="tab:blue", linewidth=0)
        ax.stairs(mean_M, edges, color="tab:blue", linewidth=1.0)
        ax.set(xlim=(0, 2), ylim=(0, 1.05), xlabel="x", ylabel="h(x)")
        title = f"Erdős minimum overlap, n = {n}{drawn_as(n)}: " + (
            f"C5 ≤ {check.score:.10f}" if check.valid else f"invalid ({check.reason[:60]})"
        )
        ax.set_title(title, fontsize=10)
        fig.tight_layout()
        fig.savefig(path, format="png")
        plt.close(fig)


def _describe(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return f"a sequence of {len(value)} items"
    return f"a {type(value).__name__}"
