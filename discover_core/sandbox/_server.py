"""The fork server: a long-lived interpreter that has imported numpy and scipy and
forks one fresh child per program.

Run as a script (``python -I _server.py CONFIG_JSON``), standard library only,
started by the host with a minimal environment (inside bubblewrap when
available). Protocol on stdin/stdout: the server prints one ``{"ready": ...}``
line, then for each request line (a JSON job) it answers one JSON header line
followed by ``value_len`` bytes of the program's JSON value.

The server is a child subreaper: processes the program leaves behind (daemons,
double forks) are re-parented to it, so after every job it kills its whole
subtree and stays childless. It runs one job at a time.
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.util
import json
import os
import select
import shutil
import signal
import socket
import stat
import struct
import sys
import time

_PR_SET_PDEATHSIG, _PR_SET_DUMPABLE, _PR_SET_CHILD_SUBREAPER = 1, 4, 36
_libc = ctypes.CDLL(None, use_errno=True)
_MEMORY_HINTS = ("MemoryError", "Cannot allocate memory", "bad_alloc", "out of memory", "failed to allocate")
_SIGNAL_NAMES: dict[int, str] = {
    signal.SIGSEGV: "segmentation fault",
    signal.SIGABRT: "abort",
    signal.SIGBUS: "bus error",
}


def _stopped(pid: int) -> bool:
    """Whether ``pid`` is in a stop (T) or tracing stop (t) state."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] in (b"T", b"t")
    except (OSError, IndexError):
        return False


_child_module = None


def _load_child_module():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_child.py")
    spec = importlib.util.spec_from_file_location("_discover_sandbox_child", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    global _child_module
    _child_module = module
    return module


class _Tail:
    """The last ``keep`` bytes of a stream, and how many bytes it carried in all."""

    def __init__(self, keep: int) -> None:
        self.keep, self.total, self.buf = keep, 0, bytearray()

    def add(self, data: bytes) -> None:
        self.total += len(data)
        self.buf += data
        if len(self.buf) > 2 * self.keep:
            del self.buf[: -self.keep]

    def text(self) -> str:
        data = bytes(self.buf[-self.keep :])
        prefix = f"[... {self.total - len(data)} earlier bytes dropped ...]\n" if self.total > len(data) else ""
        return prefix + data.decode("utf-8", "replace")


# -- process tree ----------------------------------------------------------------
def _children(pid: int) -> list[int]:
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    out = []
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
        except OSError:
            pass
    return out


def _children_by_scan() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        tree.setdefault(ppid, []).append(int(name))
    return tree


_HAVE_CHILDREN_FILE = os.path.exists(f"/proc/self/task/{os.getpid()}/children")


def descendants(root: int) -> list[int]:
    """Every live process below ``root`` (the server's subtree)."""
    tree = None if _HAVE_CHILDREN_FILE else _children_by_scan()
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        kids = _children(pid) if tree is None else tree.get(pid, [])
        out += kids
        todo += kids
    return out


def _reap() -> bool:
    """Reap exited children; True when the server has no child left at all."""
    try:
        while True:
            pid, _ = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                return False
    except ChildProcessError:
        return True


def sweep() -> int:
    """SIGKILL the whole subtree until none is left; returns how many were killed."""
    killed, me = 0, os.getpid()
    for _ in range(1000):
        if _reap():
            return killed
        for pid in descendants(me):
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
        time.sleep(0.001)
    return killed


def _pss_bytes(pid: int) -> int:
    """Proportional resident memory of one process (shared pages split among their users), in bytes."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:  # kernels before 4.14: the plain resident set
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _rmtree_contents(base: str) -> None:
    def fix(func, path, _exc):  # a program may have removed its own permissions
        try:
            os.chmod(os.path.dirname(path), stat.S_IRWXU)
            os.chmod(path, stat.S_IRWXU)
            func(path)
        except OSError:
            pass

    for name in os.listdir(base):
        path = os.path.join(base, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, onerror=fix)
        else:
            try:
                os.unlink(path)
            except OSError:
                pass


SHM = "/dev/shm"


def _shm_names() -> set[str]:
    try:
        return set(os.listdir(SHM))
    except OSError:
        return set()


def _remove_new_shm(before: set[str], since: float) -> None:
    """Without bubblewrap /dev/shm is the host's: remove what appeared there during the job.

    Only entries of our own user, new since the job started; another slot's program
    running at the same time may see them meanwhile (docs/sandbox.md).
    """
    uid = os.getuid()
    for name in _shm_names() - before:
        path = os.path.join(SHM, name)
        try:
            st = os.lstat(path)
            if st.st_uid != uid or st.st_ctime < since - 1:
                continue
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.unlink(path)
        except OSError:
            pass


def _nproc_limit(max_procs: int, isolated: bool) -> int:
    """RLIMIT_NPROC for the child, or 0 for none.

    The kernel counts this limit per user, threads included, and never applies it to uid 0.
    Only inside bwrap's own user namespace on Linux >= 5.14 (per-namespace counts) does it
    count the program's tasks alone; elsewhere it would count the user's other processes too,
    so the server's process-count watchdog is the only guard there.
    """
    if os.getuid() == 0 or not isolated:
        return 0
    try:
        major, minor = (int(x) for x in os.uname().release.split(".")[:2])
    except ValueError:
        return 0
    return max_procs + 4 if (major, minor) >= (5, 14) else 0


# -- the result channel ---------------------------------------------------------------
class _ResultChannel:
    """The server's end of a program's result socket: it keeps only bytes the program's own process sent.

    With SO_PASSCRED every message carries its sender's pid, checked by the kernel, and Linux never
    merges messages of two senders into one read. Bytes from any other process (a child the program
    forked that still holds fd 3, or a process that got the descriptor some other way) are dropped and
    the job fails: nothing but the program's own process can speak for it.
    """

    _CRED = struct.Struct("iII")  # struct ucred: pid, uid, gid

    def __init__(self) -> None:
        self.sock, self.peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.fd, self.foreign = self.sock.fileno(), 0
        self.pid: int | None = None  # the program's process, set once it is forked

    def read(self) -> bytes | None:
        """One read: b"" at end of stream, None for bytes of another sender (counted in ``foreign``, dropped)."""
        data, ancdata, _flags, _addr = self.sock.recvmsg(1 << 16, socket.CMSG_SPACE(self._CRED.size))
        sender = None
        for level, kind, value in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and len(value) >= self._CRED.size:
                sender = self._CRED.unpack_from(value)[0]
        if data and sender != self.pid:
            self.foreign += len(data)
            return None
        return data

    def close(self) -> None:
        self.sock.close()


# -- one job ------------------------------------------------------------------------
class Server:
    def __init__(self, config: dict) -> None:
        self.config = config
        self.base = config["base"]
        self.child = _load_child_module()
        self.landlock_abi = self.child.landlock_abi() if config.get("landlock", True) else 0

    def run_job(self, job: dict) -> tuple[dict, bytes]:
        job = dict(job, landlock_abi=self.landlock_abi, affinity=self.config.get("affinity"))
        job["devices"] = self.config.get("devices") or []
        job["nproc"] = _nproc_limit(int(job["max_procs"]), bool(self.config.get("isolated")))
        jobdir = os.path.realpath(os.path.join(self.base, f"job-{os.getpid()}-{time.monotonic_ns()}"))
        os.mkdir(jobdir, 0o700)
        program_path = os.path.join(jobdir, "program.py")
        with open(program_path, "w", encoding="utf-8") as f:
            f.write(job["source"])
        shm_before = _shm_names()
        started = time.time()
        try:
            return self._supervise(job, jobdir, program_path)
        finally:
            sweep()
            _rmtree_contents(self.base)
            if self.config.get("isolated"):
                _rmtree_contents(SHM)  # this server's own tmpfs: nothing there is anyone else's
            else:
                _remove_new_shm(shm_before, started)

    def _supervise(self, job: dict, jobdir: str, program_path: str) -> tuple[dict, bytes]:
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        channel = _ResultChannel()
        server_pid, start = os.getpid(), time.monotonic()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            self.child.run_child(job, jobdir, program_path, out_w, err_w, channel.peer.fileno(), server_pid)
            os._exit(72)
        channel.pid = pid
        for fd in (out_w, err_w):
            os.close(fd)
        channel.peer.close()
        # the child calls setsid() itself (setpgid here would make that fail); until it has,
        # killpg(pid) finds no group and the kill of pid alone is enough, as it has not forked yet
        streams = {out_r: _Tail(int(job["tail_bytes"])), err_r: _Tail(int(job["tail_bytes"]))}
        result = bytearray()
        reason = self._watch(job, pid, start, streams, result, channel)
        seconds = time.monotonic() - start
        for target in (-pid, pid):  # the group, then the leader if it left the group
            try:
                os.kill(target, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _, status, usage = os.wait4(pid, 0)
        sweep()
        self._drain(streams, result, channel, job)
        for fd in (out_r, err_r):
            os.close(fd)
        channel.close()
        if channel.foreign and reason is None:
            reason = "foreign"
        stdout, stderr = streams[out_r].text(), streams[err_r].text()
        header = {"stdout": stdout, "stderr": stderr, "seconds": seconds, "max_rss_mb": usage.ru_maxrss / 1024}
        header["returncode"] = os.waitstatus_to_exitcode(status)
        header.update(self._classify(job, reason, status, usage, stderr, result))
        payload = b""
        if header["kind"] is None:
            payload = bytes(result[result.index(b"\n") + 1 :])
        header["value_len"] = len(payload)
        return header, payload

    def _watch(self, job, pid, start, streams, result, channel) -> str | None:
        """Pump the pipes until the child exits or breaks a limit; returns the limit broken."""
        deadline = start + float(job["timeout_s"])
        max_output = int(job["max_output_bytes"])
        max_result = int(job["max_result_bytes"]) + 65536
        poller = select.poll()
        for fd in (*streams, channel.fd):
            poller.register(fd, select.POLLIN)
        try:
            pidfd = os.pidfd_open(pid)
            poller.register(pidfd, select.POLLIN)
        except (AttributeError, OSError):
            pidfd = None
        count_every = 0.05  # a scan costs ~0.1 ms; a fork bomb must not get far between two
        next_count = start + count_every
        try:
            while True:
                now = time.monotonic()
                if now >= deadline:
                    return "timeout"
                if now >= next_count:
                    tree = descendants(os.getpid())
                    if len(tree) > int(job["max_procs"]):
                        return "procs"
                    if _stopped(pid):  # stopped by itself or by a process it started: it would hold the slot
                        return "stopped"
                    # memory_limit "rss": the whole tree's proportional RSS, in place of RLIMIT_AS
                    if job.get("memory_limit") == "rss" and sum(map(_pss_bytes, tree)) > int(job["memory_mb"]) * 2**20:
                        return "rss"
                    next_count = now + count_every
                wait_s = max(0.0, min(deadline, next_count) - now)
                if pidfd is None:
                    wait_s = min(wait_s, 0.01)
                for fd, _event in poller.poll(wait_s * 1000 + 1):
                    if fd == pidfd:
                        return None
                    data = channel.read() if fd == channel.fd else os.read(fd, 1 << 16)
                    if data is None:
                        continue
                    if not data:
                        poller.unregister(fd)
                    elif fd == channel.fd:
                        result += data
                        if len(result) > max_result:
                            return "result_size"
                    else:
                        streams[fd].add(data)
                        if sum(t.total for t in streams.values()) > max_output:
                            return "output"
                if pidfd is None and os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT):
                    return None
        finally:
            if pidfd is not None:
                os.close(pidfd)

    @staticmethod
    def _drain(streams, result, channel, job) -> None:
        """Read what is still in the pipes (every writer is dead by now)."""
        cap = int(job["max_result_bytes"]) + 65536
        for fd in (*streams, channel.fd):
            os.set_blocking(fd, False)
            while True:
                try:
                    data = channel.read() if fd == channel.fd else os.read(fd, 1 << 16)
                except BlockingIOError:
                    break
                if data is None:
                    continue
                if not data:
                    break
                if fd == channel.fd:
                    if len(result) <= cap:
                        result += data
                else:
                    streams[fd].add(data)

    @staticmethod
    def _classify(job, reason, status, usage, stderr, result) -> dict:
        """Turn how the child ended into ``kind`` (None for success) and a one-paragraph ``error``."""
        timeout_s, mem_mb = job["timeout_s"], job["memory_mb"]
        if reason == "timeout":
            return {"kind": "timeout", "error": f"the program ran longer than its {timeout_s:g} s limit and was killed"}
        if reason == "output":
            mib = int(job["max_output_bytes"]) / 2**20
            return {"kind": "bad_output", "error": f"the program printed more than {mib:g} MiB and was killed"}
        if reason == "result_size":
            mib = int(job["max_result_bytes"]) / 2**20
            return {"kind": "bad_output", "error": f"the returned value is larger than {mib:g} MiB of JSON"}
        if reason == "rss":
            return {
                "kind": "memory",
                "error": f"the program's processes used more than their {mem_mb} MiB of memory and were killed",
            }
        if reason == "procs":
            return {"kind": "crash", "error": f"the program ran more than {job['max_procs']} processes and was killed"}
        if reason == "stopped":
            return {
                "kind": "crash",
                "error": "the program's process was stopped by a signal (SIGSTOP or SIGTSTP, from itself or a "
                "process it started) and was killed",
            }
        if reason == "foreign":
            return {
                "kind": "crash",
                "error": "a process other than the program's own wrote to its result channel (a child it started "
                "that kept the descriptor); the result was discarded",
            }
        header = None
        if b"\n" in result:
            try:
                header = json.loads(bytes(result[: result.index(b"\n")]))
            except ValueError:
                header = None
        if header is not None and header.get("status") == "ok":
            if os.WIFSIGNALED(status) or os.waitstatus_to_exitcode(status) != 0:
                header = None  # died while exiting: not a clean result
            else:
                return {"kind": None, "error": None}
        if header is not None:
            return {"kind": header.get("kind", "exception"), "error": header.get("error", "")}
        memory_hint = any(h in stderr for h in _MEMORY_HINTS)
        rss_near_limit = usage.ru_maxrss * 1024 >= 0.8 * mem_mb * 2**20
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            if sig == signal.SIGXCPU:
                return {"kind": "timeout", "error": f"the program used more CPU time than its {timeout_s:g} s limit"}
            if sig in (signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT, signal.SIGKILL) and (
                memory_hint or rss_near_limit
            ):
                return {
                    "kind": "memory",
                    "error": f"the program was killed ({signal.Signals(sig).name}) at its {mem_mb} MiB memory limit",
                }
            if sig == signal.SIGXFSZ:
                return {"kind": "crash", "error": f"the program wrote a file larger than {job['file_mb']} MiB"}
            name = signal.Signals(sig).name
            what = _SIGNAL_NAMES.get(sig, "killed by a signal")
            return {"kind": "crash", "error": f"the program died from {name} ({what}) before returning"}
        code = os.waitstatus_to_exitcode(status)
        if code == getattr(_child_module, "REPORT_FAILED", 70) and not memory_hint:
            return {
                "kind": "crash",
                "error": "the program's result could not be sent: its result channel (fd 3) was closed, replaced "
                "or broken by the program",
            }
        if memory_hint:
            return {
                "kind": "memory",
                "error": f"the program ran out of memory (limit {mem_mb} MiB), exit status {code}",
            }
        return {
            "kind": "crash",
            "error": f"the program exited with status {code} before returning (os._exit or a fatal error)",
        }


# -- main ----------------------------------------------------------------------------
def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def main() -> None:
    config = json.loads(sys.argv[1])
    sys.dont_write_bytecode = True
    requests, replies = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.set_inheritable(requests, False)
    os.set_inheritable(replies, False)
    _libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    _libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)  # programs cannot ptrace the server
    loaded = []
    for name in config.get("preload", ()):
        try:
            importlib.import_module(name)
            loaded.append(name)
        except Exception:  # a missing optional package only costs the program an import
            pass
    server = Server(config)
    ready = {"ready": True, "pid": os.getpid(), "preloaded": loaded, "landlock_abi": server.landlock_abi}
    _write_all(replies, json.dumps(ready).encode() + b"\n")
    with os.fdopen(requests, "rb") as lines:
        for line in lines:
            header, payload = server.run_job(json.loads(line))
            _write_all(replies, json.dumps(header, allow_nan=True).encode() + b"\n" + payload)
            if config.get("one_shot"):
                break


if __name__ == "__main__":
    main()
