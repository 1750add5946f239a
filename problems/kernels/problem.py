"""TriMul: write the fastest correct ``custom_kernel`` for AlphaFold3's triangle multiplicative update.

score = runtime in µs (geometric mean over the benchmark shapes of the mean time
per call), value = -runtime, reward = reward_scale / runtime. A program is
valid only when its output matches the reference (rtol = atol = 2e-2, same
NaN/±inf) on every test case and on every timed call.

Two tiers (``device``): ``cpu`` runs PyTorch on one core on shrunk shapes (what
CI and the CPU default run); ``cuda`` runs the GPU MODE task's shapes on one GPU
and requires a Triton kernel. The checker (``harness.py``) runs inside the
sandbox and keeps the reference outputs and, on the CPU tier, the clock in a
process the program cannot reach.
"""

from __future__ import annotations

import atexit
import threading
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from discover_ttt.problem import Evaluation, Invalid, Problem, Program, ProgramLimits, Verification
from discover_ttt.state import State

from . import prompts
from .shapes import SHAPES, describe

_HERE = Path(__file__).parent
REFERENCE_SOURCE = (_HERE / "reference.py").read_text()
#: the program the sandbox runs: the reference, then the checker; the model's code is an argument
HARNESS_SOURCE = REFERENCE_SOURCE + "\n\n" + (_HERE / "harness.py").read_text()
#: with ``starter_code: true`` the seeds carry this program as their "last code": the reference
#: implementation behind the contract, a working example for small models to edit
_REF_KERNEL = REFERENCE_SOURCE[
    REFERENCE_SOURCE.index("def ref_kernel(") : REFERENCE_SOURCE.index("\n\n\ndef generate_input(")
]
STARTER = (
    "import torch\nimport torch.nn.functional as F\n\n\n"
    + _REF_KERNEL
    + "\n\n\ndef custom_kernel(data):\n    return ref_kernel(data)\n"
)
#: the failure value of the reference (a seed's runtime in µs)
NO_KERNEL_US = 1e6
#: per tier: (stderr/mean to stop at, timed seconds per benchmark, wall seconds per benchmark, sandbox timeout)
_TIMING = {"cpu": (0.01, 2.0, 10.0, 240.0), "cuda": (0.001, 30.0, 120.0, 1500.0)}


class TriMulProblem(Problem):
    """Make TriMul fast: ``custom_kernel(data) -> [B, N, N, C]`` float32, checked against the reference."""

    name = "trimul"
    maximize = False
    entry = "custom_kernel"
    worst_score = NO_KERNEL_US

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")

        device: Literal["cpu", "cuda"] = Field("cpu", description="cpu: PyTorch on one core; cuda: Triton on a GPU")
        shapes: Literal["spec", "cpu", "tiny"] | None = Field(
            None, description="the cases checked and timed (default: spec on cuda, cpu on cpu)"
        )
        reward_scale: float = Field(3000.0, gt=0, description="reward = reward_scale / runtime_us")
        target_us: float | None = Field(None, gt=0, description="the runtime the prompt names as the goal")
        rtol: float = Field(2e-2, ge=0)
        atol: float = Field(2e-2, ge=0)
        max_repeats: int = Field(100, ge=1, description="timed runs per benchmark at most")
        rel_error: float | None = Field(None, gt=0, description="stop once stderr/mean is below this (≥ 3 runs)")
        max_time_s: float | None = Field(None, gt=0, description="stop once the timed runs add up to this")
        wall_timeout_s: float | None = Field(None, gt=0, description="stop a benchmark after this wall time")
        call_timeout_s: float = Field(120.0, gt=0, description="one call (first calls compile) may take this long")
        load_timeout_s: float = Field(120.0, gt=0, description="importing the program may take this long")
        timeout_s: float | None = Field(None, gt=0, description="the sandbox limit for one whole evaluation")
        threads: int = Field(1, ge=1, description="torch threads per process, and the CPU cores the sandbox gives")
        starter_code: bool = Field(False, description="seeds carry the reference as a working example program")
        verify_memory_mb: int = Field(8192, ge=256, description="memory of the sandbox that re-checks a best kernel")
        verify_gpu: int | str = Field(0, description="cuda: the GPU that re-checks run on (keep it off the model's)")

    def __init__(self, params: Params | None = None) -> None:
        super().__init__(params if params is not None else self.Params())
        p = self.params
        self.shapes = p.shapes or ("spec" if p.device == "cuda" else "cpu")
        rel_error, max_time_s, wall_timeout_s, timeout_s = _TIMING[p.device]
        self.spec = {
            "device": p.device,
            "tests": SHAPES[self.shapes][0],
            "benchmarks": SHAPES[self.shapes][1],
            "rtol": p.rtol,
            "atol": p.atol,
            "max_repeats": p.max_repeats,
            "rel_error": p.rel_error or rel_error,
            "max_time_s": p.max_time_s or max_time_s,
            "wall_timeout_s": p.wall_timeout_s or wall_timeout_s,
            "call_timeout_s": p.call_timeout_s,
            "load_timeout_s": p.load_timeout_s,
            "threads": p.threads,
        }
        self.timeout_s = p.timeout_s or timeout_s
        if p.device == "cuda":  # one kernel per GPU at a time (read by executors that place programs)
            self.program_resources = {"num_gpus": 1}
        #: the sandbox ``verify`` uses; one slot of its own is built on first use unless one is set here
        self.verify_sandbox = None
        self._verify_lock = threading.Lock()

    # -- states ---------------------------------------------------------------
    def initial_states(self, rng: np.random.Generator, k: int) -> list[State]:
        """Empty code (or the reference as a starter) at runtime 1e6 µs, as the reference's seeds."""
        code = STARTER if self.params.starter_code else ""
        return [State(value=-NO_KERNEL_US, score=NO_KERNEL_US, construction=None, code=code) for _ in range(k)]

    # -- model I/O --------------------------------------------------------------
    def prompt(self, state: State) -> list[dict[str, str]]:
        p = self.params
        parts = [self._statement().strip()]
        context = ["## Current state", "You are iteratively optimising the runtime of custom_kernel."]
        after = state.score if state.score is not None else (None if state.value is None else -state.value)
        if after is not None and after >= NO_KERNEL_US:
            after = None  # a seed: no kernel has been timed yet
        if state.code:
            context.append(prompts.LAST_CODE.format(code=state.code.strip("\n")))
            parent = state.parent_values[0] if state.parent_values else None
            before = None if parent is None else -parent
            if before is not None and before < NO_KERNEL_US and after is not None:
                context.append(prompts.BEFORE_AFTER.format(before=f"{before:.1f}", after=f"{after:.1f}"))
            elif after is not None:
                context.append(prompts.CURRENT.format(after=f"{after:.1f}"))
        elif after is not None:
            context.append(prompts.CURRENT.format(after=f"{after:.1f}"))
        if after is not None and p.target_us is not None:
            context.append(prompts.TARGET.format(target=f"{p.target_us:g}", gap=f"{after - p.target_us:.1f}"))
        if state.stdout:
            context.append(prompts.OUTPUT.format(stdout=state.stdout[-500:]))
        context.append(prompts.DIFFERENT if state.code else prompts.NO_CODE)
        parts += ["\n\n".join(context), prompts.ANSWER]
        return [{"role": "user", "content": "\n\n".join(parts)}]

    def _statement(self) -> str:
        p = self.params
        tests, benchmarks = SHAPES[self.shapes]
        shapes = (
            f"{len(tests)} test cases (N from {min(c['seqlen'] for c in tests)} to {max(c['seqlen'] for c in tests)}, "
            f"B {min(c['bs'] for c in tests)}-{max(c['bs'] for c in tests)}, "
            f"C in {{{', '.join(str(c) for c in sorted({c['dim'] for c in tests}))}}}), then the timed benchmarks "
            + "; ".join(describe(c) for c in benchmarks)
        )
        if p.device == "cuda":
            rules = prompts.CUDA_RULES
        else:
            rules = prompts.CPU_RULES.format(torch_version=_torch_version())
        return prompts.STATEMENT.format(
            device_name="GPU" if p.device == "cuda" else "CPU",
            device=p.device,
            reference=REFERENCE_SOURCE.strip(),
            tier_rules=rules,
            shapes=shapes,
            hidden=tests[0]["hiddendim"],
            scale=p.reward_scale,
        )

    def parse(self, text: str) -> Program | Invalid:
        """The last python block, defining custom_kernel; on the CUDA tier it must hold a Triton kernel."""
        program = super().parse(text)
        if isinstance(program, Invalid) or self.params.device != "cuda":
            return program
        if "@triton.jit" not in program.source:
            return Invalid("syntax_error", "the CUDA tier requires a Triton kernel: no @triton.jit in the program")
        if "identity" in program.source:  # the task's rule: no identity shortcuts
            return Invalid("syntax_error", "the program contains the word 'identity', which this task forbids")
        return program

    # -- scoring ----------------------------------------------------------------
    def program_limits(self) -> ProgramLimits:
        """``timeout_s`` for one whole check (load, tests, timing) on ``threads`` cores.

        No margin: the prompt states no budget (the harness keeps its own deadlines inside).
        """
        return ProgramLimits(self.timeout_s, self.params.threads, margin_s=0.0, keys=("timeout_s", "threads"))

    def evaluate(self, program: Program, state: State, sandbox: Any) -> Evaluation | Invalid:
        return self._check(program.source, sandbox)

    def _check(self, source: str, sandbox: Any) -> Evaluation | Invalid:
        result = sandbox.run(
            HARNESS_SOURCE,
            entry="check_kernel",
            kwargs={"submission": source, "spec": self.spec},
            timeout_s=self.program_limits().timeout_s,
        )
        if not result.ok:
            return Invalid.from_sandbox(result)
        report = result.value
        if not isinstance(report, dict) or "valid" not in report:
            return Invalid("bad_output", "the checker returned no report", stdout=result.stdout)
        if not report["valid"]:
            return Invalid("invalid_construction", report["reason"], stdout=result.stdout)
        benchmarks = [
            {"name": describe(b["case"]), **{k: b[k] for k in ("mean_us", "stderr_us", "runs")}}
            for b in report["benchmarks"]
        ]
        runtime = float(report["runtime_us"])
        construction = {
            "device": self.params.device,
            "shapes": self.shapes,
            "runtime_us": runtime,
            "benchmarks": benchmarks,
            "code": source,
        }
        metrics = {"tests_passed": report["tests"], **{f"us[{b['name']}]": b["mean_us"] for b in benchmarks}}
        return Evaluation(score=runtime, construction=construction, stdout=result.stdout, metrics=metrics, code=source)

    def reward(self, score: float) -> float:
        return self.params.reward_scale / max(float(score), 1e-3)

    def verify(self, construction: Any) -> Verification:
        """Check and time the saved kernel again, from scratch, in a sandbox of its own."""
        if not isinstance(construction, dict) or not isinstance(construction.get("code"), str):
            return Verification(valid=False, score=None, reason="a TriMul construction is a dict with the 'code'")
        if construction.get("device", self.params.device) != self.params.device:
            return Verification(
                valid=False, score=None, reason=f"this kernel was timed on {construction['device']}, not here"
            )
        outcome = self._check(construction["code"], self._verifier())
        if isinstance(outcome, Invalid):
            return Verification(valid=False, score=None, reason=outcome.reason)
        return Verification(valid=True, score=outcome.score, metrics=outcome.metrics)

    def _verifier(self):
        """One sandbox slot for re-checks, started on first use (it imports torch once)."""
        from discover_ttt.sandbox import Sandbox

        with self._verify_lock:
            if self.verify_sandbox is None:
                cuda = self.params.device == "cuda"
                self.verify_sandbox = Sandbox(
                    timeout_s=self.program_limits().timeout_s,
                    memory_mb=self.params.verify_memory_mb,
                    cpus=self.program_limits().cpus,
                    workers=1,
                    preload=("numpy", "torch", "triton") if cuda else ("numpy", "torch"),
                    memory_limit="rss" if cuda else "address_space",
                    gpus=[self.params.verify_gpu] if cuda else None,
                )
                atexit.register(self.verify_sandbox.close)
            return self.verify_sandbox

    def close(self) -> None:
        if self.verify_sandbox is not None:
            self.verify_sandbox.close()
            self.verify_sandbox = None


def _torch_version() -> str:
    try:
        from importlib.metadata import version

        return version("torch")
    except Exception:  # noqa: BLE001 - only a line of the prompt
        return "2"
