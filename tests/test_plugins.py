"""Plugins: the tutorial's outside package installs and runs; broken plugins fail loudly."""

import json
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

from discover_ttt import hookimpl
from discover_ttt.plugins import PluginError, Plugins

TUTORIAL = Path(__file__).parents[1] / "docs" / "writing-a-problem.md"


def tutorial_files() -> dict[str, str]:
    text = TUTORIAL.read_text()
    return dict(re.findall(r"<!-- file: (\S+) -->\n```\w*\n(.*?\n)```$", text, re.DOTALL | re.MULTILINE))


@pytest.fixture(scope="module")
def installed_tutorial(tmp_path_factory):
    """The tutorial's package, pip-installed into a target folder put on PYTHONPATH."""
    root = tmp_path_factory.mktemp("tutorial")
    pkg = root / "discover-spread"
    pkg.mkdir()
    files = tutorial_files()
    assert {"pyproject.toml", "discover_spread.py", "config.yaml", "replies.jsonl"} <= set(files)
    for name, body in files.items():
        (pkg / name).write_text(body)
    target = root / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(pkg),
        ],
        check=True,
        capture_output=True,
    )
    return pkg, target


def env_with(target, **extra):
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = str(target)
    env.update(extra)
    return env


def test_outside_plugin_is_listed(installed_tutorial, discover_bin):
    _, target = installed_tutorial
    p = subprocess.run([discover_bin, "plugins", "--json"], capture_output=True, text=True, env=env_with(target))
    assert p.returncode == 0, p.stderr
    rows = json.loads(p.stdout)
    spread = [r for r in rows if r["name"] == "spread"]
    assert spread == [{"kind": "problem", "name": "spread", "plugin": "spread", "distribution": "discover-spread"}]
    # built-ins come through the same entry-point path, from this distribution
    erdos = [r for r in rows if r["name"] == "erdos"]
    assert erdos and erdos[0]["distribution"] == "discover-ttt"


def test_plugin_filter_env(installed_tutorial, discover_bin):
    _, target = installed_tutorial
    for value, present in (("", False), ("some-other-plugin", False), ("discover-spread", True)):
        p = subprocess.run(
            [discover_bin, "plugins", "--json"],
            capture_output=True,
            text=True,
            env=env_with(target, DISCOVER_PLUGINS=value),
        )
        names = {r["name"] for r in json.loads(p.stdout)}
        assert ("spread" in names) is present
        assert "erdos" in names  # built-ins always load


def test_outside_plugin_runs(installed_tutorial, discover_bin, tmp_path):
    pkg, target = installed_tutorial
    out = tmp_path / "run"
    p = subprocess.run(
        [discover_bin, "run", "config.yaml", "--set", f"run.output={out}", "--set", "sandbox.isolation=none"],
        capture_output=True,
        text=True,
        cwd=pkg,
        env=env_with(target),
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    outcomes = {e["outcome"] for e in events if e["type"] == "rollout"}
    assert {"valid", "no_code", "invalid_construction"} <= outcomes
    best = json.loads((out / "best" / "score.json").read_text())
    assert best["score"] >= 0.5 - 1e-12  # the grid reply reaches 0.5
    v = subprocess.run(
        [discover_bin, "verify", "spread", str(out / "best" / "construction.json"), "--json"],
        capture_output=True,
        text=True,
        env=env_with(target),
    )
    assert v.returncode == 0, v.stderr
    assert json.loads(v.stdout)["score"] == pytest.approx(best["score"], abs=1e-12)


def _module(name, **attrs):
    m = types.ModuleType(name)
    for k, v in attrs.items():
        setattr(m, k, v)
    return m


def test_misspelled_hook_names_the_plugin():
    @hookimpl
    def register_problem(register):  # missing the final "s"
        pass

    pl = Plugins()
    with pytest.raises(PluginError) as e:
        pl.add_module(_module("typo_plugin", register_problem=register_problem), dist="typo-dist")
    msg = str(e.value)
    assert "typo_plugin" in msg and "register_problem" in msg and "register_problems" in msg


def test_duplicate_name_names_both_plugins():
    class A:
        name = "same"

    @hookimpl
    def register_problems(register):
        register(A)

    pl = Plugins()
    pl.add_module(_module("first_plugin", register_problems=register_problems), dist="first-dist")
    with pytest.raises(PluginError) as e:
        pl.add_module(_module("second_plugin", register_problems=register_problems), dist="second-dist")
    msg = str(e.value)
    assert "'same'" in msg and "first_plugin" in msg and "second_plugin" in msg
    assert "first-dist" in msg and "second-dist" in msg


def test_builtins_registered():
    from discover_ttt.plugins import get_plugins

    pl = get_plugins()
    assert {"puct", "greedy", "no_reuse"} <= set(pl.registries["samplers"].names())
    assert {"entropic_adaptive", "entropic", "grpo", "grpo_nsr", "mean_baseline"} <= set(
        pl.registries["estimators"].names()
    )
    assert {"replay", "local", "openai", "vllm"} <= set(pl.registries["backends"].names())
    assert {"erdos", "circle_packing"} <= set(pl.registries["problems"].names())
