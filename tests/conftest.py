import os
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
TOY = TESTS / "toy"
ROOT = TESTS.parent
sys.path.insert(0, str(TOY))


@pytest.fixture
def toy_env(tmp_path):
    """Environment for a ``discover`` subprocess that can import the toy problem."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TOY), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


@pytest.fixture
def discover_bin():
    return str(Path(sys.executable).parent / "discover")


@pytest.fixture(scope="session")
def erdos_run(tmp_path_factory):
    """A finished two-step Erdős replay run (the realistic programs of tests/data/programs/erdos)."""
    from test_problems_erdos_run import erdos_config

    from discover_ttt.loop import Discovery
    from discover_ttt.progress import Reporter

    disc = Discovery(erdos_config(tmp_path_factory.mktemp("erdos"), "run.steps=2"), reporter=Reporter())
    disc.start()
    return disc.run().run_dir
