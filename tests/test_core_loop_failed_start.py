"""A run that fails before its first step leaves no folder behind."""

from pathlib import Path

import pytest

from discover_ttt.errors import UserError
from discover_ttt.loop import run_config
from discover_ttt.progress import Reporter
from discover_ttt.state import State

CONFIG = Path(__file__).parent / "toy" / "config.yaml"


def start(tmp_path, *sets):
    return run_config(
        CONFIG, [f"run.output={tmp_path / 'runs' / 'toy'}", "sandbox.isolation=none", *sets], reporter=Reporter()
    )


def test_a_missing_replies_file_leaves_nothing(tmp_path):
    with pytest.raises(UserError):
        start(tmp_path, f"backend.path={tmp_path / 'missing.jsonl'}")
    assert list((tmp_path / "runs").iterdir()) == []


def test_a_crashing_initial_states_leaves_nothing_and_the_next_run_takes_the_name(tmp_path, monkeypatch):
    import toy_problem

    def initial_states(self, rng, k):
        raise RuntimeError("no seeds today")

    with monkeypatch.context() as m:
        m.setattr(toy_problem.ToyProblem, "initial_states", initial_states)
        with pytest.raises(UserError, match="no seeds today"):
            start(tmp_path, "run.steps=1")
    assert list((tmp_path / "runs").iterdir()) == []
    summary = start(tmp_path, "run.steps=1", "run.groups=1")
    assert summary.run_dir == tmp_path / "runs" / "toy"  # not toy-1


def test_a_missing_sdk_leaves_nothing(tmp_path):
    try:
        import tinker  # noqa: F401

        pytest.skip("the Tinker SDK is installed here")
    except ImportError:
        pass
    with pytest.raises(UserError, match="Tinker SDK"):
        start(tmp_path, "backend={name: tinker}")
    assert list((tmp_path / "runs").iterdir()) == []


def test_an_empty_folder_the_user_made_stays(tmp_path, monkeypatch):
    import toy_problem

    (tmp_path / "runs" / "toy").mkdir(parents=True)
    monkeypatch.setattr(toy_problem.ToyProblem, "initial_states", lambda self, rng, k: [State()] * 0)
    with pytest.raises(UserError):
        start(tmp_path, "run.steps=1")
    assert list((tmp_path / "runs").iterdir()) == [tmp_path / "runs" / "toy"]
    assert list((tmp_path / "runs" / "toy").iterdir()) == []


def test_a_failed_start_under_resume_leaves_nothing_either(tmp_path):
    """``discover run --resume`` on a folder with no run starts one there; if that start fails, the
    folder it made goes too."""
    with pytest.raises(UserError):
        run_config(
            CONFIG,
            [
                f"run.output={tmp_path / 'runs' / 'toy'}",
                "sandbox.isolation=none",
                f"backend.path={tmp_path / 'no.jsonl'}",
            ],
            resume=True,
            reporter=Reporter(),
        )
    assert not (tmp_path / "runs" / "toy").exists()
