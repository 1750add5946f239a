"""What one program leaves behind is gone before the next one runs: its folder, /dev/shm, /tmp."""

import os
import socket
import uuid

import pytest

from discover_ttt.sandbox import Sandbox, isolation_available

ISOLATIONS = ["none", pytest.param("bwrap", marks=pytest.mark.skipif(not isolation_available(), reason="no bwrap"))]

WRITE = """
import os, tempfile

def run(tag):
    paths = []
    for folder in ("/dev/shm", "/tmp", tempfile.gettempdir(), os.getcwd()):
        path = os.path.join(folder, tag)
        try:
            with open(path, "w") as f:
                f.write("left behind")
            paths.append(path)
        except OSError:
            pass
    return paths
"""

LOOK = """
import os

def run(paths):
    return [p for p in paths if os.path.exists(p)]
"""


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_the_next_program_finds_nothing(isolation):
    tag = f"residue-{uuid.uuid4().hex}"
    with Sandbox(timeout_s=20, memory_mb=512, workers=1, isolation=isolation, preload=()) as sb:
        wrote = sb.run(WRITE, args=(tag,))
        assert wrote.ok, wrote.error
        assert "/dev/shm/" + tag in wrote.value and len(wrote.value) >= 2  # its folder at least, and shm
        found = sb.run(LOOK, args=(wrote.value,))
        assert found.ok and found.value == [], found.value
    assert not os.path.exists("/dev/shm/" + tag)  # nothing reached (or stayed in) the host's /dev/shm


@pytest.mark.skipif(not isolation_available(), reason="no bwrap")
def test_shared_memory_is_capped_with_the_memory_limit():
    fill = """
def run():
    chunk = b"x" * 2**20
    with open("/dev/shm/fill", "wb") as f:
        for _ in range(400):
            f.write(chunk)
    return "wrote 400 MiB"
"""
    with Sandbox(timeout_s=30, memory_mb=160, workers=1, isolation="bwrap", preload=()) as sb:
        r = sb.run(fill)
    assert not r.ok and r.kind == "exception" and "No space left" in r.error


REACH = """
import socket

def run(path):
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(path)
        return "connected"
    except OSError as e:
        return type(e).__name__
"""


@pytest.mark.skipif(not isolation_available(), reason="no bwrap")
def test_host_unix_sockets_are_out_of_reach_under_bwrap(tmp_path):
    path = str(tmp_path / "host.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen()
    try:
        with Sandbox(timeout_s=20, memory_mb=512, workers=1, isolation="bwrap", preload=()) as sb:
            r = sb.run(REACH, args=(path,))
        assert r.ok and r.value != "connected", r.value
    finally:
        server.close()
