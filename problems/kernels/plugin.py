"""Registers the TriMul kernel problem under the name ``trimul``."""

from discover_ttt import hookimpl

from .problem import TriMulProblem


@hookimpl
def register_problems(register):
    register(TriMulProblem)
