"""A run directory read back as tables: what ``discover report`` and ``discover runs`` show.

Only files are read (``config.yaml``, ``events.jsonl``, ``best/``, the last
checkpoint's ``loop.json``), never a live loop: a run still in flight is read as
far as its events go (a step's events are appended when the step ends).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..store import RunDirError, RunStore


def _num(x: Any) -> float | None:
    """A score as written by the store ("nan"/"inf" strings become None)."""
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


@dataclass
class StepRow:
    """One finished step, from its ``step`` event and its rollout events."""

    step: int
    rollouts: int
    valid_rate: float
    best_score: float | None
    step_best_score: float | None
    reward_mean: float
    reward_max: float
    failures: dict[str, int]
    betas: list[float]
    groups: int
    groups_kept: int
    archive_size: int
    seconds: float
    rewards: list[float] = field(default_factory=list)
    advantages: list[float] = field(default_factory=list)


@dataclass
class Node:
    """A valid child state seen in the events, or a seed read from the last checkpoint."""

    id: str
    parent: str | None
    step: int
    score: float | None


@dataclass
class RunData:
    root: Path
    config: dict[str, Any]
    steps: list[StepRow]
    nodes: dict[str, Node]
    best: dict[str, Any] | None  # best/score.json
    best_code: str
    best_construction: Any
    updated: float  # mtime of the newest file read, seconds since the epoch
    seeds: dict[str, Node] = field(default_factory=dict)  # from the last checkpoint's archive
    seed_baseline: float | None = None  # the score of the best seed (by value): where the run started

    @property
    def problem(self) -> str:
        return str((self.config.get("problem") or {}).get("name", "?"))

    @property
    def planned_steps(self) -> int | None:
        steps = (self.config.get("run") or {}).get("steps")
        return int(steps) if steps is not None else None

    @property
    def model(self) -> str:
        backend = self.config.get("backend") or {}
        model = backend.get("model")
        name = backend.get("name", "?")
        if model is None and backend.get("path") is not None:
            return f"{name}: {Path(str(backend['path'])).name}"
        return f"{name}: {model}" if model else str(name)

    @property
    def finished(self) -> bool:
        return self.planned_steps is not None and len(self.steps) >= self.planned_steps

    @property
    def valid_rate(self) -> float | None:
        n = sum(s.rollouts for s in self.steps)
        return None if n == 0 else sum(s.valid_rate * s.rollouts for s in self.steps) / n

    @property
    def best_score(self) -> float | None:
        if self.best is not None:
            return _num(self.best.get("score"))
        return self.steps[-1].best_score if self.steps else None

    def lineage(self) -> list[Node]:
        """The best state and its ancestors, oldest first (a seed ends the chain)."""
        if not self.best:
            return []
        chain: list[Node] = []
        seen, cur = set(), self.best.get("state_id")
        while cur is not None and cur not in seen:
            seen.add(cur)
            node = self.nodes.get(cur)
            if node is None:  # a seed: its score is in the checkpoint's archive
                seed = self.seeds.get(cur)
                score = seed.score if seed is not None else (_num(self.best.get("score")) if not chain else None)
                chain.append(Node(cur, None, -1, score))
                break
            chain.append(node)
            cur = node.parent
        return chain[::-1]


def read_run(root: str | Path) -> RunData:
    """Read a run directory; a missing or corrupted config is a ``RunDirError``."""
    store = RunStore(Path(root))
    config = store.read_config()
    events = store.read_events()
    by_step: dict[int, list[dict[str, Any]]] = {}
    nodes: dict[str, Node] = {}
    steps = []
    for e in events:
        kind = e.get("type")
        if kind == "rollout":
            by_step.setdefault(int(e["step"]), []).append(e)
            if e.get("child_id"):
                nodes[e["child_id"]] = Node(e["child_id"], e.get("parent_id"), int(e["step"]), _num(e.get("score")))
        elif kind == "step":
            t = int(e["step"])
            rolls = by_step.get(t, [])
            steps.append(
                StepRow(
                    step=t,
                    rollouts=int(e.get("rollouts", len(rolls))),
                    valid_rate=float(e.get("valid_rate", 0.0)),
                    best_score=_num(e.get("best_score")),
                    step_best_score=_num(e.get("step_best_score")),
                    reward_mean=float(e.get("reward_mean", 0.0)),
                    reward_max=float(e.get("reward_max", 0.0)),
                    failures={str(k): int(v) for k, v in (e.get("failures") or {}).items()},
                    # a constant group used no β (older runs wrote the solver's cap, 2^20, for it)
                    betas=[
                        float(g["beta"])
                        for g in e.get("group_stats", [])
                        if _num(g.get("beta")) is not None and not g.get("constant")
                    ],
                    groups=int(e.get("groups", 0)),
                    groups_kept=len(e.get("groups_kept", [])),
                    archive_size=int(e.get("archive_size", 0)),
                    seconds=float((e.get("seconds") or {}).get("total", 0.0)),
                    rewards=[float(r.get("reward", 0.0)) for r in rolls],
                    advantages=[float(r.get("advantage", 0.0)) for r in rolls],
                )
            )
    best_dir = store.best_dir
    best = code = construction = None
    try:
        best = json.loads((best_dir / "score.json").read_text())
        code = (best_dir / "code.py").read_text()
        construction = json.loads((best_dir / "construction.json").read_text())
    except (OSError, json.JSONDecodeError):
        pass  # no best yet (or a run of an older layout): the report says so
    files = [store.root / "config.yaml", store.events_path, best_dir / "score.json"]
    updated = max((f.stat().st_mtime for f in files if f.exists()), default=time.time())
    seeds, baseline = _seeds(store)
    return RunData(store.root, config, steps, nodes, best, code or "", construction, updated, seeds, baseline)


def _seeds(store: RunStore) -> tuple[dict[str, Node], float | None]:
    """The seeds in the last checkpoint's archive (states without parents), and the best seed's score.

    Seeds enter no event (no rollout made them), so the archive is where their scores are.
    """
    ckpt = store.latest_checkpoint()
    try:
        saved = json.loads((ckpt / "sampler.json").read_text()) if ckpt is not None else {}
    except (OSError, json.JSONDecodeError):
        return {}, None
    states = [s for key in ("states", "seeds") for s in saved.get(key) or () if isinstance(s, dict)]
    seeds = {str(s["id"]): s for s in states if "id" in s and not s.get("parents")}
    nodes = {i: Node(i, None, -1, _num(s.get("score"))) for i, s in seeds.items()}
    ranked = [(v, nodes[i].score) for i, s in seeds.items() if (v := _num(s.get("value"))) is not None]
    baseline = max(ranked, key=lambda vs: vs[0])[1] if ranked else None
    return nodes, baseline


def find_runs(root: str | Path) -> list[Path]:
    """Run directories at or under ``root`` (a folder holding config.yaml and events.jsonl), sorted."""
    root = Path(root)
    if not root.is_dir():
        raise RunDirError(f"{root} is not a folder.")
    found = {p.parent for p in root.rglob("events.jsonl") if (p.parent / "config.yaml").exists()}
    return sorted(found)
