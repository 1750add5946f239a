"""The wheel installs one import namespace, discover_ttt, built from the repository's top-level folders."""

import re
import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
OLD_TOP_LEVEL = ("discover_core", "samplers", "estimators", "launch", "problems")


def test_distribution_name_is_our_own():
    # `discover` on PyPI is an unrelated package; ours installs as discover-ttt, the CLI stays `discover`.
    assert PYPROJECT["project"]["name"] == "discover-ttt"
    assert PYPROJECT["project"]["scripts"]["discover"] == "discover_ttt.cli:main"


def test_every_package_folder_is_listed_and_mapped():
    setup = PYPROJECT["tool"]["setuptools"]
    package_dir = setup["package-dir"]
    found = set()
    for name, folder in package_dir.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            if any(part.startswith(".") or part in {"runs", "__pycache__"} for part in rel.parts):
                continue
            found.add(".".join((name, *rel.parts)) if rel.parts else name)
    assert set(setup["packages"]) == found
    assert all(name.startswith("discover_ttt") for name in setup["packages"])


def test_entry_points_use_the_namespace():
    for target in PYPROJECT["project"]["entry-points"]["discover"].values():
        assert target.startswith("discover_ttt."), target


def test_no_source_imports_the_old_top_level_names():
    files = subprocess.check_output(["git", "ls-files", "*.py", "*.md"], cwd=ROOT, text=True).split()
    pattern = re.compile(rf"^\s*(from|import)\s+({'|'.join(OLD_TOP_LEVEL)})\b", re.M)
    offenders = [f for f in files if pattern.search((ROOT / f).read_text(errors="replace"))]
    assert offenders == []


def test_old_top_level_names_are_not_installed():
    code = f"import importlib.util as u; print([m for m in {OLD_TOP_LEVEL!r} if u.find_spec(m)])"
    out = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    out = subprocess.run(
        [sys.executable, "-c", "import discover_ttt.samplers, discover_ttt.problems.erdos.problem"],
        cwd="/",
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr


def test_version_names_the_distribution(discover_bin):
    out = subprocess.run([discover_bin, "--version"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    from importlib.metadata import version

    assert out.stdout.strip().endswith(f"version {version('discover-ttt')}")
