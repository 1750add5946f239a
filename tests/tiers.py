"""The two test tiers, the fast tier's time budget, and the coverage comparison between the tiers.

- fast tier: ``pytest`` (the default ``-m`` in pyproject.toml), run by ``make test``;
- the rest: ``pytest -m "slow or ray or browser or contract"``, which ``make test-all`` runs after
  the fast tier, so that every test runs once.

On CI (``CI=true``) a fast-tier session that takes more than 1.5 times its budget fails: the
budget holds as the suite grows. ``python tests/tiers.py FAST_DATA REST_DATA`` prints how many of
the lines the whole suite covers the fast tier covers, per package, and exits 1 below 80 %.
"""

from __future__ import annotations

import os
import sys
import time
from collections import defaultdict

import pytest

MARKERS = ("slow", "ray", "browser", "contract")
FAST = f"not ({' or '.join(MARKERS)})"
REST = " or ".join(MARKERS)
FAST_BUDGET_S = 120.0  # `make test` on the 2-core machine when idle, lint included
OVER_BUDGET = 1.5  # CI fails the fast tier past this multiple of the budget
MIN_COVERAGE_SHARE = 0.80
_VERDICT = pytest.StashKey[str | None]()
_START = pytest.StashKey[float]()


def is_fast_tier(config: pytest.Config) -> bool:
    return (config.option.markexpr or "").strip() == FAST


def verdict(wall_s: float, fast: bool, ci: bool) -> str | None:
    """The failure message when a fast-tier session on CI ran past its limit, else None."""
    limit = FAST_BUDGET_S * OVER_BUDGET
    if fast and ci and wall_s > limit:
        return (
            f"the fast tier took {wall_s:.0f} s, more than {OVER_BUDGET:g} x its {FAST_BUDGET_S:.0f} s budget "
            f"({limit:.0f} s): move the slowest tests above (--durations) to a slower tier, or make them cheaper "
            "(DEVELOPERS.md, Tests)."
        )
    return None


# -- hooks, imported by tests/conftest.py ---------------------------------------------------------
def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_START] = time.monotonic()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    wall_s = time.monotonic() - session.config.stash.get(_START, time.monotonic())
    message = verdict(wall_s, is_fast_tier(session.config), os.environ.get("CI", "").lower() == "true")
    session.config.stash[_VERDICT] = message
    if message and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    message = config.stash.get(_VERDICT, None)
    if message:
        terminalreporter.write_line(f"FAILED (time budget): {message}", red=True, bold=True)


# -- coverage of the fast tier against the whole suite ---------------------------------------------
def covered_lines(data_file: str) -> dict[str, set[int]]:
    from coverage import CoverageData

    data = CoverageData(basename=data_file)
    data.read()
    return {os.path.realpath(f): set(data.lines(f) or ()) for f in data.measured_files()}


def compare(fast: dict[str, set[int]], rest: dict[str, set[int]], root: str) -> tuple[float, list[str]]:
    """The fast tier's share of the lines either tier covers, and one table row per top-level folder."""
    by_folder: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for path in set(fast) | set(rest):
        every = fast.get(path, set()) | rest.get(path, set())
        folder = os.path.relpath(path, root).split(os.sep)[0]
        by_folder[folder][0] += len(fast.get(path, set()))
        by_folder[folder][1] += len(every)
    rows = [f"{'folder':<16}{'fast tier':>10}{'all tests':>10}{'share':>8}"]
    for folder, (f, a) in sorted(by_folder.items()):
        rows.append(f"{folder:<16}{f:>10}{a:>10}{f / max(a, 1):>8.0%}")
    f_total = sum(f for f, _ in by_folder.values())
    a_total = sum(a for _, a in by_folder.values())
    rows.append(f"{'total':<16}{f_total:>10}{a_total:>10}{f_total / max(a_total, 1):>8.0%}")
    return f_total / max(a_total, 1), rows


def main(argv: list[str]) -> int:
    fast_file, rest_file = argv
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    share, rows = compare(covered_lines(fast_file), covered_lines(rest_file), root)
    print("lines covered by the fast tier among those the whole suite covers:")
    print("\n".join(rows))
    if share < MIN_COVERAGE_SHARE:
        print(
            f"the fast tier covers {share:.0%} of them, below {MIN_COVERAGE_SHARE:.0%}: move a test of the "
            "uncovered code into the fast tier (DEVELOPERS.md, Tests)."
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
