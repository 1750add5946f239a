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
    """Register state samplers: classes whose ``__init__`` keywords are their config keys.

    The whole protocol (``samplers/base.py`` states it as ``Sampler``, with the order the
    engine calls it in):

    - ``accept``, ``make_states``: attributes the engine sets (the problem's archive filter,
      ``State -> bool``; fresh initial states, ``k -> list[State]``); either may be None;
    - ``seed(states)``: the initial states, once, before the first step;
    - ``select(k) -> list[State]``: up to ``k`` states to start this step's groups from;
    - ``record(parent, child)``: once per rollout, in order; ``child`` None for a failure;
    - ``end_step()``: after the step's last ``record`` (prune, flush statistics);
    - ``states``: the archived states (the run logs how many);
    - ``state_dict() -> dict`` (JSON data) and ``load_state_dict(d)``: checkpoint and resume;
    - ``best() -> State | None``: the highest-valued archived state.
    """


@hookspec
def register_estimators(register):
    """Register advantage estimators: ``register(fn, stats=..., check=...)``.

    ``fn(rewards_G, **params) -> advantages_G`` maps one group's rewards to its advantages;
    it receives the group's verified ``scores`` and ``correct`` flags only if it names
    them. ``stats`` and ``check`` are optional. The whole contract: ``discover_core/estimator.py``.
    """


@hookspec
def register_backends(register):
    """Register Backend subclasses."""


@hookspec
def register_commands(cli):
    """Add click commands to the ``discover`` command group."""
