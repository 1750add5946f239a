"""NeMo RL's own sources as test data: unpack a release, import what imports, read the rest with ``ast``.

The archives (``nemo-rl/nemo-rl-<version>.tar.gz``: ``nemo_rl/``, ``examples/``, its LICENSE)
live in the folder named by ``DISCOVER_UPSTREAM`` (default ``../shared/upstream`` beside the
repository). Nothing here is NeMo RL's code: it reads that code.

- :func:`run_in` imports modules of a snapshot in a fresh interpreter (NeMo RL's package
  shadows nothing of ours and leaves no trace in the test process);
- :class:`Schema` walks the config classes reachable from ``grpo.MasterConfig`` — TypedDicts
  up to 0.6, a pydantic model holding TypedDicts and models later — and says which keys a
  config lacks (a key is required when it is neither ``NotRequired`` nor given a default);
- :func:`keys_read_without_default` lists the ``master_config[...]`` chains a function reads
  with subscripts (no ``.get``), following local aliases such as ``grpo_cfg = master_config["grpo"]``;
- :func:`setup_arity` counts the values ``grpo.setup`` returns.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: optional media libraries some releases import at module level; a bare module stands in for them
#: (e.g. 0.6's nemo_rl.data.multimodal_utils imports decord, a video decoder)
STAND_INS = ("decord",)


def upstream_candidate() -> Path:
    """The folder the archives are looked for in: ``$DISCOVER_UPSTREAM``, else ``../shared/upstream``."""
    named = os.environ.get("DISCOVER_UPSTREAM")
    return Path(named) if named else ROOT.parent / "shared" / "upstream"


def upstream_dir() -> Path | None:
    folder = upstream_candidate()
    return folder if (folder / "nemo-rl").is_dir() else None


def archives() -> dict[str, Path]:
    """Snapshot name (``v0.3.1``, ``main-7ea279abf``) → archive, oldest release first, main last."""
    folder = upstream_dir()
    if folder is None:
        return {}
    found = {p.name[len("nemo-rl-") : -len(".tar.gz")]: p for p in (folder / "nemo-rl").glob("nemo-rl-*.tar.gz")}

    def order(name: str):
        if name.startswith("v"):
            return (0, tuple(int(x) for x in name[1:].split(".")))
        return (1, (name,))

    return {name: found[name] for name in sorted(found, key=order)}


def unpack(archive: Path, into: Path) -> Path:
    """The snapshot's root (the folder holding ``nemo_rl/``)."""
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    (root,) = {p.parent for p in into.rglob("nemo_rl") if (p / "__init__.py").exists()}
    return root


def release(name: str) -> str:
    """``v0.6.0`` → ``0.6.0``; a branch snapshot is newer than every release."""
    return name[1:] if name.startswith("v") else "main"


_PRELUDE = """
import json, sys, types
sys.path.insert(0, {root!r})
for name in {stand_ins!r}:
    try:
        __import__(name)
    except ImportError:
        sys.modules[name] = types.ModuleType(name)
"""


def run_in(root: Path, code: str, *, timeout: float = 120) -> dict:
    """Run ``code`` in a fresh interpreter with the snapshot first on ``sys.path``; it must print one JSON object."""
    script = _PRELUDE.format(root=str(root), stand_ins=STAND_INS) + code
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout, cwd=str(root)
    )
    if done.returncode != 0:
        raise RuntimeError(f"in {root}: {done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- reading the config schema with ast ---------------------------------------------------------


def _module_file(root: Path, module: str) -> Path | None:
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


class _Module:
    def __init__(self, root: Path, name: str, path: Path) -> None:
        self.name = name
        self.tree = ast.parse(path.read_text())
        self.classes = {n.name: n for n in self.tree.body if isinstance(n, ast.ClassDef)}
        self.imports: dict[str, tuple[str, str]] = {}  # local name -> (module, name)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(self.tree):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1])
                    source = f"{base}.{node.module}" if node.module else base
                else:
                    source = node.module or ""
                for alias in node.names:
                    self.imports[alias.asname or alias.name] = (source, alias.name)


class Schema:
    """The config classes of one snapshot, from ``nemo_rl.algorithms.grpo.MasterConfig`` down."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._modules: dict[str, _Module | None] = {}

    def module(self, name: str) -> _Module | None:
        if name not in self._modules:
            path = _module_file(self.root, name)
            self._modules[name] = _Module(self.root, name, path) if path else None
        return self._modules[name]

    def find(self, module: str, name: str, depth: int = 0) -> tuple[_Module, ast.ClassDef] | None:
        mod = self.module(module)
        if mod is None or depth > 8:
            return None
        if name in mod.classes:
            return mod, mod.classes[name]
        if name in mod.imports:
            source, original = mod.imports[name]
            return self.find(source, original, depth + 1)
        return None

    def kind(self, mod: _Module, cls: ast.ClassDef, depth: int = 0) -> str | None:
        """'typeddict', 'model' (pydantic) or None, through the class's bases."""
        for base in cls.bases:
            label = ast.unparse(base)
            if label.endswith("TypedDict"):
                return "typeddict"
            if label.endswith("BaseModel"):
                return "model"
            found = self.find(mod.name, label.rpartition(".")[2])
            if found is not None and depth < 8:
                inherited = self.kind(*found, depth + 1)
                if inherited:
                    return inherited
        return None

    def fields(self, mod: _Module, cls: ast.ClassDef) -> dict[str, tuple[bool, ast.expr, _Module]]:
        """name → (required, annotation, module the annotation is written in); bases first."""
        out: dict[str, tuple[bool, ast.expr, _Module]] = {}
        kind = self.kind(mod, cls)
        for base in cls.bases:
            found = self.find(mod.name, ast.unparse(base).rpartition(".")[2])
            if found is not None:
                out.update(self.fields(*found))
        total = not any(k.arg == "total" and ast.unparse(k.value) == "False" for k in cls.keywords)
        for node in cls.body:
            if not isinstance(node, ast.AnnAssign) or not isinstance(node.target, ast.Name):
                continue
            ann = node.annotation
            wrapper = ann.value if isinstance(ann, ast.Subscript) else None
            label = ast.unparse(wrapper) if wrapper is not None else ""
            if label.endswith("NotRequired"):
                required = False
            elif label.endswith("Required"):
                required = True
            elif kind == "model" or kind is None:
                required = node.value is None
            else:
                required = total
            out[node.target.id] = (required, ann, mod)
        return out

    def _options(self, ann: ast.expr, mod: _Module) -> list:
        """The alternatives an annotation allows: ('class', mod, cls), 'none', or 'other'."""
        if isinstance(ann, ast.BinOp) and isinstance(ann.op, ast.BitOr):
            return self._options(ann.left, mod) + self._options(ann.right, mod)
        if isinstance(ann, ast.Constant) and ann.value is None:
            return ["none"]
        if isinstance(ann, ast.Constant) and isinstance(ann.value, str):  # a string annotation
            return self._options(ast.parse(ann.value, mode="eval").body, mod)
        if isinstance(ann, ast.Subscript):
            head = ast.unparse(ann.value).rpartition(".")[2]
            inner = ann.slice.elts if isinstance(ann.slice, ast.Tuple) else [ann.slice]
            if head in ("NotRequired", "Required", "ReadOnly"):
                return self._options(inner[0], mod)
            if head == "Annotated":
                return self._options(inner[0], mod)
            if head == "Optional":
                return self._options(inner[0], mod) + ["none"]
            if head == "Union":
                return [o for x in inner for o in self._options(x, mod)]
            return ["other"]
        if isinstance(ann, ast.Name | ast.Attribute):
            found = self.find(mod.name, ast.unparse(ann).rpartition(".")[2])
            if found is not None and self.kind(*found) is not None:
                return [("class", *found)]
            return ["none"] if ast.unparse(ann) == "None" else ["other"]
        return ["other"]

    def missing(self, config: dict, module: str = "nemo_rl.algorithms.grpo", name: str = "MasterConfig") -> list[str]:
        """Dotted keys the schema requires and ``config`` lacks (the closest variant of each union)."""
        found = self.find(module, name)
        assert found is not None, f"{name} not found in {module} of {self.root}"
        return self._missing_in(config, *found, prefix="")

    def _missing_in(self, value: dict, mod: _Module, cls: ast.ClassDef, prefix: str) -> list[str]:
        lacking: list[str] = []
        for key, (required, ann, where) in self.fields(mod, cls).items():
            path = f"{prefix}{key}"
            if key not in value:
                if required:
                    lacking.append(path)
                continue
            lacking += self._missing_value(value[key], ann, where, path)
        return lacking

    def _missing_value(self, value, ann: ast.expr, mod: _Module, path: str) -> list[str]:
        options = self._options(ann, mod)
        classes = [o for o in options if isinstance(o, tuple)]
        if not classes or not isinstance(value, dict):
            return []  # a leaf (types are the loader's business), or None where a class may be None
        best: list[str] | None = None
        for _, cmod, cls in classes:
            lacking = self._missing_in(value, cmod, cls, prefix=f"{path}.")
            if _literal_mismatch(self.fields(cmod, cls), value):
                continue  # e.g. DTensorConfigDisabled (enabled: Literal[False]) for enabled: true
            if best is None or len(lacking) < len(best):
                best = lacking
        return best or []


def _literal_mismatch(fields: dict, value: dict) -> bool:
    for key, (_, ann, _) in fields.items():
        if key in value and isinstance(ann, ast.Subscript) and ast.unparse(ann.value).endswith("Literal"):
            allowed = ann.slice.elts if isinstance(ann.slice, ast.Tuple) else [ann.slice]
            values = [a.value for a in allowed if isinstance(a, ast.Constant)]
            if values and value[key] not in values:
                return True
    return False


# -- what grpo.setup / grpo_train read ---------------------------------------------------------------


def function(root: Path, module: str, name: str) -> ast.FunctionDef:
    path = _module_file(root, module)
    assert path is not None, f"{module} not in {root}"
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return node
    raise AssertionError(f"{module}.{name} not found in {root}")


def _chain(node: ast.expr, aliases: dict[str, tuple[str, ...]]) -> tuple[str, ...] | None:
    """``master_config["a"]["b"]`` / ``master_config.a["b"]`` → ('a', 'b'); None if not rooted there."""
    keys: list[str] = []
    while True:
        if (
            isinstance(node, ast.Subscript)
            and isinstance(node.slice, ast.Constant)
            and isinstance(node.slice.value, str)
        ):
            keys.append(node.slice.value)
            node = node.value
        elif isinstance(node, ast.Attribute) and not node.attr.startswith("_") and node.attr not in _METHODS:
            keys.append(node.attr)
            node = node.value
        elif isinstance(node, ast.Name) and node.id in aliases:
            return aliases[node.id] + tuple(reversed(keys))
        else:
            return None


_METHODS = {"get", "items", "keys", "values", "copy", "update", "pop", "setdefault", "model_dump"}


def _unconditional(node: ast.AST):
    """The nodes of a function body that run whenever it runs: not under an ``if``, a ``try``'s
    handlers, a short-circuit operand after the first, a conditional expression, a comprehension
    or a nested function. Loop bodies count: a training run takes at least one step."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
        return
    if isinstance(node, ast.ListComp | ast.SetComp | ast.DictComp | ast.GeneratorExp):
        return
    yield node
    if isinstance(node, ast.If | ast.IfExp):
        yield from _unconditional(node.test)
        return
    if isinstance(node, ast.BoolOp):
        yield from _unconditional(node.values[0])
        return
    if isinstance(node, ast.Try):
        for child in node.body:
            yield from _unconditional(child)
        for child in node.finalbody:
            yield from _unconditional(child)
        return
    for child in ast.iter_child_nodes(node):
        yield from _unconditional(child)


def keys_read_without_default(root: Path, module: str, name: str, config_arg: str = "master_config") -> set[str]:
    """Dotted config keys the function always reads by subscript (a ``KeyError`` where absent)."""
    fn = function(root, module, name)
    body = [n for stmt in fn.body for n in _unconditional(stmt)]
    aliases: dict[str, tuple[str, ...]] = {config_arg: ()}
    for _ in range(4):  # aliases of aliases
        for node in body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                chain = _chain(node.value, aliases)
                if chain:
                    aliases.setdefault(node.targets[0].id, chain)
    read: set[str] = set()
    for node in body:
        # the last step a subscript: a dict's KeyError (a model's attribute has its default)
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
            chain = _chain(node, aliases)
            if chain:
                read.add(".".join(chain))
    return read


def setup_arity(root: Path) -> int:
    """How many values ``nemo_rl.algorithms.grpo.setup`` returns (its own last ``return`` of a tuple)."""
    fn = function(root, "nemo_rl.algorithms.grpo", "setup")
    returns = [
        n for stmt in fn.body for n in own_nodes(stmt) if isinstance(n, ast.Return) and isinstance(n.value, ast.Tuple)
    ]
    assert returns, "setup returns no tuple"
    return len(returns[-1].value.elts)


def own_nodes(node: ast.AST):
    """Every node of a function's body outside nested functions and classes."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
        return
    yield node
    for child in ast.iter_child_nodes(node):
        yield from own_nodes(child)


def environment_return_fields(root: Path) -> list[str]:
    """The real ``EnvironmentReturn``'s fields, imported from the snapshot in a fresh interpreter."""
    return run_in(
        root,
        "from nemo_rl.environments.interfaces import EnvironmentReturn\n"
        "print(json.dumps({'fields': list(EnvironmentReturn._fields)}))\n",
    )["fields"]


def dump(obj) -> str:
    return json.dumps(obj, default=str)
