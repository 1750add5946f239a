"""The Ray executor: programs run in our sandbox on Ray actors, with the local pool's run/map API.

The session's one local Ray instance (``ray_local`` in tests/conftest.py: 2 CPUs, one logical GPU, no
dashboard, a small object store) serves every test that needs Ray; those tests are in the ``ray`` tier.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import test_sandbox_adversarial as adversarial
from conftest import RAY_SECRET as SECRET
from conftest import RAY_SECRET_VAR as SECRET_VAR

from discover_ttt.config import load_config
from discover_ttt.errors import MissingExtra
from discover_ttt.install import install_command
from discover_ttt.loop import Discovery, run_config
from discover_ttt.problem import Problem
from discover_ttt.progress import Reporter
from discover_ttt.sandbox.executors import RayExecutorError, make_sandbox, ray_request

TOY = Path(__file__).parent / "toy"


def test_problem_requests_no_extra_resources_by_default():
    assert Problem.program_resources == {}


def test_ray_request_adds_the_problem_resources():
    assert ray_request(2) == {"CPU": 2.0}
    assert ray_request(1, {"num_gpus": 1}) == {"CPU": 1.0, "GPU": 1.0}
    assert ray_request(2, {"num_cpus": 1, "memory": 2**30, "trimul_box": 0.5}) == {
        "CPU": 3.0,
        "memory": float(2**30),
        "trimul_box": 0.5,
    }
    with pytest.raises(RayExecutorError, match="num_gpus"):
        ray_request(1, {"num_gpus": "one"})


def test_missing_ray_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails
    monkeypatch.delitem(sys.modules, "discover_ttt.sandbox.ray_executor", raising=False)
    with pytest.raises(MissingExtra, match=re.escape(install_command("ray"))):
        make_sandbox({"executor": "ray"})


def test_local_executor_is_the_default_pool():
    from discover_ttt.sandbox import Sandbox

    config = {"timeout_s": 5, "workers": 1, "isolation": "none", "address": None, "preload": []}  # no numpy needed
    with make_sandbox(config) as sb:
        assert type(sb) is Sandbox and sb.run("def run():\n    return 7\n").value == 7


def test_an_address_without_the_ray_executor_is_an_error():
    with pytest.raises(RayExecutorError, match="executor: ray"):
        make_sandbox({"executor": "local", "address": "auto"})


def test_slots_are_planned_from_each_nodes_free_resources(monkeypatch):
    """Placement without a cluster: a node holds floor(free / request) programs, a budget is dealt one
    slot at a time across the nodes, and ``actor_slots`` splits a node's slots into actors."""
    pytest.importorskip("ray")
    from discover_ttt.sandbox import ray_executor

    assert ray_executor._capacity({"CPU": 4.0, "GPU": 1.0}, {"CPU": 1.0}) == 4
    assert ray_executor._capacity({"CPU": 4.0, "GPU": 1.0}, {"CPU": 1.0, "GPU": 1.0}) == 1
    assert ray_executor._capacity({"CPU": 2.0}, {"CPU": 1.0, "GPU": 1.0}) == 0
    free = {"a": {"CPU": 3.0}, "b": {"CPU": 1.0}, "c": {"CPU": 0.5}}
    monkeypatch.setattr(ray_executor, "_room_per_node", lambda: free)
    sb = object.__new__(ray_executor.RaySandbox)  # no Ray instance: only the arithmetic
    sb.request, sb.actor_slots = {"CPU": 1.0}, None
    assert sb._plan(set(), None) == {"a": 3, "b": 1}
    assert sb._plan(set(), 3) == {"a": 2, "b": 1}
    assert sb._plan({"a"}, None) == {"b": 1}
    assert sb._groups({"a": 3, "b": 1}) == [("a", 3), ("b", 1)]
    sb.actor_slots = 2
    assert sb._groups({"a": 3, "b": 1}) == [("a", 2), ("a", 1), ("b", 1)]
    node_id = "ab" * 28  # Ray's node ids are hex
    options = ray_executor._actor_options(node_id, {"CPU": 1.0, "GPU": 0.5, "memory": 2.0, "accel": 1.0}, 2)
    assert options["scheduling_strategy"].node_id == node_id and options["scheduling_strategy"].soft is False
    assert (options["num_cpus"], options["num_gpus"], options["memory"]) == (2.0, 1.0, 4.0)
    assert options["resources"] == {"accel": 2.0} and options["max_concurrency"] == 4


# -- a real local Ray (the session's, tests/conftest.py) -------------------------------------------
@pytest.fixture(scope="class")
def rsb(ray_local):
    """One sandbox actor with both CPUs, closed after its class so that later tests can place theirs."""
    sb = make_sandbox({"executor": "ray", "timeout_s": 5, "workers": 2, "preload": ["numpy"]})
    yield sb
    sb.close()


class TestOneActor:
    def test_run_and_map_keep_the_sandbox_api(self, rsb):
        assert rsb.workers == 2
        r = rsb.run("import numpy as np\ndef run(n):\n    return np.arange(n).tolist()\n", args=(3,))
        assert r.ok and r.value == [0, 1, 2]
        r = rsb.run("def run():\n    return parent * 2\n", inject={"parent": 21})
        assert r.value == 42
        jobs = [{"source": "def run(x):\n    return x + 1\n", "args": [i]} for i in range(6)]
        assert [r.value for r in rsb.map(jobs)] == [1, 2, 3, 4, 5, 6]
        r = rsb.run("def run():\n    raise KeyError('nope')\n")
        assert r.kind == "exception" and "KeyError" in r.error
        r = rsb.run("import time\ndef run():\n    time.sleep(30)\n", timeout_s=0.5)
        assert r.kind == "timeout"

    def test_bad_arguments_raise_as_in_the_local_pool(self, rsb):
        with pytest.raises(ValueError, match="identifier"):
            rsb.run("def run():\n    return 1\n", entry="not valid")
        with pytest.raises(TypeError, match="source"):
            rsb.run(b"def run(): pass")
        assert rsb.run("def run():\n    return 1\n").value == 1  # the slot came back

    def test_programs_see_no_host_or_ray_environment(self, rsb):
        body = """
    import os
    def run():
        hits = []
        for pid in os.listdir("/proc"):
            try:
                if SECRET.encode() in open(f"/proc/{pid}/environ", "rb").read():
                    hits.append(pid)
            except OSError:
                pass
        return {"env": sorted(os.environ), "hits": hits}
    """
        r = rsb.run(textwrap.dedent(body), inject={"SECRET": SECRET})
        assert r.ok, r.error
        assert SECRET_VAR not in r.value["env"]
        assert not [name for name in r.value["env"] if name.startswith("RAY") or "CUDA" in name]
        assert r.value["hits"] == []

    # the sandbox's hostile cases, through the Ray executor (same invariants: limit + 2 s, nothing left behind)
    def test_fork_bomb(self, rsb):
        adversarial.test_fork_bomb(rsb)

    def test_memory_bomb(self, rsb):
        adversarial.test_memory_bomb(rsb)

    def test_compiled_loop_ignoring_signals(self, rsb):
        adversarial.test_compiled_loop_ignoring_signals(rsb)

    def test_network_socket(self, rsb):
        adversarial.test_network_socket(rsb)

    def test_secret_in_the_ray_workers_environment_is_not_readable(self, rsb):
        r = adversarial.hostile(rsb, f"import os\ndef run():\n    return os.environ[{SECRET_VAR!r}]\n")
        assert r.kind == "exception" and "KeyError" in r.error


def test_a_node_without_room_is_a_clear_error(ray_local):
    with pytest.raises(RayExecutorError, match="no node of the Ray cluster has room"):
        make_sandbox({"executor": "ray", "workers": 1}, {"num_gpus": 2})


def test_program_resources_limit_the_slots_and_grant_the_gpu(ray_local):
    # two CPUs but one GPU: a problem that needs a GPU per program runs one program at a time
    with make_sandbox({"executor": "ray", "timeout_s": 5, "preload": []}, {"num_gpus": 1}) as sb:
        assert sb.workers == 1 and sb.request == {"CPU": 1.0, "GPU": 1.0}
        assert [m.gpus for m in sb._members] == [["0"]]
        assert sb.run("def run():\n    return 5\n").value == 5


def _busy(sb, count: int):
    """Wait until ``count`` programs are running; return the actors running them."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with sb._cond:
            busy = [m for m in sb._members if m.alive and m.free < m.slots]
            if sum(m.slots - m.free for m in busy) >= count:
                return busy
        time.sleep(0.02)
    raise AssertionError("the programs did not start")


def _kill_running(ray, sb, count: int = 1) -> None:
    for m in _busy(sb, count)[:count]:
        ray.kill(m.handle, no_restart=True)


def test_an_actor_waits_before_reporting_a_server_that_died_under_the_program(monkeypatch):
    """Ray stops an actor's child processes before the actor: the actor must not answer "server died"
    at once, or a killed worker passes for the program's crash and is not retried elsewhere."""
    pytest.importorskip("ray")
    from discover_ttt.sandbox import ray_executor
    from discover_ttt.sandbox.runner import SERVER_DIED, SandboxResult

    waits = []
    monkeypatch.setattr(ray_executor.time, "sleep", waits.append)
    actor = ray_executor._NodeSandbox.__new__(ray_executor._NodeSandbox)
    for result, waited in [
        (SandboxResult(False, kind="crash", error=SERVER_DIED + ": log tail"), [ray_executor._KILL_WAIT_S]),
        (SandboxResult(False, kind="crash", error="MemoryError"), []),
        (SandboxResult(True, value=1.0), []),
    ]:
        waits.clear()
        actor.sandbox = type("Fake", (), {"run": staticmethod(lambda r=result, **job: r)})()
        assert actor.run({"source": ""})["error"] == result.error
        assert waits == waited


def test_lost_actor_is_retried_once_elsewhere_then_crash(ray_local):
    from discover_ttt.sandbox.ray_executor import RaySandbox

    sleeper = "import time\ndef run():\n    time.sleep(1.5)\n    return 'done'\n"
    with RaySandbox(timeout_s=10, workers=2, actor_slots=1, preload=()) as sb:
        assert len(sb._members) == 2
        results = []
        worker = threading.Thread(target=lambda: results.append(sb.run(sleeper)))
        worker.start()
        _kill_running(ray_local, sb)
        worker.join(30)
        assert results and results[0].ok and results[0].value == "done"  # the retry ran on the other actor

        results.clear()
        worker = threading.Thread(target=lambda: results.append(sb.run(sleeper)))
        started = time.monotonic()
        worker.start()
        _kill_running(ray_local, sb)  # the one actor left; the first is not replaced yet
        worker.join(30)
        assert results[0].kind == "crash" and results[0].error.startswith("worker lost")
        assert time.monotonic() - started < 10 + 20


def test_a_node_that_stops_answering_costs_one_deadline_not_a_hang(ray_local, monkeypatch):
    from discover_ttt.sandbox import ray_executor

    monkeypatch.setattr(ray_executor, "_GRACE_S", 0.5)
    monkeypatch.setattr(ray_executor, "_TRANSFER_S", 0.5)
    with ray_executor.RaySandbox(timeout_s=1, workers=2, actor_slots=1, preload=()) as sb:
        results = []
        worker = threading.Thread(target=lambda: results.append(sb.run("def run():\n    return 1\n")))
        for m in sb._members:
            os.kill(m.pid, signal.SIGSTOP)  # both actors freeze: no answer, no error either
        started = time.monotonic()
        worker.start()
        worker.join(30)
        elapsed = time.monotonic() - started
        for m in sb._members:
            os.kill(m.pid, signal.SIGCONT)
        assert results[0].kind == "crash" and results[0].error.startswith("worker lost")
        assert "no answer" in results[0].error
        assert 1.5 <= elapsed < 2 + 5  # limit + grace + transfer, once: no retry past the deadline


def _fields(run_dir):
    """Every event field but timings; tracebacks without the sandbox's per-run folder names."""
    drop = {"seconds", "time", "wall_s", "train"}
    events = []
    for line in (Path(run_dir) / "events.jsonl").read_text().splitlines():
        event = {k: v for k, v in json.loads(line).items() if k not in drop}
        if isinstance(event.get("reason"), str):
            event["reason"] = re.sub(r'File "[^"]*program\.py"', 'File "program.py"', event["reason"])
        events.append(event)
    return events


def test_same_events_and_resume_as_the_local_pool(ray_local, tmp_path):
    def run(out, *sets):
        return run_config(
            TOY / "config.yaml", [f"run.output={out}", "sandbox.isolation=none", *sets], reporter=Reporter()
        )

    local = run(tmp_path / "local", "run.steps=3")
    on_ray = run(tmp_path / "ray", "run.steps=3", "sandbox.executor=ray")
    assert _fields(on_ray.run_dir) == _fields(local.run_dir)
    assert on_ray.best_score == local.best_score
    best = lambda d: (Path(d) / "best" / "construction.json").read_text()  # noqa: E731
    assert best(on_ray.run_dir) == best(local.run_dir)

    # two steps on Ray, then resume to three on Ray: the same events as the uninterrupted local run
    part = run(tmp_path / "part", "run.steps=2", "sandbox.executor=ray")
    loaded = load_config(
        TOY / "config.yaml",
        [f"run.output={part.run_dir}", "sandbox.isolation=none", "run.steps=3", "sandbox.executor=ray"],
    )
    disc = Discovery(loaded, reporter=Reporter())
    assert disc.resume() and disc.step == 2
    disc.run()
    assert _fields(part.run_dir) == _fields(local.run_dir)
