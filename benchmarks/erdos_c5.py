"""C5 of the Erdős verifier: the direct O(n^2) formula against the FFT-located exact path
(``c5_fft``), which every scoring and re-verification of a long array uses.

    .venv/bin/python benchmarks/erdos_c5.py

Prints, for each length n, the best-of-repeats time of each path (best, not median: on a
shared machine the minimum is the least noisy estimate), the speed-up, and whether the two
numbers are identical to the last bit, over random arrays in [0, 1] and the published
600-sample record upsampled.
"""

import json
import time
from pathlib import Path

import numpy as np

from discover_ttt.problems.erdos.verifier import c5_direct, c5_fft

RECORD = Path(__file__).parents[1] / "tests" / "data" / "records" / "erdos_ttt_discover_600.json"


def best_seconds(fn, h, repeats):
    """(least seconds over ``repeats`` calls, the value returned)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        value = fn(h)
        times.append(time.perf_counter() - t0)
    return float(np.min(times)), value


def main():
    rng = np.random.default_rng(0)
    record = np.array(json.loads(RECORD.read_text())["construction"]["values"])
    print(f"{'input':>18} {'n':>8} {'direct ms':>10} {'fft ms':>9} {'speed-up':>9} {'same bits':>10}")
    cases = [("random", n, rng.uniform(0, 1, n)) for n in (100, 600, 1000, 4096, 10000, 30000, 100000)]
    cases += [(f"record x{k}", 600 * k, np.repeat(record, k)) for k in (10, 50, 166)]
    for name, n, h in cases:
        repeats = 5 if n <= 10000 else 1  # the direct sum takes seconds from n = 30000 on
        direct_s, direct = best_seconds(c5_direct, h, repeats)
        fft_s, fft = best_seconds(c5_fft, h, 7)
        print(
            f"{name:>18} {n:>8} {direct_s * 1e3:>10.3f} {fft_s * 1e3:>9.3f} {direct_s / fft_s:>9.1f} {str(fft == direct):>10}"
        )


if __name__ == "__main__":
    main()
