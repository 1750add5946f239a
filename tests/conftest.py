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
