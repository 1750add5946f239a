"""The NeMo RL releases the adapter follows, and the one-paragraph refusal for any other.

The contract tests (``tests/test_launch_nemo_rl_contract.py``) check the export, the
environment and the driver against the sources of each release listed here and of NeMo RL's
main branch at commit 7ea279abf (which still calls itself 0.6.0).
"""

from __future__ import annotations

from discover_ttt.errors import UserError

#: (major, minor) of each release checked against its sources, oldest first
RELEASES: tuple[tuple[int, int], ...] = ((0, 3), (0, 4), (0, 5), (0, 6), (0, 7))
NEWEST = "{}.{}".format(*RELEASES[-1])
RANGE = "{}.{}".format(*RELEASES[0]) + f" to {NEWEST}"


class UnsupportedNemoRL(UserError):
    """A NeMo RL release (or layout) the adapter was not checked against."""


def refusal(what: str) -> UnsupportedNemoRL:
    return UnsupportedNemoRL(
        f"{what}. The discover adapter supports NeMo RL {RANGE} (each release's own sources are "
        "checked by its contract tests, with NeMo RL's main branch as of commit 7ea279abf): install one of "
        "those on the cluster, or export for it with --nemo-rl-version."
    )


def parse(text: str) -> tuple[int, int]:
    """``"0.6"``, ``"0.6.0"``, ``"0.5.0rc0"`` → (0, 6); refuses a release outside :data:`RELEASES`."""
    parts = str(text).strip().lstrip("v").split(".")
    try:
        major, minor = int(parts[0]), int("".join(c for c in parts[1] if c.isdigit()) or "x")
    except (IndexError, ValueError):
        raise refusal(f"{text!r} is not a NeMo RL version such as {NEWEST}") from None
    if (major, minor) not in RELEASES:
        raise refusal(f"NeMo RL {major}.{minor} is not supported")
    return major, minor
