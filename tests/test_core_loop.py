"""The whole loop on the toy problem, driven by the replay backend."""

import json
import math
from pathlib import Path

import pytest
import yaml

from discover_ttt.config import load_config
from discover_ttt.loop import Discovery, run_config
from discover_ttt.progress import Reporter
from discover_ttt.store import RunDirError, RunStore

TOY = Path(__file__).parent / "toy"
CONFIG = TOY / "config.yaml"


def events(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "events.jsonl").read_text().splitlines()]


def run(tmp_path, *overrides, replies=None):
    sets = [f"run.output={tmp_path / 'run'}", "sandbox.isolation=none", *overrides]
    if replies is not None:
        path = tmp_path / "replies.jsonl"
        path.write_text("".join(json.dumps({"text": t}) + "\n" for t in replies))
        sets.append(f"backend.path={path}")
    return run_config(CONFIG, sets, reporter=Reporter())


def code(body):
    return f"```python\n{body}\n```"


def test_full_run_records_every_outcome(tmp_path):
    summary = run(tmp_path)
    ev = events(summary.run_dir)
    rollouts = [e for e in ev if e["type"] == "rollout"]
    steps = [e for e in ev if e["type"] == "step"]
    assert len(rollouts) == 3 * 2 * 4 and [s["step"] for s in steps] == [0, 1, 2]
    kinds = {e["outcome"] for e in rollouts}
    assert {"valid", "no_code", "syntax_error", "exception", "invalid_construction"} <= kinds
    for e in rollouts:
        if e["outcome"] == "valid":
            assert e["reward"] > 0 and e["child_id"] and e["score"] is not None
        else:
            assert e["reward"] == 0 and e["child_id"] is None and e["reason"]
    nan = [e for e in rollouts if "nan" in e["text"]]
    assert nan and all(e["outcome"] == "invalid_construction" for e in nan)
    for s in steps:
        assert set(s["seconds"]) == {"sampling", "evaluation", "training", "other", "total"}
        mine = [e for e in rollouts if e["step"] == s["step"]]
        rewards = [e["reward"] for e in mine]
        assert s["valid_rate"] == sum(e["outcome"] == "valid" for e in mine) / len(mine)
        assert s["reward_mean"] == pytest.approx(sum(rewards) / len(rewards), abs=1e-15)
        assert s["reward_max"] == max(rewards)
        assert all("beta" in g for g in s["group_stats"])
    # the best improves on the seeds and is verified from scratch in best/
    best = json.loads((summary.run_dir / "best" / "score.json").read_text())
    assert best["verified"]["valid"] and best["verified"]["score"] == pytest.approx(best["score"], abs=1e-12)
    assert best["score"] == summary.best_score == max(e["score"] for e in rollouts if e["score"] is not None)
    construction = json.loads((summary.run_dir / "best" / "construction.json").read_text())
    assert len(construction) == 3 and (summary.run_dir / "best" / "code.py").read_text().startswith("import")
    # the resolved config is saved with every default filled in
    saved = yaml.safe_load((summary.run_dir / "config.yaml").read_text())
    assert saved["sampler"] == {
        "name": "puct",
        "c": 1.0,
        "max_states": 1000,
        "children_per_parent": 2,
        "visit_normaliser": 1.0,
    }
    assert saved["estimator"] == {"name": "entropic_adaptive", "kl_target": pytest.approx(math.log(2))}
    assert saved["run"]["groups"] == 2 and saved["run"]["save_every"] == 1
    assert RunStore(summary.run_dir).latest_checkpoint().name == "step_000002"


def test_timeout_and_failed_visits(tmp_path):
    replies = [code("import time\n\ndef run():\n    time.sleep(60)"), code("def run():\n    return [0.3, 0.3, 0.31]")]
    summary = run(tmp_path, "sandbox.timeout_s=1", "run.steps=1", "run.groups=1", "run.rollouts=2", replies=replies)
    ev = [e for e in events(summary.run_dir) if e["type"] == "rollout"]
    assert [e["outcome"] for e in ev] == ["timeout", "valid"]
    assert ev[0]["reward"] == 0 and ev[0]["advantage"] < 0 < ev[1]["advantage"]


def test_constant_groups_are_dropped(tmp_path):
    summary = run(tmp_path, "run.steps=1", replies=["no code here"])
    step = [e for e in events(summary.run_dir) if e["type"] == "step"][0]
    assert step["groups_kept"] == [] and all(g["constant"] for g in step["group_stats"])
    assert all(e["advantage"] == 0 for e in events(summary.run_dir) if e["type"] == "rollout")


def test_faithful_mode_keeps_first_constant_group(tmp_path):
    summary = run(tmp_path, "run.steps=1", "run.faithful_constant_groups=true", replies=["no code here"])
    step = [e for e in events(summary.run_dir) if e["type"] == "step"][0]
    assert step["groups_kept"] == [0]


def test_a_raising_evaluator_does_not_stop_the_run(tmp_path, monkeypatch):
    import toy_problem

    def boom(self, program, state, sandbox):
        raise RuntimeError("plugin bug")

    monkeypatch.setattr(toy_problem.ToyProblem, "evaluate", boom)
    summary = run(tmp_path, "run.steps=1")
    ev = [e for e in events(summary.run_dir) if e["type"] == "rollout" and e["outcome"] == "exception"]
    assert any("plugin bug" in e["reason"] for e in ev)


def test_existing_run_is_not_overwritten(tmp_path):
    first = run(tmp_path, "run.steps=1")
    second = run(tmp_path, "run.steps=1")
    assert second.run_dir == Path(f"{first.run_dir}-1")
    assert len(events(first.run_dir)) == len(events(second.run_dir))
    loaded = load_config(CONFIG, [f"run.output={first.run_dir}", "sandbox.isolation=none"])
    with pytest.raises(RunDirError, match="--resume"):
        Discovery(loaded, reporter=Reporter()).start()


def test_resume_in_process_matches_uninterrupted(tmp_path):
    def fields(ev):
        keep = ("type", "step", "group", "index", "parent_id", "child_id", "outcome", "score", "reward", "advantage")
        return [{k: e.get(k) for k in keep} for e in ev]

    full = run(tmp_path / "a", "run.steps=4")
    run(tmp_path / "b", "run.steps=2")
    out = tmp_path / "b" / "run"
    # a crash in step 2 leaves a torn line behind; resume must drop it
    with open(out / "events.jsonl", "a") as f:
        f.write('{"type":"rollout","step":2,"gro')
    loaded = load_config(CONFIG, [f"run.output={out}", "sandbox.isolation=none", "run.steps=4"])
    disc = Discovery(loaded, reporter=Reporter())
    assert disc.resume() and disc.step == 2
    disc.run()
    assert fields(events(out)) == fields(events(full.run_dir))


def test_corrupted_events_file_is_reported(tmp_path):
    summary = run(tmp_path, "run.steps=1")
    path = summary.run_dir / "events.jsonl"
    lines = path.read_text().splitlines()
    lines[1] = "garbage"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(RunDirError, match="corrupted at line 2"):
        RunStore(summary.run_dir).read_events()
