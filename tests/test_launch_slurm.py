"""launch/slurm/discover_ray.sbatch on a one-node "allocation" made of stand-ins for srun and scontrol:
it starts a Ray head, waits for it, runs ``discover run`` on the Ray executor and stops Ray again."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / "tests" / "toy"
SCRIPT = ROOT / "launch" / "slurm" / "discover_ray.sbatch"

# srun without SLURM: drop its options (and -w's value), run the command here
FAKE_SRUN = """#!/usr/bin/env bash
while [ $# -gt 0 ]; do
  case "$1" in
    -w) shift 2 ;;
    -*) shift ;;
    *) break ;;
  esac
done
exec "$@"
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_sbatch_template_runs_discover_on_ray(tmp_path, toy_env):
    pytest.importorskip("ray")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text(FAKE_SRUN)
    (bin_dir / "scontrol").write_text("#!/usr/bin/env bash\necho localhost\n")
    for tool in ("srun", "scontrol"):
        (bin_dir / tool).chmod(0o755)
    ray_tmp = tempfile.mkdtemp(prefix="dr-", dir="/tmp")  # short: Ray's socket paths must fit
    env = {
        **toy_env,
        "PATH": f"{bin_dir}{os.pathsep}{toy_env['PATH']}",
        "SLURM_JOB_NODELIST": "localhost",
        "DISCOVER_VENV": str(Path(sys.executable).parent.parent),
        "RAY_PORT": str(_free_port()),
        "RAY_TMPDIR": ray_tmp,  # this test's Ray leaves no address behind for other ray.init() calls
        "HEAD_CPUS": "2",
    }
    out = tmp_path / "run"
    sets = [f"run.output={out}", f"backend.path={TOY / 'replies.jsonl'}", "sandbox.isolation=none", "run.steps=1"]
    cmd = ["bash", str(SCRIPT), str(TOY / "config.yaml"), *[x for s in sets for x in ("--set", s)]]
    try:
        done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=400)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Ray head on localhost" in done.stdout
    saved = (out / "config.yaml").read_text()
    assert "executor: ray" in saved
    rollouts = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()]
    assert sum(e["type"] == "rollout" for e in rollouts) == 2 * 4
