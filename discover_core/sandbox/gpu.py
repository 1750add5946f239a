"""What GPU programs need from the host besides the device files, kept or checked when the
sandbox starts with ``gpus``.

The sandbox gives programs a scrubbed environment (nothing of the host's), which loses two
things CUDA programs find through the host:

* The driver library ``libcuda.so.1``. Usually the dynamic linker finds it through
  ``/etc/ld.so.cache``, which the sandbox keeps. In many containers it is found only through
  ``LD_LIBRARY_PATH`` (``/usr/local/nvidia/lib64``, a CUDA ``compat`` folder, …); without it
  torch sees no GPU and Triton cannot find ``libcuda``. The folders of the host's
  ``LD_LIBRARY_PATH`` that hold it are passed on, and bound read-only inside bubblewrap: those
  folders and nothing else of that variable.
* Triton compiles small C launchers when a program first runs a kernel, with the system's C
  compiler against ``Python.h``. Its cache lives under ``HOME``, and each program gets a fresh
  one, so every program compiles them again (seconds, once per program). The cache is not
  shared between programs on purpose: a shared writable cache would let one program leave
  compiled code that the next one (and its checker) loads. A missing compiler or header is
  reported at start-up.

Two host settings are reported too: ``/dev/nvidia-uvm`` is created by the driver only when the
host first uses CUDA (the sandbox binds the device files that exist when a slot starts), and a
GPU in exclusive-process compute mode admits one CUDA process, while a kernel problem's checker
and the candidate it times may be two.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import shutil
import subprocess
import sysconfig

#: the sandbox's PATH (runner._server_env): where Triton looks for a compiler inside it
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"
LIBCUDA = "libcuda.so.1"
_SYSTEM_LIB_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/lib64")


def cuda_library_dirs(ld_library_path: str | None = None) -> list[str]:
    """Absolute folders of ``LD_LIBRARY_PATH`` (the host's by default) that hold ``libcuda.so*``."""
    value = os.environ.get("LD_LIBRARY_PATH", "") if ld_library_path is None else ld_library_path
    dirs = [d for d in dict.fromkeys(value.split(os.pathsep)) if d and os.path.isabs(d)]
    return [d for d in dirs if glob.glob(os.path.join(glob.escape(d), "libcuda.so*"))]


def libcuda_on_system_path() -> bool:
    """The dynamic linker finds ``libcuda.so.1`` without ``LD_LIBRARY_PATH`` (ld.so.cache or a system folder)."""
    ldconfig = shutil.which("ldconfig", path="/sbin:/usr/sbin:/usr/bin:/bin")
    if ldconfig:
        try:
            listed = subprocess.run([ldconfig, "-p"], capture_output=True, text=True, timeout=10, env={}).stdout
        except (OSError, subprocess.TimeoutExpired):
            listed = ""
        if LIBCUDA in listed:
            return True
    return any(os.path.exists(os.path.join(d, LIBCUDA)) for d in _SYSTEM_LIB_DIRS)


def c_compiler() -> str | None:
    """The compiler Triton would pick inside the sandbox (it has no ``CC``): clang or gcc on its PATH."""
    for name in ("clang", "gcc", "cc"):
        found = shutil.which(name, path=SANDBOX_PATH)
        if found:
            return found
    return None


def python_header() -> str:
    return os.path.join(sysconfig.get_paths()["include"], "Python.h")


def exclusive_gpus() -> list[str]:
    """Indices of GPUs in an exclusive compute mode, as nvidia-smi reports them (none without it)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run(
            [smi, "--query-gpu=index,compute_mode", "--format=csv,noheader"], capture_output=True, text=True, timeout=20
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    rows = [line.split(",") for line in out.splitlines() if "," in line]
    return [i.strip() for i, mode in rows if "exclusive" in mode.lower()]


def host_problems(preload: tuple[str, ...] = (), dev: str = "/dev") -> list[str]:
    """One paragraph per thing this host lacks for GPU programs (empty when nothing is missing)."""
    problems = []
    if os.path.exists(os.path.join(dev, "nvidiactl")) and not os.path.exists(os.path.join(dev, "nvidia-uvm")):
        problems.append(
            f"{dev}/nvidia-uvm does not exist yet (the driver creates it when the host first uses CUDA), and "
            "programs in the sandbox cannot create it: they will fail to initialise CUDA. Run "
            "'nvidia-modprobe -u -c=0' (or any CUDA program, e.g. nvidia-smi on some drivers, or python -c "
            "\"import torch; torch.zeros(1, device='cuda')\") once on the host before starting discover."
        )
    exclusive = exclusive_gpus()
    if exclusive:
        problems.append(
            f"GPU(s) {', '.join(exclusive)} are in an exclusive compute mode: one CUDA process at a time, while a "
            "kernel problem's checker and the program it times can be two processes on the same GPU. Set the "
            "default mode with 'nvidia-smi -c DEFAULT' (as root), or leave those GPUs out of sandbox.gpus."
        )
    if not cuda_library_dirs() and not libcuda_on_system_path():
        problems.append(
            f"GPU programs are enabled (sandbox.gpus) but the CUDA driver library {LIBCUDA} is neither in the "
            "dynamic linker's cache (ldconfig -p) nor in a folder of LD_LIBRARY_PATH, so programs will see no "
            "GPU. Install the NVIDIA driver's user-space libraries (in a container: start it with the NVIDIA "
            "container toolkit, e.g. docker run --gpus all), or add the folder holding libcuda.so.1 to "
            "LD_LIBRARY_PATH before starting discover; the sandbox passes that folder on to programs."
        )
    if "triton" in preload or importlib.util.find_spec("triton") is not None:
        if c_compiler() is None:
            problems.append(
                f"Triton compiles a small C launcher when a program first runs a kernel, and no C compiler "
                f"(clang, gcc or cc) is on the sandbox's PATH ({SANDBOX_PATH}): every Triton kernel will fail. "
                "Install one (Debian/Ubuntu: apt-get install -y gcc)."
            )
        if not os.path.exists(python_header()):
            problems.append(
                f"Triton compiles its C launchers against Python's headers, and {python_header()} is missing: "
                "every Triton kernel will fail. Install this Python's development headers (Debian/Ubuntu: "
                "apt-get install -y python3-dev, or the python3.X-dev of this interpreter's version)."
            )
    return problems
