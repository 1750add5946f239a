"""The sandbox's contract: values, failure kinds, limits, the pool and the one-off entry point."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import pytest

from discover_ttt.problem import FAILURE_KINDS
from discover_ttt.sandbox import KINDS, Sandbox, SandboxError, isolation_available, run_program
from discover_ttt.sandbox import runner as runner_module

SLEEPER = "import time\ndef run(s):\n    time.sleep(s)\n    return s\n"


@pytest.fixture(scope="module")
def sb():
    with Sandbox(timeout_s=5, memory_mb=1024, workers=2, preload=("numpy",)) as sandbox:
        sandbox.start()
        yield sandbox


def test_kinds_are_failure_kinds():
    assert set(KINDS) <= set(FAILURE_KINDS)


def test_args_kwargs_inject_and_numpy_conversion(sb):
    source = """
import numpy as np
def run(n, scale=1.0):
    h = np.asarray(initial_h_values)
    return {"arr": np.arange(n) * scale, "sum": h.sum(), "n": np.int64(n), "flag": np.bool_(True),
            "pair": (1, "a"), "grid": np.eye(2, dtype=np.float32)}
"""
    r = sb.run(source, args=(3,), kwargs={"scale": 0.5}, inject={"initial_h_values": [0.25, 0.75]})
    assert r.ok, r.error
    assert r.kind is None and r.error is None
    assert r.value == {
        "arr": [0.0, 0.5, 1.0],
        "sum": 1.0,
        "n": 3,
        "flag": True,
        "pair": [1, "a"],
        "grid": [[1, 0], [0, 1]],
    }
    assert type(r.value["sum"]) is float and type(r.value["n"]) is int
    assert 0 < r.seconds < 5


def test_stdout_and_stderr_tails(sb):
    source = "import sys\ndef run():\n    print('to out')\n    print('to err', file=sys.stderr)\n    return None\n"
    r = sb.run(source)
    assert r.ok and r.value is None
    assert r.stdout == "to out\n" and r.stderr == "to err\n"


def test_long_output_keeps_only_the_tail():
    with Sandbox(timeout_s=5, workers=1, tail_kb=1, isolation="none", preload=()) as small:
        r = small.run("def run():\n    for i in range(10000):\n        print(i)\n    return 1\n")
    assert r.ok
    assert r.stdout.endswith("9999\n") and "earlier bytes dropped" in r.stdout
    assert len(r.stdout) < 1200


def test_exception_reports_the_program_traceback(sb):
    r = sb.run("def helper():\n    raise ValueError('bad shape')\n\ndef run():\n    return helper()\n")
    assert not r.ok and r.kind == "exception"
    assert "ValueError: bad shape" in r.error
    assert "program.py" in r.error and "line 2" in r.error
    assert "_child.py" not in r.error  # the wrapper's frames are not the program's problem


@pytest.mark.parametrize(
    "source, needle",
    [
        ("def run(:\n    pass\n", "SyntaxError"),
        ("def main():\n    return 1\n", "no function run()"),
        ("import not_a_real_module_xyz\ndef run():\n    return 1\n", "ModuleNotFoundError"),
    ],
)
def test_broken_programs_are_exceptions(sb, source, needle):
    r = sb.run(source)
    assert r.kind == "exception" and needle in r.error


def test_other_entry_name(sb):
    r = sb.run("def construct(x):\n    return x * 2\n", "construct", args=(21,))
    assert r.ok and r.value == 42


def test_timeout_and_memory_limits(sb):
    t0 = time.monotonic()
    r = sb.run("def run():\n    while True:\n        pass\n", timeout_s=0.5)
    assert r.kind == "timeout" and r.seconds < 0.5 + 2.0  # the server's own clock, not the host's
    assert time.monotonic() - t0 < 0.5 + 4.5  # below the host's deadline (limit + 5 s) even when loaded
    r = sb.run("import numpy as np\ndef run():\n    return np.ones((20000, 20000)).sum()\n", memory_mb=600)
    assert r.kind == "memory"


def test_environment_is_minimal_and_threads_capped(sb):
    r = sb.run("import os\ndef run():\n    return dict(os.environ)\n")
    env = r.value
    assert env["OMP_NUM_THREADS"] == env["OPENBLAS_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "1"
    assert env["HOME"] == env["TMPDIR"]
    assert not {"VIRTUAL_ENV", "PYTHONPATH", "USER", "SSH_AUTH_SOCK"} & set(env)


def test_each_program_gets_a_fresh_process_and_folder(sb):
    source = "import os\nSEEN = globals().setdefault('SEEN', [])\ndef run():\n    open('f', 'w').close()\n    return [os.getpid(), os.getcwd(), sorted(os.listdir('.'))]\n"
    a, b = sb.run(source), sb.run(source)
    assert a.value[0] != b.value[0] and a.value[1] != b.value[1]
    assert a.value[2] == b.value[2] == ["f", "program.py"]


def test_results_too_large_for_the_configured_caps():
    with Sandbox(timeout_s=5, workers=1, max_result_items=100, isolation="none", preload=()) as small:
        assert small.run("def run():\n    return list(range(99))\n").ok
        r = small.run("def run():\n    return list(range(1000))\n")
        assert r.kind == "bad_output" and "larger than 100 numbers" in r.error


def test_map_keeps_order_and_runs_in_parallel(sb):
    jobs = [{"source": SLEEPER, "args": (0.4,)} for _ in range(6)]
    t0 = time.monotonic()
    pooled = sb.map(jobs)
    pooled_s = time.monotonic() - t0
    assert [r.value for r in pooled] == [0.4] * 6
    t0 = time.monotonic()
    for job in jobs:
        sb.run(**job)
    serial_s = time.monotonic() - t0
    assert pooled_s < 0.75 * serial_s, (pooled_s, serial_s)
    values = [r.value for r in sb.map([{"source": "def run(i):\n    return i\n", "args": (i,)} for i in range(7)])]
    assert values == list(range(7))


@pytest.mark.slow
def test_twenty_one_second_programs_on_two_workers():
    with Sandbox(timeout_s=5, workers=2) as pool:
        pool.start()
        jobs = [{"source": SLEEPER, "args": (1.0,)} for _ in range(20)]
        t0 = time.monotonic()
        assert all(r.ok for r in pool.map(jobs))
        pooled_s = time.monotonic() - t0
        t0 = time.monotonic()
        assert all(pool.run(**job).ok for job in jobs)
        serial_s = time.monotonic() - t0
    assert pooled_s < 0.75 * serial_s, (pooled_s, serial_s)


def test_run_is_thread_safe(sb):
    results = [None] * 8

    def call(i):
        results[i] = sb.run("def run(i):\n    return i * i\n", args=(i,))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.value for r in results] == [i * i for i in range(8)]


def test_run_program_one_off():
    r = run_program("def run(a, b=0):\n    return a + b\n", args=(1,), kwargs={"b": 2}, timeout_s=10, memory_mb=1024)
    assert r.ok and r.value == 3


def test_without_fork_server():
    with Sandbox(timeout_s=10, workers=1, fork_server=False, isolation="none") as spawn:
        r = spawn.run("import numpy as np\ndef run():\n    return int(np.sum([1, 2]))\n")
        assert r.ok and r.value == 3
        assert spawn.run("def run():\n    return 4\n").value == 4


def test_bad_requests_are_caller_errors(sb):
    with pytest.raises(ValueError, match="identifier"):
        sb.run("def run():\n    pass\n", inject={"not valid": 1})
    with pytest.raises(ValueError, match="JSON"):
        sb.run("def run(x):\n    pass\n", args=(object(),))
    with pytest.raises(ValueError, match="isolation"):
        Sandbox(isolation="docker")


def test_the_server_folder_bound_into_the_sandbox_holds_files_not_links():
    # with an editable install discover_ttt/sandbox is a folder of links to discover_core/sandbox;
    # bwrap binds the server's folder alone, so it must be the real one
    here = Path(runner_module._HERE)
    assert here == Path(runner_module.__file__).resolve().parent
    assert (here / "_server.py").is_file() and not any(p.is_symlink() for p in here.iterdir())


def test_isolation_choices(monkeypatch, caplog):
    monkeypatch.setattr(runner_module, "isolation_available", lambda: False)
    monkeypatch.setattr(runner_module, "_warned_plain", False)
    with pytest.raises(SandboxError, match="apt-get install -y bubblewrap"):
        Sandbox(isolation="bwrap")
    with caplog.at_level(logging.WARNING, logger="discover_ttt.sandbox.runner"):
        assert Sandbox(isolation="auto", workers=1).isolation == "none"
        assert Sandbox(isolation="auto", workers=1).isolation == "none"
    assert sum("bubblewrap" in rec.getMessage() for rec in caplog.records) == 1


def test_closed_sandbox_refuses_work():
    sandbox = Sandbox(workers=1, isolation="none")
    sandbox.close()
    with pytest.raises(SandboxError, match="closed"):
        sandbox.run("def run():\n    return 1\n")


@pytest.mark.skipif(not isolation_available(), reason="bubblewrap not usable here")
def test_bwrap_view_is_read_only_and_hides_the_project():
    # the project's own checkout, wherever this test runs from, and a file in the user's home
    project_file = Path(__file__).resolve().parents[1] / "pyproject.toml"
    home_secret = Path.home() / f".discover-probe-{os.getpid()}"
    home_secret.write_text("secret")
    assert project_file.exists()  # so that "not visible inside" below means hidden, not absent
    source = f"""
import os
def run():
    try:
        open("/usr/evil", "w")
        wrote = True
    except OSError:
        wrote = False
    return [wrote, os.path.exists({str(project_file)!r}), os.path.exists({str(home_secret)!r}), os.getpid()]
"""
    try:
        with Sandbox(timeout_s=10, workers=1, isolation="bwrap", preload=()) as boxed:
            r = boxed.run(source)
    finally:
        home_secret.unlink()
    assert r.ok, r.error
    wrote, sees_project, sees_ssh, pid = r.value
    assert not wrote and not sees_project and not sees_ssh
    assert pid < 100  # its own pid namespace


def test_closing_the_sandbox_under_a_running_program_ends_it_as_a_crash():
    """Ctrl-C closes the sandbox while a program runs: the program's result is a clean failure that
    says so, never an exception from the slot's pipes closing under it."""
    sandbox = Sandbox(timeout_s=30, workers=1, isolation="none", preload=())
    sandbox.start()
    results: list = []
    thread = threading.Thread(
        target=lambda: results.append(sandbox.run("import time\ndef run():\n    time.sleep(20)\n")), daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 10
    while not sandbox._idle.empty() and time.monotonic() < deadline:  # the program has its slot
        time.sleep(0.01)
    sandbox.close()
    thread.join(timeout=10)
    assert not thread.is_alive()
    (result,) = results
    assert not result.ok and result.kind == "crash" and "shut down" in result.error
