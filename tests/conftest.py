import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

# the fast tier's time budget on CI (tests/tiers.py); pytest finds these hooks here
from tiers import pytest_sessionfinish, pytest_sessionstart, pytest_terminal_summary  # noqa: F401

TESTS = Path(__file__).parent
TOY = TESTS / "toy"
ROOT = TESTS.parent
sys.path.insert(0, str(TOY))

# One OpenMP/BLAS thread for torch and numpy in the tests (set before either is imported; an explicit
# value wins). The tiny models are fastest on one thread, and two threads spin-wait for each other
# when the machine is busy: the local backend's tests took 33 s with two threads, 7 s with one, at a
# load of 4 on 2 cores. Sandboxed programs get their own value from sandbox.cpus.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture
def toy_env(tmp_path):
    """Environment for a ``discover`` subprocess that can import the toy problem."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TOY), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


@pytest.fixture
def discover_bin():
    return str(Path(sys.executable).parent / "discover")


class _ToStderr(logging.Handler):
    """What an unconfigured process prints for a warning (logging's last resort): the message, on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        sys.stderr.write(self.format(record) + "\n")


@pytest.fixture
def discover_cli(monkeypatch):
    """``discover ARGS`` run in this process, as its console script runs it.

    The plugin manager is loaded afresh for each call; ``site`` folders go on ``sys.path`` as
    PYTHONPATH would put them; ``env`` sets (or, with None, unsets) variables for the call. Returns a
    ``subprocess.CompletedProcess`` with the exit code and the text on stdout and stderr. Keep real
    subprocesses for what only a process shows: signals, ``python -m``, the installed entry point.
    """
    from click.testing import CliRunner

    from discover_ttt import cli
    from discover_ttt.plugins import reset_plugins

    def run(*args: str, env=None, site=None, cwd=None) -> subprocess.CompletedProcess:
        args = [str(a) for a in args]
        root = logging.getLogger()
        handlers, level = root.handlers[:], root.level
        warnings = _ToStderr(logging.WARNING)
        with monkeypatch.context() as m:
            m.setattr(sys, "argv", ["discover", *args])
            for folder in [site] if isinstance(site, (str, Path)) else site or ():
                m.syspath_prepend(str(folder))
            if cwd is not None:
                m.chdir(cwd)
            reset_plugins()
            with CliRunner().isolation(env=env) as (out, err, _):
                root.addHandler(warnings)
                try:
                    cli.main()
                    code = 0
                except SystemExit as e:
                    code = e.code if isinstance(e.code, int) else int(e.code is not None)
                finally:
                    root.handlers[:], root.level = handlers, level  # also undoes a basicConfig
                    sys.stdout.flush()  # the runner's text wrappers buffer what they are given
                    sys.stderr.flush()
            reset_plugins()
        return subprocess.CompletedProcess(["discover", *args], code, out.getvalue().decode(), err.getvalue().decode())

    return run


# -- one local Ray for the session ------------------------------------------------------------
RAY_SECRET_VAR = "DISCOVER_TEST_RAY_SECRET"
RAY_SECRET = "sk-ray-" + uuid.uuid4().hex  # in the raylet's environment: programs must not read it


def start_local_ray(ray) -> None:
    """2 CPUs, one logical GPU (Ray accounts for it, no hardware needed), no dashboard, a small object
    store; the raylet and its workers inherit RAY_SECRET_VAR, and its jobs import the toy problem."""
    os.environ[RAY_SECRET_VAR] = RAY_SECRET
    try:
        ray.init(
            address="local",
            num_cpus=2,
            num_gpus=1,
            include_dashboard=False,
            object_store_memory=80 * 2**20,
            log_to_driver=False,
            runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([str(TOY), os.environ.get("PYTHONPATH", "")])}},
        )
    finally:
        del os.environ[RAY_SECRET_VAR]


@pytest.hookimpl(tryfirst=True)  # before -m deselects: a test that uses Ray is in the ray tier
def pytest_collection_modifyitems(config, items):
    for item in items:
        if "ray_local" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.ray)


@pytest.fixture(scope="session")
def ray_local():
    """The one local Ray instance of the session, started by its first user (tests marked ``ray``).

    A test that needs a Ray of its own (the two-node cluster) shuts it down and starts it again after.
    """
    ray = pytest.importorskip("ray", reason="the ray extra is not installed")
    if not ray.is_initialized():
        start_local_ray(ray)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def erdos_run(tmp_path_factory):
    """A finished two-step Erdős replay run (the realistic programs of tests/data/programs/erdos)."""
    from test_problems_erdos_run import erdos_config

    from discover_ttt.loop import Discovery
    from discover_ttt.progress import Reporter

    disc = Discovery(erdos_config(tmp_path_factory.mktemp("erdos"), "run.steps=2"), reporter=Reporter())
    disc.start()
    return disc.run().run_dir
