"""Circle packing in the unit square (maximise the sum of radii; published for n = 26 and 32)."""

from .problem import CirclePackingProblem

__all__ = ["CirclePackingProblem"]
