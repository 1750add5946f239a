"""Registers the built-in samplers."""

from discover_ttt import hookimpl

from .puct import PUCT
from .simple import Greedy, NoReuse


@hookimpl
def register_samplers(register):
    register(PUCT, name="puct")
    register(Greedy, name="greedy")
    register(NoReuse, name="no_reuse")
