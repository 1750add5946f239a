"""Command-line messages a new user meets: each names the right command and the real reason."""

import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from discover_ttt.cli import cli
from discover_ttt.config import ConfigError
from discover_ttt.problem_args import build_problem

TOY = Path(__file__).parent / "toy"


def fake_run(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("problem: {name: toy_problem:ToyProblem}\n")
    (run / "construction.json").write_text("[0.3, 0.3, 0.3]\n")
    return run


@pytest.mark.parametrize("command", ["verify", "plot"])
def test_the_wrong_problem_for_a_run_names_the_command_that_was_used(tmp_path, command):
    run = fake_run(tmp_path)
    with pytest.raises(ConfigError, match=rf"use: discover {command} toy_problem:ToyProblem \.\.\."):
        build_problem("erdos", [], run / "construction.json", command)


def test_plot_on_the_command_line_suggests_plot(tmp_path):
    run = fake_run(tmp_path)
    res = CliRunner().invoke(cli, ["plot", "erdos", str(run / "construction.json")])
    assert res.exit_code == 2 and "use: discover plot toy_problem:ToyProblem" in res.output
    assert "discover verify" not in res.output


def test_resume_in_a_plugin_folder_says_it_is_not_a_run_directory(tmp_path):
    folder = tmp_path / "discover-mine"
    folder.mkdir()
    shutil.copy(TOY / "config.yaml", folder / "config.yaml")
    shutil.copy(TOY / "replies.jsonl", folder / "replies.jsonl")
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        res = CliRunner().invoke(cli, ["resume", "."])
    finally:
        os.chdir(cwd)
    assert res.exit_code == 2, res.output
    assert "is not a run directory: no run was started in it" in res.output
    assert "discover run" in res.output and "config.yaml" in res.output
    assert "no run wrote" not in res.output
    assert sorted(p.name for p in folder.iterdir()) == ["config.yaml", "replies.jsonl"]  # nothing written
