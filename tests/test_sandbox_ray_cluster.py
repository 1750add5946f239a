"""A node of a two-node Ray cluster dies in the middle of a step: its programs are retried on the
other node and the run ends with the same events as on the local pool.

The cluster (``ray.cluster_utils.Cluster``) runs both nodes on this machine, one CPU each;
health checks are fast so that the dead node is noticed within seconds.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from conftest import start_local_ray
from test_sandbox_ray_executor import TOY, _fields

from discover_ttt.config import load_config
from discover_ttt.loop import Discovery, run_config
from discover_ttt.progress import Reporter

pytestmark = pytest.mark.slow  # two Ray nodes take about a minute to start and stop here
SMALL = {"num_cpus": 1, "object_store_memory": 80 * 2**20}


@pytest.fixture
def cluster():
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    shared = ray.is_initialized()  # the session's local Ray (tests/conftest.py) makes way, then comes back
    if shared:
        ray.shutdown()
    head_args = {**SMALL, "include_dashboard": False}
    head_args["_system_config"] = {"health_check_period_ms": 500, "health_check_failure_threshold": 3}
    cluster = Cluster(initialize_head=True, head_node_args=head_args)
    worker = cluster.add_node(**SMALL)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    yield ray, cluster, worker
    ray.shutdown()
    cluster.shutdown()
    if shared:
        start_local_ray(ray)


def _replies(path: Path) -> None:
    body = "import time\n\ndef run():\n    time.sleep(1.0)\n    return [p + 0.5 * (0.3 - p) for p in parent]\n"
    texts = [f"```python\n{body}```", "no code", f"```python\n{body.replace('0.5 *', '0.8 *')}```"]
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))


def test_node_killed_mid_step(cluster, tmp_path, caplog):
    ray, cluster, worker = cluster
    replies = tmp_path / "replies.jsonl"
    _replies(replies)
    sets = [f"backend.path={replies}", "sandbox.isolation=none", "run.steps=3", "sandbox.timeout_s=20"]
    local = run_config(TOY / "config.yaml", [f"run.output={tmp_path / 'local'}", *sets], reporter=Reporter())

    loaded = load_config(TOY / "config.yaml", [f"run.output={tmp_path / 'ray'}", *sets, "sandbox.executor=ray"])
    disc = Discovery(loaded, reporter=Reporter())
    disc.start()
    assert len({m.node_id for m in disc.sandbox._members}) == 2  # one actor on each node
    killed = threading.Event()

    def kill_the_worker_node_mid_step() -> None:
        events = Path(disc.store.root) / "events.jsonl"
        while not (events.exists() and any(json.loads(x)["type"] == "step" for x in events.read_text().splitlines())):
            time.sleep(0.05)  # step 0 is done: the kill lands in step 1
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with disc.sandbox._cond:
                if all(m.free == 0 for m in disc.sandbox._members if m.alive):
                    break
            time.sleep(0.02)
        cluster.remove_node(worker, allow_graceful=False)
        killed.set()

    killer = threading.Thread(target=kill_the_worker_node_mid_step, daemon=True)
    killer.start()
    started = time.monotonic()
    summary = disc.run()
    assert killed.is_set(), "the node was not killed during the run"
    assert "lost the sandbox actor" in caplog.text  # its programs really were running and were retried
    assert time.monotonic() - started < 120
    assert _fields(summary.run_dir) == _fields(local.run_dir)  # the lost programs were retried and succeeded
    assert not any(e.get("outcome") == "crash" for e in _fields(summary.run_dir))
