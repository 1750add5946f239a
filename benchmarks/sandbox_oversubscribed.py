"""Wall time of a CPU-bound program when sandbox.workers × cpus exceeds the machine's cores.

Runs rounds of ``workers`` identical CPU-bound programs at once (pure Python, no
imports), with workers = the cores (fits) and 2× the cores (oversubscribed), and
prints the median per-program wall time of each and their ratio: the slowdown the
sandbox's start-up warning quotes. Usage: python benchmarks/sandbox_oversubscribed.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics

from discover_ttt.sandbox import Sandbox

PROGRAM = """
def run():
    total = 0
    for i in range(6_000_000):
        total += i % 7
    return total
"""


def median_seconds(workers: int, rounds: int) -> float:
    with Sandbox(timeout_s=120, memory_mb=512, workers=workers, isolation="none", preload=()) as sandbox:
        sandbox.run(PROGRAM, "run")  # warm the fork servers
        times = []
        for _ in range(rounds):
            results = sandbox.map([{"source": PROGRAM, "entry": "run"} for _ in range(workers)])
            assert all(r.ok for r in results), [r.error for r in results if not r.ok]
            times += [r.seconds for r in results]
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    fits = median_seconds(cores, args.rounds)
    over = median_seconds(2 * cores, args.rounds)
    print(f"{cores} cores; median wall time of one CPU-bound program ({args.rounds} rounds):")
    print(f"  workers = {cores} (fits):           {fits:.2f} s")
    print(f"  workers = {2 * cores} (2x the cores):    {over:.2f} s   slowdown {over / fits:.2f}x")


if __name__ == "__main__":
    main()
