"""The TriMul problem on its CPU tier: the reference passes, a faster kernel earns more, and every
cheat is rejected with a reason (wrong values or shape, NaN, cached outputs, patched timers or checker,
reading the reference). One sandbox and one evaluation of each program serve the whole module:
its fork server imports torch once."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import numpy as np
import pytest
import torch

from discover_ttt.components import build
from discover_ttt.parsing import last_code_block
from discover_ttt.plugins import get_plugins
from discover_ttt.problem import Evaluation, Invalid, Program

PROGRAMS = Path(__file__).parent / "data" / "programs" / "trimul"
TINY = {"shapes": "tiny", "max_repeats": 3}


def trimul(**params):
    return build(get_plugins().get("problems", "trimul").obj, params)


def reply(name: str) -> str:
    return (PROGRAMS / f"{name}.md").read_text()


@pytest.fixture(scope="module")
def sandbox():
    from discover_ttt.sandbox import Sandbox

    with Sandbox(timeout_s=120, memory_mb=4096, workers=2, preload=("numpy", "torch")) as sb:
        yield sb


class Borrowed:
    """The module's sandbox, lent to a run that would close it at its end."""

    def __init__(self, sandbox):
        self.run, self.map, self.workers = sandbox.run, sandbox.map, sandbox.workers

    def close(self):
        pass


@pytest.fixture(scope="module")
def outcomes(sandbox):
    problem = trimul(**TINY)
    seed = problem.initial_states(np.random.default_rng(0), 1)[0]
    names = sorted(p.stem for p in PROGRAMS.glob("*.md") if p.stem != "12_no_code")
    programs = [problem.parse(reply(n)) for n in names]
    assert not any(isinstance(p, Invalid) for p in programs)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda p: problem.evaluate(p, seed, sandbox), programs))
    return problem, {n.split("_", 1)[1]: r for n, r in zip(names, results, strict=True)}


def test_reference_passes_its_own_check(outcomes):
    problem, out = outcomes
    ref = out["reference"]
    assert isinstance(ref, Evaluation), ref
    c = ref.construction
    assert c["device"] == "cpu" and c["shapes"] == "tiny" and "def custom_kernel" in c["code"]
    assert [b["runs"] for b in c["benchmarks"]] == [3, 3] and ref.metrics["tests_passed"] == 4
    means = [b["mean_us"] for b in c["benchmarks"]]
    assert ref.score == pytest.approx(float(np.exp(np.mean(np.log(means)))))  # geometric mean
    assert problem.value(ref.score) == -ref.score and problem.reward(ref.score) == pytest.approx(3000 / ref.score)


def test_faster_correct_kernel_is_valid_and_earns_more(outcomes):
    problem, out = outcomes
    assert isinstance(out["fused"], Evaluation), out["fused"]
    slow, ref = out["slow"], out["reference"]
    assert isinstance(slow, Evaluation), slow
    # the slow kernel pauses 20 ms per call, far above the tiny shapes' timing noise
    assert slow.score > 20_000 and slow.score > 2 * ref.score
    assert problem.reward(ref.score) > problem.reward(slow.score)


@pytest.mark.parametrize(
    "name, words",
    [
        ("wrong_values", "wrong output on test 1 of 4"),
        ("wrong_shape", "the output has shape (1, 8, 8, 15), expected (1, 8, 8, 16)"),
        ("nan", "NaN disagrees with the reference"),
        ("cached", "wrong output on benchmark 1 of 2"),  # right once per shape, stale on fresh inputs
        ("patch_time", "replaced time.perf_counter"),
        ("patch_cuda_event", "replaced torch.cuda.Event"),
        ("patch_checker", "wrong output on test 1 of 4"),  # its copy of compare is not the one that checks
    ],
)
def test_cheats_are_rejected_with_a_reason(outcomes, name, words):
    _, out = outcomes
    outcome = out[name]
    assert isinstance(outcome, Invalid) and outcome.kind == "invalid_construction", outcome
    assert words in outcome.reason


def test_reference_outputs_are_out_of_reach(outcomes):
    _, out = outcomes
    outcome = out["read_reference"]
    assert isinstance(outcome, Invalid), outcome
    # the checker's memory cannot be read; the only tensor of the output's shape in the kernel's process
    # is the output buffer, which holds NaN until the kernel writes its answer
    assert "checker memory: PermissionError" in outcome.stdout
    assert "NaN disagrees" in outcome.reason or "no reference output found" in outcome.reason


def test_prompt_states_the_contract_and_the_tier():
    problem = trimul(starter_code=True)
    seed = problem.initial_states(np.random.default_rng(0), 2)[0]
    assert seed.value == -1e6 and "def custom_kernel" in seed.code
    text = problem.prompt(seed)[0]["content"]
    assert "def ref_kernel" in text and "custom_kernel(data)" in text and "one CPU core" in text
    assert "N=128 B=1 C=96 H=32 normal unmasked" in text and "Runtime before" not in text
    assert trimul().initial_states(np.random.default_rng(0), 1)[0].code == ""


def test_prompt_of_a_child_whose_parent_has_no_value():
    # a parent without a value (a state another sampler or a warm start supplied) has no runtime to compare
    problem = trimul()
    parent = problem.initial_states(np.random.default_rng(0), 1)[0]
    parent.value = None
    child = parent.child(value=-900.0, score=900.0, code="def custom_kernel(data): ...")
    text = problem.prompt(child)[0]["content"]
    assert "900.0" in text and "Runtime before" not in text


def test_cuda_tier_requires_a_triton_kernel():
    problem = trimul(device="cuda")
    assert problem.program_resources == {"num_gpus": 1} and trimul().program_resources == {}
    assert problem.spec["benchmarks"][0]["seqlen"] == 256 and len(problem.spec["tests"]) == 18
    plain = problem.parse(reply("01_reference"))
    assert isinstance(plain, Invalid) and "@triton.jit" in plain.reason
    triton_src = "```python\nimport triton\n\n@triton.jit\ndef k(x):\n    pass\n\ndef custom_kernel(data):\n    return data[0]\n```"
    assert not isinstance(problem.parse(triton_src), Invalid)
    cheat = problem.parse(triton_src.replace("return data[0]", "return data[0]  # identity"))
    assert isinstance(cheat, Invalid) and "identity" in cheat.reason
    assert "Triton" in problem.prompt(problem.initial_states(np.random.default_rng(0), 1)[0])[0]["content"]


def test_compare_rule():
    from discover_ttt.problems.kernels.harness import compare

    ref = torch.tensor([1.0, -2.0, float("inf"), float("nan")])
    assert compare(ref.clone(), ref, 2e-2, 2e-2) is None
    assert compare(ref + torch.tensor([0.039, -0.05, 0, 0]), ref, 2e-2, 2e-2) is None  # within 0.02 + 0.02|ref|
    assert "1 of 4 values" in compare(ref + torch.tensor([0.041, 0, 0, 0]), ref, 2e-2, 2e-2)
    assert "±inf" in compare(torch.tensor([1.0, -2.0, 5.0, float("nan")]), ref, 2e-2, 2e-2)
    assert "NaN" in compare(torch.tensor([1.0, float("nan"), float("inf"), float("nan")]), ref, 2e-2, 2e-2)
    assert "shape" in compare(ref[:3], ref, 2e-2, 2e-2)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: the CUDA tier runs for real below")
def test_cuda_tier_without_a_gpu_says_so(sandbox):
    problem = trimul(device="cuda", shapes="tiny")
    seed = problem.initial_states(np.random.default_rng(0), 1)[0]
    program = Program((Path(__file__).parents[1] / "benchmarks" / "kernels_triton.py").read_text(), "custom_kernel")
    outcome = problem.evaluate(program, seed, sandbox)
    assert isinstance(outcome, Invalid) and "needs a GPU inside the sandbox" in outcome.reason, outcome


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_tier_times_a_triton_kernel():
    pytest.importorskip("triton", reason="the kernels-cuda extra (triton) is not installed")
    from discover_ttt.sandbox import Sandbox

    problem = trimul(device="cuda", shapes="tiny", max_repeats=5)
    seed = problem.initial_states(np.random.default_rng(0), 1)[0]
    source = (Path(__file__).parents[1] / "benchmarks" / "kernels_triton.py").read_text()
    program = problem.parse(f"```python\n{source}\n```")
    assert not isinstance(program, Invalid), program
    with Sandbox(
        timeout_s=600, memory_mb=32768, workers=1, gpus=[0], memory_limit="rss", preload=("numpy", "torch", "triton")
    ) as sandbox:
        good = problem.evaluate(program, seed, sandbox)
        patcher = Program(last_code_block(reply("09_patch_cuda_event")), entry="custom_kernel")
        bad = problem.evaluate(patcher, seed, sandbox)
    assert isinstance(good, Evaluation), good
    assert isinstance(bad, Invalid) and "replaced torch.cuda" in bad.reason


def test_replay_run_on_trimul(tmp_path, sandbox):
    """A whole step with the replay backend: the valid kernel is archived and re-verified, failures recorded."""
    import json
    import shutil

    from discover_ttt.config import load_config
    from discover_ttt.loop import Discovery
    from discover_ttt.progress import Reporter

    replies = tmp_path / "replies"
    replies.mkdir()
    for name in ("01_reference", "04_wrong_values", "06_nan", "12_no_code"):
        shutil.copy(PROGRAMS / f"{name}.md", replies)
    raw = {
        "problem": {"name": "trimul", **TINY, "timeout_s": 120},
        "backend": {"name": "replay", "path": str(replies)},
        "sandbox": {"memory_mb": 4096, "workers": 2, "preload": ["numpy", "torch"]},
        "run": {"steps": 1, "groups": 1, "rollouts": 4, "seed": 0, "output": str(tmp_path / "run")},
        "log": {"progress": "none"},
    }
    disc = Discovery(load_config(tmp_path, raw=raw), reporter=Reporter())
    disc.sandbox = disc.problem.verify_sandbox = Borrowed(sandbox)  # the module's, torch already imported
    disc.start()
    summary = disc.run()
    events = [json.loads(line) for line in (summary.run_dir / "events.jsonl").read_text().splitlines()]
    rollouts = [e for e in events if e["type"] == "rollout"]
    assert sorted(e["outcome"] for e in rollouts) == [
        "invalid_construction",
        "invalid_construction",
        "no_code",
        "valid",
    ]
    valid = next(e for e in rollouts if e["outcome"] == "valid")
    assert valid["reward"] == pytest.approx(3000 / valid["score"]) and valid["archived"]
    best = json.loads((summary.run_dir / "best" / "score.json").read_text())
    assert best["score"] == pytest.approx(valid["score"])
    assert best["verified"]["valid"], best  # timed again from scratch in the problem's own sandbox


def test_hand_written_triton_kernel_matches_in_the_interpreter():
    """benchmarks/kernels_triton.py (what kernels_gpu.sh times) is correct, run by Triton's CPU interpreter."""
    pytest.importorskip("triton", reason="the kernels-cuda extra (triton) is not installed")
    import os
    import subprocess
    import sys

    script = """
import sys
sys.path.insert(0, "benchmarks")
from discover_ttt.problems.kernels.harness import compare
from discover_ttt.problems.kernels.reference import generate_input, ref_kernel
import kernels_triton
for case in [dict(seqlen=8, bs=2, dim=16, hiddendim=16, seed=1, nomask=False, distribution="normal"),
             dict(seqlen=12, bs=1, dim=32, hiddendim=32, seed=3, nomask=True, distribution="cauchy")]:
    data = generate_input(**case)
    print(compare(kernels_triton.custom_kernel(data), ref_kernel(data), 2e-2, 2e-2))
"""
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    root = Path(__file__).parents[1]
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["None", "None"]


def test_starter_program_is_a_valid_attempt(sandbox):
    problem = trimul(starter_code=True, **TINY)
    seed = problem.initial_states(np.random.default_rng(0), 1)[0]
    outcome = problem.evaluate(Program(seed.code, entry="custom_kernel"), seed, sandbox)
    assert isinstance(outcome, Evaluation), outcome
    assert outcome.score < seed.score
