"""The run directory: the record of a run, and what a resume reads back.

    runs/<name>/
      config.yaml          resolved config (every default filled in)
      events.jsonl         one line per rollout and per step: the source of truth
      best/                best construction so far: construction.json, code.py, score.json
      checkpoints/step_N/  sampler state, loop state (RNG, counters), backend state

Checkpoints are written under a temporary name and renamed, so a crash never
leaves a half-written step; ``latest_checkpoint`` ignores anything else.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError

CHECKPOINT_PREFIX = "step_"


class RunDirError(UserError):
    """A run directory that cannot be used; the message says what is wrong and what to do."""


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
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class RunStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.events_path = self.root / "events.jsonl"
        self.best_dir = self.root / "best"
        self.ckpt_dir = self.root / "checkpoints"
        self._events = None

    # -- creation -----------------------------------------------------------------
    @staticmethod
    def free_dir(root: Path) -> Path:
        """``root`` if it holds no run yet, else the first free ``root-1``, ``root-2``, ..."""
        candidate, i = Path(root), 0
        while (candidate / "events.jsonl").exists() or (candidate / "checkpoints").exists():
            i += 1
            candidate = Path(f"{root}-{i}")
        return candidate

    def create(self, resolved_config: dict[str, Any]) -> None:
        if self.events_path.exists() and self.events_path.stat().st_size > 0:
            raise RunDirError(
                f"Run directory {self.root} already holds a run (events.jsonl is not empty). "
                "Continue it with --resume, or choose another run.output (e.g. --set run.output=runs/new)."
            )
        self.root.mkdir(parents=True, exist_ok=True)
        for d in (self.best_dir, self.ckpt_dir):
            d.mkdir(exist_ok=True)
        write_atomic(self.root / "config.yaml", yaml.safe_dump(resolved_config, sort_keys=False))

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
        if self._events is None:
            self._events = open(self.events_path, "a")
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
        write_atomic(self.events_path, "".join(dumps(e) + "\n" for e in keep))
        return len(events) - len(keep)

    # -- best -----------------------------------------------------------------------------
    def write_best(self, record: dict[str, Any], code: str) -> None:
        """Replace best/ (construction, code, verified score) atomically, file by file."""
        self.best_dir.mkdir(exist_ok=True)
        write_atomic(self.best_dir / "code.py", code or "")
        write_atomic(self.best_dir / "construction.json", dumps(record.get("construction")))
        meta = {k: v for k, v in record.items() if k != "construction"}
        write_atomic(self.best_dir / "score.json", json.dumps(_jsonable(meta), indent=1))

    # -- checkpoints --------------------------------------------------------------------------
    def checkpoint_path(self, step: int) -> Path:
        return self.ckpt_dir / f"{CHECKPOINT_PREFIX}{step:06d}"

    def begin_checkpoint(self, step: int) -> Path:
        tmp = self.ckpt_dir / f".{CHECKPOINT_PREFIX}{step:06d}.tmp"
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
            if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX) and (p / "loop.json").exists()
        ]
        return sorted(done)

    def latest_checkpoint(self) -> Path | None:
        found = self.checkpoints()
        return found[-1] if found else None

    def close(self) -> None:
        if self._events is not None:
            self._events.close()
            self._events = None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
