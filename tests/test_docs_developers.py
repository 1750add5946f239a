"""DEVELOPERS.md's set-up notes name what scripts/setup.sh installs."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def setup_extras() -> set[str]:
    (spec,) = re.findall(r"pip install -q -e \"\.\[([\w,-]+)\]\"", (ROOT / "scripts" / "setup.sh").read_text())
    return set(spec.split(","))


def test_the_set_up_notes_name_the_extras_setup_sh_installs():
    text = (ROOT / "DEVELOPERS.md").read_text()
    (bullet,) = re.findall(r"- the project in editable mode with the (.*?) extras", text, re.DOTALL)
    assert set(re.findall(r"`([\w-]+)`", bullet)) == setup_extras() and "ray" in setup_extras()
    # an extra the set-up installs is not called GPU-only
    for line in text.splitlines():
        if "GPU-only" in line or "GPU only" in line:
            assert not any(f"`{extra}`" in line for extra in setup_extras()), line
