"""Two-step replay runs whose events.jsonl must stay byte-identical to the files under tests/data/golden/.

The step's code may move and change shape; what a run records may not. The Erdős replay
(the realistic programs of tests/data/programs/erdos: one group, six outcomes) and a
circle-packing replay (two groups of four, five replies cycling across groups and steps) are run for
two steps, and each line of their events is compared with the golden file as bytes. Only the
step's ``seconds`` (wall-clock timings) are left out.

To write the golden files again after an intended change of the events:
``DISCOVER_WRITE_GOLDEN=1 pytest tests/test_core_step_golden.py``, and review the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from test_problems_erdos_run import erdos_config

from discover_ttt.config import load_config
from discover_ttt.loop import Discovery
from discover_ttt.progress import Reporter
from discover_ttt.store import dumps

DATA = Path(__file__).parent / "data"
GOLDEN = DATA / "golden"
#: fields that measure time, not what the run computed
TIMINGS = ("seconds",)


def circle_packing_config(tmp_path, *overrides):
    raw = {
        "problem": {"name": "circle_packing", "n": 26, "budget_s": 2, "cpus": 1},
        # two groups of four rollouts: the five replies cycle, so groups and steps see different ones
        "backend": {"name": "replay", "path": str(DATA / "programs" / "circle_packing")},
        "sampler": {"name": "puct", "c": 1.0},
        "estimator": {"name": "entropic_adaptive"},
        "sandbox": {"memory_mb": 1024, "workers": 2, "isolation": "none"},
        "run": {"steps": 2, "groups": 2, "rollouts": 4, "seed": 0, "output": str(tmp_path / "run")},
        "log": {"progress": "none"},
    }
    return load_config(tmp_path, list(overrides), raw=raw)


CONFIGS = {
    # a budget of 4 s leaves the improving program twice the time its 600 iterations need on a
    # loaded machine (it stops at half the budget), so its result does not depend on the load;
    # the sandbox stops a program at 4.5 s (the problem's margin)
    "erdos": lambda tmp_path: erdos_config(tmp_path, "run.steps=2", "problem.budget_s=4"),
    "circle_packing": circle_packing_config,
}


def without_timings(line: str) -> str:
    """The event line as the run wrote it, less its timing fields (the same serialisation, key order kept)."""
    event = json.loads(line)
    for key in TIMINGS:
        event.pop(key, None)
    return dumps(event)


# the Erdős run waits twice for a program to time out (about 10 s): it runs with the slow tier
@pytest.mark.parametrize("name", ["circle_packing", pytest.param("erdos", marks=pytest.mark.slow)])
def test_events_of_a_two_step_replay_run_are_unchanged(tmp_path, name):
    disc = Discovery(CONFIGS[name](tmp_path), reporter=Reporter())
    disc.start()
    summary = disc.run()
    assert summary.steps_done == 2
    written = (summary.run_dir / "events.jsonl").read_text().splitlines()
    assert all(without_timings(line) != line for line in written if '"type":"step"' in line)  # timings were there
    got = [without_timings(line) for line in written]

    golden = GOLDEN / f"{name}.events.jsonl"
    if os.environ.get("DISCOVER_WRITE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text("".join(line + "\n" for line in got))
    want = golden.read_text().splitlines()
    assert len(got) == len(want), f"{len(got)} events, golden {len(want)}"
    for i, (g, w) in enumerate(zip(got, want, strict=True), 1):
        assert g == w, f"{golden.name}, line {i} differs"
