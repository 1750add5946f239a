"""The autocorrelation inequalities AC1 (upper bounds on C1) and AC2 (lower bounds on C2)."""

from .problem import AC1Problem, AC2Problem, AutocorrelationProblem

__all__ = ["AC1Problem", "AC2Problem", "AutocorrelationProblem"]
