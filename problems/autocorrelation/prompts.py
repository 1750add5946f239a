"""Prompt text for the autocorrelation problems (AC1, AC2).

The statements are fixed except for the budget, the CPU count and the target;
the state context (last code, bound before -> after, gap, program output) is
added per rollout by ``AutocorrelationProblem.prompt``.
"""

COMMON_RULES = """\
## Your program
Define a top-level function

    def {entry}(seed=42, budget_s={budget_s}, **kwargs):
        ...
        return sequence

returning the heights as a Python list of floats (a numpy array is refused: return `array.tolist()`). \
The evaluator calls {entry}() with no arguments and computes the bound itself.

How the evaluator reads the list: it must be non-empty and hold only ints and floats (no bools), all \
finite; negative heights are raised to 0 and heights above 1000 lowered to 1000; a sum below 0.01 is \
invalid. Sequences shorter than 1000 or longer than 100000 items are scored but not kept as starting \
points; thousands of items leave room to improve, hundreds of thousands are slow to search.

Rules:
- Use numpy, scipy, cvxpy (open-source solvers such as CLARABEL, SCS, OSQP, HIGHS), math and the Python \
standard library.
- Define top-level functions only (no closures, no lambdas), so that work can be sent to process pools.
- Do not read or write files and do not use the network.
- Return within {budget_s} seconds; you have {cpus} CPU cores. Print progress (bounds, timings): the \
output is shown to you next time.
- Already defined in your program (do not redefine or import them):
  - `height_sequence_1`: the current construction as a float64 numpy array (start from it, or explore \
other starting points to leave a local optimum);
  - `evaluate_sequence(sequence)`: {evaluate_doc};
  - `numpy` as `np`.
"""

AC1_STATEMENT = (
    """\
You are an expert in harmonic analysis and numerical optimisation. Your task is to improve the best \
known upper bound on the first autocorrelation constant C1.

## The problem
For every non-negative f supported on [-1/4, 1/4], max_t (f*f)(t) >= C1 (∫f)^2. Any such f proves \
C1 <= ||f*f||_inf / ||f||_1^2, so we want a function whose autoconvolution is as flat as possible.

## How a construction is scored
f is a step function given by n non-negative heights a[0..n-1] on equal pieces of [-1/4, 1/4]. Its bound is

    2 * n * max(np.convolve(a, a)) / sum(a)**2        (lower is better)

A step that worked before (Matolcsi and Vinuesa): normalise a to sum sqrt(2n) and let M = \
max(conv(a, a)); solve the linear program "maximise sum(b) subject to b >= 0 and conv(a, b) <= M \
everywhere"; rescale b to the same sum and move a a small step t towards it. Repeated, this does not \
increase max(conv(a, a)); the constraints that are tight at the optimum show where the convolution \
limits the bound. You may use it, change it or do something else entirely.

"""
    + COMMON_RULES
    + """
The best bound published before this work was C1 <= 1.50314 (ThetaEvolve; AlphaEvolve 1.50317). \
The goal is C1 <= {target}.
"""
)

AC2_STATEMENT = (
    """\
You are an expert in harmonic analysis and numerical optimisation. Your task is to improve the best \
known lower bound on the second autocorrelation constant C2.

## The problem
For non-negative f, ||f*f||_2^2 <= C2 ||f*f||_1 ||f*f||_inf. Any such f proves \
C2 >= ||f*f||_2^2 / (||f*f||_1 ||f*f||_inf), so we want an autoconvolution that is large in L2 \
relative to its L1 and L-infinity norms.

## How a construction is scored
f is a step function given by n non-negative heights a. With c = np.convolve(a, a) of length L, the \
evaluator takes y = [0, c, 0] on L + 2 equispaced points of [-1/2, 1/2] (spacing h = 1/(L + 1)) and \
computes

    ||f*f||_2^2 = sum over consecutive pairs (y1, y2) of h/3 * (y1**2 + y1*y2 + y2**2)
    ||f*f||_1   = sum(|c|) / (L + 1),        ||f*f||_inf = max(|c|)
    bound       = ||f*f||_2^2 / (||f*f||_1 * ||f*f||_inf)        (higher is better)

"""
    + COMMON_RULES
    + """
The best bound published before this work was C2 >= 0.9610 (AlphaEvolve). The goal is C2 >= {target}.
"""
)

AC1_EVALUATE_DOC = "the bound the evaluator will compute, or inf if it would reject the sequence"
AC2_EVALUATE_DOC = "the bound the evaluator will compute; raises ValueError saying why if it would reject the sequence"

LENGTH = "Length of the current construction: {n}."
LAST_CODE = "Here is the last program that was run:\n```python\n{code}\n```"
BEFORE_AFTER = "{what} before and after running the program above ({better} is better): {before} -> {after}"
CURRENT = "Current {what} ({better} is better): {after}"
TARGET = "Target: {target}. Current gap: {gap}. Further improvements will also be generously rewarded."
OUTPUT = "Output of that program (last 500 characters):\n```\n{stdout}\n```"
DIFFERENT = (
    "Try a genuinely different idea rather than small edits of the program above (other algorithms, "
    "heuristics, hyperparameter sweeps): only a meaningful improvement of the bound is rewarded."
)
NO_CODE = "Write code to optimise this construction."
ANSWER = "Answer with one ```python code block that holds the complete program."

#: Seeds carry these programs as their "last code" (the reference's seeds carry a
#: starter program too): linear-programming steps on a coarse copy of the parent's
#: construction, returned at >= 1000 items so that the result can be archived.
_HELPERS = '''import time

import numpy as np
from scipy.optimize import linprog


def coarse(sequence, pieces):
    """The step function at a coarser resolution: block means over `pieces` equal-ish blocks."""
    blocks = np.array_split(np.asarray(sequence, dtype=float), pieces)
    return np.array([b.mean() for b in blocks])


def convolution_matrix(f):
    """The (2n - 1) x n matrix C with C @ g == np.convolve(f, g)."""
    n = len(f)
    C = np.zeros((2 * n - 1, n))
    for j in range(n):
        C[j : j + n, j] = f
    return C
'''
STARTER_AC1 = (
    '''\
"""Linear-programming steps (Matolcsi-Vinuesa) on a coarse copy of the current sequence."""

'''
    + _HELPERS
    + '''

def lp_step(f, t):
    """Largest-sum g >= 0 with conv(f, g) <= max conv(f, f), rescaled to f's sum; f moves a step t towards it."""
    n = len(f)
    peak = np.max(np.convolve(f, f))
    res = linprog(-np.ones(n), A_ub=convolution_matrix(f), b_ub=np.full(2 * n - 1, peak), bounds=(0, None))
    if not res.success or res.x.sum() <= 0:
        return None
    g = res.x * (f.sum() / res.x.sum())
    return (1 - t) * f + t * g


def propose_candidate(seed=42, budget_s={budget_s}, **kwargs):
    rng = np.random.default_rng(seed)
    deadline = time.time() + max(0.5 * budget_s, budget_s - 10)
    f = np.asarray(height_sequence_1, dtype=float)
    if len(f) > 100:
        f = coarse(f, 100)
    f = f * (1 + 1e-3 * rng.standard_normal(len(f)))  # a nudge off symmetric ties
    best, best_bound = f.copy(), evaluate_sequence(f.tolist())
    step = 0
    while time.time() < deadline:
        g = lp_step(f, t=0.2)
        if g is None:
            break
        f, step = g, step + 1
        bound = evaluate_sequence(f.tolist())
        if bound < best_bound:
            best, best_bound = f.copy(), bound
    print(f"{{step}} LP steps on {{len(f)}} pieces: bound {{best_bound:.6f}}")
    repeat = -(-1000 // len(best))  # repeat each height: the same step function, at least 1000 items
    return np.repeat(best, repeat).tolist()
'''
)

STARTER_AC2 = (
    '''\
"""Linear-programming ascent steps on a coarse copy of the current sequence."""

'''
    + _HELPERS
    + '''

def lp_step(f, t):
    """g >= 0 with f's sum and conv(f, g) <= max conv(f, f) that most raises sum(conv(f, f) * conv(f, g));

    to first order in t, moving f towards g raises ||f*f||_2^2 while ||f*f||_1 and ||f*f||_inf stay put.
    """
    n = len(f)
    C = convolution_matrix(f)
    ff = C @ f
    res = linprog(
        -(C.T @ ff),
        A_ub=C,
        b_ub=np.full(2 * n - 1, ff.max()),
        A_eq=np.ones((1, n)),
        b_eq=[f.sum()],
        bounds=(0, None),
    )
    if not res.success:
        return None
    return (1 - t) * f + t * res.x


def construct_function(seed=42, budget_s={budget_s}, **kwargs):
    rng = np.random.default_rng(seed)
    deadline = time.time() + max(0.5 * budget_s, budget_s - 10)
    f = np.asarray(height_sequence_1, dtype=float)
    if len(f) > 100:
        f = coarse(f, 100)
    f = f * (1 + 1e-3 * rng.standard_normal(len(f)))  # a nudge off symmetric ties
    best, best_bound = f.copy(), evaluate_sequence(f.tolist())
    step, t = 0, 0.2
    while time.time() < deadline and t > 1e-4:
        g = lp_step(f, t)
        if g is None:
            break
        bound = evaluate_sequence(g.tolist())
        step += 1
        if bound > best_bound:
            f, best, best_bound = g, g.copy(), bound
        else:
            t /= 2  # overshot: a shorter step
    print(f"{{step}} LP steps on {{len(f)}} pieces: bound {{best_bound:.6f}}")
    repeat = -(-1000 // len(best))  # repeat each height: the same step function, at least 1000 items
    return np.repeat(best, repeat).tolist()
'''
)
