"""docs/architecture.md says who may import whom and where things live; the sources must agree."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"
PLUGIN_FOLDERS = ("problems", "samplers", "estimators", "launch")


def imported_modules(path: Path) -> set[str]:
    """Absolute module names a file imports (relative imports resolved against ``discover_ttt``)."""
    folder, *sub = path.relative_to(ROOT).parts[:-1]
    package = ["discover_ttt", *sub] if folder == "discover_core" else ["discover_ttt", folder, *sub]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                out.add(".".join(base + ([node.module] if node.module else [])))
            elif node.module:
                out.add(node.module)
    return out


def test_the_engine_imports_no_plugin_folder():
    for path in sorted((ROOT / "discover_core").rglob("*.py")):
        bad = {m for m in imported_modules(path) if m.split(".")[:2] in (["discover_ttt", f] for f in PLUGIN_FOLDERS)}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_samplers_and_estimators_import_numpy_and_the_state_only():
    allowed_ours = {"discover_ttt", "discover_ttt.state"}
    for folder in ("samplers", "estimators"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for m in imported_modules(path):
                top = m.split(".")[0]
                if top == "discover_ttt":
                    ok = m in allowed_ours or m.startswith(f"discover_ttt.{folder}")
                else:
                    ok = top in ("numpy", "__future__") or top in _stdlib()
                assert ok, f"{path.relative_to(ROOT)} imports {m}"


def _stdlib() -> frozenset[str]:
    import sys

    return frozenset(sys.stdlib_module_names)


def test_every_path_the_page_names_exists():
    text = DOC.read_text()
    paths = set(re.findall(r"`((?:discover_core|samplers|estimators|launch|problems|tests|docs)/[\w./<>*-]*)`", text))
    assert len(paths) > 10
    for p in sorted(paths):
        if any(c in p for c in "<*"):
            continue  # a pattern (problems/<name>/, launch/*.py)
        assert (ROOT / p).exists(), p
