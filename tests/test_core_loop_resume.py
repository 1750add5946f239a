"""A run killed with SIGKILL mid-step resumes to the same events as an uninterrupted run."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

TOY = Path(__file__).parent / "toy"
KEEP = ("type", "step", "group", "index", "parent_id", "child_id", "text", "outcome", "score", "reward", "advantage")


MARK = "dsc-resume-mark"  # the name each program gives itself while it runs (15 bytes: a full comm)


def slow_replies(path):
    # every program names itself, then sleeps a little, so that the kill can be aimed inside a step
    body = (
        "import ctypes, time\n\n"
        "def run():\n"
        f"    ctypes.CDLL(None).prctl(15, {MARK.encode()!r}, 0, 0, 0)\n"
        "    time.sleep(0.3)\n"
        "    return [p + 0.5 * (0.3 - p) for p in parent]\n"
    )
    replies = [f"```python\n{body}```", "no code", f"```python\n{body.replace('0.5 *', '0.8 *')}```"]
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in replies))


def fields(run_dir):
    lines = (Path(run_dir) / "events.jsonl").read_text().splitlines()
    return [{k: e.get(k) for k in KEEP} for e in map(json.loads, lines)]


def steps_done(run_dir):
    path = Path(run_dir) / "events.jsonl"
    if not path.exists():
        return 0
    return sum('"type":"step"' in line for line in path.read_text().splitlines())


def marked_program_running(mark: str = MARK) -> bool:
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() == mark:
                return True
        except OSError:
            continue
    return False


def start(discover_bin, env, out, replies, *extra):
    cmd = [
        discover_bin,
        "run",
        str(TOY / "config.yaml"),
        "--set",
        f"run.output={out}",
        "--set",
        f"backend.path={replies}",
    ]
    cmd += ["--set", "run.steps=5", "--set", "sandbox.isolation=none", *extra]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow  # three runs in subprocesses (~11 s); test_core_loop.py resumes one in-process cheaply
def test_kill_and_resume(tmp_path, discover_bin, toy_env):
    replies = tmp_path / "replies.jsonl"
    slow_replies(replies)

    full = start(discover_bin, toy_env, tmp_path / "full", replies)
    assert full.wait(timeout=300) == 0, full.stderr.read()

    out = tmp_path / "killed"
    proc = start(discover_bin, toy_env, out, replies)
    deadline = time.time() + 120
    # events.jsonl only grows (checkpoints may be pruned under a poll): wait for two finished steps ...
    while steps_done(out) < 2:
        assert time.time() < deadline and proc.poll() is None, "run ended before its second step"
        time.sleep(0.05)
    # ... then for a program of a later step to be running: the kill lands inside that step
    while not marked_program_running():
        assert time.time() < deadline and proc.poll() is None, "no program of step 3 started"
        time.sleep(0.01)
    done_at_kill = steps_done(out)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert steps_done(out) == done_at_kill < 5  # the step in flight left no step line behind
    last_checkpoint = max(int(p.name.split("_")[1]) for p in (out / "checkpoints").glob("step_*"))
    assert last_checkpoint == done_at_kill - 1

    resumed = subprocess.run(
        [discover_bin, "resume", str(out)], env=toy_env, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr
    assert fields(out) == fields(tmp_path / "full")
