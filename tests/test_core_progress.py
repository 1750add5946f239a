"""The live display of a step: plain log lines (throttled, no carriage returns) and the rich panel."""

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from discover_ttt.backend import SamplingProgress
from discover_ttt.loop import run_config
from discover_ttt.progress import PlainReporter, Reporter, RichReporter, fmt_duration, make_reporter

TOY = Path(__file__).parent / "toy"


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def metrics(step):
    return {
        "step": step,
        "best_score": 0.5,
        "step_best_score": 0.5,
        "valid_rate": 0.5,
        "reward_mean": 0.1,
        "reward_max": 0.5,
        "group_stats": [{"beta": 2.0}],
        "groups_kept": [0],
        "groups": 1,
        "archive_size": 3,
        "seconds": {"sampling": 1, "evaluation": 1, "training": 0, "other": 0},
    }


def drive(reporter, clock):
    """Step 0 of 3 (60 s), then step 1 half sampled at t = 60 s into it."""
    reporter.step_started(0, 3)
    clock.t += 60
    reporter.step_finished(metrics(0))
    reporter.step_started(1, 3, {"score": 0.25, "value": 0.25})
    for k in range(1, 5):
        clock.t += 10
        reporter.sampled(SamplingProgress(done=k, total=8, tokens=300 * k))
    reporter.evaluated(0.5, 0.5)
    reporter.evaluated(None, None)


def test_plain_mode_prints_the_figures_at_most_every_30_seconds():
    stream, clock = io.StringIO(), Clock()
    drive(PlainReporter(stream=stream, interval_s=30, clock=clock), clock)
    lines = stream.getvalue().splitlines()
    live = [line for line in lines if "sampled" in line]
    # step 1 began at t=60; updates at +10, +20, +30, +40 s: only the one at +30 s is printed
    assert len(live) == 1
    # sampling started at the first callback (+10 s): 900 tokens in 20 s; the step mean is 60 s, 30 s gone
    assert "step 1/2: sampled 3/8 (45 tok/s), evaluated 0/8, best 0.25, eta step 30s, run 1m30s" in live[0]
    assert "step 0/2: sampling, evaluating, training ..." in lines[0]
    assert any("step 0: best=0.5" in line for line in lines)
    assert "\r" not in stream.getvalue()


def test_plain_mode_shows_new_best_from_evaluation():
    stream, clock = io.StringIO(), Clock()
    r = PlainReporter(stream=stream, interval_s=0, clock=clock)
    r.step_started(0, 1, {"score": 0.25, "value": -0.25})  # a minimised score: value is its negation
    r.evaluating(4)
    r.evaluated(0.1, -0.1)
    r.evaluated(0.3, -0.3)
    assert (
        stream.getvalue()
        .splitlines()[-1]
        .endswith("step 0/0: sampled 4/4 (- tok/s), evaluated 2/4, best 0.1, eta step ?, run ?")
    )


def test_rich_panel_captured():
    clock = Clock()
    console = Console(file=io.StringIO(), force_terminal=True, width=120)
    r = RichReporter(console=console, clock=clock, auto_refresh=False)
    drive(r, clock)
    with console.capture() as cap:
        console.print(r.render())
    text = cap.get()
    assert "sampled" in text and "4/8" in text and "40 tok/s" in text
    assert "evaluated" in text and "2/8" in text and "best 0.5" in text
    assert "step 1/2" in text and "eta step 20s" in text and "eta run 1m20s" in text
    r.step_finished(metrics(1))
    assert "step 1: best=0.5" in console.file.getvalue()


def test_durations():
    assert [fmt_duration(x) for x in (None, 5, 95, 7300)] == ["?", "5s", "1m35s", "2h01m"]


def test_a_replay_run_reports_sampling_and_evaluation_of_every_rollout(tmp_path):
    stream = io.StringIO()
    reporter = PlainReporter(stream=stream, interval_s=0)
    sets = [f"run.output={tmp_path / 'run'}", "sandbox.isolation=none", "run.steps=2"]
    summary = run_config(TOY / "config.yaml", sets, reporter=reporter)
    text = stream.getvalue()
    cfg = [json.loads(x) for x in (summary.run_dir / "events.jsonl").read_text().splitlines()]
    n = next(e for e in cfg if e["type"] == "step")["rollouts"]
    assert f"sampled 1/{n}" in text and f"sampled {n}/{n}" in text
    assert f"evaluated {n}/{n}" in text and "step 1/1" in text and "\r" not in text


def test_auto_mode_is_plain_in_ci_and_logs(monkeypatch):
    monkeypatch.setattr("sys.stderr", io.StringIO())  # not a terminal
    assert type(make_reporter("auto")) is PlainReporter
    assert type(make_reporter("rich")) is RichReporter and type(make_reporter("none")) is Reporter

    class Tty(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr("sys.stderr", Tty())
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert type(make_reporter("auto")) is RichReporter
    monkeypatch.setenv("CI", "true")
    assert type(make_reporter("auto")) is PlainReporter


def test_model_loading_prints_no_progress_bars():
    """The GGUF de-quantiser's tqdm bar would put one long line of carriage returns into a log."""
    pytest.importorskip("gguf")
    gguf_utils = pytest.importorskip("transformers.modeling_gguf_pytorch_utils")
    from discover_ttt.launch.models import quiet_loading

    def bar():  # what the loader does: tqdm looked up in its own module
        buf = io.StringIO()
        for _ in gguf_utils.tqdm(range(50), file=buf, mininterval=0):
            pass
        return buf.getvalue()

    with quiet_loading():
        assert bar() == ""
    assert "\r" in bar()  # restored afterwards
