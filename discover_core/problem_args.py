"""A problem built from the command line, for ``discover verify`` and ``discover plot``.

Its parameters come from, in order: the problem's defaults; the ``config.yaml``
of the run a file belongs to (``RUN/best/construction.json`` was scored with the
run's parameters, e.g. ``n: 12``, not the defaults); the ``-p KEY=VALUE`` options.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import pydantic
import yaml

from .components import instantiate, params_model
from .config import ConfigError, ProblemSection, apply_overrides, describe_errors
from .plugins import get_plugins, use_import_path
from .store import RunStore


def run_dir_of(file: str | Path) -> Path | None:
    """The run directory holding ``file`` (``RUN/best/x.json`` or ``RUN/x.json``), if it is in one."""
    folder = Path(file).resolve().parent
    for d in (folder, folder.parent):
        if (d / "config.yaml").is_file() and ((d / "events.jsonl").exists() or (d / "checkpoints").is_dir()):
            return d
    return None


def run_problem_section(run_dir: Path, name: str, command: str = "verify") -> dict[str, Any]:
    """The problem parameters saved in ``run_dir/config.yaml`` (without ``name``), checked to be ``name``'s."""
    path = run_dir / "config.yaml"
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read the run's config {path}: {e}") from None
    section = raw.get("problem") if isinstance(raw, dict) else None
    if not isinstance(section, dict):
        raise ConfigError(f"the run's config {path} has no problem section.")
    saved = section.get("name")
    # the section's own keys (name, init_from) are not the problem's parameters
    section = {k: v for k, v in section.items() if k not in ProblemSection.model_fields}
    if saved != name:
        raise ConfigError(
            f"the file belongs to the run {run_dir}, which ran the problem {saved!r}, not {name!r}; "
            f"use: discover {command} {saved} ..."
        )
    return section


def build_problem(
    name: str, params: tuple[str, ...] | list[str], file: str | Path | None = None, command: str = "verify"
) -> Any:
    """The problem ``name`` with the parameters of ``file``'s run (if any) and the ``-p`` overrides."""
    plugins = get_plugins()
    run_dir = run_dir_of(file) if file is not None else None
    if run_dir is not None:  # where the run found a module:Class problem
        use_import_path(RunStore(run_dir).import_path())
    try:
        entry = plugins.get("problems", name)
    except KeyError:
        names = plugins.registries["problems"].names()
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"unknown problem {name!r}; installed problems: {', '.join(names) or '(none)'}.{hint}"
            f"{plugins.broken_hint()}"
        ) from None
    section = run_problem_section(run_dir, name, command) if run_dir is not None else {}
    for p in params:
        if "=" not in p or not p.partition("=")[0].strip():
            raise ConfigError(f"-p expects KEY=VALUE (e.g. -p n=12), got {p!r}.")
    section = apply_overrides(section, list(params))
    model = params_model(entry.obj)
    try:
        validated = model(**section)
    except pydantic.ValidationError as e:
        origin = f" (parameters read from {run_dir / 'config.yaml'} and -p)" if run_dir else ""
        raise ConfigError(f"bad -p for problem {name!r}{origin}: {describe_errors([], e, model)}") from None
    return instantiate(entry.obj, validated)
