"""The run directory under concurrency and faults: one owner, no foreign files touched, honest resumes."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import yaml
from test_core_loop_resume import marked_program_running

from discover_ttt import store as store_mod
from discover_ttt.loop import RunInterrupted, resume_run, run_config
from discover_ttt.progress import Reporter
from discover_ttt.store import RunDirError, RunStore

TOY = Path(__file__).parent / "toy"
CONFIG = TOY / "config.yaml"
SMALL = ["sandbox.isolation=none", "sandbox.preload=[]", "run.groups=1", "run.rollouts=2"]


def events(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "events.jsonl").read_text().splitlines()]


def run(out, *overrides):
    return run_config(CONFIG, [f"run.output={out}", *SMALL, *overrides], reporter=Reporter())


# -- one run per directory -------------------------------------------------------------------
def test_a_second_process_on_a_locked_directory_is_refused(tmp_path):
    summary = run(tmp_path / "r", "run.steps=1")
    holder = RunStore(summary.run_dir)
    holder.acquire()
    try:
        with pytest.raises(RunDirError, match=f"in use by process {os.getpid()} on host"):
            resume_run(summary.run_dir, ["run.steps=2"], reporter=Reporter())
    finally:
        holder.close()
    assert resume_run(summary.run_dir, ["run.steps=2"], reporter=Reporter()).steps_done == 2


def test_the_lock_of_a_dead_process_is_taken_over(tmp_path):
    summary = run(tmp_path / "r", "run.steps=1")
    code = (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(summary.run_dir / '.lock')!r}, os.O_RDWR)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('locked', flush=True)\ntime.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    assert not RunStore(summary.run_dir).lock()
    proc.kill()
    proc.wait()
    assert resume_run(summary.run_dir, ["run.steps=2"], reporter=Reporter()).steps_done == 2


def test_claims_at_once_get_distinct_directories(tmp_path):
    root, got, barrier = tmp_path / "runs" / "x", [], threading.Barrier(6)

    def claim():
        barrier.wait()
        got.append(RunStore.claim(root))

    threads = [threading.Thread(target=claim) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    roots = sorted(s.root.name for s in got)
    assert roots == ["x", "x-1", "x-2", "x-3", "x-4", "x-5"]
    for s in got:
        s.close()


def test_two_runs_started_at_once_never_share_a_folder(tmp_path, discover_bin, toy_env):
    out = tmp_path / "same"
    cmd = [discover_bin, "run", str(CONFIG), "--set", f"run.output={out}", "--set", "run.steps=1"]
    cmd += [x for s in SMALL for x in ("--set", s)]
    procs = [subprocess.Popen(cmd, env=toy_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(2)]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()
    dirs = sorted(p.name for p in tmp_path.iterdir())
    assert dirs == ["same", "same-1"]
    for d in dirs:
        ev = events(tmp_path / d)
        assert [e["step"] for e in ev if e["type"] == "step"] == [0]


# -- never overwrite what is not ours -------------------------------------------------------------
@pytest.mark.parametrize("output", [".", "''", "config.yaml", "notes"])
def test_output_beside_the_users_files_is_refused(tmp_path, output):
    folder = tmp_path / "project"
    folder.mkdir()
    config = yaml.safe_load(CONFIG.read_text())
    config["problem"]["name"] = "toy_problem:ToyProblem"
    config["backend"]["path"] = str(TOY / "replies.jsonl")
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    (folder / "notes").mkdir()
    (folder / "notes" / "todo.txt").write_text("mine")
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    with pytest.raises(RunDirError, match="no run wrote|is a file"):
        run_config(folder / "config.yaml", [f"run.output={output}", *SMALL], reporter=Reporter())
    after = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert after == before


def test_output_beside_the_users_config_alone_is_refused(tmp_path):
    """``run.output: .`` where the config being run is the folder's only file: it is the user's, not the run's."""
    folder = tmp_path / "project"
    folder.mkdir()
    config = yaml.safe_load(CONFIG.read_text())
    config["problem"]["name"] = "toy_problem:ToyProblem"
    config["backend"]["path"] = str(TOY / "replies.jsonl")
    config["run"]["output"] = "."
    (folder / "config.yaml").write_text("# my own notes stay\n" + yaml.safe_dump(config))
    before = (folder / "config.yaml").read_bytes()
    with pytest.raises(RunDirError, match=r"no run wrote \(config.yaml\)"):
        run_config(folder / "config.yaml", SMALL, reporter=Reporter())
    assert (folder / "config.yaml").read_bytes() == before
    assert sorted(p.name for p in folder.iterdir()) == ["config.yaml"]


def test_output_under_a_file_is_one_paragraph_and_leaves_nothing(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(RunDirError, match="Not a directory"):
        run(tmp_path / "f" / "run", "run.steps=1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_full_disk_during_a_checkpoint(tmp_path, monkeypatch):
    first = run(tmp_path / "r", "run.steps=1").run_dir
    real_fsync = os.fsync

    def full(fd):
        if "step_000001" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(store_mod.os, "fsync", full)
    with pytest.raises(RunDirError, match="No space left on device.*discover resume"):
        resume_run(first, ["run.steps=2"], reporter=Reporter())
    monkeypatch.setattr(store_mod.os, "fsync", real_fsync)
    assert [p.name for p in (first / "checkpoints").iterdir()] == ["step_000000"]  # no partial checkpoint
    assert resume_run(first, ["run.steps=2"], reporter=Reporter()).steps_done == 2


# -- resume is always possible and honest -----------------------------------------------------------
def test_resume_after_deleting_checkpoints_restarts_in_place(tmp_path):
    full = run(tmp_path / "a", "run.steps=2").run_dir
    out = run(tmp_path / "b", "run.steps=2").run_dir
    shutil.rmtree(out / "checkpoints")
    shutil.rmtree(out / "best")
    summary = resume_run(out, reporter=Reporter())
    assert summary.run_dir == out and summary.steps_done == 2
    keep = ("type", "step", "outcome", "score")
    assert [{k: e.get(k) for k in keep} for e in events(out)] == [{k: e.get(k) for k in keep} for e in events(full)]


def test_killed_during_the_first_checkpoint_restarts_in_place(tmp_path):
    out = run(tmp_path / "b", "run.steps=1").run_dir
    ckpt = out / "checkpoints" / "step_000000"
    ckpt.rename(out / "checkpoints" / ".step_000000.tmp")
    summary = run_config(CONFIG, [f"run.output={out}", *SMALL, "run.steps=1"], resume=True, reporter=Reporter())
    assert summary.run_dir == out and [e["step"] for e in events(out) if e["type"] == "step"] == [0]


def test_resume_with_another_config_is_refused_with_the_keys(tmp_path):
    out = run(tmp_path / "r", "run.steps=1").run_dir
    with pytest.raises(RunDirError, match=r"problem.size: 3 -> 4; run.rollouts: 2 -> 3"):
        resume_run(out, ["run.rollouts=3", "problem.size=4", "run.steps=2"], reporter=Reporter())
    summary = resume_run(out, ["run.steps=2"], reporter=Reporter())  # more steps: safe, and saved
    assert summary.steps_done == 2 and yaml.safe_load((out / "config.yaml").read_text())["run"]["steps"] == 2


def test_missing_events_below_the_checkpoint_are_reported(tmp_path, caplog):
    out = run(tmp_path / "r", "run.steps=2").run_dir
    lines = (out / "events.jsonl").read_text().splitlines()
    (out / "events.jsonl").write_text("\n".join(lines[1:]) + "\n")  # one rollout of step 0 lost
    resume_run(out, ["run.steps=3"], reporter=Reporter())
    gaps = [e for e in events(out) if e["type"] == "events_gap"]
    assert gaps == [{"type": "events_gap", "step": 1, "missing_steps": [0]}]
    assert "lacks the events of steps 0" in caplog.text


def test_best_is_written_at_the_checkpoint_from_its_record(tmp_path, monkeypatch):
    import toy_problem

    out = run(tmp_path / "r", "run.steps=1").run_dir
    loop_state = json.loads((out / "checkpoints" / "step_000000" / "loop.json").read_text())
    assert json.loads((out / "best" / "score.json").read_text())["state_id"] == loop_state["best"]["state_id"]

    # a step that finds a better state but never commits must not show in best/
    def perfect(self, program, state, sandbox):
        from discover_ttt.problem import Evaluation

        return Evaluation(score=0.0, construction=[0.3, 0.3, 0.3])

    monkeypatch.setattr(toy_problem.ToyProblem, "evaluate", perfect)
    monkeypatch.setattr(RunStore, "write_checkpoint", lambda self, *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(RunInterrupted, match="Interrupted during step 1.*up to 0.*discover resume"):
        resume_run(out, ["run.steps=2"], reporter=Reporter())
    assert json.loads((out / "best" / "score.json").read_text())["state_id"] == loop_state["best"]["state_id"]
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".best")) == []


# -- Ctrl-C ----------------------------------------------------------------------------------------------
def _slow_replies(path, mark: str):
    """Programs that name themselves ``mark`` (so that the test sees them run), then sleep."""
    body = (
        "import ctypes, time\n\n"
        "def run():\n"
        f"    ctypes.CDLL(None).prctl(15, {mark.encode()!r}, 0, 0, 0)\n"
        "    time.sleep(30)\n"
        "    return [0.3, 0.3, 0.3]\n"
    )
    path.write_text(json.dumps({"text": f"```python\n{body}```"}) + "\n")


# one press waits for the step's programs to stop (seconds): slow; two presses stop at once
@pytest.mark.parametrize("presses", [pytest.param(1, marks=pytest.mark.slow), 2])
def test_ctrl_c_stops_the_step_and_says_how_to_resume(tmp_path, discover_bin, toy_env, presses):
    replies = tmp_path / "slow.jsonl"
    mark = f"dsc-{uuid.uuid4().hex[:11]}"  # this test's programs (15 bytes), not another's still exiting
    _slow_replies(replies, mark)
    out = tmp_path / "r"
    cmd = [discover_bin, "run", str(CONFIG), "--set", f"run.output={out}", "--set", f"backend.path={replies}"]
    cmd += ["--set", "run.steps=3", "--set", "sandbox.timeout_s=60"]
    cmd += [x for s in SMALL for x in ("--set", s)]
    proc = subprocess.Popen(cmd, env=toy_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not marked_program_running(mark):  # a program of step 0 is sleeping
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.02)
    t0 = time.monotonic()
    for _ in range(presses):
        proc.send_signal(signal.SIGINT)
        time.sleep(0.05)
    rc = proc.wait(timeout=20)
    err = proc.stderr.read()
    assert time.monotonic() - t0 < 15  # not the 30 s the programs would sleep
    assert rc == 130 and "Traceback" not in err, err
    if presses == 1:
        assert "discover resume" in err and "no step was checkpointed" in err
