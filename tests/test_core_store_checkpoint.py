"""The checkpoint layout has one owner: RunStore writes and reads a whole checkpoint."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from discover_ttt.store import Checkpoint, RunDirError, RunStore

ROOT = Path(__file__).parent.parent


def store(tmp_path) -> RunStore:
    s = RunStore(tmp_path / "run")
    s.ckpt_dir.mkdir(parents=True)
    return s


def save_marker(directory: Path) -> None:
    (directory / "weights.txt").write_text("w")


def test_a_written_checkpoint_reads_back_whole(tmp_path):
    s = store(tmp_path)
    loop_state = {"rng": {"state": 1}, "made": 2, "best": None, "totals": {"rollouts": 4, "valid": 1}}
    path = s.write_checkpoint(3, loop_state, {"states": ["a"]}, save_marker, keep=2)
    assert path == s.checkpoint_path(3) and path.name == "step_000003" and RunStore.checkpoint_step(path) == 3
    assert json.loads((path / "loop.json").read_text())["step"] == 3  # the step travels in loop.json
    ckpt = s.read_checkpoint()
    assert ckpt == Checkpoint(path=path, step=3, loop=loop_state, sampler={"states": ["a"]})
    assert (ckpt.backend / "weights.txt").read_text() == "w"
    assert s.last_step() == 3
    assert sorted(p.name for p in s.ckpt_dir.iterdir()) == ["step_000003"]  # no temporary name left


def test_only_the_last_keep_checkpoints_stay(tmp_path):
    s = store(tmp_path)
    for t in range(4):
        s.write_checkpoint(t, {}, {}, save_marker, keep=2)
    assert [RunStore.checkpoint_step(p) for p in s.checkpoints()] == [2, 3]


def test_a_failing_backend_save_leaves_no_checkpoint_and_no_temporary_folder(tmp_path):
    s = store(tmp_path)
    s.write_checkpoint(0, {}, {}, save_marker, keep=5)

    def full_disk(directory: Path) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(RunDirError, match="write the checkpoint of step 1.*No space left"):
        s.write_checkpoint(1, {}, {}, full_disk, keep=5)
    assert sorted(p.name for p in s.ckpt_dir.iterdir()) == ["step_000000"]
    assert s.last_step() == 0


@pytest.mark.parametrize(
    "loop_json",
    ["{not json", json.dumps(["a", "list"]), json.dumps({"made": 1}), json.dumps({"step": "three"})],
)
def test_a_corrupted_checkpoint_is_one_paragraph_naming_it(tmp_path, loop_json):
    s = store(tmp_path)
    path = s.write_checkpoint(0, {}, {}, save_marker, keep=5)
    (path / "loop.json").write_text(loop_json)
    with pytest.raises(RunDirError, match=r"Checkpoint .*step_000000 is corrupted .*Delete that folder"):
        s.read_checkpoint()
    assert s.last_step() is None


def test_no_checkpoint_reads_as_none(tmp_path):
    s = store(tmp_path)
    assert s.read_checkpoint() is None and s.last_step() is None
    (s.ckpt_dir / ".step_000000.tmp").mkdir()  # a half-written one is not a checkpoint
    (s.ckpt_dir / "step_000001").mkdir()  # nor is a folder without its completeness mark
    assert s.read_checkpoint() is None


def test_the_loop_builds_no_paths():
    """loop.py asks the store for checkpoints; no ``path / "name"`` and no file names of the layout."""
    tree = ast.parse((ROOT / "discover_core" / "loop.py").read_text())
    joins = [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.BinOp)
        and isinstance(node.op, ast.Div)
        and any(isinstance(x, ast.Constant) and isinstance(x.value, str) for x in (node.left, node.right))
    ]
    assert joins == []
    strings = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    layout = [
        x
        for x in strings
        if x.startswith(("step_", ".step_")) or any(k in x for k in ("loop.json", "sampler.json", ".tmp"))
    ]
    assert layout == []
