"""Verifiers for the two autocorrelation inequalities (AC1, AC2).

A sequence a of n non-negative heights is a step function f on [-1/4, 1/4]
(n pieces of width 1/(2n)). With c = np.convolve(a, a) (length L = 2n - 1):

    AC1 (upper bound on C1, lower is better):
        C1 <= ||f*f||_inf / ||f||_1^2 = 2n * max(c) / (sum a)^2
    AC2 (lower bound on C2, higher is better):
        C2 >= ||f*f||_2^2 / (||f*f||_1 ||f*f||_inf), with, on L + 2 equispaced points
        over [-1/2, 1/2] with zero ends (y = [0, c, 0], h = 1/(L + 1)):
        ||f*f||_2^2 = sum over consecutive pairs of h/3 (y1^2 + y1 y2 + y2^2)
        ||f*f||_1   = sum |c| / (L + 1),      ||f*f||_inf = max |c|

Input rules, as the reference verifiers apply them: a Python list (a numpy
array is refused), non-empty, every item an int or float (bool refused) and
finite; negatives are raised to 0 and values above 1000 lowered to 1000; a sum
below 0.01 is invalid. The clamped sequence is the one scored.

For long sequences the convolution is done with an FFT (O(n log n)). Its
round-off is about 1e-16 of the largest entry; the maximum, which both bounds
depend on most, is recomputed as exact dot products at every lag the FFT puts
within 1e-9 of the peak, so the results agree with the direct formula to
rounding (tested to 1e-12 relative).

This module depends on numpy alone: its source is also the preamble of every
program, which is how ``evaluate_sequence`` comes to be pre-defined there.
"""

import numpy as np

#: sequences at least this long are convolved with an FFT
FFT_MIN_N = 2048
#: lags near the FFT peak that are re-valued exactly; beyond this many the direct formula is used
MAX_PEAK_LAGS = 4096
MAX_HEIGHT = 1000.0
MIN_SUM = 0.01


class InvalidSequence(ValueError):
    """A sequence breaks a rule; the message says which and where."""


def check_sequence(sequence):
    """The float64 array to score (clamped to [0, 1000]); raises InvalidSequence naming the broken rule."""
    if not isinstance(sequence, list):
        raise InvalidSequence(
            f"the sequence must be a Python list; got {type(sequence).__module__}."
            f"{type(sequence).__qualname__} (convert a numpy array with .tolist())"
        )
    if not sequence:
        raise InvalidSequence("the sequence is empty")
    for i, x in enumerate(sequence):
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            raise InvalidSequence(f"item {i} is a {type(x).__name__} ({x!r}); every item must be an int or a float")
    a = np.array(sequence, dtype=np.float64)
    finite = np.isfinite(a)
    if not finite.all():
        i = int(np.flatnonzero(~finite)[0])
        raise InvalidSequence(f"{int((~finite).sum())} items are NaN or infinite (first: item {i} = {sequence[i]!r})")
    a = np.minimum(np.maximum(a, 0.0), MAX_HEIGHT)
    total = float(np.sum(a))
    if total < MIN_SUM:
        raise InvalidSequence(f"the sum of the (clamped) sequence is {total!r}, below {MIN_SUM}")
    return a


def _exact_lag(a, k):
    """c[k] = sum_i a[i] a[k - i], as one dot product."""
    n = a.size
    lo, hi = max(0, k - n + 1), min(k, n - 1)
    return float(np.dot(a[lo : hi + 1], a[k - hi : k - lo + 1][::-1]))


def autoconvolution(a, fast=None):
    """(c, max c): c = np.convolve(a, a), with its maximum exact even when c comes from an FFT."""
    a = np.asarray(a, dtype=np.float64)
    n = a.size
    if fast is None:
        fast = n >= FFT_MIN_N
    if not fast:
        c = np.convolve(a, a)
        return c, float(np.max(c))
    size = 1 << (2 * n - 1).bit_length()
    spectrum = np.fft.rfft(a, size)
    c = np.fft.irfft(spectrum * spectrum, size)[: 2 * n - 1]
    peak = float(c.max())
    lags = np.flatnonzero(c >= peak - 1e-9 * abs(peak))
    if lags.size > MAX_PEAK_LAGS:  # a plateau: value the whole convolution exactly
        c = np.convolve(a, a)
        return c, float(np.max(c))
    return c, max(_exact_lag(a, int(k)) for k in lags)


def ac1_bound(a, fast=None):
    """2n * max(conv(a, a)) / (sum a)^2 of a clamped sequence."""
    a = np.asarray(a, dtype=np.float64)
    _, peak = autoconvolution(a, fast)
    return float(2 * a.size * peak / np.sum(a) ** 2)


def ac2_bound(a, fast=None):
    """||f*f||_2^2 / (||f*f||_1 ||f*f||_inf) of a clamped sequence (module docstring)."""
    c, peak = autoconvolution(a, fast)
    c = np.abs(c)
    L = c.size
    y = np.concatenate(([0.0], c, [0.0]))
    h = 1.0 / (L + 1)
    y1, y2 = y[:-1], y[1:]
    l2_squared = float(np.sum(h / 3 * (y1 * y1 + y1 * y2 + y2 * y2)))
    l1 = float(np.sum(c)) / (L + 1)
    return l2_squared / (l1 * abs(peak))


def ac2_bound_reference(sequence):
    """C2 by the reference's own loop over intervals (slow; for tests at small n)."""
    c = np.convolve(sequence, sequence)
    x = np.linspace(-0.5, 0.5, len(c) + 2)
    y = np.concatenate(([0], c, [0]))
    l2_squared = 0.0
    for i in range(len(c) + 1):
        y1, y2, h = y[i], y[i + 1], x[i + 1] - x[i]
        l2_squared += (h / 3) * (y1**2 + y1 * y2 + y2**2)
    return l2_squared / ((np.sum(np.abs(c)) / (len(c) + 1)) * np.max(np.abs(c)))


def evaluate_ac1(sequence):
    """The AC1 bound of a candidate (lower is better), or np.inf when it would be rejected."""
    try:
        return ac1_bound(check_sequence(sequence))
    except InvalidSequence:
        return np.inf


def evaluate_ac2(sequence):
    """The AC2 bound of a candidate (higher is better); raises ValueError saying why it would be rejected."""
    return ac2_bound(check_sequence(sequence))
