"""``discover new-problem NAME``: write a complete problem plugin package from the template.

The template lives in ``templates/new_problem/`` beside this module. Its files end in
``.tmpl`` so that neither pytest, ruff nor an import ever sees them as this project's
code; ``{{name}}``, ``{{module}}``, ``{{Class}}`` and ``{{dist}}`` in their names and
text are replaced, and ``gitignore`` becomes ``.gitignore``.
"""

from __future__ import annotations

import keyword
import os
import re
import shutil
import tempfile
from pathlib import Path

from .errors import UserError

TEMPLATE = Path(__file__).with_name("templates") / "new_problem"
SUFFIX = ".tmpl"
_NAME = re.compile(r"[a-z][a-z0-9_]*")
#: a name's longest form ("test_discover_<name>.py") must stay a legal file name on every filesystem
MAX_NAME = 64
_HIDDEN = {"gitignore": ".gitignore"}


class ScaffoldError(UserError):
    pass


#: words YAML reads as null or a boolean rather than as the name (PyYAML follows YAML 1.1)
YAML_WORDS = frozenset({"null", "none", "true", "false", "yes", "no", "on", "off", "y", "n"})


def names_for(raw: str) -> dict[str, str]:
    """``heilbronn-triangles`` → name heilbronn_triangles, module discover_heilbronn_triangles,
    Class HeilbronnTriangles, dist discover-heilbronn-triangles."""
    name = raw.strip().lower().replace("-", "_")
    if len(name) > MAX_NAME:
        raise ScaffoldError(
            f"a problem name has at most {MAX_NAME} characters ({len(name)} given): it names the package, "
            "its folder and its files. Choose a shorter name."
        )
    if not _NAME.fullmatch(name):
        raise ScaffoldError(
            f"{raw!r} cannot name a problem: use lower-case letters, digits, '_' or '-', starting with a letter "
            "(e.g. heilbronn or kissing-numbers)."
        )
    names = {
        "name": name,
        "module": f"discover_{name}",
        "Class": "".join(part.capitalize() for part in name.split("_") if part),
        "dist": f"discover-{name.replace('_', '-')}",
    }
    # The name itself is never a Python identifier (the module is discover_<name>), so a keyword
    # such as 'class' is fine; but the class name must not be one, and a config must read it as text.
    if keyword.iskeyword(names["Class"]) or name in YAML_WORDS:
        raise ScaffoldError(
            f"{raw!r} cannot name a problem: a config reads `name: {name}` as "
            f"{'null' if name in ('null', 'none') else 'a boolean'}, not as text, and the class would be "
            f"named {names['Class']}. Choose another name (e.g. {name}_problem)."
        )
    return names


def render(text: str, names: dict[str, str]) -> str:
    for key, value in names.items():
        text = text.replace("{{" + key + "}}", value)
    return text


def template_files() -> list[Path]:
    return sorted(p for p in TEMPLATE.rglob(f"*{SUFFIX}") if p.is_file())


def plan(raw_name: str) -> dict[str, str]:
    """Relative path → content of every file the package gets."""
    names = names_for(raw_name)
    out = {}
    for src in template_files():
        rel = src.relative_to(TEMPLATE).as_posix()[: -len(SUFFIX)]
        rel = "/".join(_HIDDEN.get(part, part) for part in render(rel, names).split("/"))
        text = render(src.read_text(), names)
        if "{{" in text:  # a placeholder the template introduced without a value
            raise ScaffoldError(f"template {src.name} has an unknown placeholder: {text[text.index('{{') :][:40]}")
        out[rel] = text
    return out


def new_problem(raw_name: str, directory: str | Path | None = None, installed: list[str] | None = None) -> Path:
    """Write the package for problem ``raw_name`` into ``directory`` (default ``./discover-<name>``)."""
    names = names_for(raw_name)
    if installed and names["name"] in installed:
        raise ScaffoldError(
            f"a problem named {names['name']!r} is already installed (discover plugins lists it); "
            "choose another name, since two plugins cannot register the same one."
        )
    root = Path(directory) if directory is not None else Path(names["dist"])
    if root.is_symlink() and not root.exists():
        raise ScaffoldError(
            f"{root} is a symbolic link to {os.readlink(root)}, which does not exist; create its target or "
            "choose another folder with --dir."
        )
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ScaffoldError(f"{root} already exists and is not an empty folder; choose another with --dir.")
    files = plan(raw_name)
    # written whole in a folder beside root, then moved in: a failure leaves nothing half-written
    staging = None
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".discover-new-", dir=root.parent))
        for rel, text in files.items():
            path = staging / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        if root.exists():  # an empty folder (or a link to one): move the contents in
            for entry in staging.iterdir():
                entry.rename(root / entry.name)
        else:
            staging.rename(root)
    except OSError as e:
        raise ScaffoldError(
            f"cannot write the problem package to {root}: {e.strerror or e}"
            f"{f' ({e.filename})' if e.filename else ''}; nothing was left there. Choose another --dir or fix the cause."
        ) from None
    finally:
        if staging is not None and staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return root
