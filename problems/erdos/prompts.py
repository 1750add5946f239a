"""Prompt text for the Erdős minimum-overlap problem.

The statement is fixed except for the budget, the CPU count and the target; the
state context (last code, bound before -> after, gap, program output) is added
per rollout by ``ErdosProblem.prompt``.
"""

STATEMENT = """\
You are an expert in harmonic analysis, combinatorics and numerical optimisation. Your task is to \
improve the best known upper bound on the Erdős minimum overlap constant C5.

## The problem
Find a step function h: [0, 2] -> [0, 1] with integral 1 that makes

    max over shifts k of  ∫ h(x) (1 - h(x + k)) dx

as small as possible (h is 0 outside [0, 2]). Every admissible h proves that C5 is at most this maximum.

## How a construction is scored
h is given by n_points samples on [0, 2], spaced dx = 2 / n_points apart:
- every sample satisfies 0 <= h[i] <= 1;
- sum(h) * dx = 1, that is sum(h) = n_points / 2. The evaluator rescales h to this sum and rejects it if a \
value then leaves [0, 1];
- the bound is C5 = max(np.correlate(h, 1 - h, mode="full")) * dx.
Keep n_points below 1000 if you can: longer constructions are scored but are not kept as starting points.

## Your program
Define a top-level function

    def run(seed=42, budget_s={budget_s}, **kwargs):
        ...
        return h_values, c5_bound, n_points

returning a 1-D numpy array h_values, the C5 your program computed for it, and n_points = len(h_values). \
The evaluator calls run() with no arguments and recomputes C5 itself: only its own value counts, and a \
reported c5_bound that disagrees with it by more than 1e-4 makes the attempt invalid.

Rules:
- Use numpy, scipy, cvxpy (open-source solvers such as CLARABEL, SCS, OSQP, HIGHS), math and the Python \
standard library.
- Define top-level functions only (no closures, no lambdas), so that work can be sent to process pools.
- Do not read or write files and do not use the network.
- Return within {budget_s} seconds; you have {cpus} CPU cores.
- Already defined in your program (do not redefine them):
  - `initial_h_values`: the current construction as a float64 numpy array (None when there is none);
  - `evaluate_erdos_solution(h_values, c5_bound, n_points)`: checks a candidate exactly as the evaluator \
does and returns its verified C5, or raises ValueError saying what is wrong;
  - `erdos_c5(h_values)`: the C5 of an array that already satisfies the constraints;
  - `numpy` as `np`.

The best bound published before this work was C5 <= 0.380924 (AlphaEvolve; the best human bound was \
0.380927, Haugland 2016). The goal is C5 <= {target}.
"""

START_FROM = (
    "You may start from the current construction, the numpy array `initial_h_values` "
    "(n = {n} samples), or explore other starting points."
)

LAST_CODE = "Here is the last program that was run:\n```python\n{code}\n```"
BEFORE_AFTER = "C5 bound before and after running the program above (lower is better): {before} -> {after}"
CURRENT = "Current C5 bound: {after}"
TARGET = "Target: {target}. Current gap: {gap}. Further improvements will also be generously rewarded."
OUTPUT = "Output of that program (last 500 characters):\n```\n{stdout}\n```"
DIFFERENT = (
    "Try a genuinely different idea rather than small edits of the program above: only a meaningful "
    "improvement of the bound is rewarded."
)
NO_CODE = "Write code to optimise this construction."
ANSWER = "Answer with one ```python code block that holds the complete program."

#: With ``starter_code: true`` the seeds carry this program as their "last code": a
#: working example of the contract (random local search from ``initial_h_values``).
#: Small models mostly fail to write the contract from the statement alone; with a
#: program to edit, some of their rollouts are valid and the groups carry a signal.
STARTER = """\
import numpy as np


def run(seed=42, budget_s={budget_s}, **kwargs):
    rng = np.random.default_rng(seed)
    h = np.array(initial_h_values, dtype=float)
    n = len(h)
    best = erdos_c5(h)
    for step in range(300):
        candidate = np.clip(h + 0.02 * rng.standard_normal(n), 0.0, 1.0)
        candidate = candidate * (n / 2) / candidate.sum()
        if candidate.max() > 1.0:
            continue
        c5 = erdos_c5(candidate)
        if c5 < best:
            h, best = candidate, c5
    print("best C5", best)
    return h, best, n
"""
