"""docs/configuration.md says what the code does."""

from __future__ import annotations

import re
from pathlib import Path

from discover_ttt.plugins import get_plugins

ROOT = Path(__file__).resolve().parents[1]


def test_configuration_lists_every_registered_backend():
    text = (ROOT / "docs" / "configuration.md").read_text()
    (row,) = [line for line in text.splitlines() if line.startswith("| backend |")]
    listed = set(re.findall(r"`(\w+)`", row.split("|")[2]))
    assert listed == set(get_plugins().registries["backends"].names())
