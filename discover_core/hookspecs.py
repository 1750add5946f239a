"""The hooks a plugin may implement. Each receives a ``register`` callback:
``register(MyProblem)`` takes the name from ``MyProblem.name``;
``register(obj, name="other")`` gives it explicitly. In a plugin module::

from discover_ttt import hookimpl

@hookimpl
def register_problems(register):
    register(MyProblem)
"""

import pluggy

hookspec = pluggy.HookspecMarker("discover")
hookimpl = pluggy.HookimplMarker("discover")


@hookspec
def register_problems(register):
    """Register Problem subclasses."""


@hookspec
def register_samplers(register):
    """Register state samplers (classes with seed/select/record/end_step)."""


@hookspec
def register_estimators(register):
    """Register advantage estimators (functions from a group's rewards to advantages)."""


@hookspec
def register_backends(register):
    """Register Backend subclasses."""


@hookspec
def register_commands(cli):
    """Add click commands to the ``discover`` command group."""
