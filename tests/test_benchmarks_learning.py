"""benchmarks/learning.py end to end on the tiny model and the vowel task: every arm at every
seed is run, and the JSON and the picture are written."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
import yaml

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "learning.py"


def load_script():
    spec = importlib.util.spec_from_file_location("learning_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # six small runs
def test_arms_seeds_json_and_picture(tmp_path):
    config = tmp_path / "vowels.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "problem": {"name": "vowel_problem:VowelProblem"},
                "backend": {"name": "local", "model": "tiny-random", "device": "cpu", "max_new_tokens": 4, "lr": 0.05},
                "sandbox": {"workers": 1, "isolation": "none", "timeout_s": 5, "preload": []},
            }
        )
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        args = ["--config", str(config), "--seeds", "0,1", "--steps", "2", "--groups", "1", "--rollouts", "4"]
        result = load_script().main([*args, "--set", "log.progress=none", "--out", str(tmp_path / "out")])
    finally:
        torch.set_num_threads(threads)
    saved = json.loads((tmp_path / "out" / "learning.json").read_text())
    assert saved["arms"].keys() == {"ttt", "frozen", "best_of_n"} and saved == json.loads(json.dumps(result))
    for arm, runs in saved["arms"].items():
        assert runs.keys() == {"0", "1"}, arm
        for run in runs.values():
            assert len(run["best_score"]) == len(run["valid_rate"]) == 2
            assert (Path(run["run_dir"]) / "events.jsonl").exists()
    # the arms are the switches they name
    frozen = yaml.safe_load((Path(saved["arms"]["best_of_n"]["0"]["run_dir"]) / "config.yaml").read_text())
    assert frozen["backend"]["train"] is False and frozen["sampler"]["name"] == "no_reuse"
    assert (tmp_path / "out" / "learning.png").stat().st_size > 10_000
