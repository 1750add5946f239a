"""Circle packing: n circles in the unit square, maximise the sum of radii (n = 26 and 32 published).

score = value = reward = sum of the returned radii, after ``verifier.check_packing``
(tolerance 1e-12, or 0 in strict mode); the sum a program reports is ignored.
As in the reference, programs start from scratch (no parent packing is injected)
and seeds have empty code and value 0: a seed carries no circles (construction
None, the empty packing). A child's construction is {"centers": [[x, y], ...],
"radii": [...]}, the arrays that were scored.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ConfigDict, Field, model_validator

from discover_ttt.parsing import ProgramBudget, bounded_code, max_code_chars_field, with_preamble
from discover_ttt.problem import Evaluation, Invalid, Problem, Program, ProgramLimits, Verification
from discover_ttt.state import State

from . import prompts, verifier
from .verifier import TOLERANCE, InvalidConstruction, check_packing, packing_metrics

#: best published sums of radii (AlphaEvolve V2; matched by TTT-Discover, Qwen3-8B) and the reference's targets
RECORDS = {26: 2.635983, 32: 2.939572}
TARGETS = {26: 2.636, 32: 2.940}

#: the published packings, by n, as recomputed by our verifier where the construction is public
PUBLISHED = {
    26: {"AlphaEvolve (2025)": 2.6358627564, "ThetaEvolve (2025)": 2.6359830774, "AlphaEvolve V2": 2.635983},
    32: {"AlphaEvolve (2025)": 2.9379445262, "AlphaEvolve V2": 2.939572},
}

PREAMBLE = Path(__file__).with_name("verifier.py").read_text()
#: strict mode: the programs' own validate_packing() must be as strict as ours
STRICT_PREAMBLE = PREAMBLE + "\nTOLERANCE = 0.0\n"


class CirclePackingProblem(Problem):
    """Pack n circles in [0, 1]^2 without overlap, maximising sum(radii)."""

    name = "circle_packing"
    maximize = True
    entry = "run_packing"
    worst_score = 0.0

    class Params(ProgramBudget):
        model_config = ConfigDict(extra="forbid")

        n: int = Field(26, ge=1, description="number of circles (published records: 26 and 32)")
        strict: bool = Field(False, description="zero tolerance for containment and overlap (else 1e-12)")
        max_code_chars: int = max_code_chars_field()
        target: float | None = Field(None, gt=0, description="default: 2.636 for n = 26, 2.940 for n = 32")

        @model_validator(mode="after")
        def _default_target(self):
            if self.target is None:
                if self.n not in TARGETS:
                    raise ValueError(f"no default target for n = {self.n}; set problem.target")
                self.target = TARGETS[self.n]
            return self

    def __init__(self, params: Params | None = None) -> None:
        super().__init__(params if params is not None else self.Params())

    def records(self) -> dict[str, float]:
        """Published sums of radii for this n (README, "Published records")."""
        return dict(PUBLISHED.get(self.params.n, {}))

    @property
    def tolerance(self) -> float:
        return 0.0 if self.params.strict else TOLERANCE

    # -- states ---------------------------------------------------------------
    def initial_states(self, rng: np.random.Generator, k: int) -> list[State]:
        """Empty code, value 0: the empty packing (construction None)."""
        return [State(value=0.0, score=0.0, construction=None, code="") for _ in range(k)]

    # -- model I/O --------------------------------------------------------------
    def prompt(self, state: State) -> list[dict[str, str]]:
        p, limits = self.params, self.program_limits()
        record = (
            prompts.RECORD.format(n=p.n, record=RECORDS[p.n], target=p.target)
            if p.n in RECORDS
            else prompts.NO_RECORD.format(target=p.target)
        )
        statement = prompts.STATEMENT.format(
            n=p.n,
            budget_s=f"{limits.seconds:g}",
            cpus=limits.cpus,
            tolerance_rule=prompts.STRICT if p.strict else prompts.TOLERANCE,
            validator="\n\n".join(
                inspect.getsource(f).strip() for f in (verifier.check_packing, verifier.validate_packing)
            ),
            record=record,
        ).strip()
        context = ["## Current state", "You are iteratively optimising the sum of radii."]
        after = state.score if state.score is not None else state.value
        if state.code:
            context.append(prompts.LAST_CODE.format(code=bounded_code(state.code.strip("\n"), p.max_code_chars)))
            before = state.parent_values[0] if state.parent_values else None
            if before is not None:
                context.append(prompts.BEFORE_AFTER.format(before=f"{before:.10f}", after=f"{after:.10f}"))
            elif after is not None:
                context.append(prompts.CURRENT.format(after=f"{after:.10f}"))
        elif after is not None:
            context.append(prompts.CURRENT.format(after=f"{after:.10f}"))
        if after is not None:
            context.append(prompts.TARGET.format(target=p.target, gap=f"{p.target - after:.10f}"))
        if state.stdout:
            context.append(prompts.OUTPUT.format(stdout=state.stdout[-500:]))
        context.append(prompts.DIFFERENT if state.code else prompts.NO_CODE)
        context += [prompts.HINTS, prompts.ANSWER]
        return [{"role": "user", "content": statement + "\n\n" + "\n\n".join(context)}]

    # -- scoring ----------------------------------------------------------------
    def program_limits(self) -> ProgramLimits:
        """``budget_s`` seconds (the sandbox allows ``timeout_margin_s`` more) and ``cpus`` cores per program."""
        return self.params.limits()

    def evaluate(self, program: Program, state: State, sandbox: Any) -> Evaluation | Invalid:
        p = self.params
        result = sandbox.run(
            with_preamble(STRICT_PREAMBLE if p.strict else PREAMBLE, program.source),
            entry=program.entry,
            timeout_s=self.program_limits().timeout_s,
        )
        if not result.ok:
            return Invalid.from_sandbox(result)
        value = result.value
        if not isinstance(value, (list, tuple)) or len(value) != 3:
            shape = f"a sequence of {len(value)} items" if isinstance(value, (list, tuple)) else type(value).__name__
            return Invalid(
                "invalid_construction",
                f"run_packing() must return (centers, radii, sum_radii); it returned {shape}",
                stdout=result.stdout,
            )
        centers, radii, _reported_sum = value  # the reported sum is never used
        try:
            centers_N2, radii_N = check_packing(centers, radii, n=p.n, tol=self.tolerance)
        except InvalidConstruction as e:
            return Invalid("invalid_construction", str(e), stdout=result.stdout)
        return Evaluation(
            score=float(np.sum(radii_N)),
            construction={"centers": centers_N2.tolist(), "radii": radii_N.tolist()},
            stdout=result.stdout,
            metrics=packing_metrics(centers_N2, radii_N),
            code=program.source,
        )

    def verify(self, construction: Any) -> Verification:
        """Re-check a saved packing; n is taken from the construction, the tolerance from ``strict``."""
        if construction is None:
            return Verification(valid=False, score=None, reason="no packing: the construction is empty")
        if not isinstance(construction, dict) or not {"centers", "radii"} <= set(construction):
            return Verification(valid=False, score=None, reason="a packing is a dict with keys 'centers' and 'radii'")
        try:
            centers_N2, radii_N = check_packing(construction["centers"], construction["radii"], tol=self.tolerance)
        except InvalidConstruction as e:
            return Verification(valid=False, score=None, reason=str(e))
        metrics = {"tolerance": self.tolerance, **packing_metrics(centers_N2, radii_N)}
        return Verification(valid=True, score=float(np.sum(radii_N)), metrics=metrics)

    # -- extras -------------------------------------------------------------------
    def construction_from_record(self, record: Any) -> Any:
        """{"centers", "radii"} from such a dict, a record with "construction", [centers, radii] or [x, y, r] rows."""
        if isinstance(record, dict):
            if "construction" in record:
                return self.construction_from_record(record["construction"])
            if "centers" in record and "radii" in record:
                return {"centers": record["centers"], "radii": record["radii"]}
            # otherwise the one entry that is a list of [x, y, r] rows (e.g. {"circles": [...], "sum_radii": ...})
            rows = [v for v in record.values() if isinstance(v, list) and v and all(_is_row(row) for row in v)]
            if len(rows) == 1:
                return self.construction_from_record(rows[0])
            raise ValueError(f"no packing in this record: expected keys 'centers' and 'radii'; got {sorted(record)}")
        if isinstance(record, (list, tuple)):
            if len(record) == 2 and all(isinstance(part, (list, tuple)) for part in record):
                first = record[0]
                if first and isinstance(first[0], (list, tuple)):  # [centers, radii]
                    return {"centers": record[0], "radii": record[1]}
            if record and all(_is_row(row) for row in record):
                return {"centers": [list(row[:2]) for row in record], "radii": [row[2] for row in record]}
        raise ValueError("no packing in this record: expected {'centers': ..., 'radii': ...} or [x, y, r] rows")

    def plot(self, construction: Any, path: str) -> None:
        """The circles in the unit square, coloured by radius, with the sum in the title."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Circle, Rectangle

        check = self.verify(construction)
        centers_N2 = np.asarray(construction["centers"], dtype=np.float64).reshape(-1, 2)
        radii_N = np.asarray(construction["radii"], dtype=np.float64).reshape(-1)
        fig, ax = plt.subplots(figsize=(5, 5.3), dpi=150)
        ax.add_patch(Rectangle((0, 0), 1, 1, fill=False, linewidth=1.2, color="black"))
        cmap = plt.get_cmap("viridis")
        top = max(float(radii_N.max(initial=0.0)), 1e-12)
        for k, ((x, y), r) in enumerate(zip(centers_N2, radii_N, strict=False)):
            ax.add_patch(Circle((x, y), r, facecolor=cmap(r / top), alpha=0.55, edgecolor="black", linewidth=0.6))
            ax.text(x, y, str(k), ha="center", va="center", fontsize=6)
        ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), aspect="equal")
        ax.set_xticks([0, 0.5, 1])
        ax.set_yticks([0, 0.5, 1])
        if check.valid:
            zero = "valid at zero tolerance" if check.metrics["valid_at_zero_tolerance"] else "valid at 1e-12 only"
            title = f"{len(radii_N)} circles, sum of radii = {check.score:.10f}\n{zero}"
        else:
            title = f"{len(radii_N)} circles: invalid\n{check.reason[:70]}"
        ax.set_title(title, fontsize=9)
        fig.tight_layout()
        fig.savefig(path, format="png")
        plt.close(fig)


def _is_row(row: Any) -> bool:
    """An [x, y, r] row."""
    return isinstance(row, (list, tuple)) and len(row) == 3 and not any(isinstance(v, (list, tuple)) for v in row)
