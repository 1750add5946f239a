"""Registers circle packing in the unit square under the name ``circle_packing``."""

from discover_ttt import hookimpl

from .problem import CirclePackingProblem


@hookimpl
def register_problems(register):
    register(CirclePackingProblem)
