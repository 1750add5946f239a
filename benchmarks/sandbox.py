"""Per-program overhead of the sandbox against a plain interpreter spawn, and pool throughput.

    .venv/bin/python benchmarks/sandbox.py [--n 40] [--pool-jobs 100]

The program is trivial but imports numpy, so the numbers are what a program pays to start:
- plain spawn: ``subprocess.run([sys.executable, file])`` per program, no limits, no isolation;
- sandbox, fresh interpreter (``fork_server=False``): a new server (and bwrap) per program, the "before";
- sandbox, fork server: a warm server that has imported numpy/scipy forks a child per program.
Medians of wall time per program, as seen by the caller. Then throughput of a 2-worker pool.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from discover_ttt.sandbox import Sandbox, isolation_available

PROGRAM = "import numpy as np\n\ndef run():\n    return float(np.arange(10).sum())\n"


def _median_s(fn, n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def plain_spawn(n: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "program.py")
        with open(path, "w") as f:
            f.write(PROGRAM + "\nprint(run())\n")

        def once():
            done = subprocess.run([sys.executable, path], capture_output=True, check=True)
            assert done.stdout.strip() == b"45.0"

        return _median_s(once, n)


def sandbox_median(n: int, **kwargs) -> tuple[float, float]:
    """(median seconds per program, seconds to start the first server)."""
    with Sandbox(timeout_s=30, workers=1, **kwargs) as sb:
        t0 = time.perf_counter()
        sb.start()
        start_s = time.perf_counter() - t0

        def once():
            r = sb.run(PROGRAM)
            assert r.ok and r.value == 45.0, r.error

        return _median_s(once, n), start_s


def pool_throughput(jobs: int, workers: int, isolation: str) -> float:
    with Sandbox(timeout_s=30, workers=workers, isolation=isolation) as sb:
        sb.start()
        t0 = time.perf_counter()
        results = sb.map([{"source": PROGRAM}] * jobs)
        elapsed = time.perf_counter() - t0
    assert all(r.ok for r in results)
    return jobs / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40, help="programs per measurement")
    parser.add_argument("--pool-jobs", type=int, default=100, help="programs for the throughput runs")
    args = parser.parse_args()

    isolations = ["bwrap", "none"] if isolation_available() else ["none"]
    plain = plain_spawn(args.n)
    rows = [("plain subprocess.run([python, file])", "-", plain, None)]
    for iso in isolations:
        spawn, _ = sandbox_median(max(5, args.n // 4), isolation=iso, fork_server=False, preload=())
        rows.append((f"sandbox, fresh interpreter ({iso})", iso, spawn, None))
        fork, start_s = sandbox_median(args.n, isolation=iso)
        rows.append((f"sandbox, fork server ({iso})", iso, fork, start_s))

    print(f"\nper-program wall time, trivial program importing numpy (median of {args.n}; {os.cpu_count()} cores)\n")
    print(f"{'runner':<42} {'median ms':>10} {'vs plain':>9} {'server start s':>15}")
    for name, _, median_s, start_s in rows:
        start = f"{start_s:.2f}" if start_s is not None else "-"
        print(f"{name:<42} {median_s * 1e3:>10.1f} {median_s / plain:>9.3f} {start:>15}")

    print(f"\npool throughput, {args.pool_jobs} trivial programs (fork server, warm)\n")
    print(f"{'isolation':<12} {'workers':>8} {'programs/s':>11}")
    for iso in isolations:
        for workers in (1, 2):
            print(f"{iso:<12} {workers:>8} {pool_throughput(args.pool_jobs, workers, iso):>11.1f}")


if __name__ == "__main__":
    main()
