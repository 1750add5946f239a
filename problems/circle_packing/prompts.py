"""Prompt text for packing n circles in the unit square."""

STATEMENT = """\
You are an expert in geometry and numerical optimisation. Your task is to pack {n} disjoint circles inside \
the unit square [0, 1] x [0, 1] so that the sum of their radii is as large as possible.

## Your program
Define a top-level function

    def run_packing():
        ...
        return centers, radii, sum_radii

returning a numpy array of centers with shape ({n}, 2), a numpy array of radii with shape ({n},), and the \
sum of the radii. The evaluator calls run_packing() with no arguments, checks the packing and computes the \
sum of radii itself; the number you report is ignored.

A packing is valid when
- centers has shape ({n}, 2) and radii has shape ({n},), with no NaN or infinite entries;
- every radius is >= 0;
- every circle lies inside the square: r <= x <= 1 - r and r <= y <= 1 - r;
- no two circles overlap: the distance between centers i and j is at least r_i + r_j;
{tolerance_rule}
An invalid packing gets no reward.

Rules:
- Use numpy, scipy, cvxpy (open-source solvers such as CLARABEL, SCS, OSQP, HIGHS), math and the Python \
standard library.
- Define top-level functions only (no closures, no lambdas), so that work can be sent to process pools.
- Do not read or write files and do not use the network.
- Return within {budget_s} seconds; you have {cpus} CPU cores.
- `validate_packing(centers, radii)` is already defined in your program (with `numpy` as `np`): it \
applies the evaluator's checks and returns the sum of radii, or raises ValueError saying what is wrong. \
Its source:

```python
{validator}
```

{record}
"""

ANSWER = """\
Think step by step about how to reach a better packing. Describe your strategy between <strategy> and \
</strategy>, then give the complete program in one ```python code block."""

TOLERANCE = "- these checks allow a slack of 1e-12 (containment and overlap)."
STRICT = "- these checks allow no slack at all: circles may touch each other and the sides, never overlap them."

RECORD = "The best published sum of radii for n = {n} is {record}. Target: {target}."
NO_RECORD = "Target: {target}."

HINTS = """\
Ideas that have worked on this problem: optimise centers and radii together with a constrained solver \
(scipy's SLSQP or trust-constr, or a penalty method followed by a feasibility repair), started from \
several structured layouts (hexagonal-like rows, rings, larger circles in the corners and along the \
sides) and from random perturbations of the best one; polish the final packing so that every \
constraint holds exactly, for instance by shrinking radii by the smallest overlap."""

LAST_CODE = "Here is the last program that was run:\n```python\n{code}\n```"
BEFORE_AFTER = "Sum of radii before and after running the program above (higher is better): {before} -> {after}"
CURRENT = "Current sum of radii: {after}"
TARGET = "Target: {target}. Current gap: {gap}. Further improvements will also be generously rewarded."
OUTPUT = "Output of that program (last 500 characters):\n```\n{stdout}\n```"
DIFFERENT = (
    "Try a genuinely different idea rather than small edits of the program above: only a meaningful "
    "improvement of the sum of radii is rewarded."
)
NO_CODE = "No previous program is available: write one from scratch."
