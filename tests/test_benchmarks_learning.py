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


def test_every_arm_and_the_gpu_command_are_valid_configs():
    """Each arm's switches, with the one-GPU command of docs/results.md, load as a config."""
    from discover_ttt.config import load_config

    bench = load_script()
    args = bench.parse_args(
        "--arms all --seeds 0,1,2 --steps 20 --groups 8 --rollouts 16 --model Qwen/Qwen2.5-Coder-1.5B-Instruct "
        "--device cuda --max-new-tokens 1024 --temperature 1.0 --set backend.name=vllm --set backend.lora_rank=32 "
        "--set problem.budget_s=60".split()
    )
    doc = (Path(__file__).parents[1] / "docs" / "results.md").read_text()
    assert "--set backend.name=vllm --set backend.lora_rank=32 --set problem.budget_s=60" in doc
    for arm, switches in bench.ARMS.items():
        loaded = load_config(args.config, [*bench.shared_overrides(args), *switches])
        backend = loaded.params["backend"]
        assert (backend.device, backend.max_new_tokens, loaded.config.run.rollouts) == ("cuda", 1024, 16), arm
        assert backend.train is ("backend.train=false" not in switches), arm
