"""Warm starts: ``problem: {init_from: FILE}`` seeds the archive with a verified construction."""

import json
from pathlib import Path

import pytest
import yaml

from discover_ttt.config import ConfigError, load_config
from discover_ttt.loop import Discovery
from discover_ttt.progress import Reporter

RECORDS = Path(__file__).parent / "data" / "records"

#: one reply: report the length of the construction it starts from and return a prefix of it
PROBE = """```python
def propose_candidate(seed=42, budget_s=1000, **kwargs):
    print("started from", len(height_sequence_1))
    return height_sequence_1[:1000].tolist()
```"""


def config(tmp_path, problem, **run):
    replies = tmp_path / "replies.jsonl"
    replies.write_text(json.dumps(PROBE) + "\n")
    raw = {
        "problem": problem,
        "backend": {"name": "replay", "path": str(replies)},
        "sandbox": {"memory_mb": 1024, "workers": 1, "isolation": "none"},
        "run": {"steps": 1, "groups": 2, "rollouts": 1, "seed": 0, "output": str(tmp_path / "run"), **run},
        "log": {"progress": "none"},
    }
    return load_config(tmp_path, raw=raw)


def test_a_warm_start_run_begins_at_the_records_construction_with_its_verified_score(tmp_path):
    record = json.loads((RECORDS / "ac1_ttt_discover_30000.json").read_text())
    problem = {
        "name": "ac1",
        "budget_s": 2,
        "timeout_margin_s": 1,
        "init_from": str(RECORDS / "ac1_ttt_discover_30000.json"),
    }
    disc = Discovery(config(tmp_path, problem), reporter=Reporter())
    disc.start()
    first = disc.sampler.states[0]
    assert first.id == "init0" and first.step == -1
    assert first.construction == record["construction"]["values"]
    assert first.score == pytest.approx(record["value"], rel=1e-12, abs=0)
    assert first.value == -first.score and "def propose_candidate" in first.code  # the starter program
    assert [s.construction for s in disc.sampler.states] == [first.construction] * 2  # one seed per group
    best = json.loads((disc.store.root / "best" / "score.json").read_text())
    assert best["state_id"] == "init0" and best["verified"]["score"] == pytest.approx(record["value"], rel=1e-12)

    summary = disc.run()
    events = [json.loads(line) for line in (summary.run_dir / "events.jsonl").read_text().splitlines()]
    rollout = next(e for e in events if e["type"] == "rollout")
    # a warm seed is never re-drawn: the program saw the record's 30000 heights
    assert rollout["outcome"] == "valid" and "started from 30000" in rollout["stdout_tail"]
    saved = yaml.safe_load((summary.run_dir / "config.yaml").read_text())
    assert saved["problem"]["init_from"] == str(RECORDS / "ac1_ttt_discover_30000.json")


def test_any_problem_that_reads_the_file_can_warm_start(tmp_path):
    problem = {"name": "erdos", "init_from": str(RECORDS / "erdos_ttt_discover_600.json")}
    disc = Discovery(config(tmp_path, problem), reporter=Reporter())
    disc.start()
    assert disc.sampler.states[0].score == pytest.approx(0.3808753232177187, rel=1e-12)
    disc.close()


def test_init_from_is_relative_to_the_config_file(tmp_path):
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "start.json").write_text(json.dumps([0.5] * 1200))
    path = tmp_path / "cfg" / "run.yaml"
    path.write_text(
        yaml.safe_dump(
            {"problem": {"name": "ac2", "init_from": "start.json"}, "backend": {"name": "replay", "path": "x.jsonl"}}
        )
    )
    assert load_config(path).config.problem.init_from == tmp_path / "cfg" / "start.json"


@pytest.mark.parametrize(
    "content, needle",
    [
        (None, "cannot read"),
        ("{not json", "is not JSON"),
        (json.dumps({"construction": {"centers": [[0.5, 0.5]], "radii": [0.1]}}), "does not hold a ac1 construction"),
        (json.dumps([0.001, 0.002]), "verifier rejects (the sum of the (clamped) sequence is"),
        (json.dumps([1.0, True]), "item 1 is a bool"),
    ],
)
def test_a_bad_init_from_file_is_a_clear_error_and_makes_no_run(tmp_path, content, needle):
    start = tmp_path / "start.json"
    if content is not None:
        start.write_text(content)
    disc = Discovery(config(tmp_path, {"name": "ac1", "init_from": str(start)}), reporter=Reporter())
    with pytest.raises(ConfigError) as err:
        disc.start()
    assert needle in str(err.value) and str(start) in str(err.value)
    assert not (tmp_path / "run").exists()
