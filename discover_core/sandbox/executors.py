"""Which pool evaluates programs: the local ``Sandbox`` or Ray actors that each own one.

The config's ``sandbox`` section picks it (``executor: local | ray``); both give a
problem the same object API (``run``, ``map``, ``workers``, ``close``), so problem
plugins never know where their programs run. Ray is imported only by
``ray_executor``, and only when ``executor: ray`` is asked for.
"""

from __future__ import annotations

from typing import Any

from ..errors import UserError


class RayExecutorError(UserError):
    """The Ray executor cannot be used as configured (no node fits a program, an address for the local executor).

    Ray itself missing is ``errors.MissingExtra``.
    """


def ray_request(cpus: int, program_resources: dict[str, float] | None = None) -> dict[str, float]:
    """One program's Ray resource request: ``sandbox.cpus`` CPUs plus the problem's own needs.

    ``program_resources`` uses Ray's option names: ``num_cpus`` (added to ``cpus``),
    ``num_gpus``, ``memory`` (bytes) and any custom resource by its name. The result
    is keyed by the names Ray's node tables use (``CPU``, ``GPU``, ``memory``, custom).
    """
    request: dict[str, float] = {"CPU": float(max(1, int(cpus)))}
    for name, amount in (program_resources or {}).items():
        key = {"num_cpus": "CPU", "num_gpus": "GPU", "CPU": "CPU", "GPU": "GPU"}.get(name, name)
        try:
            amount = float(amount)
        except (TypeError, ValueError):
            raise RayExecutorError(f"program_resources[{name!r}] must be a number, got {amount!r}.") from None
        if amount < 0:
            raise RayExecutorError(f"program_resources[{name!r}] must not be negative, got {amount:g}.")
        request[key] = request.get(key, 0.0) + amount
    return {k: v for k, v in request.items() if v > 0}


def slot_gpus(gpu_ids: list[Any], slots: int) -> list[str] | None:
    """The ``gpus`` of a node's pool from the GPU ids Ray gave its actor: one per slot, shared in turn
    when a program asks for a fraction of a GPU; None when the actor has no GPU.

    The sandbox never passes the host's environment on, so Ray's own CUDA_VISIBLE_DEVICES would not
    reach the programs; the pool sets each slot's instead.
    """
    if not gpu_ids:
        return None
    return [str(gpu_ids[i % len(gpu_ids)]) for i in range(max(1, int(slots)))]


def make_sandbox(settings: dict[str, Any], program_resources: dict[str, float] | None = None):
    """The program pool for a run: ``settings`` is the config's ``sandbox`` section as a dict.

    ``executor`` and ``address`` choose the pool; every other key is a ``Sandbox`` argument
    (on Ray, each actor's local pool gets them; ``workers`` caps the programs run at once).
    """
    settings = {k: v for k, v in settings.items() if v is not None}
    executor = settings.pop("executor", "local")
    address = settings.pop("address", None)
    if executor == "local":
        from .runner import Sandbox

        if address is not None:
            raise RayExecutorError(
                f"sandbox.address is {address!r} but sandbox.executor is 'local', which runs programs on this "
                "machine only; set sandbox.executor: ray to use that Ray cluster, or remove sandbox.address."
            )

        return Sandbox(**settings)
    if executor == "ray":
        from .ray_executor import RaySandbox

        return RaySandbox(address=address, program_resources=program_resources, **settings)
    raise RayExecutorError(f"sandbox.executor must be 'local' or 'ray', got {executor!r}.")
