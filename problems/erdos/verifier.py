"""Verifier for the Erdős minimum-overlap problem (upper bounds on C5).

A step function h: [0, 2] -> [0, 1] with integral 1, sampled at n points
(dx = 2/n), proves the bound

    C5 <= max_k sum_i h[i] * (1 - h[i + k]) * dx  =  max(np.correlate(h, 1 - h, "full")) * 2/n

Rules, as the reference verifier applies them: float64, 1-D, finite, length n,
0 <= h <= 1; if sum(h) != n/2 the array is rescaled to that sum and the bounds
are checked again (the rescaled array is the one scored); C5 must be finite and
positive. A program's own reported C5 must agree with ours within
np.isclose(atol=1e-4, rtol=1e-5), but only our number is ever used.

This module depends on numpy alone: its source is also the preamble of every
Erdős program, which is how ``evaluate_erdos_solution`` and ``erdos_c5`` come to
be pre-defined there.
"""

import numpy as np

#: arrays at least this long are scored with the FFT path (below it the direct formula is
#: as fast); both give the same float64 number
FFT_MIN_N = 512
#: the reference's tolerance between a reported and a recomputed C5
REPORT_ATOL, REPORT_RTOL = 1e-4, 1e-5


class InvalidConstruction(ValueError):
    """A construction breaks a rule; the message says which and where."""


def c5_direct(h):
    """C5 = max(correlate(h, 1 - h, "full")) * 2/n, the exact O(n^2) formula."""
    h = np.asarray(h, dtype=np.float64)
    return float(np.max(np.correlate(h, 1.0 - h, mode="full")) * 2.0 / h.size)


def c5_fft(h):
    """C5 exactly as ``c5_direct`` computes it (the same float64 number), in O(n log n).

    c(k) = sum_i h[i+k] (1 - h[i]) = S(k) - A(k): S(k) is a partial sum of h (prefix
    sums, extended precision) and A(k) = sum_i h[i+k] h[i] the autocorrelation of h,
    symmetric in k, from one real FFT of size >= 2n - 1 and one inverse. These
    approximations locate the peak; only the lags within twice an error bound of the
    approximate maximum are then valued exactly, each as the dot product that
    ``np.correlate`` itself computes for that lag, so the result is bit-for-bit the
    direct formula's. The bound: an FFT correlation errs by at most about
    u * log2(size) * ||h||^2 per entry (u the unit round-off; Higham, Accuracy and
    Stability of Numerical Algorithms, §24.1), taken 8 times over, plus the prefix
    sums' n * u_ext * sum(h). The true peak c(k*) is within one bound of its
    approximation and the approximate maximum within one bound of the true peak, so k*
    is always among the lags valued exactly.
    """
    h = np.asarray(h, dtype=np.float64)
    n = h.size
    if n < 2:
        return c5_direct(h)
    g = 1.0 - h
    best = -np.inf
    for k in peak_lags(h):
        exact = np.dot(h[k:], g[: n - k]) if k >= 0 else np.dot(h[: n + k], g[-k:])
        best = max(best, float(exact))
    return best * 2.0 / n


def peak_lags(h):
    """The lags (-(n-1) .. n-1) whose correlation may be the largest, found in O(n log n)."""
    h = np.asarray(h, dtype=np.float64)
    n = h.size
    size = 1 << (2 * n - 1).bit_length()
    spectrum = np.fft.rfft(h, size)
    auto = np.fft.irfft(spectrum.real**2 + spectrum.imag**2, size)[:n]  # A(k), k = 0 .. n-1
    prefix = np.concatenate([[0.0], np.cumsum(h, dtype=np.longdouble)])  # prefix[j] = sum(h[:j])
    total = prefix[n]
    pos = (total - prefix[:n]).astype(np.float64) - auto  # c(k) = sum(h[k:]) - A(k)
    neg = prefix[n:0:-1].astype(np.float64) - auto  # c(-k) = sum(h[:n-k]) - A(k)
    u = np.finfo(np.float64).eps
    bound = 8 * u * np.log2(size) * float(np.dot(h, h)) + (n * np.finfo(np.longdouble).eps + 3 * u) * float(total)
    floor = max(pos.max(), neg.max()) - 2 * bound
    return np.concatenate([np.flatnonzero(pos >= floor), -np.flatnonzero(neg[1:] >= floor) - 1])


def erdos_c5(h_values, fast=None):
    """C5 of a (valid) array; ``fast`` picks the FFT path (default: for n >= FFT_MIN_N).

    Both paths give the same number; the FFT path is much faster for long arrays.
    """
    h = np.asarray(h_values, dtype=np.float64)
    if fast is None:
        fast = h.size >= FFT_MIN_N
    return c5_fft(h) if fast else c5_direct(h)


def _first_bad(mask):
    return int(np.flatnonzero(mask)[0])


def check_h(h_values, n_points=None):
    """The array to score: float64, 1-D, finite, in [0, 1], sum rescaled to n/2.

    Raises InvalidConstruction naming the rule broken and the first offending index.
    """
    try:
        h = np.array(h_values, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise InvalidConstruction(f"h_values is not an array of real numbers ({e})") from None
    if h.ndim != 1:
        raise InvalidConstruction(f"h_values must be a 1-D array; got shape {h.shape}")
    n = h.size
    if n == 0:
        raise InvalidConstruction("h_values is empty")
    if n_points is not None:
        if isinstance(n_points, bool) or not isinstance(n_points, (int, float, np.integer, np.floating)):
            raise InvalidConstruction(f"n_points must be an integer; got {n_points!r}")
        if float(n_points) != n:
            raise InvalidConstruction(f"n_points = {n_points} but h_values has length {n}")
    finite = np.isfinite(h)
    if not finite.all():
        i = _first_bad(~finite)
        raise InvalidConstruction(
            f"h_values contains {int((~finite).sum())} NaN or infinite entries (first: h[{i}] = {float(h[i])})"
        )
    outside = (h < 0.0) | (h > 1.0)
    if outside.any():
        i = _first_bad(outside)
        raise InvalidConstruction(
            f"h_values must lie in [0, 1]; {int(outside.sum())} entries do not (first: h[{i}] = {float(h[i])!r})"
        )
    total = float(h.sum())
    if total <= 0.0:
        raise InvalidConstruction("sum(h_values) is 0, so it cannot be normalised to n/2")
    if total != n / 2.0:
        factor = (n / 2.0) / total
        h = h * factor
        over = h > 1.0
        if over.any():
            i = _first_bad(over)
            raise InvalidConstruction(
                f"after normalising sum(h) from {total!r} to n/2 = {n / 2.0} (factor {factor:.6g}), "
                f"{int(over.sum())} entries exceed 1 (first: h[{i}] = {float(h[i])!r})"
            )
    return h


def verify_erdos(h_values, c5_bound=None, n_points=None, fast=None):
    """(scored h, C5): check the array, compute C5, compare the reported bound if given."""
    h = check_h(h_values, n_points)
    c5 = erdos_c5(h, fast=fast)
    if not np.isfinite(c5) or c5 <= 0.0:
        raise InvalidConstruction(f"the computed C5 is {c5!r}; it must be finite and positive")
    if c5_bound is not None:
        try:
            reported = float(c5_bound)
        except (TypeError, ValueError):
            raise InvalidConstruction(f"the reported c5_bound {c5_bound!r} is not a number") from None
        if not np.isclose(c5, reported, atol=REPORT_ATOL, rtol=REPORT_RTOL):
            raise InvalidConstruction(
                f"the reported c5_bound {reported!r} does not match the verified C5 {c5!r} "
                f"(allowed difference: atol {REPORT_ATOL}, rtol {REPORT_RTOL})"
            )
    return h, c5


def evaluate_erdos_solution(h_values, c5_bound, n_points):
    """Check a candidate the way the evaluator will and return its verified C5.

    Raises ValueError (InvalidConstruction) with the reason when it would be rejected.
    """
    return verify_erdos(h_values, c5_bound, n_points)[1]
