"""A ``module:Class`` problem beside its config: run records where it came from; the tools find it there."""

import json
import shutil
import sys
from pathlib import Path

import pytest

from discover_ttt.loop import resume_run, run_config
from discover_ttt.problem_args import build_problem
from discover_ttt.progress import Reporter
from discover_ttt.report import write_report
from discover_ttt.store import RunStore

TOY = Path(__file__).parent / "toy"
MODULE = "beside_config_problem"


def forget(folder: Path) -> None:
    """As in a new process: the module is not imported and its folder is not on the path."""
    sys.modules.pop(MODULE, None)
    while str(folder) in sys.path:
        sys.path.remove(str(folder))


@pytest.fixture
def plugin_folder(tmp_path):
    folder = tmp_path / "my-plugin"
    folder.mkdir()
    shutil.copy(TOY / "toy_problem.py", folder / f"{MODULE}.py")
    shutil.copy(TOY / "replies.jsonl", folder / "replies.jsonl")
    config = (TOY / "config.yaml").read_text().replace("toy_problem:ToyProblem", f"{MODULE}:ToyProblem")
    (folder / "config.yaml").write_text(config)
    yield folder
    forget(folder)


def test_verify_plot_report_and_resume_find_the_module(plugin_folder, tmp_path):
    sets = [f"run.output={tmp_path / 'runs' / 'mine'}", "sandbox.isolation=none", "run.steps=1", "run.groups=1"]
    summary = run_config(plugin_folder / "config.yaml", sets, reporter=Reporter())
    assert RunStore(summary.run_dir).import_path() == [plugin_folder.resolve()]
    best = summary.run_dir / "best" / "construction.json"

    forget(plugin_folder)
    problem = build_problem(f"{MODULE}:ToyProblem", [], file=best)  # discover verify / plot
    assert problem.verify(problem.construction_from_record(json.loads(best.read_text()))).valid

    forget(plugin_folder)
    page = write_report(summary.run_dir).read_text()
    assert "could not be loaded" not in page and "No module named" not in page

    forget(plugin_folder)
    resumed = resume_run(summary.run_dir, ["run.steps=2"], reporter=Reporter())
    assert resumed.steps_done == 2
