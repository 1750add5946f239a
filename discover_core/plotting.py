"""Long step functions drawn in at most a few thousand pieces.

A figure 8 inches wide at 150 dpi has 1,200 pixel columns; drawing a construction of
10^6 pieces one by one costs minutes and gigabytes and shows nothing more. ``envelope``
cuts y into at most ``max_points`` contiguous blocks and keeps, per block, the mean (the
curve: a block mean keeps the integral of a step function) and the min and max (a band,
so a spike one piece wide still shows).
"""

from __future__ import annotations

import numpy as np

#: the most blocks a plot draws (above the pixel columns of the problems' figures)
PLOT_POINTS = 4096


def envelope(y_N: np.ndarray, max_points: int = PLOT_POINTS) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(mean_M, lo_M, hi_M, bounds_M1): block statistics of ``y_N`` and the block bounds as indices into it.

    M = min(N, max_points); blocks differ in length by at most one. With N ≤ max_points every
    block is one piece (mean = lo = hi = y).
    """
    y_N = np.asarray(y_N, dtype=np.float64)
    n = y_N.size
    m = min(n, int(max_points))
    bounds_M1 = np.linspace(0, n, m + 1).round().astype(np.int64)
    if m == n:
        return y_N, y_N, y_N, bounds_M1
    starts_M = bounds_M1[:-1]
    mean_M = np.add.reduceat(y_N, starts_M) / np.diff(bounds_M1)
    return mean_M, np.minimum.reduceat(y_N, starts_M), np.maximum.reduceat(y_N, starts_M), bounds_M1


def drawn_as(n: int, max_points: int = PLOT_POINTS) -> str:
    """A note for a title when the curve is drawn as blocks, else ''."""
    return f" (drawn as {max_points} block means with min-max band)" if n > max_points else ""
