"""Check and time TriMul kernels through the problem's own checker, on either tier.

    .venv/bin/python benchmarks/kernels.py --device cpu                 # reference vs fused torch
    .venv/bin/python benchmarks/kernels.py --device cuda --gpu 0        # reference vs kernels_triton.py

Each program runs exactly as a rollout does (sandbox, every test case first, fresh inputs per
timed call, the tier's stopping rule). Prints the mean µs per benchmark shape and the geometric
mean, or why a program was rejected.
"""

import argparse
import time
from pathlib import Path

import numpy as np

from discover_ttt.problem import Evaluation, Program
from discover_ttt.problems.kernels.problem import STARTER, TriMulProblem
from discover_ttt.sandbox import Sandbox

HERE = Path(__file__).parent
FUSED = (HERE.parent / "tests" / "data" / "programs" / "trimul" / "02_fused.md").read_text()


def programs(device):
    fused = FUSED.split("```python\n", 1)[1].rsplit("```", 1)[0]
    second = ("triton", (HERE / "kernels_triton.py").read_text()) if device == "cuda" else ("fused torch", fused)
    return [("reference", STARTER), second]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--shapes", choices=("spec", "cpu", "tiny"), default=None)
    ap.add_argument("--gpu", default="0", help="the GPU the kernels run on (cuda)")
    ap.add_argument("--max-repeats", type=int, default=100)
    ap.add_argument("--isolation", default="auto")
    args = ap.parse_args()
    cuda = args.device == "cuda"
    problem = TriMulProblem(
        TriMulProblem.Params(device=args.device, shapes=args.shapes, max_repeats=args.max_repeats, threads=1)
    )
    seed = problem.initial_states(np.random.default_rng(0), 1)[0]
    sandbox = Sandbox(
        timeout_s=problem.program_limits().timeout_s,
        memory_mb=65536 if cuda else 4096,
        workers=1,
        isolation=args.isolation,
        preload=("numpy", "torch", "triton") if cuda else ("numpy", "torch"),
        memory_limit="rss" if cuda else "address_space",
        gpus=[args.gpu] if cuda else None,
    )
    results = []
    with sandbox:
        for name, source in programs(args.device):
            began = time.monotonic()
            outcome = problem.evaluate(Program(source, entry="custom_kernel"), seed, sandbox)
            results.append((name, outcome, time.monotonic() - began))
    print(f"TriMul, {args.device} tier, shapes {problem.shapes}; mean µs per call (runs)")
    header = f"| benchmark | {' | '.join(name for name, _, _ in results)} |"
    print(header + "\n|" + "---|" * (len(results) + 1))
    valid = [o for _, o, _ in results if isinstance(o, Evaluation)]
    names = [b["name"] for b in valid[0].construction["benchmarks"]] if valid else []
    for i, bench in enumerate(names):
        cells = []
        for _, o, _ in results:
            b = o.construction["benchmarks"][i] if isinstance(o, Evaluation) else None
            cells.append(f"{b['mean_us']:.1f} ({b['runs']})" if b else "-")
        print(f"| {bench} | {' | '.join(cells)} |")
    geo = [f"**{o.score:.1f}**" if isinstance(o, Evaluation) else "rejected" for _, o, _ in results]
    print(f"| geometric mean | {' | '.join(geo)} |")
    for name, o, seconds in results:
        status = "valid" if isinstance(o, Evaluation) else f"REJECTED ({o.kind}): {o.reason[:300]}"
        print(f"{name}: {status}; evaluation took {seconds:.1f} s")
    return 0 if len(valid) == len(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
