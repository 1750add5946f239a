"""Install commands in messages and docs work before the package is on PyPI."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from discover_ttt import install
from discover_ttt.install import install_command

ROOT = Path(__file__).resolve().parents[1]


def test_from_a_checkout_the_command_names_it():
    assert install.checkout_root() == ROOT
    assert install_command("tinker") == f"cd {ROOT} && pip install -e '.[tinker]'"
    assert install_command() == f"cd {ROOT} && pip install -e '.'"


def test_from_a_wheel_the_command_says_where_to_run_it(monkeypatch):
    monkeypatch.setattr(install, "checkout_root", lambda: None)
    text = install_command("ray")
    assert "pip install -e '.[ray]' at the root of a checkout" in text
    assert "pip install 'dist/discover_ttt-0.1.0-py3-none-any.whl[ray]'" in text and "make dist" in text


def test_messages_give_the_checkout_form():
    from discover_ttt.errors import MissingExtra
    from discover_ttt.trackers import _require

    # every missing extra (vLLM, Tinker, Ray, trackers) is worded by MissingExtra
    assert install_command("tinker") in str(MissingExtra("the 'tinker' backend", "the Tinker SDK", "tinker"))
    with pytest.raises(MissingExtra, match=re.escape(install_command("nonexistent_extra"))):
        _require("discover_no_such_module", "nonexistent_extra")


# a PyPI install command, unless the same sentence says it is for once the package is published
PYPI = re.compile(r"pip install\s+(-U\s+)?['\"]?discover-ttt\b")
FOR_LATER = re.compile(
    r"once\s+(it|the\s+package|discover-ttt)\s+(is|will\s+be)\s+(published|on\s+PyPI)|once\s+published", re.I
)


def _sources():
    folders = ["discover_core", "launch", "samplers", "estimators", "problems", "docs", "scripts"]
    for folder in folders:
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in {".py", ".md", ".tmpl", ".yaml", ".sh", ".toml"} and path.is_file():
                yield path
    yield ROOT / "README.md"
    yield ROOT / "DEVELOPERS.md"


def test_no_message_or_doc_assumes_the_package_is_on_pypi():
    offenders = []
    for path in _sources():
        text = path.read_text(errors="replace")
        for m in PYPI.finditer(text):
            sentence = text[max(0, m.start() - 200) : m.end() + 200]
            if not FOR_LATER.search(sentence):
                line = text.count("\n", 0, m.start()) + 1
                offenders.append(f"{path.relative_to(ROOT)}:{line}: {m.group(0)}")
    assert not offenders, "\n".join(offenders)


@pytest.mark.slow
def test_make_dist_builds_a_complete_wheel(tmp_path):
    recipe = subprocess.run(["make", "-n", "dist"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    (wheel_cmd,) = [line for line in recipe.splitlines() if "pip wheel" in line]
    cmd = wheel_cmd.replace(".venv/bin/python", sys.executable).replace("-w dist", f"-w {tmp_path}")
    subprocess.run(cmd, shell=True, cwd=ROOT, check=True, capture_output=True)
    import zipfile

    (wheel,) = tmp_path.glob("discover_ttt-*-py3-none-any.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "discover_ttt/install.py" in names and "discover_ttt/templates/new_problem/pyproject.toml.tmpl" in names
