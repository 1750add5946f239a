"""What runs inside the forked child, before and around the untrusted program.

Standard library only: the fork server imports this file by path, inside the
sandbox, without the rest of ``discover_ttt``.

Order matters. The child first cuts every link to the server (its own session
and process group, a parent-death signal, no inherited descriptors but stdout, stderr and
the result channel), then applies the limits (rlimits, no new privileges, no
capabilities, Landlock), and only then compiles the program. Its result goes
back on fd 3 as one JSON header line followed by the JSON value; nothing it
writes is ever unpickled.

The result channel is a Unix socket whose reader (the server) takes only bytes
sent by this very process (kernel-checked credentials): fd 3 is close-on-exec,
and anything the program forks that still holds it cannot speak for it. A
report that cannot be written whole is a crash of the program (exit status 70),
never a silent success.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import resource
import signal
import sys
import tempfile
import traceback
import types

RESULT_FD = 3
#: exit status of a child whose report could not be written whole (the server names it)
REPORT_FAILED = 70
_PR_SET_PDEATHSIG = 1
_PR_SET_NO_NEW_PRIVS = 38

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


# -- Landlock ------------------------------------------------------------------
# Landlock (Linux >= 5.13) lets an unprivileged process give up rights for itself
# and its descendants. We handle every write-type filesystem right (so writes are
# allowed only under the job folder), TCP bind/connect (ABI >= 4, no rule: all
# denied), and signal / abstract-socket scoping (ABI >= 6: the program cannot
# signal the server or the host). Reads stay allowed: the bwrap view hides what
# must be hidden, and Landlock's ptrace rule already blocks /proc/<host>/environ.
_SYS_CREATE, _SYS_ADD_RULE, _SYS_RESTRICT = 444, 445, 446
_FS_WRITE_BITS_BY_ABI = {
    1: 0b1_1111_1111_0010,  # WRITE_FILE, REMOVE_DIR/FILE, MAKE_CHAR/DIR/REG/SOCK/FIFO/BLOCK/SYM
    2: 1 << 13,  # REFER
    3: 1 << 14,  # TRUNCATE
    5: 1 << 15,  # IOCTL_DEV
}


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def landlock_abi() -> int:
    """The kernel's Landlock ABI version, 0 when Landlock is unavailable."""
    version = _libc.syscall(_SYS_CREATE, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    return max(int(version), 0)


def apply_landlock(writable: list[str], abi: int) -> bool:
    """Deny writes outside ``writable``, TCP, and signals to outside processes."""
    if abi <= 0:
        return False
    fs_bits = sum(bits for level, bits in _FS_WRITE_BITS_BY_ABI.items() if abi >= level)
    net_bits = 0b11 if abi >= 4 else 0  # BIND_TCP | CONNECT_TCP
    scoped = 0b11 if abi >= 6 else 0  # ABSTRACT_UNIX_SOCKET | SIGNAL
    attr = (ctypes.c_uint64 * 3)(fs_bits, net_bits, scoped)
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8
    ruleset = _libc.syscall(_SYS_CREATE, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        return False
    try:
        for path in writable:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue
            # files (like /dev/null) accept only file rights, folders all of them
            rights = fs_bits if os.path.isdir(path) else fs_bits & ((1 << 1) | (1 << 14) | (1 << 15))
            rule = _PathBeneath(rights, fd)
            _libc.syscall(_SYS_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(1), ctypes.byref(rule), ctypes.c_uint32(0))
            os.close(fd)
        return _libc.syscall(_SYS_RESTRICT, ctypes.c_int(ruleset), ctypes.c_uint32(0)) == 0
    finally:
        os.close(ruleset)


def drop_capabilities() -> None:
    """Clear the effective, permitted and inheritable capability sets (matters when run as root)."""

    class _Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    header = _Header(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (ctypes.c_uint32 * 6)()  # two {effective, permitted, inheritable} sets, all zero
    _libc.capset(ctypes.byref(header), data)


# -- result encoding -----------------------------------------------------------
class ResultTooLarge(Exception):
    pass


class _Budget:
    """Counts leaves and characters so a huge return value is refused before it is encoded."""

    def __init__(self, max_items: int, max_chars: int) -> None:
        self.items, self.chars = max_items, max_chars

    def take(self, items: int, chars: int = 0) -> None:
        self.items -= items
        self.chars -= chars
        if self.items < 0 or self.chars < 0:
            raise ResultTooLarge


def to_jsonable(value, budget: _Budget, depth: int = 0):
    """Convert numpy arrays to lists and numpy scalars to Python numbers; refuse anything else.

    NaN and ±inf stay floats (JSON ``NaN``/``Infinity``) so the problem sees them and can reject
    them with a reason. Containers are charged their length before they are walked, so a list of
    10^8 numbers is refused at once.
    """
    if depth > 200:
        raise TypeError("the value is nested more than 200 levels deep")
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        budget.take(0, len(value))
        return value
    if isinstance(value, (list, tuple)):
        budget.take(len(value) + 1)
        return [to_jsonable(v, budget, depth + 1) for v in value]
    if isinstance(value, dict):
        budget.take(len(value) + 1)
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"dict keys must be str, got {type(k).__name__}")
            budget.take(0, len(k))
            out[k] = to_jsonable(v, budget, depth + 1)
        return out
    np = sys.modules.get("numpy")
    if np is not None:
        if isinstance(value, np.ndarray):
            if value.dtype.kind in "biuf":
                budget.take(int(value.size) + 1)
                return value.tolist()
            if value.dtype.kind == "O":
                return to_jsonable(value.tolist(), budget, depth + 1)
            raise TypeError(f"numpy arrays of dtype {value.dtype} cannot be returned")
        if isinstance(value, np.bool_):
            return bool(value)
        if isinstance(value, np.integer):
            return int(value)
        if isinstance(value, np.floating):
            return float(value)
    raise TypeError(f"a value of type {type(value).__module__}.{type(value).__qualname__} cannot be returned as JSON")


def encode_value(value, max_items: int, max_bytes: int) -> bytes:
    data = json.dumps(to_jsonable(value, _Budget(max_items, max_bytes)), allow_nan=True, separators=(",", ":"))
    if len(data) > max_bytes:
        raise ResultTooLarge
    return data.encode("utf-8", "surrogatepass")


# -- the child -----------------------------------------------------------------
def _is_memory_error(exc: BaseException | None) -> bool:
    seen = 0
    while exc is not None and seen < 20:
        if isinstance(exc, MemoryError):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def _traceback_tail(exc: BaseException, max_lines: int = 20) -> str:
    """The last lines of the traceback, without this wrapper's own frames."""
    tb = traceback.TracebackException.from_exception(exc)
    tb.stack = traceback.StackSummary.from_list([f for f in tb.stack if f.filename != __file__])
    tail = "".join(tb.format()).strip().splitlines()[-max_lines:]
    return "\n".join(tail)[-4000:]


def _report(header: dict, payload: bytes = b"") -> None:
    """Write the whole report or raise: a program that broke its channel has crashed, not succeeded."""
    data = json.dumps(header, allow_nan=True).encode() + b"\n" + payload
    os.set_blocking(RESULT_FD, True)  # the program may have made it non-blocking
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(RESULT_FD, view) :]
        except InterruptedError:
            continue


def _apply_limits(job: dict, jobdir: str) -> dict:
    """Everything that must hold before the first line of the program runs."""
    mem = int(job["memory_mb"]) * 2**20
    if job.get("memory_limit", "address_space") == "address_space":  # else the server polls the RSS
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    cpu_s = int(math.ceil(float(job["timeout_s"]) * max(1, job["cpus"]))) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
    file_bytes = int(job["file_mb"]) * 2**20
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_bytes, file_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if job.get("nproc"):
        resource.setrlimit(resource.RLIMIT_NPROC, (job["nproc"], job["nproc"]))
    if job.get("affinity"):
        try:
            os.sched_setaffinity(0, job["affinity"])
        except OSError:
            pass
    _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    drop_capabilities()
    writable = [jobdir, "/dev/null", "/dev/shm", *job.get("devices", ())]
    landlocked = apply_landlock(writable, int(job.get("landlock_abi", 0)))
    return {"landlock": landlocked}


def run_child(job: dict, jobdir: str, program_path: str, out_w: int, err_w: int, res_w: int, server_pid: int) -> None:
    """Entry of the forked child. Never returns."""
    code = 0
    try:
        # a new session: its own process group for killpg, and (where the scheduler has autogroups)
        # one CPU share for the whole program however many processes it forks, so a fork bomb
        # cannot starve the server that must kill it
        os.setsid()
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != server_pid:  # the server died between fork and prctl
            os._exit(1)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        os.dup2(res_w, RESULT_FD, inheritable=False)  # nothing the program execs gets it
        os.closerange(RESULT_FD + 1, 1 << 16)
        sys.stdin = open(0, closefd=False)  # noqa: SIM115
        sys.stdout = open(1, "w", buffering=1, closefd=False, encoding="utf-8", errors="backslashreplace")  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, closefd=False, encoding="utf-8", errors="backslashreplace")  # noqa: SIM115
        os.chdir(jobdir)
        os.umask(0o077)
        os.environ["HOME"] = os.environ["TMPDIR"] = os.environ["MPLCONFIGDIR"] = jobdir
        tempfile.tempdir = jobdir
        sys.argv = [program_path]
        _apply_limits(job, jobdir)
    except BaseException as exc:  # the program never ran; say why
        try:
            _report({"status": "error", "kind": "crash", "error": f"the sandbox could not set up the program: {exc!r}"})
        finally:
            os._exit(71)
    try:
        _run_program(job, program_path)
    except BaseException:  # the report itself failed (channel closed or broken by the program, out of memory)
        code = REPORT_FAILED
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:
                pass
        os._exit(code)


def _run_program(job: dict, program_path: str) -> None:
    try:
        with open(program_path, encoding="utf-8") as f:
            source = f.read()
        module = types.ModuleType("program")
        module.__file__ = program_path
        module.__dict__.update(job.get("inject") or {})
        # registered so pickling by reference (multiprocessing pools) finds the program's functions
        sys.modules["program"] = module
        exec(compile(source, program_path, "exec"), module.__dict__)
        entry = module.__dict__.get(job["entry"])
        if not callable(entry):
            raise NameError(f"the program defines no function {job['entry']}()")
        value = entry(*(job.get("args") or ()), **(job.get("kwargs") or {}))
    except SystemExit as exc:
        _report({"status": "error", "kind": "exception", "error": f"the program called sys.exit({exc.code!r})"})
        return
    except BaseException as exc:
        kind = "memory" if _is_memory_error(exc) else "exception"
        _report({"status": "error", "kind": kind, "error": _traceback_tail(exc)})
        return
    try:
        payload = encode_value(value, int(job["max_result_items"]), int(job["max_result_bytes"]))
    except ResultTooLarge:
        limit = f"{job['max_result_items']} numbers or {job['max_result_bytes'] // 2**20} MiB of JSON"
        _report({"status": "error", "kind": "bad_output", "error": f"the returned value is larger than {limit}"})
        return
    except MemoryError:
        _report({"status": "error", "kind": "memory", "error": "out of memory while encoding the returned value"})
        return
    except (TypeError, ValueError, RecursionError) as exc:
        _report({"status": "error", "kind": "bad_output", "error": f"the returned value is not JSON data: {exc}"})
        return
    _report({"status": "ok"}, payload)
