"""Experiment trackers: ``log: {trackers: [tensorboard, wandb, mlflow, trackio]}``.

Each tracker gets every step's scalar metrics (``step_scalars``) and, where it
can hold files, the best construction (``best/`` plus the problem's picture of
it) each time the best changes. Each is an optional extra, imported only when a
config names it; none is needed by default. A tracker that fails while the run
goes on is logged and switched off: a dashboard never costs a run.

- tensorboard (``pip install -e '.[tensorboard]'`` in the checkout): event files under
  ``RUN_DIR/tensorboard``; the best picture as an image summary.
- wandb (``[wandb]``): offline (files under ``RUN_DIR/wandb``) unless
  ``log.wandb_mode: online`` or ``WANDB_MODE`` is set; best/ as an artifact.
- mlflow (``[mlflow]``): to ``MLFLOW_TRACKING_URI`` if set, else
  ``RUN_DIR/mlruns``; best/ as run artifacts.
- trackio (``[trackio]``): local, scalars only.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

from .errors import MissingExtra, UserError

log = logging.getLogger("discover.trackers")

TRACKERS = ("tensorboard", "wandb", "mlflow", "trackio")


def _require(module: str, extra: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtra(
            f"log.trackers' {extra!r}", module, extra, e, instead=f"remove {extra!r} from log.trackers"
        ) from None


def step_scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """The numbers of a step event, flat: ``valid_rate``, ``seconds/sampling``, ``failures/timeout``, ``beta/min`` ..."""
    out: dict[str, float] = {}

    def put(key: str, x: Any) -> None:
        if isinstance(x, bool) or x is None:
            return
        if isinstance(x, int | float) and math.isfinite(float(x)):
            out[key] = float(x)

    for key in ("best_score", "step_best_score", "valid_rate", "reward_mean", "reward_max", "archive_size", "rollouts"):
        put(key, metrics.get(key))
    put("groups_kept", len(metrics.get("groups_kept", [])))
    for kind, n in (metrics.get("failures") or {}).items():
        put(f"failures/{kind}", n)
    for part, s in (metrics.get("seconds") or {}).items():
        put(f"seconds/{part}", s)
    for key, x in (metrics.get("train") or {}).items():
        put(f"train/{key}", x)
    distinct = metrics.get("distinct_completions") or []  # per group; below the group size: copies
    if distinct:
        put("distinct/min", min(distinct))
        put("distinct/mean", sum(distinct) / len(distinct))
    betas = [g["beta"] for g in metrics.get("group_stats", []) if isinstance(g.get("beta"), int | float)]
    if betas:
        put("beta/min", min(betas))
        put("beta/max", max(betas))
        put("beta/mean", sum(betas) / len(betas))
    return out


class Tracker:
    """One destination for metrics; subclasses implement the three calls."""

    name = ""

    def log_step(self, step: int, scalars: dict[str, float]) -> None: ...

    def log_best(self, step: int, best_dir: Path, picture: Path | None) -> None:
        """``best_dir`` holds construction.json, code.py, score.json; ``picture`` a PNG of it, if any."""

    def close(self) -> None: ...


class TensorBoardTracker(Tracker):
    """Event files written with the ``tensorboard`` package's own writer (no torch needed)."""

    name = "tensorboard"

    def __init__(self, logdir: Path) -> None:
        _require("tensorboard", "tensorboard")
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self.logdir = Path(logdir)
        self.writer = EventFileWriter(str(self.logdir))

    def _summary(self, step: int, values: list[Any]) -> None:
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary

        self.writer.add_event(Event(wall_time=time.time(), step=step, summary=Summary(value=values)))

    def log_step(self, step: int, scalars: dict[str, float]) -> None:
        from tensorboard.compat.proto.summary_pb2 import Summary

        self._summary(step, [Summary.Value(tag=k, simple_value=v) for k, v in scalars.items()])
        self.writer.flush()

    def log_best(self, step: int, best_dir: Path, picture: Path | None) -> None:
        if picture is None:
            return
        from matplotlib import image
        from tensorboard.compat.proto.summary_pb2 import Summary

        h, w = image.imread(str(picture)).shape[:2]
        img = Summary.Image(height=h, width=w, colorspace=4, encoded_image_string=picture.read_bytes())
        self._summary(step, [Summary.Value(tag="best/construction", image=img)])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbTracker(Tracker):
    name = "wandb"

    def __init__(self, run_dir: Path, project: str, config: dict[str, Any], mode: str | None) -> None:
        self.wandb = _require("wandb", "wandb")
        mode = mode or os.environ.get("WANDB_MODE") or "offline"
        self.run = self.wandb.init(
            project=project, name=run_dir.name, dir=str(run_dir), config=config, mode=mode, reinit=True
        )

    def log_step(self, step: int, scalars: dict[str, float]) -> None:
        self.run.log(scalars, step=step)

    def log_best(self, step: int, best_dir: Path, picture: Path | None) -> None:
        art = self.wandb.Artifact("best-construction", type="construction", metadata={"step": step})
        art.add_dir(str(best_dir))
        self.run.log_artifact(art)
        if picture is not None:
            self.run.log({"best/construction": self.wandb.Image(str(picture))}, step=step)

    def close(self) -> None:
        self.run.finish()


class MlflowTracker(Tracker):
    name = "mlflow"

    def __init__(self, run_dir: Path, project: str, config: dict[str, Any]) -> None:
        self.mlflow = _require("mlflow", "mlflow")
        if not os.environ.get("MLFLOW_TRACKING_URI"):
            self.mlflow.set_tracking_uri((run_dir / "mlruns").resolve().as_uri())
        self.mlflow.set_experiment(project)
        self.run = self.mlflow.start_run(run_name=run_dir.name)
        self.mlflow.log_params(_flat(config))

    def log_step(self, step: int, scalars: dict[str, float]) -> None:
        self.mlflow.log_metrics({k.replace("/", "."): v for k, v in scalars.items()}, step=step)

    def log_best(self, step: int, best_dir: Path, picture: Path | None) -> None:
        self.mlflow.log_artifacts(str(best_dir), artifact_path=f"best/step_{step}")
        if picture is not None:
            self.mlflow.log_artifact(str(picture), artifact_path=f"best/step_{step}")

    def close(self) -> None:
        self.mlflow.end_run()


class TrackioTracker(Tracker):
    name = "trackio"

    def __init__(self, run_dir: Path, project: str, config: dict[str, Any]) -> None:
        self.trackio = _require("trackio", "trackio")
        self.trackio.init(project=project, name=run_dir.name, config=config)

    def log_step(self, step: int, scalars: dict[str, float]) -> None:
        self.trackio.log(scalars, step=step)

    def close(self) -> None:
        self.trackio.finish()


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = str(v)[:500]  # mlflow caps a param's value length
    return out


class Trackers:
    """The trackers a config names; the loop calls ``log_step`` after each step and ``close`` at the end."""

    def __init__(self, trackers: list[Tracker], run_dir: Path, problem: Any = None) -> None:
        self.trackers, self.run_dir, self.problem = trackers, Path(run_dir), problem
        self._best_id: str | None = None

    @classmethod
    def open(cls, names: list[str], run_dir: Path, config: dict[str, Any], problem: Any = None, **options) -> Trackers:
        run_dir = Path(run_dir)
        project = options.get("project") or "discover"
        made: list[Tracker] = []
        for name in names:
            if name == "tensorboard":
                made.append(TensorBoardTracker(run_dir / "tensorboard"))
            elif name == "wandb":
                made.append(WandbTracker(run_dir, project, config, options.get("wandb_mode")))
            elif name == "mlflow":
                made.append(MlflowTracker(run_dir, project, config))
            elif name == "trackio":
                made.append(TrackioTracker(run_dir, project, config))
            else:
                raise UserError(f"unknown tracker {name!r} in log.trackers; choose from {', '.join(TRACKERS)}.")
        return cls(made, run_dir, problem)

    def _each(self, what: str, *args) -> None:
        for t in list(self.trackers):
            try:
                getattr(t, what)(*args)
            except Exception as e:  # noqa: BLE001 - a dashboard never stops a run
                log.warning("tracker %s failed in %s (%s: %s); it is switched off", t.name, what, type(e).__name__, e)
                self.trackers.remove(t)

    def log_step(self, metrics: dict[str, Any]) -> None:
        if not self.trackers:
            return
        step = int(metrics["step"])
        self._each("log_step", step, step_scalars(metrics))
        best_dir = self.run_dir / "best"
        try:
            best_id = json.loads((best_dir / "score.json").read_text()).get("state_id")
        except (OSError, json.JSONDecodeError):
            return
        if best_id != self._best_id:
            self._best_id = best_id
            self._each("log_best", step, best_dir, self._picture(best_dir))

    def _picture(self, best_dir: Path) -> Path | None:
        """The problem's plot of the best construction, in RUN_DIR/trackers/best.png (None if it has none)."""
        if self.problem is None:
            return None
        path = self.run_dir / "trackers" / "best.png"
        path.parent.mkdir(exist_ok=True)
        try:
            construction = json.loads((best_dir / "construction.json").read_text())
            self.problem.plot(self.problem.construction_from_record(construction), str(path))
        except Exception as e:  # noqa: BLE001 - includes NotImplementedError: no picture
            log.debug("no picture of the best construction: %s", e)
            return None
        return path

    def close(self) -> None:
        self._each("close")
        self.trackers = []


def open_trackers(log_cfg: Any, run_dir: Path, config: dict[str, Any], problem: Any = None) -> Trackers:
    """The trackers of a config's ``log`` section (none by default)."""
    return Trackers.open(
        list(log_cfg.trackers), run_dir, config, problem, project=log_cfg.project, wandb_mode=log_cfg.wandb_mode
    )
