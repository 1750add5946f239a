"""Registers the Erdős minimum-overlap problem under the name ``erdos``."""

from discover_ttt import hookimpl

from .problem import ErdosProblem


@hookimpl
def register_problems(register):
    register(ErdosProblem)
