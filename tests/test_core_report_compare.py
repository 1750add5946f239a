"""``discover compare``: runs labelled by what their configs do differently, curves on shared
axes, one self-contained page."""

from __future__ import annotations

import base64
import re

import pytest
import torch
from click.testing import CliRunner

from discover_ttt.cli import cli
from discover_ttt.config import load_config
from discover_ttt.loop import Discovery
from discover_ttt.progress import Reporter
from discover_ttt.report import read_run
from discover_ttt.report.compare import differences, labels, render

ARMS = {"ttt-0": (0, True), "ttt-1": (1, True), "frozen-0": (0, False), "frozen-1": (1, False)}


def vowel_run(root, name: str, seed: int, train: bool):
    raw = {
        "problem": {"name": "vowel_problem:VowelProblem"},
        "backend": {"name": "local", "model": "tiny-random", "device": "cpu", "train": train, "max_new_tokens": 4},
        "sandbox": {"workers": 1, "isolation": "none", "timeout_s": 5, "preload": []},
        "run": {"steps": 2, "groups": 1, "rollouts": 4, "seed": seed, "output": str(root / name)},
        "log": {"progress": "none"},
    }
    disc = Discovery(load_config(raw=raw), reporter=Reporter())
    disc.start()
    return disc.run().run_dir


@pytest.fixture(scope="module")
def compared_runs(tmp_path_factory):
    """Four small runs: test-time training and frozen, at seeds 0 and 1 (also used by the browser test)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("compare")
    try:
        return [vowel_run(root, name, seed, train) for name, (seed, train) in ARMS.items()]
    finally:
        torch.set_num_threads(threads)


def test_component_seeds_that_follow_the_run_seed_are_not_repeated():
    a = {"run": {"seed": 0}, "backend": {"seed": 0}}
    b = {"run": {"seed": 1}, "backend": {"seed": 1}}
    c = {"run": {"seed": 1}, "backend": {"seed": 5}}
    assert differences([a, b]) == [{"run.seed": 0}, {"run.seed": 1}]
    assert differences([a, c]) == [{"backend.seed": 0, "run.seed": 0}, {"backend.seed": 5, "run.seed": 1}]


def test_only_the_keys_that_differ_label_the_runs():
    a = {
        "run": {"seed": 0, "output": "/x/a", "steps": 3},
        "backend": {"train": True, "lr": 1e-4},
        "log": {"level": "info"},
    }
    b = {
        "run": {"seed": 1, "output": "/x/b", "steps": 5},
        "backend": {"train": False, "lr": 1e-4},
        "log": {"level": "debug"},
    }
    assert differences([a, b]) == [
        {"backend.train": True, "run.seed": 0},
        {"backend.train": False, "run.seed": 1},
    ]  # output folders, logging and run lengths say nothing about the arm


def test_compare_page_labels_runs_and_draws_both_curves(compared_runs):
    runs = [read_run(d) for d in compared_runs]
    names, arms = labels(runs)
    assert names == [
        "backend.train=True, run.seed=0",
        "backend.train=True, run.seed=1",
        "backend.train=False, run.seed=0",
        "backend.train=False, run.seed=1",
    ]
    assert arms == ["backend.train=True"] * 2 + ["backend.train=False"] * 2  # seeds repeat an arm
    page = render(runs)
    assert "<script" not in page and not re.search(r'src="(?!data:)', page)  # self-contained
    svgs = [base64.b64decode(m).decode() for m in re.findall(r'src="data:image/svg\+xml;base64,([^"]+)"', page)]
    assert len(svgs) == 2  # best score and valid rate
    for svg in svgs:
        assert all(name in svg for name in names)  # every run is in each legend


def test_identical_configs_are_told_apart_by_folder(compared_runs):
    run = read_run(compared_runs[0])
    assert labels([run, run]) == ([run.root.name] * 2, ["same config"] * 2)


def test_the_command_writes_the_page(compared_runs, tmp_path):
    out = tmp_path / "cmp.html"
    result = CliRunner().invoke(cli, ["compare", *map(str, compared_runs), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.exists() and "backend.train=False, run.seed=1" in out.read_text()
