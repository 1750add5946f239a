"""The stages of benchmarks/gpu_check.sh that run Python: each prints its findings and exits
non-zero when its check fails, so that the shell script can run every stage and sum up.

    python benchmarks/gpu_check.py preflight          # versions; needs nothing but the standard library
    python benchmarks/gpu_check.py sandbox            # torch sees CUDA, a Triton kernel runs, in sandbox slots
    python benchmarks/gpu_check.py local MODEL.gguf   # SmolLM2 in bf16 on CUDA: one sample + one train step

Imports of torch, triton and the project happen inside the stages: preflight runs before
anything is installed and reports what is missing instead of failing on it.
"""

from __future__ import annotations

import importlib
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import time


def _version(module: str) -> str:
    try:
        return getattr(importlib.import_module(module), "__version__", "present")
    except Exception as e:  # noqa: BLE001 - a broken install is a finding, not a crash
        return f"MISSING ({type(e).__name__}: {str(e)[:120]})"


def _command(cmd: list[str]) -> str:
    if shutil.which(cmd[0]) is None:
        return f"MISSING ({cmd[0]} not on PATH)"
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"FAILED ({e})"
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else f"rc {out.returncode}"


def preflight() -> int:
    rows = [("python", f"{platform.python_version()} ({sys.executable})"), ("platform", platform.platform())]
    torch_row = _version("torch")
    rows.append(("torch", torch_row))
    if not torch_row.startswith("MISSING"):
        import torch

        rows.append(("torch CUDA build", str(torch.version.cuda)))
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            rows.append(
                (
                    "GPU 0",
                    f"{props.name}, compute capability {props.major}.{props.minor}, {props.total_memory / 2**30:.1f} GiB",
                )
            )
            rows.append(("GPUs visible", str(torch.cuda.device_count())))
        else:
            rows.append(("GPU", "NONE visible to torch (a CPU build of torch, or no driver)"))
    for module in ("transformers", "peft", "triton", "tokenizers", "safetensors", "gguf", "pydantic", "numpy"):
        rows.append((module, _version(module)))
    rows.append(("driver", _command(["nvidia-smi", "--query-gpu=driver_version,name", "--format=csv,noheader"])))
    rows.append(("compute mode", _command(["nvidia-smi", "--query-gpu=compute_mode", "--format=csv,noheader"])))
    rows.append(("C compiler", _command(["gcc", "--version"])))
    header = os.path.join(sysconfig.get_paths()["include"], "Python.h")
    rows.append(("Python.h", header if os.path.exists(header) else f"MISSING ({header})"))
    rows.append(("LD_LIBRARY_PATH", os.environ.get("LD_LIBRARY_PATH", "(unset)")))
    rows.append(("/dev/nvidia*", " ".join(sorted(p for p in os.listdir("/dev") if p.startswith("nvidia"))) or "none"))
    try:
        from discover_ttt.sandbox import gpu

        rows.append(("libcuda via LD_LIBRARY_PATH", " ".join(gpu.cuda_library_dirs()) or "none"))
        rows.append(("libcuda in ld.so.cache", str(gpu.libcuda_on_system_path())))
        problems = gpu.host_problems(("triton",))
        rows.append(("sandbox GPU host problems", str(len(problems))))
    except ImportError as e:
        problems = []
        rows.append(("discover_ttt", f"MISSING ({e}); install it first"))
    width = max(len(a) for a, _ in rows)
    for a, b in rows:
        print(f"{a:<{width}}  {b}")
    for p in problems:
        print(f"  - {p}")
    return 0


PROBE = """
import os, torch
def run():
    ok = torch.cuda.is_available()
    return {"cuda": ok, "devices": torch.cuda.device_count() if ok else 0,
            "name": torch.cuda.get_device_name(0) if ok else None,
            "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "LD_LIBRARY_PATH": os.environ.get("LD_LIBRARY_PATH")}
"""

TRITON_ADD = """
import torch, triton, triton.language as tl

@triton.jit
def add(x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(out_ptr + offs, tl.load(x_ptr + offs, mask=mask) + tl.load(y_ptr + offs, mask=mask), mask=mask)

def run():
    import time
    x = torch.arange(4096, device="cuda", dtype=torch.float32)
    out = torch.empty_like(x)
    t = time.perf_counter()
    add[(4,)](x, x, out, x.numel(), BLOCK=1024)
    torch.cuda.synchronize()
    first = time.perf_counter() - t
    return {"ok": bool(torch.equal(out, 2 * x)), "first_launch_s": round(first, 3)}
"""


def sandbox_stage() -> int:
    from discover_ttt.sandbox import Sandbox

    failed = 0
    for isolation in ("auto", "none"):
        with Sandbox(
            timeout_s=120,
            memory_mb=16384,
            isolation=isolation,
            gpus=[0],
            preload=("torch", "triton"),
            memory_limit="rss",
        ) as sb:
            print(f"sandbox isolation {isolation!r} -> {sb.isolation}")
            r = sb.run(PROBE)
            print(f"  torch in a slot: {r.value if r.ok else (r.kind, r.error, r.stderr[-500:])}")
            failed += not (r.ok and r.value["cuda"])
            for k in range(2):  # each program has a fresh HOME, so each compiles Triton's launcher again
                t = time.perf_counter()
                r = sb.run(TRITON_ADD)
                seconds = time.perf_counter() - t
                shown = r.value if r.ok else (r.kind, r.error, r.stderr[-800:])
                print(f"  Triton kernel, program {k + 1}: {shown}; {seconds:.2f} s for the whole program")
                failed += not (r.ok and r.value["ok"])
        if sb.isolation == "none":
            break
    return int(failed > 0)


def local_stage(model: str) -> int:
    import torch

    from discover_ttt.backend import TrainItem
    from discover_ttt.launch.local.backend import LocalBackend
    from discover_ttt.launch.lora.params import LocalParams

    if not torch.cuda.is_available():
        print(f"no CUDA device visible to torch {torch.__version__}: see the preflight")
        return 1
    t = time.perf_counter()
    backend = LocalBackend(
        LocalParams(
            model=model,
            device="cuda",
            dtype="bfloat16",
            max_new_tokens=256,
            temperature=1.0,
            sample_batch_size=16,
            micro_batch_size=8,
            context_window=8192,
        )
    )
    print(f"model load {time.perf_counter() - t:.1f} s, dtype {backend.model.get_base_model().dtype}")
    prompt = [{"role": "user", "content": "Write a Python function that returns the n-th prime number."}]
    torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    group = backend.sample([prompt], 16)[0]
    sample_s = time.perf_counter() - t
    tokens = sum(len(c.tokens) for c in group)
    print(f"sample: 16 rollouts, {tokens} tokens in {sample_s:.1f} s = {tokens / sample_s:.0f} tok/s")
    peak_sample = torch.cuda.max_memory_allocated() / 2**30
    torch.cuda.reset_peak_memory_stats()
    advantages = [1.0 if k % 2 == 0 else -1.0 for k in range(len(group))]
    t = time.perf_counter()
    metrics = backend.train([TrainItem(c, a) for c, a in zip(group, advantages, strict=True)])
    train_s = time.perf_counter() - t
    peak_train = torch.cuda.max_memory_allocated() / 2**30
    print(f"train step: {train_s:.2f} s = {tokens / train_s:.0f} tok/s; loss {metrics['loss']:.3f}")
    # sampler and learner are the same bf16 model: the ratio is 1 up to bf16 rounding
    print(
        f"ratio_mean {metrics['ratio_mean']:.4f}, ratio_max {metrics['ratio_max']:.4f}, gap {metrics['logprob_gap']:.4f}"
    )
    print(f"peak GPU memory: sampling {peak_sample:.2f} GiB, train step {peak_train:.2f} GiB")
    finite = all(bool(torch.isfinite(p).all()) for p in backend.trainer.trainable)
    ok = finite and abs(metrics["ratio_mean"] - 1.0) < 0.05 and tokens > 0
    print("local backend on CUDA:", "OK" if ok else "FAILED (non-finite adapter or ratio far from 1)")
    return int(not ok)


def main() -> int:
    stage = sys.argv[1] if len(sys.argv) > 1 else ""
    if stage == "preflight":
        return preflight()
    if stage == "sandbox":
        return sandbox_stage()
    if stage == "local" and len(sys.argv) == 3:
        return local_stage(sys.argv[2])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
