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
