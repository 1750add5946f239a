"""A run killed with SIGKILL mid-step resumes to the same events as an uninterrupted run."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

TOY = Path(__file__).parent / "toy"
KEEP = ("type", "step", "group", "index", "parent_id", "child_id", "text", "outcome", "score", "reward", "advantage")


def slow_replies(path):
    # every program sleeps a little so that the kill lands inside a step
    body = "import time\n\ndef run():\n    time.sleep(0.3)\n    return [p + 0.5 * (0.3 - p) for p in parent]\n"
    replies = [f"```python\n{body}```", "no code", f"```python\n{body.replace('0.5 *', '0.8 *')}```"]
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in replies))


def fields(run_dir):
    lines = (Path(run_dir) / "events.jsonl").read_text().splitlines()
    return [{k: e.get(k) for k in KEEP} for e in map(json.loads, lines)]


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


def test_kill_and_resume(tmp_path, discover_bin, toy_env):
    replies = tmp_path / "replies.jsonl"
    slow_replies(replies)

    full = start(discover_bin, toy_env, tmp_path / "full", replies)
    assert full.wait(timeout=300) == 0, full.stderr.read()

    out = tmp_path / "killed"
    proc = start(discover_bin, toy_env, out, replies)
    deadline = time.time() + 120
    while not (out / "checkpoints" / "step_000001" / "loop.json").exists():
        assert time.time() < deadline and proc.poll() is None, "run ended before its second checkpoint"
        time.sleep(0.05)
    time.sleep(0.4)  # inside step 2
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "checkpoints" / "step_000004").exists()

    resumed = subprocess.run(
        [discover_bin, "resume", str(out)], env=toy_env, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr
    assert fields(out) == fields(tmp_path / "full")
