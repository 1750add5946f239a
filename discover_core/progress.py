"""What a run prints: a live display on a terminal (rich), plain log lines otherwise.

The loop calls the ``Reporter`` hooks; the backend's sampling callback
(``Backend.set_progress``) goes to ``Reporter.sampled``. The base class keeps the
figures of the step in flight (``LiveStep``) and the durations of finished steps;
subclasses only decide how to show them:

- ``RichReporter``: bars for rollouts sampled and evaluated, tokens/s, the current
  best and the ETAs of the step and the run, redrawn in place;
- ``PlainReporter``: the same figures as one log line at most every
  ``interval_s`` (30 s), never a carriage return, so a log file stays readable.

ETA of the step: the mean duration of the steps finished in this process minus the
time spent in this one; before any step finished, the remaining rollouts at the
current sampling rate. ETA of the run: that plus (steps left after this one) × the
mean step duration (or this step's estimate when none finished yet).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .backend import SamplingProgress

if TYPE_CHECKING:  # rich is imported when a live display starts
    from rich.live import Live


def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.6g}"
    return str(x)


def fmt_duration(s: float | None) -> str:
    """``95`` → ``1m35s``; ``None`` → ``?``."""
    if s is None:
        return "?"
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    if h:
        return f"{h}h{m:02d}m"
    return f"{m}m{sec:02d}s" if m else f"{sec}s"


@dataclass
class LiveStep:
    """The figures of the step in flight."""

    step: int
    total_steps: int
    started: float
    sampled: int = 0
    rollouts: int = 0  # total rollouts of the step (known once sampling reports or evaluation starts)
    tokens: int = 0
    evaluated: int = 0
    best_score: float | None = None
    best_value: float | None = None
    sampling_started: float | None = None
    durations: list[float] = field(default_factory=list)  # finished steps of this process, seconds

    def tokens_per_s(self, now: float) -> float | None:
        if self.sampling_started is None or not self.tokens:
            return None
        return self.tokens / max(now - self.sampling_started, 1e-9)

    def eta_step(self, now: float) -> float | None:
        elapsed = now - self.started
        if self.durations:
            return max(sum(self.durations) / len(self.durations) - elapsed, 0.0)
        if self.sampled and self.rollouts and self.sampling_started is not None and self.sampled < self.rollouts:
            rate = self.sampled / max(now - self.sampling_started, 1e-9)
            return (self.rollouts - self.sampled) / rate
        return None

    def eta_run(self, now: float) -> float | None:
        eta = self.eta_step(now)
        if eta is None:
            return None
        left = self.total_steps - self.step - 1
        per_step = sum(self.durations) / len(self.durations) if self.durations else (now - self.started) + eta
        return eta + left * per_step

    def figures(self, now: float) -> dict[str, Any]:
        """Everything a display shows, as plain values (tests read these)."""
        return {
            "step": self.step,
            "steps": self.total_steps,
            "sampled": self.sampled,
            "evaluated": self.evaluated,
            "rollouts": self.rollouts,
            "tokens_per_s": self.tokens_per_s(now),
            "best": self.best_score,
            "eta_step": self.eta_step(now),
            "eta_run": self.eta_run(now),
        }

    def line(self, now: float) -> str:
        f = self.figures(now)
        tps = "-" if f["tokens_per_s"] is None else f"{f['tokens_per_s']:.0f}"
        total = f["rollouts"] or "?"
        return (
            f"step {f['step']}/{f['steps'] - 1}: sampled {f['sampled']}/{total} ({tps} tok/s), "
            f"evaluated {f['evaluated']}/{total}, best {_fmt(f['best'])}, "
            f"eta step {fmt_duration(f['eta_step'])}, run {fmt_duration(f['eta_run'])}"
        )


class Reporter:
    """Silent base: keeps the live figures; subclasses show them in ``refresh``.

    ``sampled`` and ``evaluated`` may be called from worker threads.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.live: LiveStep | None = None
        self.durations: list[float] = []
        self._lock = threading.Lock()

    # -- hooks the loop calls ----------------------------------------------------------
    def started(self, cfg: Any, first_step: int) -> None: ...

    def step_started(self, step: int, total: int, best: dict[str, Any] | None = None) -> None:
        """``best``: the run's best record so far (``score``, ``value``), if any."""
        with self._lock:
            self.live = LiveStep(step, total, self.clock(), durations=self.durations)
            if best:
                self.live.best_score, self.live.best_value = best.get("score"), best.get("value")
        self.refresh()

    def sampled(self, progress: SamplingProgress) -> None:
        """The backend's sampling callback (running totals of the current ``sample`` call)."""
        with self._lock:
            live = self.live
            if live is None:
                return
            if live.sampling_started is None:
                live.sampling_started = self.clock()
            live.sampled, live.rollouts, live.tokens = progress.done, progress.total, progress.tokens
        self.refresh()

    def evaluating(self, total: int) -> None:
        """Sampling is over; ``total`` rollouts are going to the verifier."""
        with self._lock:
            if self.live is not None:
                self.live.rollouts = self.live.sampled = total
        self.refresh()

    def evaluated(self, score: float | None = None, value: float | None = None) -> None:
        """One rollout scored (``score`` None: it failed). ``value`` is the score oriented higher-is-better."""
        with self._lock:
            live = self.live
            if live is None:
                return
            live.evaluated += 1
            if value is not None and (live.best_value is None or value > live.best_value):
                live.best_score, live.best_value = score, value
        self.refresh()

    def step_finished(self, metrics: dict[str, Any]) -> None:
        with self._lock:
            if self.live is not None:
                self.durations.append(self.clock() - self.live.started)
                self.live = None

    def finished(self, summary: Any) -> None: ...

    def close(self) -> None:
        """Called when the run ends, also by an error: stop anything live."""

    def refresh(self) -> None:
        """Show the live figures (called after every change; throttle here)."""

    @staticmethod
    def step_line(m: dict[str, Any]) -> str:
        betas = [g["beta"] for g in m["group_stats"] if "beta" in g]
        beta = f" beta={min(betas):.3g}..{max(betas):.3g}" if betas else ""
        s = m["seconds"]
        return (
            f"step {m['step']}: best={_fmt(m['best_score'])} step_best={_fmt(m['step_best_score'])} "
            f"valid={m['valid_rate']:.0%} reward mean={m['reward_mean']:.4g} max={m['reward_max']:.4g}"
            f"{beta} groups_kept={len(m['groups_kept'])}/{m['groups']} archive={m['archive_size']} "
            f"[sample {s['sampling']:.1f}s, eval {s['evaluation']:.1f}s, train {s['training']:.1f}s, "
            f"other {s['other']:.1f}s]"
        )

    @staticmethod
    def summary_line(summary: Any) -> str:
        return (
            f"done: {summary.steps_done} steps, {summary.rollouts} rollouts, valid rate {summary.valid_rate:.1%}, "
            f"best score {_fmt(summary.best_score)}; "
            f"{getattr(summary, 'reverify_disagreed', 0)} re-verifications disagreed; run directory {summary.run_dir}"
        )


class PlainReporter(Reporter):
    """Log lines: the step's start and end, and its live figures at most every ``interval_s``."""

    def __init__(self, stream=None, interval_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(clock)
        self.stream = stream or sys.stderr
        self.interval_s = interval_s
        self._last_line = float("-inf")

    def _print(self, text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", file=self.stream, flush=True)

    def started(self, cfg: Any, first_step: int) -> None:
        self._print(
            f"run {cfg.problem.name} with {cfg.backend.name}: steps {first_step}..{cfg.run.steps - 1}, "
            f"{cfg.run.groups} groups x {cfg.run.rollouts} rollouts, output {cfg.run.output}"
        )

    def step_started(self, step: int, total: int, best: dict[str, Any] | None = None) -> None:
        self._print(f"step {step}/{total - 1}: sampling, evaluating, training ...")
        self._last_line = self.clock()  # the first progress line comes one interval later
        super().step_started(step, total, best)

    def refresh(self) -> None:
        now = self.clock()
        with self._lock:
            if self.live is None or now - self._last_line < self.interval_s:
                return
            self._last_line = now
            text = self.live.line(now)
        self._print(text)

    def step_finished(self, metrics: dict[str, Any]) -> None:
        super().step_finished(metrics)
        self._print(self.step_line(metrics))

    def finished(self, summary: Any) -> None:
        self._print(self.summary_line(summary))


class RichReporter(PlainReporter):
    """A live panel for the step in flight (redrawn in place) and one line per finished step."""

    def __init__(self, console=None, clock: Callable[[], float] = time.monotonic, auto_refresh: bool = True) -> None:
        from rich.console import Console

        super().__init__(clock=clock)
        self.console = console or Console(stderr=True)
        self.auto_refresh = auto_refresh
        self._live: Live | None = None

    def _print(self, text: str) -> None:
        self.console.print(text, highlight=False)

    def render(self):
        """The panel of the step in flight, as a rich renderable."""
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        now = self.clock()
        with self._lock:
            if self.live is None:
                return Table.grid()
            f = self.live.figures(now)
        total = f["rollouts"] or None
        tps = "-" if f["tokens_per_s"] is None else f"{f['tokens_per_s']:.0f} tok/s"
        grid = Table.grid(padding=(0, 1))
        grid.add_column(justify="right", style="bold")
        grid.add_column(width=30)
        grid.add_column()
        for label, done, extra in (
            ("sampled", f["sampled"], tps),
            ("evaluated", f["evaluated"], f"best {_fmt(f['best'])}"),
        ):
            bar = ProgressBar(total=total or 1, completed=done if total else 0, width=30)
            grid.add_row(label, bar, f"{done}/{total or '?'}  {extra}")
        grid.add_row(
            f"step {f['step']}/{f['steps'] - 1}",
            f"eta step {fmt_duration(f['eta_step'])}",
            f"eta run {fmt_duration(f['eta_run'])}",
        )
        return grid

    def step_started(self, step: int, total: int, best: dict[str, Any] | None = None) -> None:
        from rich.live import Live

        Reporter.step_started(self, step, total, best)
        self._live = live = Live(
            get_renderable=self.render,
            console=self.console,
            transient=True,
            auto_refresh=self.auto_refresh,
            refresh_per_second=4,
        )
        live.start()

    def refresh(self) -> None:
        """Rich redraws on its own timer; nothing to throttle here."""

    def step_finished(self, metrics: dict[str, Any]) -> None:
        self.close()
        Reporter.step_finished(self, metrics)
        self._print(self.step_line(metrics))

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None


def make_reporter(mode: str) -> Reporter:
    """``auto``: the live display on a terminal; plain lines in CI, a dumb terminal or a log file."""
    if mode == "none":
        return Reporter()
    terminal = sys.stderr.isatty() and not os.environ.get("CI") and os.environ.get("TERM") != "dumb"
    if mode == "rich" or (mode == "auto" and terminal):
        return RichReporter()
    return PlainReporter()
