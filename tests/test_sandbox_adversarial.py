"""Hostile programs: each must end as a clean failure of the right kind, leave no process behind
(a /proc scan), and leave the host and the sandbox working, all within its limit plus a slack that
a loaded 2-core machine can keep (the host's own deadline is the limit + 5 s).

Every program first renames itself (PR_SET_NAME) to a unique marker that its children inherit,
so a scan of /proc finds anything it left running. Each test runs with bubblewrap (skipped when
bwrap is unusable) and with the plain runner.
"""

from __future__ import annotations

import math
import os
import socket
import textwrap
import time
import uuid

import pytest

from discover_ttt.sandbox import Sandbox, isolation_available
from discover_ttt.sandbox._child import landlock_abi

LANDLOCK_ABI = landlock_abi()
LIMIT_S = 1.5
ISOLATIONS = [
    pytest.param("bwrap", marks=pytest.mark.skipif(not isolation_available(), reason="bubblewrap not usable here")),
    "none",
]


@pytest.fixture(scope="module", params=ISOLATIONS)
def sb(request):
    with Sandbox(timeout_s=LIMIT_S, memory_mb=1024, workers=2, isolation=request.param, preload=("numpy",)) as sandbox:
        sandbox.start()  # server start-up is not the programs' time
        yield sandbox


def _marked(marker: str) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/comm") as f:
                    if f.read().strip() == marker:
                        found.append(int(name))
            except OSError:
                pass
    return found


#: wall-clock slack over a program's limit: the kind and the process scan are the real checks; this
#: only catches a sandbox that waits for the host's deadline (limit + 5 s) or never ends
SLACK_S = 4.5


def hostile(sb: Sandbox, body: str, *, timeout_s: float = LIMIT_S, **kwargs):
    """Run ``body`` (a program defining run()) and check the invariants every hostile run must keep."""
    marker = "sbx" + uuid.uuid4().hex[:8]
    prologue = f"import ctypes as _ct\n_ct.CDLL(None).prctl(15, b'{marker}', 0, 0, 0)\n"
    start = time.monotonic()
    result = sb.run(prologue + textwrap.dedent(body), timeout_s=timeout_s, **kwargs)
    elapsed = time.monotonic() - start
    assert elapsed < timeout_s + SLACK_S, f"took {elapsed:.2f} s for a {timeout_s} s limit"
    assert _marked(marker) == [], "the program left processes behind"
    assert result.seconds <= timeout_s + SLACK_S
    if not result.ok:
        assert result.error, "a failure must say why"
    after = sb.run("def run():\n    return 41 + 1\n", timeout_s=10)
    assert after.ok and after.value == 42, f"the sandbox is broken after the hostile run: {after}"
    return result


def test_infinite_loop(sb):
    r = hostile(sb, "def run():\n    while True:\n        pass\n")
    assert r.kind == "timeout"


def test_long_sleep_keeps_its_output(sb):
    r = hostile(sb, "import time\ndef run():\n    print('started', flush=True)\n    time.sleep(1000)\n")
    assert r.kind == "timeout"
    assert "started" in r.stdout


def test_compiled_loop_ignoring_signals(sb):
    body = """
    import re, signal
    def run():
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGXCPU):
            signal.signal(s, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_BLOCK, range(1, 32))
        return bool(re.match("(a*)*b", "a" * 64))  # exponential backtracking in C, GIL held
    """
    assert hostile(sb, body).kind == "timeout"


def test_fork_bomb(sb):
    body = """
    import os
    def run():
        while True:
            try:
                os.fork()
            except OSError:
                pass
    """
    r = hostile(sb, body)
    # killed by the process-count watchdog, refused by RLIMIT_NPROC, or out of time: all clean
    assert r.kind in ("crash", "exception", "timeout")


def test_memory_bomb(sb):
    body = """
    def run():
        hoard = []
        while True:
            hoard.append(bytearray(10**7))
    """
    assert hostile(sb, body, memory_mb=480, timeout_s=3).kind == "memory"


def test_numpy_allocation_too_large(sb):
    r = hostile(sb, "import numpy as np\ndef run():\n    return np.ones(10**10).sum()\n")
    assert r.kind == "memory"
    assert "Unable to allocate" in r.error


def test_gigabytes_of_stdout(sb):
    body = """
    import sys
    def run():
        chunk = "x" * (1 << 20)
        for _ in range(4096):  # 4 GiB
            sys.stdout.write(chunk)
    """
    r = hostile(sb, body)
    assert r.kind == "bad_output"
    assert len(r.stdout) < 1 << 20


def test_deep_recursion(sb):
    r = hostile(sb, "def f(n):\n    return f(n + 1) + 1\ndef run():\n    return f(0)\n")
    assert r.kind == "exception"
    assert "RecursionError" in r.error


def test_sys_exit(sb):
    r = hostile(sb, "import sys\ndef run():\n    sys.exit(3)\n")
    assert r.kind == "exception"
    assert "sys.exit(3)" in r.error


def test_os_exit(sb):
    r = hostile(sb, "import os\ndef run():\n    os._exit(0)\n")
    assert r.kind == "crash"


def test_kill_parent(sb):
    r = hostile(sb, "import os, signal\ndef run():\n    os.kill(os.getppid(), signal.SIGKILL)\n    return 1\n")
    # refused (Landlock signal scoping) or the server died and was replaced: either way a clean failure
    assert r.kind in ("exception", "crash")


def test_grandchild_daemon_does_not_outlive_the_call(sb):
    body = """
    import os, time
    def run():
        pid = os.fork()
        if pid == 0:
            os.setsid()
            if os.fork() == 0:
                os.closerange(0, 64)
                time.sleep(1000)
            os._exit(0)
        os.waitpid(pid, 0)
        return "parent done"
    """
    r = hostile(sb, body)
    assert r.ok and r.value == "parent done"


FORGED = '{"status": "ok"}\n[666]'


def test_a_child_cannot_speak_for_the_program(sb):
    """A forked child forges a result on the inherited channel while the program breaks its own report."""
    body = f"""
    import os
    def run():
        pid = os.fork()
        if pid == 0:
            os.write(3, {FORGED!r}.encode())
            os._exit(0)
        os.waitpid(pid, 0)
        os.close(3)  # the program's own report cannot be written now
        return 1
    """
    r = hostile(sb, body)
    assert not r.ok and r.value is None and r.kind == "crash", r


def test_writing_to_every_inherited_descriptor(sb):
    """The program, a forked grandchild that left its session, and an exec'd process write a forged
    result to every descriptor they hold; only the program's own return value may come back."""
    body = """
    import os, subprocess, sys
    FORGE = "\\n".join([
        "import os",
        "for fd in range(1024):",
        "    try:",
        "        os.write(fd, FORGED)",
        "    except OSError:",
        "        pass",
    ]).replace("FORGED", repr(FORGED.encode()))
    def run():
        pid = os.fork()
        if pid == 0:
            os.setsid()
            if os.fork() == 0:
                exec(FORGE)
            os._exit(0)
        os.waitpid(pid, 0)
        subprocess.run([sys.executable, "-c", FORGE], close_fds=False, timeout=10)
        return 7
    """.replace("FORGED = None", "")
    body = f"FORGED = {FORGED!r}\n" + textwrap.dedent(body)
    r = hostile(sb, body)
    assert not (r.ok and r.value == [666]), r
    assert (r.ok and r.value == 7) or r.kind == "crash", r


def test_a_broken_result_channel_is_a_crash(sb):
    for breaker in ("os.close(3)", "os.set_blocking(3, False); os.dup2(os.open('/dev/null', os.O_WRONLY), 3)"):
        r = hostile(sb, f"import os\ndef run():\n    {breaker}\n    return 1\n")
        assert not r.ok and r.kind == "crash", (breaker, r)


def test_a_stopped_program_fails_within_its_limit(sb):
    """Stopped by itself, or by a child it started: the slot is freed long before the limit."""
    for stopper in ("os.kill(os.getpid(), signal.SIGSTOP)", "os.fork() or time.sleep(9)"):
        body = f"""
        import os, signal, time
        def run():
            if {stopper!r}.startswith("os.fork"):
                if os.fork() == 0:
                    os.kill(os.getppid(), signal.SIGSTOP)
                    os._exit(0)
                time.sleep(9)
            else:
                {stopper}
            return 1
        """
        r = hostile(sb, body, timeout_s=8)
        assert not r.ok and r.kind == "crash" and "stopped" in r.error, r
        assert r.seconds < 4, f"held its slot {r.seconds:.1f} s of its 8 s"


def test_segfault_through_ctypes(sb):
    r = hostile(sb, "import ctypes\ndef run():\n    return ctypes.string_at(0)\n")
    assert r.kind == "crash"
    assert "SIGSEGV" in r.error


def test_kill_itself(sb):
    r = hostile(sb, "import os, signal\ndef run():\n    os.kill(os.getpid(), signal.SIGKILL)\n")
    assert r.kind == "crash"


def _needs(sb, abi: int, what: str) -> None:
    if sb.isolation == "none" and LANDLOCK_ABI < abi:
        pytest.skip(f"the plain runner cannot block {what} without Landlock ABI >= {abi}")


def test_writing_outside_its_folder(sb, tmp_path):
    _needs(sb, 1, "writes")
    target = tmp_path / "escaped.txt"
    body = f"""
    def run():
        with open({str(target)!r}, "w") as f:
            f.write("escaped")
        return "wrote"
    """
    r = hostile(sb, body)
    assert r.kind == "exception"
    assert not target.exists()


def test_writing_inside_its_folder_is_allowed(sb):
    body = """
    import os, tempfile
    def run():
        with open("scratch.txt", "w") as f:
            f.write("ok")
        with tempfile.NamedTemporaryFile() as t:
            t.write(b"ok")
        return open("scratch.txt").read()
    """
    assert hostile(sb, body).value == "ok"


def test_host_secret_is_not_readable(monkeypatch):
    secret = "sk-test-" + uuid.uuid4().hex
    monkeypatch.setenv("DISCOVER_TEST_API_KEY", secret)
    for isolation in ("bwrap", "none") if isolation_available() else ("none",):
        with Sandbox(timeout_s=LIMIT_S, workers=1, isolation=isolation, preload=()) as fresh:
            fresh.start()
            r = hostile(fresh, "import os\ndef run():\n    return os.environ['DISCOVER_TEST_API_KEY']\n")
            assert r.kind == "exception" and "KeyError" in r.error
            if isolation == "none" and LANDLOCK_ABI < 1:
                continue  # without Landlock a same-user process can read /proc/<host>/environ
            body = f"""
            import os
            def run():
                hits = []
                for pid in os.listdir("/proc"):
                    try:
                        if {secret!r}.encode() in open(f"/proc/{{pid}}/environ", "rb").read():
                            hits.append(pid)
                    except OSError:
                        pass
                return hits
            """
            r = hostile(fresh, body)
            assert r.ok and r.value == []
            assert secret not in r.stdout + r.stderr


def test_network_socket(sb):
    _needs(sb, 4, "TCP")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        port = listener.getsockname()[1]
        body = f"""
        import socket
        def run():
            socket.create_connection(("127.0.0.1", {port}), timeout=1).sendall(b"hello")
            return "connected"
        """
        r = hostile(sb, body)
        assert r.kind == "exception"
        with pytest.raises(BlockingIOError):
            listener.accept()


def test_nan_and_inf_come_back_as_floats(sb):
    r = hostile(sb, "import numpy as np\ndef run():\n    return [float('nan'), np.inf, -np.inf, np.float32('nan')]\n")
    assert r.ok
    assert math.isnan(r.value[0]) and r.value[1] == math.inf and r.value[2] == -math.inf and math.isnan(r.value[3])


@pytest.mark.parametrize("expr", ["object()", "{1, 2}", "1j", "lambda: 0", "{1: 2}", "b'bytes'"])
def test_non_json_value(sb, expr):
    r = hostile(sb, f"def run():\n    return [1, {expr}]\n")
    assert r.kind == "bad_output"


@pytest.mark.parametrize("expr", ["[0] * 10**8", "np.zeros(10**8, dtype=np.int8)", "'x' * (100 * 2**20)"])
def test_huge_value(sb, expr):
    r = hostile(sb, f"import numpy as np\ndef run():\n    return {expr}\n", memory_mb=1536, timeout_s=4)
    assert r.kind == "bad_output"
    assert "larger than" in r.error
