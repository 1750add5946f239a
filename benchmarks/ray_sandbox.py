"""What the Ray executor adds per program over the local pool, on this machine, in one run.

    .venv/bin/python benchmarks/ray_sandbox.py [--trivial 200] [--sleepers 50] [--sleep-s 0.5] [--workers 2]

Two workloads go through ``sandbox.map`` on the local pool and then on the Ray executor
(a local Ray instance with ``--workers`` CPUs, one actor holding ``--workers`` slots):
``--trivial`` programs that return at once, and ``--sleepers`` programs that sleep
``--sleep-s`` seconds. Servers are started before the clock runs in both cases. Per-program
cost is wall time x workers / programs (the time one slot spends per program); the overhead
is Ray's per-program cost minus the local one (target: at most 20 ms).
"""

from __future__ import annotations

import argparse
import time

import ray

from discover_ttt.sandbox import Sandbox
from discover_ttt.sandbox.ray_executor import RaySandbox

TRIVIAL = "def run(i):\n    return i\n"
SLEEPER = "import time\ndef run(i, s):\n    time.sleep(s)\n    return i\n"


def timed_map(sb, jobs: list[dict]) -> float:
    t0 = time.perf_counter()
    results = sb.map(jobs)
    elapsed = time.perf_counter() - t0
    bad = [r for r in results if not r.ok]
    assert not bad, bad[0].error
    assert [r.value for r in results] == [job["args"][0] for job in jobs]
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trivial", type=int, default=200)
    parser.add_argument("--sleepers", type=int, default=50)
    parser.add_argument("--sleep-s", type=float, default=0.5)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    workloads = {
        f"{args.trivial} trivial": [{"source": TRIVIAL, "args": [i]} for i in range(args.trivial)],
        f"{args.sleepers} x {args.sleep_s:g} s": [
            {"source": SLEEPER, "args": [i, args.sleep_s]} for i in range(args.sleepers)
        ],
    }
    settings = {"timeout_s": 30, "workers": args.workers, "preload": ()}
    wall: dict[tuple[str, str], float] = {}
    with Sandbox(**settings) as local:
        local.start()
        for name, jobs in workloads.items():
            wall[name, "local"] = timed_map(local, jobs)
    t0 = time.perf_counter()
    ray.init(
        address="local",
        num_cpus=args.workers,
        include_dashboard=False,
        object_store_memory=80 * 2**20,
        log_to_driver=False,
    )
    with RaySandbox(**settings) as on_ray:
        start_s = time.perf_counter() - t0
        for name, jobs in workloads.items():
            wall[name, "ray"] = timed_map(on_ray, jobs)
    ray.shutdown()

    print(f"workers: {args.workers}; Ray start-up and actor placement: {start_s:.1f} s (once per run)")
    print(f"{'workload':<16} {'local s':>8} {'ray s':>8} {'local ms/prog':>14} {'ray ms/prog':>12} {'added ms':>9}")
    for name, jobs in workloads.items():
        per = {ex: 1000 * wall[name, ex] * args.workers / len(jobs) for ex in ("local", "ray")}
        print(
            f"{name:<16} {wall[name, 'local']:>8.2f} {wall[name, 'ray']:>8.2f} "
            f"{per['local']:>14.1f} {per['ray']:>12.1f} {per['ray'] - per['local']:>9.1f}"
        )


if __name__ == "__main__":
    main()
