"""Experiment trackers: TensorBoard event files read back; wandb, mlflow, trackio against fakes of their APIs."""

from __future__ import annotations

import inspect
import json
import re
import sys
import types
from pathlib import Path

import pytest

from discover_ttt.errors import MissingExtra, UserError
from discover_ttt.install import install_command
from discover_ttt.loop import run_config
from discover_ttt.progress import Reporter
from discover_ttt.trackers import Trackers, step_scalars

TOY = Path(__file__).parent / "toy"


def toy(tmp_path, *sets):
    base = [f"run.output={tmp_path / 'run'}", "sandbox.isolation=none", "run.steps=2"]
    return run_config(TOY / "config.yaml", base + list(sets), reporter=Reporter()).run_dir


def step_events(run_dir):
    lines = (run_dir / "events.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["type"] == "step"]


def test_step_scalars_flatten_the_step_event():
    m = {
        "step": 3,
        "best_score": -0.5,
        "step_best_score": None,
        "valid_rate": 0.25,
        "reward_mean": 0.1,
        "reward_max": 0.4,
        "archive_size": 7,
        "rollouts": 8,
        "groups_kept": [0, 2],
        "failures": {"timeout": 2},
        "seconds": {"sampling": 1.5, "total": 2.0},
        "train": {"loss": 0.3, "skipped": "why"},
        "group_stats": [{"beta": 2.0}, {"beta": 4.0}, {"constant": True}],
    }
    assert step_scalars(m) == {
        "best_score": -0.5,
        "valid_rate": 0.25,
        "reward_mean": 0.1,
        "reward_max": 0.4,
        "archive_size": 7.0,
        "rollouts": 8.0,
        "groups_kept": 2.0,
        "failures/timeout": 2.0,
        "seconds/sampling": 1.5,
        "seconds/total": 2.0,
        "train/loss": 0.3,
        "beta/min": 2.0,
        "beta/max": 4.0,
        "beta/mean": 3.0,
    }


def test_tensorboard_scalars_read_back_equal_the_step_metrics(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = toy(tmp_path, "log.trackers=[tensorboard]")
    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    steps = step_events(run_dir)
    expected = [step_scalars(s) for s in steps]
    assert set(acc.Tags()["scalars"]) == set().union(*expected)
    for tag in acc.Tags()["scalars"]:
        got = {e.step: e.value for e in acc.Scalars(tag)}
        want = {s["step"]: x[tag] for s, x in zip(steps, expected, strict=True) if tag in x}
        assert got == pytest.approx(want, rel=1e-6), tag  # event files hold float32


def test_tensorboard_best_picture_is_an_image_summary(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    class Plotting:
        def construction_from_record(self, c):
            return c

        def plot(self, construction, path):
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            fig, ax = plt.subplots(figsize=(2, 1))
            ax.plot(construction)
            fig.savefig(path)
            plt.close(fig)

    best = tmp_path / "best"
    best.mkdir()
    (best / "score.json").write_text(json.dumps({"state_id": "t0-g0-r0", "score": 1.0}))
    (best / "construction.json").write_text("[1, 2, 3]")
    (best / "code.py").write_text("def run(): ...")
    t = Trackers.open(["tensorboard"], tmp_path, {}, problem=Plotting())
    t.log_step({"step": 0, "valid_rate": 1.0})
    t.log_step({"step": 1, "valid_rate": 1.0})  # the same best: no second image
    t.close()
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    (img,) = acc.Images("best/construction")
    assert img.step == 0 and img.encoded_image_string[:8] == b"\x89PNG\r\n\x1a\n"


class Recorder:
    """Records every call made on it (and on what its calls return), by dotted name."""

    def __init__(self, calls, name=""):
        self._calls, self._name = calls, name

    def __getattr__(self, attr):
        return Recorder(self._calls, f"{self._name}.{attr}".lstrip("."))

    def __call__(self, *args, **kwargs):
        self._calls.append((self._name, args, kwargs))
        return Recorder(self._calls, f"{self._name}()")


def fake_module(monkeypatch, name):
    calls = []
    module = types.ModuleType(name)
    module.__getattr__ = lambda attr: getattr(Recorder(calls), attr)
    monkeypatch.setitem(sys.modules, name, module)
    return calls


def test_wandb_is_offline_by_default_and_gets_metrics_and_the_best_as_an_artifact(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    calls = fake_module(monkeypatch, "wandb")
    run_dir = toy(tmp_path, "log.trackers=[wandb]", "log.project=demo")
    names = [c[0] for c in calls]
    init = next(c for c in calls if c[0] == "init")[2]
    assert init["mode"] == "offline" and init["project"] == "demo" and init["dir"] == str(run_dir)
    assert init["config"]["run"]["steps"] == 2
    logs = [c for c in calls if c[0] == "init().log" and "valid_rate" in c[1][0]]
    assert [c[2]["step"] for c in logs] == [0, 1]
    assert logs[0][1][0] == step_scalars(step_events(run_dir)[0])
    assert "Artifact" in names and "Artifact().add_dir" in names and "init().log_artifact" in names
    assert names[-1] == "init().finish"


def test_wandb_mode_from_config(tmp_path, monkeypatch):
    calls = fake_module(monkeypatch, "wandb")
    toy(tmp_path, "log.trackers=[wandb]", "log.wandb_mode=online", "run.steps=1")
    assert next(c for c in calls if c[0] == "init")[2]["mode"] == "online"


def test_mlflow_writes_under_the_run_directory_unless_configured(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    calls = fake_module(monkeypatch, "mlflow")
    run_dir = toy(tmp_path, "log.trackers=[mlflow]")
    first = {c[0]: c for c in reversed(calls)}
    assert first["set_tracking_uri"][1][0] == (run_dir / "mlruns").resolve().as_uri()
    metrics = [c for c in calls if c[0] == "log_metrics"]
    assert [c[2]["step"] for c in metrics] == [0, 1]
    assert metrics[1][1][0] == {k.replace("/", "."): v for k, v in step_scalars(step_events(run_dir)[1]).items()}
    assert any(c[0] == "log_artifacts" and c[1][0] == str(run_dir / "best") for c in calls)
    assert calls[-1][0] == "end_run"


def test_trackio_gets_the_step_metrics(tmp_path, monkeypatch):
    calls = fake_module(monkeypatch, "trackio")
    run_dir = toy(tmp_path, "log.trackers=[trackio]")
    logs = [c for c in calls if c[0] == "log"]
    assert [c[1][0] for c in logs] == [step_scalars(s) for s in step_events(run_dir)]
    assert calls[0][0] == "init" and calls[-1][0] == "finish"


def test_a_missing_extra_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow raises ImportError
    with pytest.raises(MissingExtra, match=re.escape(install_command("mlflow"))):
        Trackers.open(["mlflow"], tmp_path, {})
    assert issubclass(MissingExtra, UserError)


def test_a_failing_tracker_is_switched_off_and_the_run_goes_on(tmp_path, monkeypatch):
    calls = fake_module(monkeypatch, "trackio")
    broken = sys.modules["trackio"]
    broken.log = lambda *a, **k: (_ for _ in ()).throw(ConnectionError("down"))
    run_dir = toy(tmp_path, "log.trackers=[trackio]")
    assert len(step_events(run_dir)) == 2 and calls[0][0] == "init"


def test_no_tracker_by_default(tmp_path):
    from discover_ttt.config import load_config

    assert load_config(TOY / "config.yaml").config.log.trackers == []


# -- contracts of the real packages, where they are installed --------------------------------
def test_wandb_contract():
    wandb = pytest.importorskip("wandb")
    assert {"project", "name", "dir", "config", "mode", "reinit"} <= set(inspect.signature(wandb.init).parameters)
    assert hasattr(wandb.Artifact, "add_dir") and hasattr(wandb, "Image")


def test_mlflow_contract():
    mlflow = pytest.importorskip("mlflow")
    assert "step" in inspect.signature(mlflow.log_metrics).parameters
    assert "artifact_path" in inspect.signature(mlflow.log_artifacts).parameters
    for fn in ("set_tracking_uri", "set_experiment", "start_run", "log_params", "log_artifact", "end_run"):
        assert callable(getattr(mlflow, fn))


def test_trackio_contract():
    trackio = pytest.importorskip("trackio")
    assert {"project", "name", "config"} <= set(inspect.signature(trackio.init).parameters)
    assert "step" in inspect.signature(trackio.log).parameters and callable(trackio.finish)
