"""The wheel installs one import namespace, discover_ttt, built from the repository's top-level folders."""

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
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


def _link_tree() -> Path:
    """The discover_ttt folder this interpreter imports: the editable install's link tree."""
    import discover_ttt

    origin = Path(discover_ttt.__file__)
    if not origin.resolve().is_relative_to(ROOT):
        pytest.skip(f"discover_ttt is installed from {origin}, not from this checkout")
    tree = origin.parent
    assert tree.parent.parent == ROOT / "build" and tree.parent.name.startswith("__editable__."), (
        f"discover_ttt is imported from {origin}, not from a link tree under build/: run scripts/setup.sh"
    )
    return tree


def test_the_editable_install_is_a_link_tree_static_tools_can_read():
    # setuptools' strict editable mode: a folder per package of discover_ttt, a link per file, on sys.path
    # through a .pth file; type checkers and IDEs follow it as the interpreter does (no import hook)
    tree = _link_tree()
    for name, folder in PYPROJECT["tool"]["setuptools"]["package-dir"].items():
        init = tree.joinpath(*name.split(".")[1:], "__init__.py")
        assert init.is_symlink() and init.resolve() == ROOT / folder / "__init__.py", name
    assert (tree / "py.typed").resolve() == ROOT / "discover_core" / "py.typed"


def test_setup_and_typecheck_know_every_package_folder():
    folders = list(PYPROJECT["tool"]["setuptools"]["package-dir"].values())
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    relinked = re.search(r"^package_dirs=\((.*)\)$", setup, re.M)
    assert relinked is not None and relinked.group(1).split() == folders  # re-linked when their files change
    typecheck = (ROOT / "scripts" / "typecheck.sh").read_text()
    mapped = re.search(r"discover_ttt/\(([\w|]+)\)/#", typecheck)
    assert mapped is not None and mapped.group(1).split("|") == folders[1:]  # messages name these folders


@pytest.mark.slow
def test_make_dist_ships_what_the_link_tree_shows(tmp_path):
    # the checkout's files (tracked or new, not ignored) and a module an older build left in build/lib
    files = subprocess.check_output(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT, text=True
    ).split("\n")
    src = tmp_path / "src"
    for f in filter(None, files):
        if (ROOT / f).is_file():
            (src / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, src / f)
    (src / ".venv").symlink_to(ROOT / ".venv")
    stale = src / "build" / "lib" / "discover_ttt" / "deleted_since.py"
    stale.parent.mkdir(parents=True)
    stale.write_text("x = 1\n")
    subprocess.run(["make", "-o", "setup", "dist"], cwd=src, check=True, capture_output=True)
    (wheel,) = (src / "dist").glob("discover_ttt-*.whl")
    shipped = {n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("discover_ttt/")}
    tree = _link_tree()
    linked = {
        p.relative_to(tree.parent).as_posix() for p in tree.rglob("*") if p.is_file() and "__pycache__" not in p.parts
    }
    assert shipped == linked
