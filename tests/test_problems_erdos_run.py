"""A whole Erdős run with the replay backend: realistic programs improve C5, failures are recorded."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from discover_ttt.config import load_config
from discover_ttt.loop import Discovery
from discover_ttt.progress import Reporter

PROGRAMS = Path(__file__).parent / "data" / "programs" / "erdos"


def erdos_config(tmp_path, *overrides):
    raw = {
        "problem": {"name": "erdos", "budget_s": 2, "timeout_margin_s": 0.5, "cpus": 1},
        # one group of six rollouts: the six replies, in name order
        "backend": {"name": "replay", "path": str(PROGRAMS)},
        "sampler": {"name": "puct", "c": 1.0},
        "estimator": {"name": "entropic_adaptive"},
        "sandbox": {"memory_mb": 1024, "workers": 2, "isolation": "none"},
        "run": {"steps": 1, "groups": 1, "rollouts": 6, "seed": 0, "output": str(tmp_path / "run")},
        "log": {"progress": "none"},
    }
    return load_config(tmp_path, list(overrides), raw=raw)


@pytest.mark.slow  # a two-step replay run with the real verifier: seconds
def test_replay_run_lowers_c5_and_records_each_failure(tmp_path):
    try:
        from discover_ttt.sandbox import Sandbox  # noqa: F401
    except ImportError:
        pytest.skip("discover_ttt.sandbox is not available")
    disc = Discovery(erdos_config(tmp_path), reporter=Reporter())
    disc.start()
    seed_c5 = min(s.score for s in disc.sampler.states)
    summary = disc.run()

    rollouts = [json.loads(line) for line in (summary.run_dir / "events.jsonl").read_text().splitlines()]
    rollouts = [e for e in rollouts if e["type"] == "rollout"]
    outcomes = {e["text"].split("\n")[0][:40]: e["outcome"] for e in rollouts}
    assert len(rollouts) == 6
    assert sorted(e["outcome"] for e in rollouts) == sorted(
        ["valid", "syntax_error", "timeout", "invalid_construction", "invalid_construction", "no_code"]
    ), outcomes
    for e in rollouts:
        if e["outcome"] == "valid":
            assert e["score"] < seed_c5 and e["reward"] == pytest.approx(1 / (1e-8 + e["score"]))
            assert e["archived"] is True
        else:
            assert e["reward"] == 0 and e["reason"]
    reasons = " ".join(e["reason"] for e in rollouts if e["outcome"] == "invalid_construction")
    assert "NaN" in reasons and "does not match" in reasons

    # the best is below every seed, verified from scratch, and re-verifies through the CLI
    assert summary.best_score < seed_c5
    best = json.loads((summary.run_dir / "best" / "score.json").read_text())
    assert best["verified"]["valid"] and best["verified"]["score"] == pytest.approx(summary.best_score, rel=1e-12)
    from discover_ttt.cli import cli

    result = CliRunner().invoke(cli, ["verify", "erdos", str(summary.run_dir / "best" / "construction.json"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1])["score"] == pytest.approx(summary.best_score, rel=1e-12)
