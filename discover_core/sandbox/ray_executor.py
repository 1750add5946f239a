"""Evaluate programs on a Ray cluster, each still inside our sandbox.

One actor per node (or per group of ``actor_slots`` slots) owns a local ``Sandbox`` pool
(fork servers, limits, bwrap where the node has it). A program's Ray request is
``{"CPU": sandbox.cpus}`` plus the problem's ``program_resources``; an actor with ``k``
slots reserves ``k`` times that, where ``k``
is the most the node's free resources hold (capped so the cluster runs at most
``sandbox.workers`` programs at once). Ray's accounting therefore sees every program's
share, and a node's GPUs are handed to its programs one request at a time.

``RaySandbox`` keeps the local pool's API (``run``, ``map``, ``workers``, ``start``,
``close``): the driver hands each call to the actor with the most free slots and waits
for it at most the program's limit + the sandbox's grace + ``_TRANSFER_S``.

Faults: if the actor (or its node) dies while the program runs, the program is retried
once on another actor; a second loss, or no actor left, gives a ``crash`` result whose
error starts with "worker lost". A node that does not answer in time is killed and the
program ends as ``crash`` at once (no retry: that would wait past the step's deadline).
Lost actors are replaced in the background on nodes that are still alive.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from typing import Any

from ..errors import MissingExtra
from .executors import RayExecutorError, ray_request, slot_gpus
from .runner import _GRACE_S, SERVER_DIED, Sandbox, SandboxError, SandboxResult

try:
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
except ImportError as e:  # pragma: no cover - exercised by a test that hides ray
    raise MissingExtra(
        "sandbox.executor 'ray'", "Ray", "ray", e, instead="set sandbox.executor: local (install Ray on every node)"
    ) from None

log = logging.getLogger(__name__)

#: besides limit + grace, how long a call may take to reach a node and come back
#: (also covers restarting a fork server that a timed-out program took down)
_TRANSFER_S = 15.0
#: how long placement waits for the actors to start their fork servers
_READY_TIMEOUT_S = 180.0
#: lost actors are replaced every this many seconds, on nodes that lost none for _SETTLE_S
#: (a dead node can stay listed as alive until Ray's health checks notice)
_HEAL_PERIOD_S, _SETTLE_S = 10.0, 30.0
#: how long an actor whose sandbox server died under a program waits before answering (``_NodeSandbox.run``)
_KILL_WAIT_S = 1.0
#: Ray errors that mean "the worker running this call is gone", not "the program failed"
_LOST = tuple(
    getattr(ray.exceptions, name)
    for name in (
        "RayActorError",
        "ActorUnavailableError",
        "NodeDiedError",
        "WorkerCrashedError",
        "ObjectLostError",
        "OwnerDiedError",
        "LocalRayletDiedError",
        "RaySystemError",
    )
    if hasattr(ray.exceptions, name)
)


class _NodeSandbox:
    """The actor: a local ``Sandbox`` with ``slots`` workers on one node."""

    def __init__(self, settings: dict[str, Any], slots: int) -> None:
        gpus = slot_gpus(ray.get_gpu_ids(), slots)  # the GPUs Ray gave this actor (program_resources)
        if gpus is not None:
            settings = {**settings, "gpus": gpus}
        self.sandbox = Sandbox(workers=slots, **settings)

    def ready(self) -> dict[str, Any]:
        self.sandbox.start()  # fork servers start now, not inside the first programs' time
        # the GPUs Ray granted this actor; Ray sets CUDA_VISIBLE_DEVICES to them for this process
        return {"isolation": self.sandbox.isolation, "pid": os.getpid(), "gpus": [str(g) for g in ray.get_gpu_ids()]}

    def run(self, job: dict[str, Any]) -> dict[str, Any]:
        result = self.sandbox.run(**job)
        if result.kind == "crash" and (result.error or "").startswith(SERVER_DIED):
            # Ray stops an actor's child processes before the actor itself: a server that died under the
            # program may mean this actor is being killed. Answering at once would pass the lost worker off
            # as the program's crash (no retry); an actor being killed dies within this wait instead.
            time.sleep(_KILL_WAIT_S)
        return dataclasses.asdict(result)

    def close(self) -> None:
        self.sandbox.close()


_Actor = ray.remote(_NodeSandbox)


@dataclasses.dataclass(eq=False)
class _Member:
    """One live actor as the driver sees it."""

    handle: Any
    node_id: str
    slots: int
    free: int
    isolation: str = ""
    gpus: list[str] = dataclasses.field(default_factory=list)
    pid: int = 0
    alive: bool = True


def _alive_nodes() -> list[dict[str, Any]]:
    return [n for n in ray.nodes() if n.get("Alive")]


def _room_per_node() -> dict[str, dict[str, float]]:
    """Each alive node's resources not yet claimed by others (its totals where Ray cannot say)."""
    totals = {n["NodeID"]: n.get("Resources", {}) for n in _alive_nodes()}
    try:
        from ray._private.state import available_resources_per_node  # a DeveloperAPI, absent over ray://

        available = available_resources_per_node()
    except Exception:  # noqa: BLE001
        return totals
    return {node_id: available.get(node_id, {}) for node_id in totals}


def _capacity(resources: dict[str, float], request: dict[str, float]) -> int:
    """How many programs with ``request`` fit in a node's ``resources`` (floor over each resource)."""
    return int(min(resources.get(k, 0.0) / v + 1e-9 for k, v in request.items()))


def _kill(member: _Member) -> None:
    try:
        ray.kill(member.handle, no_restart=True)
    except Exception:  # noqa: BLE001 - already gone, or Ray itself is shutting down
        pass


def _actor_options(node_id: str, request: dict[str, float], slots: int) -> dict[str, Any]:
    total = {k: v * slots for k, v in request.items()}
    options: dict[str, Any] = {
        "num_cpus": total.pop("CPU", 0.0),
        "num_gpus": total.pop("GPU", 0.0),
        "scheduling_strategy": NodeAffinitySchedulingStrategy(node_id, soft=False),
        "max_concurrency": slots + 2,  # every slot busy, and still room for ready()/close()
        "max_restarts": 0,
    }
    if "memory" in total:
        options["memory"] = total.pop("memory")
    if total:
        options["resources"] = total
    return options


class RaySandbox:
    """The ``Sandbox`` API over Ray actors (see the module docstring for placement and faults)."""

    def __init__(
        self,
        *,
        address: str | None = None,
        program_resources: dict[str, float] | None = None,
        workers: int | None = None,
        actor_slots: int | None = None,
        **settings: Any,
    ) -> None:
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            # None: a new local Ray instance (a laptop), whatever RAY_ADDRESS or an earlier `ray start`
            # says; "auto", "host:port" or "ray://host:port": a running cluster
            ray.init(address=address or "local", include_dashboard=False)
        self.settings = settings
        self.timeout_s = float(settings.get("timeout_s", 60.0))
        self.cpus = max(1, int(settings.get("cpus", 1)))
        self.request = ray_request(self.cpus, program_resources)
        self.max_workers = int(workers) if workers else None
        self.actor_slots = int(actor_slots) if actor_slots else None  # None: one actor per node
        self._cond = threading.Condition()
        self._members: list[_Member] = []
        self._healing = False
        self._lost_at: dict[str, float] = {}
        self._closed = False
        self._place()
        self.workers = sum(m.slots for m in self._members)
        kinds = sorted({m.isolation for m in self._members})
        self.isolation = kinds[0] if len(kinds) == 1 else "mixed"
        log.info(
            "Ray executor: %d programs at once on %d node(s), %s each", self.workers, len(self._members), self.request
        )

    # -- placement ---------------------------------------------------------------------------
    def _plan(self, skip: set[str], budget: int | None) -> dict[str, int]:
        """New slots per alive node (as many as its free resources hold; ``skip`` nodes get none),
        handed out one at a time across nodes up to ``budget``."""
        room = {
            node_id: _capacity(resources, self.request)
            for node_id, resources in _room_per_node().items()
            if node_id not in skip
        }
        room = {k: v for k, v in room.items() if v > 0}
        if budget is None:
            return room
        plan: dict[str, int] = {}
        while budget > 0 and any(room.values()):
            for node_id in list(room):
                if budget > 0 and room[node_id] > 0:
                    plan[node_id] = plan.get(node_id, 0) + 1
                    room[node_id] -= 1
                    budget -= 1
        return plan

    def _groups(self, plan: dict[str, int]) -> list[tuple[str, int]]:
        """The actors for a plan: one per node, or groups of at most ``actor_slots`` slots."""
        size = self.actor_slots
        return [
            (node_id, min(size or slots, slots - start))
            for node_id, slots in plan.items()
            for start in range(0, slots, size or slots)
        ]

    def _start_actors(self, plan: dict[str, int]) -> list[_Member]:
        pending = []
        for node_id, slots in self._groups(plan):
            handle = _Actor.options(**_actor_options(node_id, self.request, slots)).remote(self.settings, slots)
            pending.append((handle.ready.remote(), _Member(handle, node_id, slots, slots)))
        ready, _ = ray.wait([ref for ref, _ in pending], num_returns=len(pending), timeout=_READY_TIMEOUT_S)
        members = []
        for ref, member in pending:
            try:
                if ref not in ready:
                    raise TimeoutError(f"not ready within {_READY_TIMEOUT_S:g} s")
                info = ray.get(ref)
                member.isolation, member.gpus, member.pid = info["isolation"], info["gpus"], info["pid"]
                members.append(member)
            except Exception as exc:  # noqa: BLE001 - a node that cannot host the pool is left out
                log.warning("Ray executor: no sandbox on node %s: %s", member.node_id, exc)
                _kill(member)
        return members

    def _place(self) -> None:
        whole = sum(_capacity(n.get("Resources", {}), self.request) for n in _alive_nodes())
        target = min(whole, self.max_workers or whole)
        plan = self._plan(set(), self.max_workers)
        for _ in range(10):  # resources just released (a closed pool) show up as free a moment later
            if sum(plan.values()) >= target:
                break
            time.sleep(0.5)
            plan = max(plan, self._plan(set(), self.max_workers), key=lambda p: sum(p.values()))
        if not plan:
            free = {node_id[:12]: room for node_id, room in _room_per_node().items()}
            raise RayExecutorError(
                f"no node of the Ray cluster has room for one program, which needs {self.request} "
                f"(sandbox.cpus plus the problem's program_resources); free per node: {free}. "
                "Start nodes with those resources or lower the request."
            )
        self._members = self._start_actors(plan)
        if not self._members:
            raise RayExecutorError(
                "the Ray executor could not start a sandbox on any node (see the warnings above); "
                "check that discover-ttt is installed on every node and that the sandbox works there."
            )

    def _heal(self) -> None:
        """Replace lost actors on alive nodes (a background thread, until every slot is back or close)."""
        while True:
            with self._cond:
                live = [m for m in self._members if m.alive]
                budget = self.workers - sum(m.slots for m in live)
                if self._closed or budget <= 0:
                    self._healing = False
                    self._cond.notify_all()
                    return
                now = time.monotonic()
                skip = {n for n, t in self._lost_at.items() if now - t < _SETTLE_S}
            try:
                plan = self._plan(skip, budget)
                fresh = self._start_actors(plan) if plan else []
            except Exception as exc:  # noqa: BLE001 - the cluster may be going away; try again later
                log.warning("Ray executor: replacing lost actors failed: %s", exc)
                fresh = []
            with self._cond:
                if self._closed:
                    for m in fresh:
                        _kill(m)
                else:
                    self._members = [m for m in self._members if m.alive] + fresh
                    self._cond.notify_all()
                if not fresh:
                    self._cond.wait(_HEAL_PERIOD_S)

    def _lose(self, member: _Member, why: str) -> None:
        with self._cond:
            if not member.alive:
                return
            member.alive = False
            self._lost_at[member.node_id] = time.monotonic()
            log.warning("Ray executor: lost the sandbox actor on node %s (%s)", member.node_id, why)
            _kill(member)
            if not self._healing and not self._closed:
                self._healing = True
                threading.Thread(target=self._heal, name="ray-sandbox-heal", daemon=True).start()
            self._cond.notify_all()

    # -- slots ---------------------------------------------------------------------------------
    def _checkout(self, avoid: _Member | None, patience_s: float, deadline: float | None) -> _Member | None:
        """A live actor other than ``avoid`` with a free slot. Waiting for a busy slot is unbounded
        (as in the local pool) unless ``deadline`` is set; with no actor alive it waits up to
        ``patience_s`` for a replacement. None when no slot is to be had."""
        give_up = None
        with self._cond:
            while True:
                if self._closed:
                    raise SandboxError("this Sandbox is closed")
                live = [m for m in self._members if m.alive and m is not avoid]
                free = [m for m in live if m.free > 0]
                if free:
                    member = max(free, key=lambda m: m.free)
                    member.free -= 1
                    return member
                if not live:
                    if not self._healing or patience_s <= 0:
                        return None
                    give_up = give_up or time.monotonic() + patience_s
                ends = [t for t in (deadline, give_up) if t is not None]
                remaining = min(ends) - time.monotonic() if ends else None
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)

    def _checkin(self, member: _Member) -> None:
        with self._cond:
            member.free += 1
            self._cond.notify_all()

    # -- the Sandbox API -----------------------------------------------------------------------
    def run(self, source: str, entry: str = "run", **kwargs: Any) -> SandboxResult:
        """Run one program on some node's sandbox; same arguments and result as ``Sandbox.run``."""
        job = {"source": source, "entry": entry, **kwargs}
        limit = float(kwargs.get("timeout_s") or self.timeout_s)
        wait_s = limit + _GRACE_S + _TRANSFER_S
        lost: _Member | None = None
        reasons = []
        for attempt in range(2):  # the first try and one retry elsewhere
            # the retry takes a slot elsewhere within the program's own time, or none at all
            retry = attempt > 0
            member = self._checkout(lost, 0.0 if retry else wait_s, time.monotonic() + wait_s if retry else None)
            if member is None:
                reasons.append("no Ray worker was free to run it again" if attempt else "no Ray worker is left")
                break
            started = time.monotonic()
            try:
                out = ray.get(member.handle.run.remote(job), timeout=wait_s)
            except ray.exceptions.GetTimeoutError:
                self._lose(member, f"no answer within {wait_s:g} s")
                error = (
                    f"worker lost: node {member.node_id[:12]} gave no answer within the {limit:g} s limit "
                    f"(+{_GRACE_S + _TRANSFER_S:g} s); its sandbox actor was killed"
                )
                return SandboxResult(False, kind="crash", seconds=time.monotonic() - started, error=error)
            except ray.exceptions.RayTaskError as exc:
                self._checkin(member)
                cause = getattr(exc, "cause", None)
                raise (cause if isinstance(cause, Exception) else exc) from None  # bad arguments, as locally
            except _LOST as exc:
                self._lose(member, type(exc).__name__)
                reasons.append(f"the Ray worker on node {member.node_id[:12]} died ({type(exc).__name__})")
                lost = member
                continue
            self._checkin(member)
            return SandboxResult(**out)
        return SandboxResult(False, kind="crash", error="worker lost: " + "; then ".join(reasons))

    #: many jobs (dicts of ``run`` keyword arguments), ``workers`` at a time; results in order
    map = Sandbox.map

    def start(self) -> None:
        """The actors start their fork servers when placed; nothing is left to start."""

    def close(self) -> None:
        """Stop every actor's sandbox, and the local Ray instance if this object started it."""
        with self._cond:
            self._closed = True
            members, self._members = self._members, []
            self._cond.notify_all()
        live = [m for m in members if m.alive]
        try:
            if live:
                ray.wait([m.handle.close.remote() for m in live], num_returns=len(live), timeout=10)
        except Exception:  # noqa: BLE001 - closing what is already gone
            pass
        for m in live:
            _kill(m)
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()

    def __enter__(self) -> RaySandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
