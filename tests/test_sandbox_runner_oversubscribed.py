"""A sandbox pool that wants more cores than the machine gives is accepted with a warning that says the cost."""

import logging
import os

from discover_ttt.sandbox import Sandbox
from discover_ttt.sandbox.runner import oversubscribed


def test_more_workers_than_cores_warns_once_with_the_slowdown(caplog):
    cores = len(os.sched_getaffinity(0))
    with caplog.at_level(logging.WARNING), Sandbox(workers=2 * cores, cpus=1, isolation="none") as sandbox:
        assert sandbox.workers == 2 * cores
    warnings = [r.getMessage() for r in caplog.records if "cores wanted" in r.getMessage()]
    assert warnings == [oversubscribed(2 * cores, 1, cores)]
    assert "about 2.0× slower" in warnings[0] and f"Lower sandbox.workers to {cores}" in warnings[0]


def test_a_pool_that_fits_says_nothing(caplog):
    with caplog.at_level(logging.WARNING), Sandbox(workers=1, cpus=1, isolation="none"):
        pass
    assert not [r for r in caplog.records if "cores wanted" in r.getMessage()]
