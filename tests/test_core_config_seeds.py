"""``run.seed`` reaches the backend's sampling seed (and the sampler's) unless the config sets
``backend.seed``: runs with different seeds draw different rollouts, runs with the same seed
draw the same ones (common random numbers for paired ablation runs)."""

from __future__ import annotations

import json

import pytest
import torch

from discover_ttt.config import load_config
from discover_ttt.loop import Discovery
from discover_ttt.progress import Reporter


def config(tmp_path, run_seed: int, name: str, **backend) -> dict:
    return {
        "problem": {"name": "vowel_problem:VowelProblem"},
        "backend": {"name": "local", "model": "tiny-random", "device": "cpu", "max_new_tokens": 6, **backend},
        "sampler": {"name": "greedy", "epsilon": 0.5},
        "sandbox": {"workers": 1, "isolation": "none", "timeout_s": 5, "preload": []},
        "run": {"steps": 1, "groups": 2, "rollouts": 4, "seed": run_seed, "output": str(tmp_path / name)},
        "log": {"progress": "none"},
    }


def test_run_seed_is_the_backend_and_sampler_seed_unless_set(tmp_path):
    loaded = load_config(raw=config(tmp_path, 7, "a"))
    assert loaded.params["backend"].seed == 7 and loaded.params["sampler"].seed == 7
    assert loaded.resolved()["backend"]["seed"] == 7  # the run directory records it
    assert load_config(raw=config(tmp_path, 7, "b", seed=3)).params["backend"].seed == 3


def test_an_explicit_null_seed_stays_null(tmp_path):
    """The openai backend's ``seed: null`` sends no seed at all (the server's own randomness)."""
    raw = config(tmp_path, 7, "c")
    raw["backend"] = {"name": "openai", "base_url": "http://localhost:1/v1", "model": "m"}
    assert load_config(raw=raw).params["backend"].seed == 7
    raw["backend"]["seed"] = None
    assert load_config(raw=raw).params["backend"].seed is None


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def texts(raw: dict) -> list[str]:
    disc = Discovery(load_config(raw=raw), reporter=Reporter())
    disc.start()
    run_dir = disc.run().run_dir
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    return [e["text"] for e in events if e["type"] == "rollout"]


def test_runs_with_different_seeds_sample_different_rollouts(tmp_path, one_thread):
    one, seven, seven_again = (texts(config(tmp_path, s, n)) for s, n in ((1, "s1"), (7, "s7"), (7, "s7b")))
    assert seven == seven_again  # same seed, same noise
    assert sum(a != b for a, b in zip(one, seven, strict=True)) >= len(one) - 1


def _timeless(value):
    """An event without its wall-clock figures (the only part of a run that may differ between two runs)."""
    if isinstance(value, dict):
        return {k: _timeless(v) for k, v in value.items() if "second" not in k}
    if isinstance(value, list):
        return [_timeless(v) for v in value]
    return value


def test_the_same_seed_gives_the_same_events_through_updates(tmp_path, one_thread):
    """Two steps with an update between them, guessed tokens on: every event but its timings is the
    same in two runs with one seed."""

    def events(name: str) -> list[dict]:
        raw = config(tmp_path, 3, name, max_new_tokens=24, temperature=0.3, lr=0.01, draft_tokens=4)
        raw["run"]["steps"] = 2
        disc = Discovery(load_config(raw=raw), reporter=Reporter())
        disc.start()
        run_dir = disc.run().run_dir
        return [_timeless(json.loads(line)) for line in (run_dir / "events.jsonl").read_text().splitlines()]

    first, again = events("a"), events("b")
    assert [e["type"] for e in first].count("step") == 2
    assert first == again
