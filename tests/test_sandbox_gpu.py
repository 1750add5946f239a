"""Sandbox options for GPU programs, tested without a GPU: one GPU per slot, a memory limit CUDA survives,
the NVIDIA device files bound into bubblewrap."""

from __future__ import annotations

import pytest

from discover_ttt.sandbox import Sandbox
from discover_ttt.sandbox.isolation import bwrap_command, isolation_available

ENV = "import os\ndef run():\n    return os.environ.get('CUDA_VISIBLE_DEVICES')\n"
# what CUDA does at start-up: reserve a large address range it mostly never touches
RESERVE = "import mmap\ndef run(mib):\n    m = mmap.mmap(-1, mib << 20)\n    m[0:1] = b'x'\n    return len(m) >> 20\n"
TOUCH = "def run(mib):\n    b = bytearray(mib << 20)\n    import time\n    time.sleep(1)\n    return len(b)\n"


def test_each_slot_sees_only_its_gpu():
    with Sandbox(timeout_s=10, gpus=[3, 5], isolation="none", preload=()) as sb:
        assert sb.workers == 2
        seen = {r.value for r in sb.map([{"source": ENV}] * 6)}
    assert seen <= {"3", "5"} and seen
    with Sandbox(timeout_s=10, workers=1, isolation="none", preload=()) as sb:
        assert sb.run(ENV).value is None  # no GPU option: nothing set


def test_more_workers_than_gpus_is_refused():
    with pytest.raises(ValueError, match="one GPU"):
        Sandbox(gpus=[0], workers=2, isolation="none")
    with pytest.raises(ValueError, match="memory_limit"):
        Sandbox(memory_limit="vms", isolation="none")


def test_rss_limit_allows_reservations_and_kills_real_use():
    with Sandbox(timeout_s=10, memory_mb=400, workers=1, isolation="none", preload=()) as sb:
        r = sb.run(RESERVE, args=(4096,))
        assert not r.ok and r.kind in ("memory", "exception"), r  # RLIMIT_AS refuses the reservation
    with Sandbox(timeout_s=10, memory_mb=400, workers=1, isolation="none", preload=(), memory_limit="rss") as sb:
        r = sb.run(RESERVE, args=(4096,))
        assert r.ok and r.value == 4096, r.error
        r = sb.run(TOUCH, args=(800,))
        assert not r.ok and r.kind == "memory" and "400 MiB" in r.error, r


def test_bwrap_binds_gpu_devices_only_when_asked():
    if not isolation_available():
        pytest.skip("bubblewrap is not usable here")
    plain = bwrap_command("/tmp/w", "/tmp/s")
    gpu = bwrap_command("/tmp/w", "/tmp/s", ["/dev/nvidiactl", "/dev/nvidia0"])
    assert "/dev/nvidiactl" not in plain and "/sys" not in plain
    i = gpu.index("/dev/nvidia0")
    assert gpu[i - 1] == "--dev-bind-try" and gpu.index("--dev") < i
    assert gpu[gpu.index("/sys") - 1] == "--ro-bind-try"


def test_ray_actor_slots_get_the_gpus_ray_assigned():
    from discover_ttt.sandbox.executors import slot_gpus

    assert slot_gpus([], 4) is None
    assert slot_gpus([2, 5], 2) == ["2", "5"]
    assert slot_gpus([3], 2) == ["3", "3"]  # half a GPU per program: two slots share it
