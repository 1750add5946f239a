"""The report in real headless Chromium: it loads offline with no console error; a screenshot is kept.

Skipped where no Chromium is installed (``.ci/run`` installs Debian's ``chromium``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from browser import Page, chromium

from discover_ttt.report import write_report

BINARY = chromium()
pytestmark = [
    pytest.mark.browser,  # a tier of its own: make test-all
    pytest.mark.skipif(BINARY is None, reason="no chromium here (apt-get install chromium)"),
]


def open_page(path: Path) -> Page:
    page = Page(BINARY)
    try:
        page.open(path.resolve().as_uri())
    except Exception:
        page.close()
        raise
    return page


def test_the_error_check_sees_errors(tmp_path):
    """The check itself: a page with a script error and a missing image is caught."""
    bad = tmp_path / "bad.html"
    bad.write_text('<html><body><img src="missing.png"><script>console.error("boom"); nope();</script></body></html>')
    page = open_page(bad)
    try:
        errors = page.errors()
    finally:
        page.close()
    text = " ".join(errors)
    assert "boom" in text and "nope" in text and "missing.png" in text


def test_report_opens_in_chromium_without_console_errors(erdos_run, tmp_path):
    out = write_report(erdos_run, tmp_path / "report.html")
    page = open_page(out)
    try:
        errors = page.errors()
        shot = Path(os.environ.get("DISCOVER_REPORT_SCREENSHOT", tmp_path / "report.png"))
        page.screenshot(shot)
        height = page.send("Page.getLayoutMetrics")["cssContentSize"]["height"]
        images = page.send(
            "Runtime.evaluate",
            {"expression": "[...document.images].filter(i => i.complete && i.naturalWidth > 0).length"},
        )["result"]["value"]
    finally:
        page.close()
    assert errors == []
    assert shot.stat().st_size > 10_000 and height > 2000
    assert images >= 6  # five charts and the construction's picture all decoded
