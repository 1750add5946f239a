"""The cache shims of launch/lora/compat.py under a real transformers release from vLLM 0.33's
window (5.16-5.20, whose models take ``past_key_values``, not the ``cache`` keyword of the release
the other tests run): that release is installed on its own into a cached folder (one download,
~12 MB, then reused) and put first on the path of a fresh interpreter, which runs the shared-prefix
forward, the local decode loop and one train step on the tiny random model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

RELEASE = "5.20.2"  # the newest release vLLM 0.33 accepts
CACHE = Path(os.environ.get("DISCOVER_TRANSFORMERS_CACHE", Path(tempfile.gettempdir()) / "discover-transformers"))

SCRIPT = r"""
import json, sys, torch, transformers
from transformers import LlamaModel
from discover_ttt.backend import TrainItem
from discover_ttt.launch.local.backend import LocalBackend
from discover_ttt.launch.lora import compat, objective
from discover_ttt.launch.lora.params import LocalParams

out = {"version": transformers.__version__, "file": transformers.__file__,
       "keyword": compat._cache_keyword(LlamaModel)}
b = LocalBackend(LocalParams(model="tiny-random", device="cpu", max_new_tokens=12, seed=3))
prompt, completions = [5, 6, 7, 8, 9], [[20, 21, 22], [30], [40, 41, 42, 43, 44]]
with torch.no_grad():
    shared = objective.SharedPrefix(b.model, prompt).logprobs(completions, 0.8)
    whole = objective.completion_logprobs(b.model, [(prompt, c) for c in completions], 0.8)
out["prefix_gap"] = max(float((s - w).abs().max()) for s, w in zip(shared, whole))
group = b.sample([[{"role": "user", "content": "hi"}]], 4)[0]
# the decode loop's log-probs against a full forward of what it sampled
rescored = b.logprobs(group)
out["sample_gap"] = max(abs(a - float(x)) for c, r in zip(group, rescored) for a, x in zip(c.logprobs, r))
out["sampled"] = sum(len(c.tokens) for c in group)
m = b.train([TrainItem(c, a) for c, a in zip(group, [1.0, -1.0, 0.5, -0.5])])
out["ratio_mean"], out["loss"] = m["ratio_mean"], m["loss"]
print(json.dumps(out))
"""


def release_folder() -> Path:
    folder = CACHE / RELEASE
    if not (folder / "transformers" / "__init__.py").exists():
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "-q",
                "--no-deps",
                "--target",
                str(folder),
                f"transformers=={RELEASE}",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            pytest.skip(f"transformers {RELEASE} could not be installed (no network?): {done.stderr[-300:]}")
    return folder


def test_the_past_key_values_branch_runs_with_a_real_release_of_vllms_window():
    folder = release_folder()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["version"] == RELEASE and out["file"].startswith(str(folder))
    assert out["keyword"] == "past_key_values"  # the branch the release the other tests run never takes
    assert out["prefix_gap"] < 1e-4  # the prompt's cache, passed as past_key_values, gives the full forward's log-probs
    assert out["sampled"] > 0 and out["sample_gap"] < 1e-3
    assert out["ratio_mean"] == pytest.approx(1.0, abs=1e-3)
