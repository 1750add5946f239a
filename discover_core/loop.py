"""The run around the steps: its components, its run directory, start, resume and checkpoints.

``Discovery`` builds the components of a config (problem, sampler, estimator, and, when
the run really starts, backend and sandbox), creates or resumes the run directory,
refuses a resume whose config changes what the steps compute, runs step after step
(``step.Step``: ``plan``, the backend's sampling, ``finish``), checkpoints every
``run.save_every`` steps through the run store, and turns Ctrl-C into a clean stop.
``run_config`` and ``resume_run`` are the command line's entries.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .backend import Backend
from .components import build_estimator, instantiate
from .config import LoadedConfig, config_changes, load_config
from .errors import UserError
from .guard import HookGuard
from .plugins import Plugins, get_plugins, import_roots, use_import_path
from .problem import Problem
from .progress import Reporter, make_reporter
from .step import Step
from .store import RunDirError, RunStore
from .trackers import open_trackers

log = logging.getLogger("discover")

__all__ = ["Discovery", "RunInterrupted", "RunSummary", "resume_run", "run_config"]


@dataclass
class RunSummary:
    run_dir: Path
    steps_done: int
    best_score: float | None
    best_value: float | None
    valid_rate: float
    rollouts: int
    metrics: list[dict[str, Any]] = field(default_factory=list)
    #: would-be bests whose host-side re-verification failed (made invalid: reward 0, not archived)
    reverify_disagreed: int = 0


class Discovery:
    """A run: its components, its run directory, and the loop over steps.

    ``stepper`` is the run's :class:`~discover_ttt.step.Step`; a driver that samples
    elsewhere (the NeMo RL environment) calls its ``plan`` and ``finish`` and then
    ``commit_step``. ``step`` is the next step to run.
    """

    def __init__(
        self,
        loaded: LoadedConfig,
        plugins: Plugins | None = None,
        reporter: Reporter | None = None,
        store: RunStore | None = None,
    ):
        self.loaded = loaded
        self.cfg = loaded.config
        self.plugins = plugins or get_plugins()
        self.store = store or RunStore(self.cfg.run.output)
        self.reporter = reporter or make_reporter(self.cfg.log.progress)
        self.step = 0  # next step to run

        self.problem: Problem = self._build("problem")
        self._stop = threading.Event()  # set on an interrupt: abandon the evaluations in flight
        problem_entry = self.plugins.get("problems", self.cfg.problem.name)
        hooks = HookGuard(self.problem, problem_entry.plugin, self.cfg.sandbox.timeout_s, self._stop)
        self.sampler = self._build("sampler")
        est_entry = self.plugins.get("estimators", self.cfg.estimator.name)
        self.stepper = Step(
            problem=self.problem,
            hooks=hooks,
            sampler=self.sampler,
            estimator=build_estimator(est_entry.obj, self.loaded.params["estimator"], est_entry.extra.get("stats")),
            run=self.cfg.run,
            reporter=self.reporter,
            record_events=self.store.append_events,
            init_from=self.cfg.problem.init_from,
        )
        self.backend: Backend | None = None
        self.sandbox = None

    def _build(self, section: str) -> Any:
        kind = {"problem": "problems", "backend": "backends", "sampler": "samplers", "estimator": "estimators"}[section]
        entry = self.plugins.get(kind, getattr(self.cfg, section).name)
        return instantiate(entry.obj, self.loaded.params[section])

    def _start_workers(self) -> None:
        """Backend and sandbox are the expensive parts; built only when a run really starts."""
        from .sandbox.executors import make_sandbox

        if self.backend is None:
            self.backend = self._build("backend")
            if hasattr(self.backend, "set_progress"):
                self.backend.set_progress(self.reporter.sampled)
        if self.sandbox is None:
            settings = self.cfg.sandbox.model_dump()
            if self.problem.sandbox_preload:  # e.g. cvxpy, for problems whose programs use it
                from .sandbox import DEFAULT_PRELOAD

                base = tuple(settings.get("preload") or DEFAULT_PRELOAD)
                settings["preload"] = base + tuple(m for m in self.problem.sandbox_preload if m not in base)
            self.sandbox = make_sandbox(settings, self.problem.program_resources)
        self.stepper.sandbox = self.sandbox

    @property
    def started_backend(self) -> Backend:
        """The backend, built when the run starts or resumes (``_start_workers``)."""
        if self.backend is None:
            raise RuntimeError("the backend is built when the run starts or resumes; call start() or resume() first")
        return self.backend

    # -- start and resume ---------------------------------------------------------------
    def start(self) -> None:
        warm = self.stepper.warm_start()  # checked before the run directory exists
        self.store.create(self.loaded.resolved())
        self.store.write_import_path(import_roots(self.loaded.resolved()))  # for verify, plot, report, resume
        self._start_workers()
        seeds = self.stepper.seed(warm)
        self._write_best()  # the seeds' best: no step to discard yet
        log.info("new run in %s: %d seed states", self.store.root, len(seeds))

    def resume(self) -> bool:
        """Continue from the last complete checkpoint. Returns False if there is none (then call start)."""
        if not self.store.holds_run():
            return False
        self.store.acquire()
        path = self.store.latest_checkpoint()
        if path is None:
            return False
        self._check_config()
        ckpt = self.store.read_checkpoint(path)
        assert ckpt is not None  # read from a path that exists
        self._start_workers()
        try:  # a hand-edited or foreign checkpoint of the wrong shape: one paragraph, not a traceback
            self.sampler.load_state_dict(ckpt.sampler)
            self.stepper.load_state_dict(ckpt.loop)
        except (TypeError, KeyError, AttributeError, ValueError, IndexError) as e:
            raise RunDirError(
                f"Checkpoint {path} does not hold what this run saves ({type(e).__name__}: {e}); it was edited or "
                "written by another version. Delete that folder to resume from the one before it."
            ) from None
        self.step = ckpt.step + 1
        self.started_backend.load(ckpt.backend)
        missing = self.store.missing_steps(ckpt.step)
        dropped = self.store.truncate_events(ckpt.step)
        if missing:
            log.warning(
                "events.jsonl of %s lacks the events of steps %s (missing or cut) below checkpoint %s; the run "
                "continues from the checkpoint and records the gap",
                self.store.root,
                _ranges(missing),
                path.name,
            )
            self.store.append_events([{"type": "events_gap", "step": ckpt.step, "missing_steps": missing}])
        best = self.stepper.best
        if best is not None and "construction" in best:
            self.store.write_best(best)  # best/ always describes this checkpoint
        log.info("resumed %s at step %d (%d events of the step in flight dropped)", self.store.root, self.step, dropped)
        return True

    def resume_or_restart(self) -> None:
        """Resume from the last complete checkpoint; a run without one starts again in place from step 0."""
        try:
            if self.resume():
                return
            if self.store.holds_run():
                log.warning("%s has no complete checkpoint: starting it again from step 0, in place", self.store.root)
                self.store.acquire()
                self.store.reset()
            self.start()
        except BaseException:
            self.close()  # a refused resume leaves the directory unlocked
            raise

    def _check_config(self) -> None:
        """Refuse a resume whose config changes what the steps compute; record the safe changes."""
        saved = self.store.read_config()
        new = self.loaded.resolved()
        unsafe, safe = config_changes(saved, new)
        if unsafe:
            shown = "; ".join(f"{k}: {_at(saved, k)!r} -> {_at(new, k)!r}" for k in unsafe[:8])
            raise RunDirError(
                f"Cannot resume {self.store.root} with a different config ({shown}). Only the number of steps, "
                "checkpointing, logging and sandbox.workers may change on resume; start a new run for the rest."
            )
        if safe:
            log.info("resume with changed %s (written to the run's config.yaml)", ", ".join(safe))
            self.store.write_config(new)

    # -- checkpoints ----------------------------------------------------------------------
    def _write_best(self) -> None:
        """best/ from the current record, verified once (then kept in the record and the checkpoint)."""
        best = self.stepper.verify_best()
        if best is not None:
            self.store.write_best(best)

    def _checkpoint(self, t: int) -> None:
        self.stepper.verify_best()  # the checkpoint keeps the verified record
        self.store.write_checkpoint(
            t,
            self.stepper.state_dict(),
            self.sampler.state_dict(),
            self.started_backend.save,
            keep=self.cfg.run.keep_checkpoints,
        )
        self._write_best()  # from the record this checkpoint holds

    def commit_step(self, t: int) -> None:
        """After step ``t``: checkpoint every ``save_every`` steps and at the last one; the next step is t + 1."""
        if (t + 1) % self.cfg.run.save_every == 0 or t + 1 == self.cfg.run.steps:
            self._checkpoint(t)
        self.step = t + 1

    # -- one step and the whole run -------------------------------------------------------------
    def run_step(self, t: int) -> dict[str, Any]:
        """Step ``t`` with the run's backend: plan, sample, finish. Returns the step's metrics."""
        plan = self.stepper.plan(t)
        ts = time.perf_counter()
        backend = self.started_backend
        sampled = backend.sample(plan.to_sample, self.cfg.run.rollouts) if plan.to_sample else []
        sample_s = time.perf_counter() - ts
        train = backend.train if backend.can_train else None
        return self.stepper.finish(plan, sampled, sample_s=sample_s, train=train).metrics

    def run(self) -> RunSummary:
        history = []
        trackers = open_trackers(self.cfg.log, self.store.root, self.loaded.resolved(), self.problem)
        restore = _second_interrupt_exits()
        try:
            self.reporter.started(self.cfg, self.step)
            for t in range(self.step, self.cfg.run.steps):
                self.reporter.step_started(t, self.cfg.run.steps, self.stepper.best)
                metrics = self.run_step(t)
                self.commit_step(t)
                history.append(metrics)
                self.reporter.step_finished(metrics)
                trackers.log_step(metrics)
        except KeyboardInterrupt:
            self._stop.set()
            raise RunInterrupted(self._interrupted_message()) from None
        finally:
            trackers.close()
            self.reporter.close()
            self.close()
            restore()
        best, totals = self.stepper.best, self.stepper.totals
        summary = RunSummary(
            run_dir=self.store.root,
            steps_done=self.step,
            best_score=None if best is None else best["score"],
            best_value=None if best is None else best["value"],
            valid_rate=totals["valid"] / max(1, totals["rollouts"]),
            rollouts=totals["rollouts"],
            metrics=history,
            reverify_disagreed=totals.get("reverify_disagreed", 0),
        )
        self.reporter.finished(summary)
        return summary

    def close(self) -> None:
        self._stop.set()  # evaluations still in flight are abandoned
        for part in (self.sandbox, self.backend):  # the sandbox first: its running programs are killed
            if part is not None:
                part.close()
        self.store.close()

    def _interrupted_message(self) -> str:
        ckpt = self.store.latest_checkpoint()
        kept = (
            f"it keeps every step up to {self.store.checkpoint_step(ckpt)} (checkpoint {ckpt.name})"
            if ckpt is not None
            else "no step was checkpointed yet, so a resume starts it again from step 0"
        )
        return f"Interrupted during step {self.step}. The run directory {self.store.root} is intact: {kept}. " + (
            f"Continue it with: discover resume {self.store.root}"
        )


class RunInterrupted(UserError):
    """Ctrl-C: the run stopped cleanly; the message says what was kept and how to continue."""

    exit_code = 130


def _second_interrupt_exits():
    """After the first Ctrl-C (a KeyboardInterrupt that stops the step), a second one exits at once.

    Cleanup after the first is short (programs are killed, files are closed), but a
    second Ctrl-C inside it would print a traceback; this one prints one line instead.
    Returns the function that restores the previous handler.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.getsignal(signal.SIGINT)
    interrupted = False

    def handler(signum, frame):
        nonlocal interrupted
        if not interrupted:
            interrupted = True
            raise KeyboardInterrupt
        sys.stderr.write("\nInterrupted again: stopping now; the last checkpoint is kept.\n")
        sys.stderr.flush()
        os._exit(130)

    signal.signal(signal.SIGINT, handler)
    return lambda: signal.signal(signal.SIGINT, previous)


def _at(d: dict[str, Any], dotted: str) -> Any:
    node: Any = d
    for part in dotted.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def _ranges(steps: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2, 5'."""
    out, start = [], None
    for i, t in enumerate(steps):
        if start is None:
            start = t
        if i + 1 == len(steps) or steps[i + 1] != t + 1:
            out.append(f"{start}" if start == t else f"{start}-{t}")
            start = None
    return ", ".join(out)


def run_config(
    path: str | Path, overrides: list[str] | None = None, *, resume: bool = False, reporter: Reporter | None = None
) -> RunSummary:
    """Validate a config and run it; with ``resume`` continue its run directory (or start it there)."""
    loaded = load_config(path, overrides)
    if resume:
        _refuse_finished(loaded, f"discover run {path} --resume")
        disc = Discovery(loaded, reporter=reporter)
        # nothing to resume: the run starts here, and a start that fails leaves nothing (as without --resume)
        fresh, made = not disc.store.holds_run(), not disc.store.root.exists()
        try:
            disc.resume_or_restart()
        except BaseException:
            if fresh:
                disc.store.discard(remove_root=made)
            raise
        return disc.run()
    # never write over an earlier run or the user's files: a fresh, locked folder (runs/x, runs/x-1, ...)
    store = RunStore.claim(loaded.config.run.output)
    loaded.config.run.output = store.root
    new: Discovery | None = None
    try:
        new = Discovery(loaded, reporter=reporter, store=store)
        new.start()
    except BaseException:
        if new is not None:
            new.close()
        store.discard()  # a run that never started leaves no folder behind
        raise
    return new.run()


def resume_run(run_dir: str | Path, overrides: list[str] | None = None, reporter: Reporter | None = None) -> RunSummary:
    """Continue the run in ``run_dir`` with the config it saved (from step 0 if it has no complete checkpoint)."""
    store = RunStore(Path(run_dir))
    store.require_run()  # a plugin folder holds a config.yaml too
    raw = store.read_config()
    raw.setdefault("run", {})["output"] = str(Path(run_dir).resolve())
    use_import_path(store.import_path())  # a module:Class problem beside the run's config, without PYTHONPATH
    loaded = load_config(Path(run_dir), overrides, raw=raw)
    _refuse_finished(loaded, f"discover resume {run_dir}")
    disc = Discovery(loaded, reporter=reporter)
    disc.resume_or_restart()
    return disc.run()


def _refuse_finished(loaded: LoadedConfig, command: str) -> None:
    """A run whose last checkpoint is its last step has nothing left to do: say so, and how to extend it."""
    store = RunStore(loaded.config.run.output)
    if store.latest_checkpoint() is None:
        return
    last = store.last_step()
    if last is None:
        return  # resume reports a corrupted checkpoint itself
    done, steps = last + 1, loaded.config.run.steps
    if done >= steps:
        raise RunDirError(
            f"The run in {loaded.config.run.output} is finished: it completed {done} step(s) and run.steps is "
            f"{steps}. To extend it, give it more steps: {command} --set run.steps={done + max(1, steps)}."
        )
