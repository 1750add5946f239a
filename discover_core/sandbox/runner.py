"""Host side of the sandbox: a pool of fork servers and the ``run_program`` entry point.

Each pool slot owns one fork server (``_server.py``), started lazily with a
minimal environment, inside bubblewrap when it works. A call checks a slot out,
sends the job as one JSON line, and reads back a JSON header and the program's
JSON value. The host also keeps its own deadline (the program's limit plus a
grace period): a server that does not answer in time is killed with its whole
sandbox and restarted on the next call.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import json
import logging
import os
import queue
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import IO, Any

from .gpu import cuda_library_dirs, host_problems
from .isolation import SERVER_DIR, bwrap_command, gpu_device_paths, isolation_available

log = logging.getLogger(__name__)

#: failure kinds a SandboxResult can carry (a subset of discover_ttt.problem.FAILURE_KINDS)
KINDS = ("timeout", "memory", "exception", "crash", "bad_output")
#: imported once by each fork server so programs do not pay for them
DEFAULT_PRELOAD = (
    "numpy",
    "scipy",
    "scipy.linalg",
    "scipy.optimize",
    "scipy.signal",
    "scipy.sparse",
    "scipy.spatial",
    "scipy.special",
    "scipy.integrate",
    "scipy.interpolate",
)
_THREAD_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "NUMEXPR_MAX_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)
# The server's folder, with links resolved: bwrap binds this folder alone into the sandbox, where links
# into the repository (an editable install's link tree, scripts/setup.sh) would point at nothing.
_HERE = os.path.dirname(os.path.realpath(__file__))
_GRACE_S = 5.0  # host deadline = program limit + this; the server itself kills at the limit
#: The error of a program whose sandbox server died under it (the program may have killed it).
SERVER_DIED = "the sandbox server died while running the program (the program may have killed it)"
_START_TIMEOUT_S = 120.0
#: how a program's memory is limited: its address space (RLIMIT_AS), or the proportional resident
#: memory of its whole process tree, polled by the server (CUDA reserves far more address space than
#: it uses, so RLIMIT_AS breaks GPU programs)
MEMORY_LIMITS = ("address_space", "rss")
_warned_plain = False


@dataclass
class SandboxResult:
    """How one program ended. ``value`` is its JSON-decoded return value when ``ok``."""

    ok: bool
    value: Any = None
    kind: str | None = None
    stdout: str = ""
    stderr: str = ""
    seconds: float = 0.0
    error: str | None = None
    returncode: int | None = None
    max_rss_mb: float | None = None


def oversubscribed(workers: int, cpus: int, cores: int) -> str:
    """The warning for a pool that wants more cores than the machine has (said once, at start-up)."""
    wanted = workers * cpus
    return (
        f"sandbox: {workers} workers × {cpus} CPU(s) = {wanted} cores wanted, but this machine gives {cores}: "
        f"programs share cores, so each runs about {wanted / cores:.1f}× slower in wall time "
        "(benchmarks/sandbox_oversubscribed.py measured 1.3-1.4× at twice the cores on a busy 2-core machine, "
        "up to 2× when idle) and one near its time limit may time out. Lower sandbox.workers to "
        f"{max(1, cores // cpus)} unless the programs mostly wait."
    )


class SandboxError(RuntimeError):
    """The sandbox itself could not run (not the program's fault)."""


class _ServerDied(Exception):
    pass


# -- spawning ---------------------------------------------------------------------
class _Spawner:
    """One long-lived thread starts every server: PR_SET_PDEATHSIG (bwrap --die-with-parent)
    fires when the *thread* that forked a process exits, so servers must not be started from
    short-lived pool threads."""

    def __init__(self) -> None:
        self._jobs: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def popen(self, *args, **kwargs) -> subprocess.Popen:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="sandbox-spawner", daemon=True)
                self._thread.start()
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._jobs.put((future, args, kwargs))
        return future.result()

    def _loop(self) -> None:
        while True:
            future, args, kwargs = self._jobs.get()
            try:
                future.set_result(subprocess.Popen(*args, **kwargs))
            except BaseException as exc:
                future.set_exception(exc)


_spawner = _Spawner()


def _server_env(cpus: int, home: str) -> dict[str, str]:
    """The whole environment of a server and its programs: nothing from the host."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "MPLBACKEND": "Agg"}
    env.update(HOME=home, TMPDIR=home, **{name: str(cpus) for name in _THREAD_VARS})
    return env


_FOLDER_PREFIX = "discover-sandbox-"
_stale_checked = False


def _remove_stale_folders() -> None:
    """Remove slot folders left by host processes that no longer exist (killed before close())."""
    global _stale_checked
    if _stale_checked:
        return
    _stale_checked = True
    tmp = tempfile.gettempdir()
    for name in os.listdir(tmp):
        owner = name[len(_FOLDER_PREFIX) :].split("-", 1)[0]
        if name.startswith(_FOLDER_PREFIX) and owner.isdigit() and not os.path.exists(f"/proc/{owner}"):
            shutil.rmtree(os.path.join(tmp, name), ignore_errors=True)


# -- one pool slot ------------------------------------------------------------------
class _Worker:
    def __init__(self, sandbox: Sandbox, affinity: list[int] | None, gpu: str | None = None) -> None:
        self.sandbox, self.affinity, self.gpu = sandbox, affinity, gpu
        self.proc: subprocess.Popen | None = None
        self.root: str | None = None
        self.buf = bytearray()

    def _start(self) -> None:
        sb = self.sandbox
        _remove_stale_folders()
        self.root = tempfile.mkdtemp(prefix=f"{_FOLDER_PREFIX}{os.getpid()}-")
        workdir = os.path.join(self.root, "work")
        os.mkdir(workdir, 0o700)
        isolated = sb.isolation == "bwrap"
        config = {
            "base": "/tmp" if isolated else workdir,
            "preload": list(sb.preload) if sb.fork_server else [],
            "one_shot": not sb.fork_server,
            "affinity": self.affinity,
            "isolated": isolated,
            "landlock": sb.landlock,
        }
        devices = gpu_device_paths() if self.gpu is not None else []
        config["devices"] = devices  # the program may open them for writing (Landlock)
        libdirs = cuda_library_dirs() if self.gpu is not None else []  # where the CUDA driver is found
        if isolated:
            server = os.path.join(SERVER_DIR, "_server.py")
            cmd = [
                *bwrap_command(workdir, _HERE, devices, sb.memory_mb, libdirs),
                sys.executable,
                "-I",
                server,
                json.dumps(config),
            ]
            env = _server_env(sb.cpus, "/tmp")
        else:
            cmd = [sys.executable, "-I", os.path.join(_HERE, "_server.py"), json.dumps(config)]
            env = _server_env(sb.cpus, workdir)
        if self.gpu is not None:  # the slot's one GPU; CUDA numbers it 0 inside
            env["CUDA_VISIBLE_DEVICES"] = self.gpu
        if libdirs:
            env["LD_LIBRARY_PATH"] = os.pathsep.join(libdirs)
        with open(os.path.join(self.root, "server.log"), "wb") as errlog:
            self.proc = _spawner.popen(
                cmd,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errlog,
                env=env,
                cwd=workdir,
                close_fds=True,
                start_new_session=True,
            )
        self.buf = bytearray()
        try:
            line = self._readline(time.monotonic() + _START_TIMEOUT_S)
        except _ServerDied:
            line = None
        if line is None:
            reason = self._log_tail() or "no output"
            self._kill()
            raise SandboxError(f"the sandbox server did not start ({' '.join(cmd[:1])}): {reason}")
        self.info = json.loads(line)

    def _log_tail(self) -> str:
        if self.root is None:
            return ""
        try:
            with open(os.path.join(self.root, "server.log"), "rb") as f:
                return f.read()[-2000:].decode("utf-8", "replace").strip()
        except (OSError, TypeError):
            return ""

    def _read_until(self, ready, deadline: float) -> bool:
        fd = self._pipes()[1].fileno()
        while not ready():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                return False
            data = os.read(fd, 1 << 20)
            if not data:
                raise _ServerDied
            self.buf += data
        return True

    def _pipes(self) -> tuple[IO[bytes], IO[bytes]]:
        """The running server's stdin and stdout (pipes, opened by ``_start``)."""
        proc = self.proc
        if proc is None or proc.stdin is None or proc.stdout is None:
            raise _ServerDied  # killed under us: the sandbox was closed while a program ran
        return proc.stdin, proc.stdout

    def _readline(self, deadline: float) -> bytes | None:
        if not self._read_until(lambda: b"\n" in self.buf, deadline):
            return None
        end = self.buf.index(b"\n")
        line = bytes(self.buf[:end])
        del self.buf[: end + 1]
        return line

    def _readexact(self, n: int, deadline: float) -> bytes | None:
        if not self._read_until(lambda: len(self.buf) >= n, deadline):
            return None
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def _kill(self) -> None:
        """Kill the server with its whole sandbox (its own session; bwrap takes its namespace down).

        Safe to call from two threads at once (Sandbox.close() while the slot's own run gives up):
        each takes the process and folder it found and clears them before acting."""
        proc, self.proc = self.proc, None
        if proc is not None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                proc.kill()
            except ProcessLookupError:
                pass
            proc.wait()
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    stream.close()
        root, self.root = self.root, None
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)

    def close(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None and proc.stdin is not None:
            try:
                proc.stdin.close()  # the server leaves its loop at end of input
                proc.wait(timeout=2)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self._kill()

    def ensure_started(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self._kill()
            self._start()

    def run(self, request: dict) -> SandboxResult:
        self.ensure_started()
        started = time.monotonic()
        try:
            stdin = self._pipes()[0]
            stdin.write(json.dumps(request, allow_nan=True).encode() + b"\n")
            stdin.flush()
            deadline = started + float(request["timeout_s"]) + _GRACE_S
            line = self._readline(deadline)
            header = json.loads(line) if line is not None else None
            payload = self._readexact(header["value_len"], deadline + 30) if header is not None else None
        except (_ServerDied, OSError, ValueError) as exc:
            if self.sandbox.closed:
                # Sandbox.close() (e.g. on Ctrl-C) killed this slot's server while the program ran: its
                # pipes closed under us (a closed file raises ValueError, a closed descriptor OSError)
                self._kill()
                error = "the sandbox was shut down while the program ran (the run is stopping)"
                return SandboxResult(False, kind="crash", seconds=time.monotonic() - started, error=error)
            if not isinstance(exc, (_ServerDied, BrokenPipeError)):
                raise
            tail = self._log_tail()
            self._kill()
            return SandboxResult(False, kind="crash", error=SERVER_DIED + (f": {tail}" if tail else ""))
        finally:
            if not self.sandbox.fork_server:
                self.close()
        if header is None or payload is None:
            self._kill()
            error = f"no answer within the {request['timeout_s']:g} s limit (+{_GRACE_S:g} s); the sandbox was killed"
            return SandboxResult(False, kind="timeout", seconds=time.monotonic() - started, error=error)
        result = SandboxResult(
            ok=header["kind"] is None,
            kind=header["kind"],
            stdout=header["stdout"],
            stderr=header["stderr"],
            seconds=header["seconds"],
            error=header["error"],
            returncode=header["returncode"],
            max_rss_mb=header["max_rss_mb"],
        )
        if result.ok:
            try:
                result.value = json.loads(payload)
            except ValueError as exc:
                result.ok, result.kind, result.error = (
                    False,
                    "bad_output",
                    f"the returned value is not valid JSON: {exc}",
                )
        return result


# -- the pool -------------------------------------------------------------------------
def _resolve_isolation(isolation: str) -> str:
    global _warned_plain
    if isolation not in ("auto", "bwrap", "none"):
        raise ValueError(f"isolation must be 'auto', 'bwrap' or 'none', got {isolation!r}")
    if isolation == "bwrap" and not isolation_available():
        raise SandboxError(
            "isolation='bwrap' but bubblewrap is not usable here; install it "
            "(Debian/Ubuntu: apt-get install -y bubblewrap) or use isolation='auto' or 'none'"
        )
    if isolation == "auto":
        if isolation_available():
            return "bwrap"
        if not _warned_plain:
            _warned_plain = True
            log.warning(
                "bubblewrap (bwrap) is not usable here: generated programs run without namespace isolation "
                "(limits, a scrubbed environment and Landlock where the kernel has it still apply; programs can "
                "still read the host's files and connect to its Unix sockets that have a path); "
                "install bubblewrap for a read-only filesystem view, no host sockets and no network"
            )
        return "none"
    return isolation


class Sandbox:
    """A pool of ``workers`` slots; every program is a fresh process with the limits.

    ``run`` is thread-safe: up to ``workers`` calls run at once, more wait for a slot.
    """

    def __init__(
        self,
        timeout_s: float = 60.0,
        memory_mb: int = 1024,
        cpus: int = 1,
        workers: int | None = None,
        isolation: str = "auto",
        *,
        preload: tuple[str, ...] = DEFAULT_PRELOAD,
        fork_server: bool = True,
        landlock: bool = True,
        max_output_mb: float = 64,
        tail_kb: int = 64,
        max_result_mb: float = 64,
        max_result_items: int = 2**22,
        max_procs: int = 64,
        file_mb: int = 256,
        memory_limit: str = "address_space",
        gpus: list[int | str] | None = None,
    ) -> None:
        self.isolation = _resolve_isolation(isolation)
        self.timeout_s, self.memory_mb, self.cpus = float(timeout_s), int(memory_mb), max(1, int(cpus))
        if memory_limit not in MEMORY_LIMITS:
            raise ValueError(f"memory_limit must be one of {MEMORY_LIMITS}, got {memory_limit!r}")
        self.memory_limit = memory_limit
        # one program per GPU at a time: slot i owns gpus[i] and nothing else
        self.gpus = [str(g) for g in gpus] if gpus else None
        if self.gpus and workers and int(workers) > len(self.gpus):
            raise ValueError(f"{workers} workers but {len(self.gpus)} GPUs: with gpus, each slot owns one GPU")
        self.workers = len(self.gpus) if self.gpus else int(workers or os.cpu_count() or 1)
        self.preload, self.fork_server, self.landlock = tuple(preload), bool(fork_server), bool(landlock)
        if self.gpus:  # what this host lacks for GPU programs, said once, before any program fails of it
            for problem in host_problems(self.preload):
                log.warning("%s", problem)
        self.limits = {
            "max_output_bytes": int(max_output_mb * 2**20),
            "tail_bytes": int(tail_kb * 1024),
            "max_result_bytes": int(max_result_mb * 2**20),
            "max_result_items": int(max_result_items),
            "max_procs": int(max_procs),
            "file_mb": int(file_mb),
        }
        cores = sorted(os.sched_getaffinity(0))
        pin = self.workers * self.cpus <= len(cores)  # pin slots to disjoint cores only when they fit
        if not pin:
            log.warning("%s", oversubscribed(self.workers, self.cpus, len(cores)))
        self._slots = [
            _Worker(
                self, cores[i * self.cpus : (i + 1) * self.cpus] if pin else None, self.gpus[i] if self.gpus else None
            )
            for i in range(self.workers)
        ]
        self._idle: queue.LifoQueue = queue.LifoQueue()  # LIFO: a warm server is reused first
        for slot in reversed(self._slots):
            self._idle.put(slot)
        self._closed = False

    def run(
        self,
        source: str,
        entry: str = "run",
        *,
        args: tuple | list = (),
        kwargs: dict | None = None,
        inject: dict | None = None,
        timeout_s: float | None = None,
        memory_mb: int | None = None,
    ) -> SandboxResult:
        """Run ``source`` in a fresh process, call ``entry(*args, **kwargs)`` and return how it ended."""
        if self._closed:
            raise SandboxError("this Sandbox is closed")
        request = self._request(source, entry, args, kwargs, inject, timeout_s, memory_mb)
        slot = self._idle.get()
        try:
            return slot.run(request)
        finally:
            self._idle.put(slot)

    def map(self, jobs: list[dict]) -> list[SandboxResult]:
        """Run many jobs (dicts of ``run`` keyword arguments), ``workers`` at a time; results in order."""
        if not jobs:
            return []
        with concurrent.futures.ThreadPoolExecutor(min(self.workers, len(jobs))) as pool:
            return list(pool.map(lambda job: self.run(**job), jobs))

    def start(self) -> None:
        """Start every slot's server now, in parallel (otherwise each starts on its first program)."""
        if not self.fork_server:
            return
        slots = [self._idle.get() for _ in range(self.workers)]
        try:
            with concurrent.futures.ThreadPoolExecutor(len(slots)) as pool:
                list(pool.map(_Worker.ensure_started, slots))
        finally:
            for slot in reversed(slots):
                self._idle.put(slot)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Stop the servers and remove their folders (a program still running ends as a crash)."""
        self._closed = True
        for slot in self._slots:
            slot.close()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _request(self, source, entry, args, kwargs, inject, timeout_s, memory_mb) -> dict:
        if not isinstance(source, str):
            raise TypeError(f"source must be a str, got {type(source).__name__}")
        if not str(entry).isidentifier():
            raise ValueError(f"entry must be a Python identifier, got {entry!r}")
        for name in inject or {}:
            if not (isinstance(name, str) and name.isidentifier()):
                raise ValueError(f"inject keys must be Python identifiers, got {name!r}")
        request = {
            "source": source,
            "entry": entry,
            "args": list(args),
            "kwargs": dict(kwargs or {}),
            "inject": dict(inject or {}),
            "timeout_s": float(self.timeout_s if timeout_s is None else timeout_s),
            "memory_mb": int(self.memory_mb if memory_mb is None else memory_mb),
            "cpus": self.cpus,
            "memory_limit": self.memory_limit,
            **self.limits,
        }
        if request["timeout_s"] <= 0 or request["memory_mb"] <= 0:
            raise ValueError("timeout_s and memory_mb must be positive")
        try:
            json.dumps(request, allow_nan=True)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"args, kwargs and inject must be JSON data: {exc}") from None
        return request


# -- one-off calls ---------------------------------------------------------------------
_shared: dict[tuple[int, str], Sandbox] = {}
_shared_lock = threading.Lock()


def run_program(
    source: str,
    entry: str = "run",
    *,
    args: tuple | list = (),
    kwargs: dict | None = None,
    inject: dict | None = None,
    timeout_s: float,
    memory_mb: int,
    cpus: int = 1,
    isolation: str = "auto",
) -> SandboxResult:
    """Run one program in a shared pool (one per ``cpus``/``isolation``, ``os.cpu_count()`` slots)."""
    key = (int(cpus), isolation)
    with _shared_lock:
        sandbox = _shared.get(key)
        if sandbox is None:
            sandbox = _shared[key] = Sandbox(timeout_s=timeout_s, memory_mb=memory_mb, cpus=cpus, isolation=isolation)
    return sandbox.run(source, entry, args=args, kwargs=kwargs, inject=inject, timeout_s=timeout_s, memory_mb=memory_mb)


@atexit.register
def _close_shared() -> None:
    for sandbox in _shared.values():
        sandbox.close()
