"""The install command a message names, in a form that works before the package is on PyPI.

``discover-ttt`` is installed from its repository: editable from a checkout
(``pip install -e '.[tinker]'`` at its root) or from the wheel ``make dist`` builds
there. When this copy runs from a checkout, the command names that checkout's path,
so it works from any folder. Once the package is published, ``pip install
'discover-ttt[tinker]'`` does the same (the docs say so; messages do not assume it).
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path


def checkout_root() -> Path | None:
    """The repository this copy runs from (an editable install), or None (a wheel)."""
    root = Path(__file__).resolve().parents[1]
    return root if (root / "pyproject.toml").is_file() and (root / "discover_core").is_dir() else None


def install_command(extra: str | None = None) -> str:
    """The command that installs discover-ttt with ``extra`` (e.g. ``tinker``) into the active environment."""
    spec = f"[{extra}]" if extra else ""
    root = checkout_root()
    if root is not None:
        return f"cd {root} && pip install -e '.{spec}'"
    try:
        version = metadata.version("discover-ttt")
    except metadata.PackageNotFoundError:
        version = "VERSION"
    return (
        f"pip install -e '.{spec}' at the root of a checkout of the discover repository, or "
        f"pip install 'dist/discover_ttt-{version}-py3-none-any.whl{spec}' with the wheel make dist builds there"
    )
