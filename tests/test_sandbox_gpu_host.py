"""What GPU programs need from the host, without a GPU: the folder holding the CUDA driver library
reaches programs through the scrubbed environment (and into bubblewrap), and a host that lacks
the driver, a C compiler or Python.h for Triton is told so when the sandbox starts."""

from __future__ import annotations

import logging

import pytest

from discover_ttt.sandbox import Sandbox, gpu, isolation

LIBPATH = "import os\ndef run():\n    return os.environ.get('LD_LIBRARY_PATH')\n"


@pytest.fixture
def driver_dirs(tmp_path, monkeypatch):
    """A host LD_LIBRARY_PATH of three folders, the second holding the driver library."""
    other, driver, missing = tmp_path / "other", tmp_path / "driver", tmp_path / "missing"
    other.mkdir(), driver.mkdir()
    (other / "libfoo.so").write_bytes(b"")
    (driver / "libcuda.so.1").write_bytes(b"")
    monkeypatch.setenv("LD_LIBRARY_PATH", f"{other}:{driver}:{missing}:relative/dir:{driver}")
    return str(driver)


def test_only_the_folders_holding_libcuda_are_kept(driver_dirs):
    assert gpu.cuda_library_dirs() == [driver_dirs]
    assert gpu.cuda_library_dirs("") == []


def test_gpu_programs_find_the_driver_folder_and_others_see_no_library_path(driver_dirs, caplog):
    with caplog.at_level(logging.WARNING), Sandbox(timeout_s=10, gpus=[0], isolation="none", preload=()) as sb:
        r = sb.run(LIBPATH)
    assert r.ok and r.value == driver_dirs, r.error
    with Sandbox(timeout_s=10, workers=1, isolation="none", preload=()) as sb:
        assert sb.run(LIBPATH).value is None  # no GPU: nothing of the host's library path


def test_bwrap_binds_the_driver_folders_read_only(monkeypatch):
    monkeypatch.setattr(isolation, "_probe", lambda: ("/usr/bin/bwrap", ("--unshare-all",)))
    cmd = isolation.bwrap_command("/tmp/w", "/tmp/s", ["/dev/nvidia0"], library_dirs=["/opt/nvidia/lib64"])
    i = cmd.index("/opt/nvidia/lib64")
    assert cmd[i - 1] == "--ro-bind-try" and cmd[i + 1] == "/opt/nvidia/lib64"
    assert cmd.index("/tmp") < i  # bound after /tmp, so a folder under /tmp is not hidden by the work folder
    assert "/opt/nvidia/lib64" not in isolation.bwrap_command("/tmp/w", "/tmp/s")


def test_a_host_without_the_driver_or_triton_build_tools_is_told_at_start_up(monkeypatch, caplog):
    monkeypatch.setenv("LD_LIBRARY_PATH", "")
    monkeypatch.setattr(gpu, "libcuda_on_system_path", lambda: False)
    monkeypatch.setattr(gpu, "c_compiler", lambda: None)
    monkeypatch.setattr(gpu, "python_header", lambda: "/nonexistent/include/Python.h")
    problems = gpu.host_problems(("torch", "triton"))
    assert len(problems) == 3
    assert "libcuda.so.1" in problems[0] and "LD_LIBRARY_PATH" in problems[0]
    assert "apt-get install -y gcc" in problems[1] and "python3-dev" in problems[2]
    with caplog.at_level(logging.WARNING, logger="discover_ttt.sandbox.runner"):
        Sandbox(timeout_s=10, gpus=[0], isolation="none", preload=("triton",)).close()
    assert sum("libcuda.so.1" in r.getMessage() for r in caplog.records) == 1
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="discover_ttt.sandbox.runner"):
        Sandbox(timeout_s=10, workers=1, isolation="none", preload=("triton",)).close()
    assert not caplog.records  # CPU programs need none of it


def test_a_host_with_everything_has_no_problems(monkeypatch, tmp_path):
    header = tmp_path / "Python.h"
    header.write_text("")
    monkeypatch.setattr(gpu, "libcuda_on_system_path", lambda: True)
    monkeypatch.setattr(gpu, "c_compiler", lambda: "/usr/bin/gcc")
    monkeypatch.setattr(gpu, "python_header", lambda: str(header))
    assert gpu.host_problems(("triton",)) == []


def test_a_missing_uvm_device_and_exclusive_compute_mode_are_reported(monkeypatch, tmp_path):
    monkeypatch.setattr(gpu, "libcuda_on_system_path", lambda: True)
    (tmp_path / "nvidiactl").write_text("")
    (tmp_path / "nvidia0").write_text("")
    monkeypatch.setattr(gpu, "exclusive_gpus", lambda: ["1"])
    problems = gpu.host_problems((), dev=str(tmp_path))
    assert len(problems) == 2
    assert "nvidia-uvm does not exist" in problems[0] and "nvidia-modprobe -u" in problems[0]
    assert "GPU(s) 1 are in an exclusive compute mode" in problems[1] and "nvidia-smi -c DEFAULT" in problems[1]
    (tmp_path / "nvidia-uvm").write_text("")
    monkeypatch.setattr(gpu, "exclusive_gpus", lambda: [])
    assert gpu.host_problems((), dev=str(tmp_path)) == []


def test_exclusive_gpus_reads_nvidia_smi(monkeypatch):
    from types import SimpleNamespace

    monkeypatch.setattr(gpu.shutil, "which", lambda name, **kw: "/usr/bin/nvidia-smi")
    out = "0, Default\n1, Exclusive_Process\n"
    monkeypatch.setattr(gpu.subprocess, "run", lambda *a, **k: SimpleNamespace(stdout=out))
    assert gpu.exclusive_gpus() == ["1"]
