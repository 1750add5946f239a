"""PUCT step cost: select 8, record 512 rollouts, end the step, on archives of 1,000 and 100,000 states.

    .venv/bin/python benchmarks/puct.py [--sizes 1000 100000] [--steps 20]

The archive is a random tree in which every state has at most two children (the
shape the end-of-step pruning maintains), filled to the cap, with visit counts
from the rollouts that built it. Each timed step records 64 rollouts per
selected state, a quarter of them failures, with distinct code strings, so every
valid child is inserted and the step ends by pruning back to the cap.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from discover_ttt.samplers import PUCT, State

GROUPS, ROLLOUTS = 8, 64


def build_archive(size: int, rng: np.random.Generator) -> PUCT:
    sampler = PUCT(max_states=size)
    seeds = [State(id=f"seed{i}", value=0.0, code=f"seed {i}") for i in range(GROUPS)]
    sampler.seed(seeds)
    open_parents = list(seeds)  # states with fewer than two children
    children_of: dict[str, int] = {}
    for i in range(size - GROUPS):
        j = int(rng.integers(len(open_parents)))
        parent = open_parents[j]
        child = parent.child(id=f"a{i}", value=float(parent.value + rng.normal()), code=f"archive {i}")
        sampler.record(parent, child)
        open_parents.append(child)
        children_of[parent.id] = children_of.get(parent.id, 0) + 1
        if children_of[parent.id] == 2:
            open_parents[j] = open_parents[-1]
            open_parents.pop()
    sampler.end_step()
    assert len(sampler) == size, len(sampler)
    return sampler


def one_step(sampler: PUCT, rng: np.random.Generator, t: int) -> dict[str, float]:
    t0 = time.perf_counter()
    parents = sampler.select(GROUPS)
    t1 = time.perf_counter()
    failed = rng.random((len(parents), ROLLOUTS)) < 0.25
    noise = rng.normal(size=(len(parents), ROLLOUTS))
    children = [
        [
            None
            if failed[g, j]
            else p.child(id=f"s{t}g{g}r{j}", value=float(p.value + noise[g, j]), code=f"{t} {g} {j}")
            for j in range(ROLLOUTS)
        ]
        for g, p in enumerate(parents)
    ]  # made outside the timed region: that is the problem's work, not the sampler's
    t2 = time.perf_counter()
    for parent, group in zip(parents, children, strict=True):
        for child in group:
            sampler.record(parent, child)
    t3 = time.perf_counter()
    sampler.end_step()
    t4 = time.perf_counter()
    ms = {"select": t1 - t0, "record": t3 - t2, "end_step": t4 - t3}
    return {k: 1e3 * v for k, v in ms.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000, 100_000])
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    rows = []
    for size in args.sizes:
        rng = np.random.default_rng(0)
        sampler = build_archive(size, rng)
        one_step(sampler, rng, -1)  # warm-up
        steps = [one_step(sampler, rng, t) for t in range(args.steps)]
        med = {k: statistics.median(s[k] for s in steps) for k in steps[0]}
        total = statistics.median(sum(s.values()) for s in steps)
        rows.append((size, med["select"], med["record"], med["end_step"], total))
    print(f"PUCT step: select {GROUPS}, record {GROUPS * ROLLOUTS} rollouts, end_step (median of {args.steps} steps)")
    print(f"{'archive':>9} | {'select ms':>9} | {'record ms':>9} | {'end_step ms':>11} | {'step ms':>8}")
    print(f"{'-' * 9}-+-{'-' * 9}-+-{'-' * 9}-+-{'-' * 11}-+-{'-' * 8}")
    for size, sel, rec, end, total in rows:
        print(f"{size:>9,} | {sel:>9.2f} | {rec:>9.2f} | {end:>11.2f} | {total:>8.2f}")
    if len(rows) > 1:
        (n0, *_, t0), (n1, *_, t1) = rows[0], rows[-1]
        nlogn = (n1 * np.log(n1)) / (n0 * np.log(n0))
        print(f"growth {n0:,} → {n1:,}: ×{t1 / t0:.1f} (n log n would allow ×{nlogn:.0f})")


if __name__ == "__main__":
    main()
