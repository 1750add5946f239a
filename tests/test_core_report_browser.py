"""The report in real headless Chromium: it loads offline with no console error; a screenshot is kept.

Skipped where no Chromium is installed (``.ci/run`` installs Debian's ``chromium``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from browser import Page, chromium
from test_core_report_compare import compared_runs  # noqa: F401 - the fixture of four small runs

from discover_ttt.report import read_run, write_report
from discover_ttt.report.html import num

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
        images = evaluate(page, "[...document.images].filter(i => i.complete && i.naturalWidth > 0).length")
        seed_row = evaluate(page, SEED_ROW)
        baseline = evaluate(page, "atob(document.querySelector('#best-score img').src.split(',')[1])")
        steps_fit = evaluate(
            page, "(t => t.scrollWidth <= t.parentElement.clientWidth)(document.querySelector('#steps'))"
        )
    finally:
        page.close()
    assert errors == []
    assert shot.stat().st_size > 10_000 and height > 2000
    assert images >= 6  # five charts and the construction's picture all decoded
    # where the run started: the seed's score in the lineage table, the best seed on the best-score curve
    run = read_run(erdos_run)
    seed = run.lineage()[0]
    assert seed_row == [seed.id, "seed", num(run.seeds[seed.id].score)] and seed_row[2] != "–"
    assert f"best seed: {run.seed_baseline:.6g}" in baseline
    assert steps_fit  # the steps table is not cut off at the page's edge


def test_compare_opens_in_chromium_without_console_errors(compared_runs, tmp_path):  # noqa: F811
    from discover_ttt.report.compare import write_compare

    out = write_compare(compared_runs, tmp_path / "compare.html")
    page = open_page(out)
    try:
        errors = page.errors()
        page.screenshot(tmp_path / "compare.png")
        images = evaluate(page, "[...document.images].filter(i => i.complete && i.naturalWidth > 0).length")
        rows = evaluate(page, "[...document.querySelectorAll('#runs tr[id^=\"run-\"]')].length")
    finally:
        page.close()
    assert errors == []
    assert images == 2 and rows == len(compared_runs)  # both curves decoded, every run in the table
    assert (tmp_path / "compare.png").stat().st_size > 10_000


# the first row of the lineage table (the seed the best state descends from): id, step, score
SEED_ROW = (
    "[...document.querySelector('#lineage-table tr[id^=\"lineage-\"]').cells].slice(0, 3).map(c => c.textContent)"
)


def evaluate(page: Page, expression: str):
    return page.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})["result"]["value"]
