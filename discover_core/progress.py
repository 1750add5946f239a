"""What a run prints: a live display on a terminal (rich), plain log lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import Any


def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.6g}"
    return str(x)


class Reporter:
    """Silent base: the loop calls these hooks; subclasses decide what to show."""

    def started(self, cfg: Any, first_step: int) -> None: ...

    def step_started(self, step: int, total: int) -> None: ...

    def step_finished(self, metrics: dict[str, Any]) -> None: ...

    def finished(self, summary: Any) -> None: ...

    def close(self) -> None:
        """Called when the run ends, also by an error: stop anything live."""

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
            f"best score {_fmt(summary.best_score)}; run directory {summary.run_dir}"
        )


class PlainReporter(Reporter):
    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stderr

    def _print(self, text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", file=self.stream, flush=True)

    def started(self, cfg: Any, first_step: int) -> None:
        self._print(
            f"run {cfg.problem.name} with {cfg.backend.name}: steps {first_step}..{cfg.run.steps - 1}, "
            f"{cfg.run.groups} groups x {cfg.run.rollouts} rollouts, output {cfg.run.output}"
        )

    def step_started(self, step: int, total: int) -> None:
        self._print(f"step {step}/{total - 1}: sampling, evaluating, training ...")

    def step_finished(self, metrics: dict[str, Any]) -> None:
        self._print(self.step_line(metrics))

    def finished(self, summary: Any) -> None:
        self._print(self.summary_line(summary))


class RichReporter(PlainReporter):
    """A status spinner for the step in flight and one table row per finished step."""

    def __init__(self) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self.status = None

    def _print(self, text: str) -> None:
        self.console.print(text, highlight=False)

    def step_started(self, step: int, total: int) -> None:
        self.status = self.console.status(f"step {step}/{total - 1}: sampling, evaluating, training ...")
        self.status.start()

    def step_finished(self, metrics: dict[str, Any]) -> None:
        self.close()
        super().step_finished(metrics)

    def close(self) -> None:
        if self.status is not None:
            self.status.stop()


def make_reporter(mode: str) -> Reporter:
    if mode == "none":
        return Reporter()
    if mode == "rich" or (mode == "auto" and sys.stderr.isatty()):
        return RichReporter()
    return PlainReporter()
