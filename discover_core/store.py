"""The run directory: the record of a run, and what a resume reads back.

    runs/<name>/
      .discover-run        marks the folder as a run's (written first)
      .lock                advisory lock held by the process running it (host, pid)
      config.yaml          resolved config (every default filled in)
      events.jsonl         one line per rollout and per step: the source of truth
      best/                best construction as of the last checkpoint: construction.json, code.py, score.json
      checkpoints/step_N/  sampler state, loop state (RNG, counters, best), backend state

A checkpoint is written whole by ``write_checkpoint`` (backend/ from the backend's
save hook, sampler.json, then loop.json, whose presence marks it complete) under a
temporary name and renamed, so a crash never leaves a half-written step;
``latest_checkpoint`` ignores anything else, and ``read_checkpoint`` reads one back.
``best/`` is replaced as one folder when a checkpoint commits, from that checkpoint's record.
One process at a time owns a run directory (``fcntl.flock`` on ``.lock``, released
by the kernel when the process dies, so a dead holder's lock is simply taken over).
A folder holding files no run wrote is never used.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import math
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import yaml

from .errors import UserError

CHECKPOINT_PREFIX = "step_"
#: written last into a checkpoint: a checkpoint folder without it is incomplete
LOOP_STATE = "loop.json"
SAMPLER_STATE = "sampler.json"
BACKEND_DIR = "backend"
MARKER = ".discover-run"
LOCK = ".lock"
#: names a run writes in its folder; anything else there is the user's
#: folders the run's ``module:Name`` components were imported from, one per line (for verify, plot, report, resume)
IMPORT_PATH = "import_path.txt"
RUN_NAMES = frozenset({MARKER, LOCK, "config.yaml", "events.jsonl", "best", "checkpoints", ".best.tmp", IMPORT_PATH})


class RunDirError(UserError):
    """A run directory that cannot be used; the message says what is wrong and what to do."""


@dataclass
class Checkpoint:
    """One complete checkpoint as read back: the step it ends, the loop's and the sampler's state."""

    path: Path
    step: int
    loop: dict[str, Any]  # the loop's state, less the step
    sampler: dict[str, Any]

    @property
    def backend(self) -> Path:
        """The folder the backend's save hook wrote (its load hook reads it)."""
        return self.path / BACKEND_DIR


def _jsonable(x: Any) -> Any:
    """NaN and inf are not JSON; write them as strings so the file stays standard."""
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if hasattr(x, "tolist"):  # numpy scalars and arrays
        return _jsonable(x.tolist())
    return x


def dumps(obj: Any) -> str:
    return json.dumps(_jsonable(obj), separators=(",", ":"))


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _ours(name: str) -> bool:
    return name in RUN_NAMES or (name.startswith(".") and name.endswith(".tmp"))


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


class RunStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.events_path = self.root / "events.jsonl"
        self.best_dir = self.root / "best"
        self.ckpt_dir = self.root / "checkpoints"
        self._events: TextIO | None = None  # events.jsonl, opened on the first append
        self._lock_fd: int | None = None
        self._made_root = False  # claim() created the folder: discard() may remove it

    # -- errors of the operating system ----------------------------------------------------
    @contextlib.contextmanager
    def os_errors(self, what: str, started: bool = True) -> Iterator[None]:
        """An OSError (full disk, read-only, a path under a file) becomes one paragraph."""
        try:
            yield
        except OSError as e:
            where = f" ({e.filename})" if e.filename else ""
            then = (
                "Every step up to its last checkpoint is kept; fix the cause (free space, permissions, "
                f"the path) and continue with: discover resume {self.root}"
                if started
                else "Nothing was written; choose another run.output or fix the cause (permissions, free space)."
            )
            raise RunDirError(
                f"Cannot {what} for the run directory {self.root}: {e.strerror or e}{where}. {then}"
            ) from None

    # -- ownership ---------------------------------------------------------------------------
    def foreign_files(self) -> list[str]:
        """Names in the folder that no run wrote (the user's own files)."""
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return []
        # a config.yaml is the run's only beside the run's marker (or events, or checkpoints): alone, it is
        # the user's own (``run.output: .`` next to the config being run) and must never be overwritten
        started = any(n in names for n in (MARKER, "events.jsonl", "checkpoints"))
        return sorted(n for n in names if not _ours(n) or (n == "config.yaml" and not started))

    def holds_run(self) -> bool:
        """Whether a run was ever started here (even one killed before its first event)."""
        events = self.events_path.exists() and self.events_path.stat().st_size > 0
        return events or (self.root / MARKER).exists() or bool(self.checkpoints())

    def lock(self) -> bool:
        """Take the run's lock (non-blocking); False when another live process holds it."""
        if self._lock_fd is not None:
            return True
        fd = os.open(self.root / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False
            raise
        holder = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode() + b"\n", 0)
        self._lock_fd = fd
        return True

    def acquire(self) -> None:
        """``lock`` or a clear error naming the holder."""
        with self.os_errors("take the lock", started=False):
            self.root.mkdir(parents=True, exist_ok=True)
            if self.lock():
                return
        try:
            holder = json.loads((self.root / LOCK).read_text())
            who = f"process {holder['pid']} on host {holder['host']} (since {holder['since']})"
        except (OSError, ValueError, KeyError, TypeError):
            who = "another process"
        raise RunDirError(
            f"Run directory {self.root} is in use by {who}: one run at a time per directory. "
            "Wait for it to finish or stop it, or choose another run.output."
        )

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    @classmethod
    def claim(cls, root: Path) -> RunStore:
        """A locked, empty run directory at ``root`` or, if a run is there, at ``root-1``, ``root-2``, ...

        Creating with ``mkdir`` and locking before looking makes two runs started at
        once on the same ``root`` end in two folders, never one merged folder. A
        ``root`` that is a file or holds files no run wrote is refused.
        """
        root, i = Path(root), 0
        while True:
            store = cls(root if i == 0 else Path(f"{root}-{i}"))
            with store.os_errors("create the folder", started=False):
                if i == 0 and store.root.exists() and not store.root.is_dir():
                    raise RunDirError(f"run.output {root} is a file, not a folder; choose a folder.")
                store._made_root = not store.root.exists()
                store.root.mkdir(parents=True, exist_ok=True)
                foreign = store.foreign_files()
                if i == 0 and foreign:
                    shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
                    raise RunDirError(
                        f"run.output {root} already holds files that no run wrote ({shown}); a run never writes "
                        "beside or over them. Choose a new or empty folder (e.g. --set run.output=runs/new)."
                    )
                if not foreign and store.lock():
                    if not store.holds_run():
                        return store
                    store.unlock()
            i += 1

    # -- creation -----------------------------------------------------------------
    def create(self, resolved_config: dict[str, Any]) -> None:
        if self.root.is_file():
            raise RunDirError(f"run.output {self.root} is a file, not a folder; choose a folder.")
        foreign = self.foreign_files()
        if foreign:
            raise RunDirError(
                f"run.output {self.root} already holds files that no run wrote ({', '.join(foreign[:5])}); "
                "a run never writes beside or over them. Choose a new or empty folder."
            )
        self.acquire()
        if self.events_path.exists() and self.events_path.stat().st_size > 0:
            raise RunDirError(
                f"Run directory {self.root} already holds a run (events.jsonl is not empty). "
                "Continue it with --resume, or choose another run.output (e.g. --set run.output=runs/new)."
            )
        made = [p for p in (self.root / MARKER, self.ckpt_dir, self.root / "config.yaml") if not p.exists()]
        try:
            with self.os_errors("create the run", started=False):
                (self.root / MARKER).touch()
                self.ckpt_dir.mkdir(exist_ok=True)
                write_atomic(self.root / "config.yaml", yaml.safe_dump(resolved_config, sort_keys=False))
        except RunDirError:
            for p in made:  # leave no partial run behind
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            raise

    def write_import_path(self, folders: list[Path]) -> None:
        """Record where the run's ``module:Name`` components were imported from (nothing if none were)."""
        if folders:
            with self.os_errors("write the import path"):
                write_atomic(self.root / IMPORT_PATH, "".join(f"{Path(f).resolve()}\n" for f in folders))

    def import_path(self) -> list[Path]:
        """The folders ``write_import_path`` recorded, or []."""
        try:
            return [Path(line) for line in (self.root / IMPORT_PATH).read_text().splitlines() if line.strip()]
        except OSError:
            return []

    def discard(self, remove_root: bool | None = None) -> None:
        """Remove what a run that never started wrote here, and the folder if ``claim`` made it
        (or if ``remove_root``: a caller that saw the folder absent before the start).

        A failed start (a missing SDK, key or replies file, a crashing ``initial_states``)
        leaves nothing: no folder for ``discover runs`` to hide, no ``-1`` suffix on the next
        run. Only the run's own names are removed; a folder that holds anything else stays.
        """
        self.close()
        for name in RUN_NAMES:
            path = self.root / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    path.unlink(missing_ok=True)
        if self._made_root if remove_root is None else remove_root:
            with contextlib.suppress(OSError):
                self.root.rmdir()  # only when empty

    def write_config(self, resolved_config: dict[str, Any]) -> None:
        with self.os_errors("write config.yaml"):
            write_atomic(self.root / "config.yaml", yaml.safe_dump(resolved_config, sort_keys=False))

    def reset(self) -> None:
        """Forget every step (a run with no complete checkpoint starts again in place)."""
        with self.os_errors("reset the run"):
            self.close_events()
            self.events_path.unlink(missing_ok=True)
            for d in (self.best_dir, self.ckpt_dir):
                shutil.rmtree(d, ignore_errors=True)

    def require_run(self) -> None:
        """A RunDirError unless a run was started here (a plugin folder holds a config.yaml too)."""
        if not self.holds_run():
            config = self.root / "config.yaml"
            start = f" To start a run from its config: discover run {config}" if config.is_file() else ""
            raise RunDirError(
                f"{self.root} is not a run directory: no run was started in it (it has no {MARKER} marker, "
                f"events or checkpoints).{start}"
            )

    def read_config(self) -> dict[str, Any]:
        path = self.root / "config.yaml"
        try:
            data = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise RunDirError(f"{self.root} is not a run directory: it has no config.yaml.") from None
        except yaml.YAMLError as e:
            raise RunDirError(f"{path} is corrupted (not valid YAML): {e}") from None
        if not isinstance(data, dict):
            raise RunDirError(f"{path} is corrupted: expected a mapping of sections.")
        return data

    # -- events -----------------------------------------------------------------------
    def append_events(self, events: list[dict[str, Any]]) -> None:
        """Append and fsync: after this returns the lines survive a crash."""
        with self.os_errors("append to events.jsonl"):
            if self._events is None:
                self._events = open(self.events_path, "a")  # noqa: SIM115 - kept open for the run
            self._events.write("".join(dumps(e) + "\n" for e in events))
            self._events.flush()
            os.fsync(self._events.fileno())

    def read_events(self) -> list[dict[str, Any]]:
        if not self.events_path.exists():
            return []
        out = []
        with open(self.events_path) as f:
            for i, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    # Only a line cut by a crash can be torn, and that is always the last one.
                    rest = f.read()
                    if rest.strip():
                        raise RunDirError(
                            f"{self.events_path} is corrupted at line {i} (not JSON), and more lines follow; "
                            "it cannot be the tail of a crashed write. Inspect or restore the file."
                        ) from None
        return out

    def truncate_events(self, last_step: int) -> int:
        """Keep only events of steps ≤ ``last_step`` (the step in flight at a crash is redone). Returns lines dropped."""
        events = self.read_events()
        keep = [e for e in events if e.get("step", -1) <= last_step]
        with self.os_errors("rewrite events.jsonl"):
            write_atomic(self.events_path, "".join(dumps(e) + "\n" for e in keep))
        return len(events) - len(keep)

    def missing_steps(self, last_step: int) -> list[int]:
        """Steps ≤ ``last_step`` whose events are missing or cut (fewer rollout lines than the step recorded)."""
        counts: dict[int, int] = {}
        recorded: dict[int, int] = {}
        for e in self.read_events():
            step = e.get("step")
            if not isinstance(step, int) or step > last_step:
                continue
            if e.get("type") == "rollout":
                counts[step] = counts.get(step, 0) + 1
            elif e.get("type") == "step":
                recorded[step] = int(e.get("rollouts", 0))
        return [t for t in range(last_step + 1) if t not in recorded or counts.get(t, 0) != recorded[t]]

    # -- best -----------------------------------------------------------------------------
    def write_best(self, record: dict[str, Any]) -> None:
        """Replace best/ as one folder: built aside, then swapped in (construction, code, verified score)."""
        tmp = self.root / ".best.tmp"
        with self.os_errors("write best/"):
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            meta = {k: v for k, v in record.items() if k not in ("construction", "code")}
            files = {
                "code.py": record.get("code") or "",
                "construction.json": dumps(record.get("construction")),
                "score.json": json.dumps(_jsonable(meta), indent=1),
            }
            for name, text in files.items():
                with open(tmp / name, "w") as f:
                    f.write(text)
                    f.flush()
                    os.fsync(f.fileno())
            if not (self.best_dir.is_dir() and _exchange(tmp, self.best_dir)):
                if self.best_dir.exists():  # no atomic swap here: a short moment without best/
                    os.replace(self.best_dir, self.root / ".best.old.tmp")
                os.replace(tmp, self.best_dir)
            _fsync_dir(self.root)
            for leftover in (tmp, self.root / ".best.old.tmp"):
                shutil.rmtree(leftover, ignore_errors=True)

    # -- checkpoints --------------------------------------------------------------------------
    def checkpoint_path(self, step: int) -> Path:
        return self.ckpt_dir / f"{CHECKPOINT_PREFIX}{step:06d}"

    @staticmethod
    def checkpoint_step(path: Path) -> int:
        """The step a checkpoint folder ends (``step_000012`` -> 12)."""
        return int(Path(path).name[len(CHECKPOINT_PREFIX) :])

    def write_checkpoint(
        self,
        step: int,
        loop_state: dict[str, Any],
        sampler_state: dict[str, Any],
        save_backend: Callable[[Path], None],
        keep: int,
    ) -> Path:
        """Write the whole checkpoint of ``step`` and keep the last ``keep``; returns its folder.

        Built under a temporary name (backend/ by ``save_backend``, sampler.json, loop.json
        last) and renamed into place; a half-written one never stays.
        """
        tmp = self._checkpoint_tmp(step)
        try:
            with self.os_errors(f"write the checkpoint of step {step}"):
                tmp = self.begin_checkpoint(step)
                (tmp / BACKEND_DIR).mkdir()
                save_backend(tmp / BACKEND_DIR)
                write_atomic(tmp / SAMPLER_STATE, dumps(sampler_state))
                # written last: marks the checkpoint complete
                write_atomic(tmp / LOOP_STATE, dumps({"step": step, **loop_state}))
                return self.commit_checkpoint(tmp, step, keep=keep)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # gone after the commit; a half-written one never stays

    def read_checkpoint(self, path: Path | None = None) -> Checkpoint | None:
        """The checkpoint at ``path`` (default: the latest complete one), or None when there is none."""
        path = self.latest_checkpoint() if path is None else Path(path)
        if path is None:
            return None
        try:
            loop_state = json.loads((path / LOOP_STATE).read_text())
            sampler_state = json.loads((path / SAMPLER_STATE).read_text())
            step = loop_state.pop("step")
            if not isinstance(step, int) or not isinstance(sampler_state, dict):
                raise ValueError("a step number and a sampler mapping were expected")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise RunDirError(
                f"Checkpoint {path} is corrupted ({e}). Delete that folder to resume from the one before it."
            ) from None
        return Checkpoint(path=path, step=step, loop=loop_state, sampler=sampler_state)

    def last_step(self) -> int | None:
        """The step the latest complete checkpoint ends; None when there is none or it cannot be read."""
        try:
            ckpt = self.read_checkpoint()
        except RunDirError:
            return None
        return None if ckpt is None else ckpt.step

    def _checkpoint_tmp(self, step: int) -> Path:
        return self.ckpt_dir / f".{CHECKPOINT_PREFIX}{step:06d}.tmp"

    def begin_checkpoint(self, step: int) -> Path:
        tmp = self._checkpoint_tmp(step)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        return tmp

    def commit_checkpoint(self, tmp: Path, step: int, keep: int) -> Path:
        final = self.checkpoint_path(step)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(self.ckpt_dir)
        for old in self.checkpoints()[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def checkpoints(self) -> list[Path]:
        if not self.ckpt_dir.exists():
            return []
        done = [
            p
            for p in self.ckpt_dir.iterdir()
            if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX) and (p / LOOP_STATE).exists()
        ]
        return sorted(done)

    def latest_checkpoint(self) -> Path | None:
        found = self.checkpoints()
        return found[-1] if found else None

    def close_events(self) -> None:
        if self._events is not None:
            with contextlib.suppress(OSError):
                self._events.close()
            self._events = None

    def close(self) -> None:
        self.close_events()
        self.unlock()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
