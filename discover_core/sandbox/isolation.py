"""Whether bubblewrap works here, and the command that puts the fork server inside it.

The sandbox sees: /usr (and the /bin, /lib links), the dynamic-linker files of
/etc, the Python installation and virtual environment, all read-only; the sandbox
code read-only at ``SERVER_DIR``; a fresh /proc and a minimal /dev; and one
writable folder, bound at /tmp. Nothing else of the host exists in it. It has
its own user, pid, network (loopback only), IPC and UTS namespaces, no
capabilities, and cannot create further user namespaces.
"""

from __future__ import annotations

import functools
import glob
import os
import shutil
import site
import subprocess
import sys

SERVER_DIR = "/run/discover-sandbox"
_BASE_FLAGS = ["--unshare-all", "--unshare-user", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
_ETC_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime", "/etc/alternatives")


@functools.lru_cache(maxsize=1)
def _probe() -> tuple[str, tuple[str, ...]] | None:
    """(bwrap path, namespace flags) when bubblewrap can start a process here, else None."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return None
    # --disable-userns needs bwrap >= 0.8; without it the sandbox is still sound (no capabilities)
    for extra in (["--disable-userns"], []):
        flags = [*_BASE_FLAGS, *extra]
        try:
            done = subprocess.run(
                [bwrap, *flags, "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "true"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env={"PATH": "/usr/bin:/bin"},
                timeout=20,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        if done.returncode == 0:
            return bwrap, tuple(flags)
    return None


def isolation_available() -> bool:
    """True when bubblewrap is installed and can create the sandbox's namespaces here."""
    return _probe() is not None


def python_roots() -> list[str]:
    """Folders the interpreter and its packages live in (outside /usr), outermost only."""
    candidates = {sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix}
    candidates.add(os.path.dirname(os.path.dirname(os.path.realpath(sys.executable))))
    try:
        candidates.update(site.getsitepackages())
    except AttributeError:  # pragma: no cover - very old virtualenvs
        pass
    # both the path as spelled and its real path: symlinks inside the sandbox must resolve
    roots = {p for p in candidates if p} | {os.path.realpath(p) for p in candidates if p}
    roots = {r for r in roots if os.path.isdir(r) and r not in ("/", "/usr") and not r.startswith("/usr/")}
    outer: list[str] = []
    for root in sorted(roots, key=len):
        if not any(root == o or root.startswith(o + os.sep) for o in outer):
            outer.append(root)
    return outer


def gpu_device_paths() -> list[str]:
    """The NVIDIA device files a CUDA program opens (control, UVM, every GPU, MIG capabilities)."""
    return sorted(glob.glob("/dev/nvidia*"))


def bwrap_command(
    workdir: str,
    server_dir: str,
    devices: list[str] | tuple[str, ...] = (),
    shm_mb: int = 1024,
    library_dirs: list[str] | tuple[str, ...] = (),
) -> list[str]:
    """The bwrap prefix that runs a command with ``workdir`` as the only writable folder (/tmp).

    ``devices`` (GPU device files) are bound into the minimal /dev, with /sys read-only
    beside them, which the CUDA driver reads to enumerate the GPUs; ``library_dirs`` (the
    folders holding the CUDA driver library, ``gpu.cuda_library_dirs``) are bound read-only. ``/dev/shm`` is a
    private tmpfs of at most ``shm_mb`` MiB (bwrap's own ``--dev`` would give one as
    large as half the RAM, outside the program's memory limit).
    """
    probe = _probe()
    if probe is None:
        raise RuntimeError(
            "bubblewrap isolation was requested but bwrap is not usable here; install it "
            "(Debian/Ubuntu: apt-get install -y bubblewrap) or pass isolation='none'"
        )
    bwrap, flags = probe
    cmd = [bwrap, *flags, "--hostname", "sandbox", "--ro-bind", "/usr", "/usr"]
    for path in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(path):
            cmd += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            cmd += ["--ro-bind", path, path]
    for path in _ETC_FILES:
        cmd += ["--ro-bind-try", path, path]
    # /tmp first: a Python install that lives under /tmp (a project cloned there) is bound on top of it
    cmd += ["--bind", workdir, "/tmp"]
    for root in python_roots():
        cmd += ["--ro-bind", root, root]
    for folder in library_dirs:
        cmd += ["--ro-bind-try", folder, folder]
    cmd += ["--ro-bind", server_dir, SERVER_DIR]
    cmd += ["--proc", "/proc", "--dev", "/dev", "--size", str(int(shm_mb) * 2**20), "--tmpfs", "/dev/shm"]
    for path in devices:
        cmd += ["--dev-bind-try", path, path]
    if devices:
        cmd += ["--ro-bind-try", "/sys", "/sys"]
    cmd += ["--chdir", "/tmp"]
    return cmd
