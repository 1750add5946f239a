"""A hand-edited checkpoint of the wrong shape: resume refuses it in one paragraph, never a traceback."""

import json
from pathlib import Path

import pytest

from discover_ttt.loop import resume_run, run_config
from discover_ttt.progress import Reporter
from discover_ttt.store import RunDirError

CONFIG = Path(__file__).parent / "toy" / "config.yaml"
SMALL = ["sandbox.isolation=none", "sandbox.preload=[]", "run.groups=1", "run.rollouts=2", "run.steps=1"]


@pytest.mark.parametrize(
    "edit",
    [
        lambda loop, sampler: loop.update(best=[1, 2, 3]),  # TypeError on the record
        lambda loop, sampler: loop.pop("rng"),  # KeyError
        lambda loop, sampler: loop.update(rng="not a state"),  # the generator refuses it
        lambda loop, sampler: sampler.update(states="nope"),  # the sampler's own shape
    ],
)
def test_a_checkpoint_of_the_wrong_shape_is_one_paragraph(tmp_path, edit):
    summary = run_config(CONFIG, [f"run.output={tmp_path / 'run'}", *SMALL], reporter=Reporter())
    ckpt = sorted((summary.run_dir / "checkpoints").iterdir())[-1]
    loop, sampler = (json.loads((ckpt / n).read_text()) for n in ("loop.json", "sampler.json"))
    edit(loop, sampler)
    (ckpt / "loop.json").write_text(json.dumps(loop))
    (ckpt / "sampler.json").write_text(json.dumps(sampler))
    with pytest.raises(RunDirError, match="Checkpoint .* (does not hold|is corrupted)"):
        resume_run(summary.run_dir, ["run.steps=2"], reporter=Reporter())
