"""C5 of the Erdős verifier: the exact O(n^2) formula against the FFT path used during runs.

    .venv/bin/python benchmarks/erdos_c5.py

Prints, for each length n, the median time of each path and their largest relative
difference over random arrays in [0, 1] (and the published 600-sample record upsampled).
"""

import json
import time
from pathlib import Path

import numpy as np

from discover_ttt.problems.erdos.verifier import c5_direct, c5_fft

RECORD = Path(__file__).parents[1] / "tests" / "data" / "records" / "erdos_ttt_discover_600.json"


def median_seconds(fn, h, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(h)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main():
    rng = np.random.default_rng(0)
    record = np.array(json.loads(RECORD.read_text())["construction"]["values"])
    print(f"{'input':>18} {'n':>8} {'direct ms':>10} {'fft ms':>9} {'speed-up':>9} {'max rel diff':>13}")
    cases = [("random", n, None) for n in (100, 600, 1000, 4096, 10000, 30000, 100000)]
    cases += [("record x10", 6000, np.repeat(record, 10)), ("record x50", 30000, np.repeat(record, 50))]
    for name, n, fixed in cases:
        arrays = [fixed] if fixed is not None else [rng.uniform(0, 1, n) for _ in range(3)]
        repeats = 5 if n <= 10000 else 1
        diff = max(abs(c5_fft(h) - c5_direct(h)) / c5_direct(h) for h in arrays)
        direct = median_seconds(c5_direct, arrays[0], repeats) * 1e3
        fft = median_seconds(c5_fft, arrays[0], repeats) * 1e3
        print(f"{name:>18} {n:>8} {direct:>10.3f} {fft:>9.3f} {direct / fft:>9.1f} {diff:>13.2e}")


if __name__ == "__main__":
    main()
