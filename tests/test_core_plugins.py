"""Plugins: the tutorial's outside package installs and runs; broken plugins fail loudly.

The listing, the DISCOVER_PLUGINS filter and `discover prompt` see the package laid out on a path as pip
lays it out (in this process); one slow test installs it with pip, runs it, reinstalls it and runs again.
"""

import json
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
import tomllib

from discover_ttt import hookimpl
from discover_ttt.plugins import PluginError, Plugins

TUTORIAL = Path(__file__).parents[1] / "docs" / "writing-a-problem.md"


def tutorial_files() -> dict[str, str]:
    text = TUTORIAL.read_text()
    return dict(re.findall(r"<!-- file: (\S+) -->\n```\w*\n(.*?\n)```$", text, re.DOTALL | re.MULTILINE))


def pip_install(pkg, target):
    """A regular (not editable) install, as a user's second machine would get: what the wheel holds."""
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--upgrade"]
    subprocess.run([*cmd, "--target", str(target), str(pkg)], check=True, capture_output=True)


@pytest.fixture(scope="module")
def installed_tutorial(tmp_path_factory):
    """The page's package: `discover new-problem spread`, checked against the page, pip-installed into a target."""
    root = tmp_path_factory.mktemp("tutorial")
    discover = str(Path(sys.executable).parent / "discover")
    subprocess.run([discover, "new-problem", "spread"], cwd=root, check=True, capture_output=True)
    pkg = root / "discover-spread"
    check_against_the_page(pkg)
    target = root / "site"
    pip_install(pkg, target)
    return pkg, target


def check_against_the_page(pkg: Path) -> None:
    shown = tutorial_files()
    assert {"pyproject.toml", "discover_spread.py", "config.yaml", "replies.jsonl", "config.cpu.yaml"} <= set(shown)
    for name, body in shown.items():  # the page shows exactly what the scaffold writes
        assert (pkg / name).read_text() == body, f"docs/writing-a-problem.md shows another {name}"


@pytest.fixture
def tutorial_site(tmp_path, discover_cli):
    """The page's package, written by `discover new-problem spread` and laid out in a folder as pip
    installs it (its module, and a dist-info with its name and entry point), without running pip."""
    p = discover_cli("new-problem", "spread", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    pkg, site = tmp_path / "discover-spread", tmp_path / "site"
    check_against_the_page(pkg)
    project = tomllib.loads((pkg / "pyproject.toml").read_text())["project"]
    info = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    points = "".join(f"{name} = {value}\n" for name, value in project["entry-points"]["discover"].items())
    (info / "entry_points.txt").write_text("[discover]\n" + points)
    for module in tomllib.loads((pkg / "pyproject.toml").read_text())["tool"]["setuptools"]["py-modules"]:
        shutil.copy(pkg / f"{module}.py", site)
    return pkg, site


def env_with(target, **extra):
    import os

    env = dict(os.environ)
    env.pop("DISCOVER_PLUGINS", None)
    env["PYTHONPATH"] = str(target)
    env.update(extra)
    return env


def test_outside_plugin_is_listed(tutorial_site, discover_cli):
    _, site = tutorial_site
    p = discover_cli("plugins", "--json", site=site, env={"DISCOVER_PLUGINS": None})
    assert p.returncode == 0, p.stderr
    rows = json.loads(p.stdout)
    spread = [r for r in rows if r["name"] == "spread"]
    assert spread == [{"kind": "problem", "name": "spread", "plugin": "spread", "distribution": "discover-spread"}]
    # built-ins come through the same entry-point path, from this distribution
    erdos = [r for r in rows if r["name"] == "erdos"]
    assert erdos and erdos[0]["distribution"] == "discover-ttt"


def test_plugin_filter_env(tutorial_site, discover_cli):
    _, site = tutorial_site
    for value, present in (("", False), ("some-other-plugin", False), ("discover-spread", True), ("spread", True)):
        p = discover_cli("plugins", "--json", site=site, env={"DISCOVER_PLUGINS": value})
        names = {r["name"] for r in json.loads(p.stdout)}
        assert ("spread" in names) is present
        assert "erdos" in names  # built-ins always load


def in_package(discover_bin, pkg, target, *args):
    """A `discover` command run in the package folder, with the package installed in ``target``."""
    cmd = [discover_bin, *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=pkg, env=env_with(target), timeout=300)


def run_and_verify(discover_bin, pkg, target, run_dir):
    """The page's commands: `discover run config.yaml` in the package folder, then verify its best."""
    p = in_package(discover_bin, pkg, target, "run", "config.yaml", "--set", "sandbox.isolation=none")
    assert p.returncode == 0, p.stderr
    out = pkg / "runs" / run_dir
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    outcomes = {e["outcome"] for e in events if e["type"] == "rollout"}
    assert {"valid", "no_code", "invalid_construction"} <= outcomes
    best = json.loads((out / "best" / "score.json").read_text())
    assert best["score"] >= 0.5 - 1e-12  # the grid reply reaches 0.5
    v = in_package(discover_bin, pkg, target, "verify", "spread", f"runs/{run_dir}/best/construction.json", "--json")
    assert v.returncode == 0, v.stderr
    assert json.loads(v.stdout)["score"] == pytest.approx(best["score"], abs=1e-12)


@pytest.mark.slow  # pip, and two runs in subprocesses
def test_run_reinstall_run(installed_tutorial, discover_bin):
    """Build, run, reinstall, run again: the run's output beside the module never gets packaged."""
    pkg, target = installed_tutorial
    run_and_verify(discover_bin, pkg, target, "spread")
    pip_install(pkg, target)  # now with runs/spread/ in the package folder
    installed = {p.name for p in target.iterdir()}
    assert "discover_spread.py" in installed and "runs" not in installed
    run_and_verify(discover_bin, pkg, target, "spread-1")


def test_prompt_command_shows_the_first_prompt(tutorial_site, discover_cli):
    pkg, site = tutorial_site

    def in_package(*args):
        return discover_cli(*args, site=site, cwd=pkg, env={"DISCOVER_PLUGINS": None})

    p = in_package("prompt", "config.cpu.yaml")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("--- user ---\nPlace 8 points")
    assert "def run():" in p.stdout  # the starter program a small model edits
    p = in_package("prompt", "config.yaml", "--all", "--json")
    chats = json.loads(p.stdout)
    assert len(chats) == 2 and all(c[0]["role"] == "user" for c in chats)  # run.groups prompts
    assert "def run():" not in chats[0][0]["content"]  # the replay config has no starter program
    assert not (pkg / "runs" / "spread-2").exists()  # nothing is run or written
    # a warm start's seeds are what the first prompt shows
    grid = [[x, y] for x in (0.0, 0.5, 1.0) for y in (0.0, 0.5, 1.0) if (x, y) != (0.5, 0.5)]
    (pkg / "grid.json").write_text(json.dumps(grid))
    p = in_package("prompt", "config.yaml", "--set", "problem.init_from=grid.json")
    assert p.returncode == 0, p.stderr
    assert "a smallest distance of 0.500000" in p.stdout


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
