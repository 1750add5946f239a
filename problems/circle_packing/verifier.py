"""Verifier for packing n circles in the unit square (maximise the sum of radii).

A packing is valid when

    centers has shape (n, 2), radii has shape (n,), nothing is NaN or infinite,
    r_i >= 0,
    r_i - tol <= x_i <= 1 - r_i + tol  and the same for y_i      (containment),
    ||c_i - c_j|| >= r_i + r_j - tol  for every pair i < j          (no overlap),

with the reference's tolerance tol = 1e-12; strict mode uses tol = 0. The score
is sum(radii) of the returned arrays; a sum the program reports is ignored.

This module depends on numpy alone: its source is also the preamble of every
packing program, which is how ``validate_packing`` comes to be pre-defined there.
"""

import numpy as np

#: the reference verifier's tolerance for containment and overlap
TOLERANCE = 1e-12


class InvalidConstruction(ValueError):
    """A construction breaks a rule; the message says which and where."""


def _as_array(value, name, shape_text):
    try:
        return np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise InvalidConstruction(f"{name} is not a numeric array of shape {shape_text} ({e})") from None


def pair_gaps(centers, radii):
    """gaps_P: ||c_i - c_j|| - r_i - r_j for every pair i < j, with the index pairs."""
    i, j = np.triu_indices(len(radii), k=1)
    dist_P = np.sqrt(((centers[i] - centers[j]) ** 2).sum(axis=1))
    return dist_P - (radii[i] + radii[j]), i, j


def boundary_slacks(centers, radii):
    """slack_N4: x - r, 1 - x - r, y - r, 1 - y - r for every circle (negative = outside)."""
    x, y = centers[:, 0], centers[:, 1]
    return np.stack([x - radii, 1.0 - x - radii, y - radii, 1.0 - y - radii], axis=1)


def check_packing(centers, radii, n=None, tol=None):
    """(centers_N2, radii_N) as float64 arrays, or InvalidConstruction naming the first broken rule.

    ``n`` is the required number of circles; None accepts any n >= 1. ``tol``
    defaults to the module's TOLERANCE.
    """
    tol = TOLERANCE if tol is None else tol
    centers = _as_array(centers, "centers", "(n, 2)")
    radii = _as_array(radii, "radii", "(n,)")
    if centers.ndim != 2 or centers.shape[1:] != (2,):
        raise InvalidConstruction(f"centers must have shape (n, 2); got {centers.shape}")
    if radii.ndim != 1:
        raise InvalidConstruction(f"radii must have shape (n,); got {radii.shape}")
    if len(centers) != len(radii):
        raise InvalidConstruction(f"centers has {len(centers)} rows but radii has {len(radii)} entries")
    if n is not None and len(radii) != n:
        raise InvalidConstruction(f"expected {n} circles; got {len(radii)}")
    if len(radii) == 0:
        raise InvalidConstruction("the packing has no circles")
    for name, arr in (("centers", centers), ("radii", radii)):
        bad = ~np.isfinite(arr)
        if bad.any():
            raise InvalidConstruction(f"{name} contains {int(bad.sum())} NaN or infinite entries")
    negative = radii < 0
    if negative.any():
        k = int(np.flatnonzero(negative)[0])
        raise InvalidConstruction(f"radii must be >= 0; circle {k} has radius {float(radii[k])!r}")
    slack_N4 = boundary_slacks(centers, radii)
    outside = slack_N4 < -tol
    if outside.any():
        k, side = (int(v) for v in np.argwhere(outside)[0])
        sides = ("left", "right", "bottom", "top")
        raise InvalidConstruction(
            f"circle {k} (center {centers[k].tolist()}, radius {float(radii[k])!r}) sticks out of the unit square "
            f"on the {sides[side]} side by {-slack_N4[k, side]:.3g} (tolerance {tol:g})"
        )
    gaps_P, i, j = pair_gaps(centers, radii)
    overlap = gaps_P < -tol
    if overlap.any():
        p = int(np.flatnonzero(overlap)[0])
        raise InvalidConstruction(
            f"circles {int(i[p])} and {int(j[p])} overlap by {-gaps_P[p]:.3g} "
            f"({int(overlap.sum())} overlapping pairs in all; tolerance {tol:g})"
        )
    return centers, radii


def packing_metrics(centers, radii):
    """Zero-tolerance diagnostics of an already checked packing."""
    gaps_P = pair_gaps(centers, radii)[0]
    min_gap = float(gaps_P.min()) if gaps_P.size else None  # one circle has no pairs
    min_slack = float(boundary_slacks(centers, radii).min())
    return {
        "n": int(len(radii)),
        "min_pair_gap": min_gap,
        "min_boundary_slack": min_slack,
        "valid_at_zero_tolerance": bool((min_gap is None or min_gap >= 0.0) and min_slack >= 0.0),
    }


def validate_packing(centers, radii, n=None, tol=None):
    """Check a packing the way the evaluator will and return its sum of radii.

    Raises ValueError (InvalidConstruction) with the reason when it would be rejected.
    """
    return float(np.sum(check_packing(centers, radii, n, tol)[1]))
