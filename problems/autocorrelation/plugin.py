"""Registers the autocorrelation problems under the names ``ac1`` and ``ac2``."""

from discover_ttt import hookimpl

from .problem import AC1Problem, AC2Problem


@hookimpl
def register_problems(register):
    register(AC1Problem)
    register(AC2Problem)
