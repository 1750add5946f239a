"""vLLM's own sources as test data, read with ``ast`` from the archives of its wheels' Python files
(``vllm/vllm-<version>-py.tar.gz`` in the folder named by ``DISCOVER_UPSTREAM``, default
``../shared/upstream`` beside the repository). Nothing is imported or unpacked to disk, and no
vLLM code is kept here: these functions only read names and literal values out of it."""

from __future__ import annotations

import ast
import functools
import os
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VERSIONS = ("0.10.2", "0.33.0")
#: where each name we use lives, per release (paths inside the wheel)
FILES = {
    "llm": "vllm/entrypoints/llm.py",
    "engine_args": "vllm/engine/arg_utils.py",
    "sampling": "vllm/sampling_params.py",
    "lora_request": "vllm/lora/request.py",
    "lora_config": "vllm/config/lora.py",
    "init": "vllm/__init__.py",
    "inputs_init": "vllm/inputs/__init__.py",
}
PER_VERSION = {
    "0.10.2": {"inputs": "vllm/inputs/data.py", "model_config": "vllm/config/__init__.py"},
    "0.33.0": {"inputs": "vllm/inputs/llm.py", "model_config": "vllm/config/model.py"},
}
GGUF_LOADER = "vllm/model_executor/model_loader/gguf_loader.py"


def upstream_dir() -> Path | None:
    named = os.environ.get("DISCOVER_UPSTREAM")
    folder = Path(named) if named else ROOT.parent / "shared" / "upstream"
    return folder if (folder / "vllm").is_dir() else None


SKIP_REASON = (
    "vLLM's sources are not here: set DISCOVER_UPSTREAM to the folder holding vllm/vllm-<version>-py.tar.gz "
    "(default ../shared/upstream beside the repository; .ci/run sets it)"
)


@functools.lru_cache(maxsize=4)
def release(version: str) -> Release:
    folder = upstream_dir()
    assert folder is not None, SKIP_REASON
    return Release(folder / "vllm" / f"vllm-{version}-py.tar.gz", {**FILES, **PER_VERSION[version]})


class Release:
    """The parsed modules of one vLLM release, by the short names of ``FILES``."""

    def __init__(self, archive: Path, files: dict[str, str]) -> None:
        wanted = {path: key for key, path in files.items()}
        self.trees: dict[str, ast.Module] = {}
        self.paths: set[str] = set()
        with tarfile.open(archive) as tar:
            for member in tar:
                inner = member.name.split("/", 1)[-1]  # below the archive's top folder
                self.paths.add(inner)
                if inner in wanted:
                    self.trees[wanted[inner]] = ast.parse(tar.extractfile(member).read(), filename=inner)
        missing = set(files) - set(self.trees)
        assert not missing, f"{archive.name} lacks {[files[k] for k in missing]}"

    def cls(self, module: str, name: str) -> ast.ClassDef:
        for node in ast.walk(self.trees[module]):
            if isinstance(node, ast.ClassDef) and node.name == name:
                return node
        raise AssertionError(f"no class {name} in {module}")

    def fields(self, module: str, name: str) -> set[str]:
        """Annotated class attributes (dataclass, msgspec and TypedDict fields), with those of base
        classes defined in the same module."""
        node = self.cls(module, name)
        out = {s.target.id for s in node.body if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)}
        for base in node.bases:
            if isinstance(base, ast.Name):
                try:
                    out |= self.fields(module, base.id)
                except AssertionError:
                    pass
        return out

    def method(self, module: str, cls: str, name: str) -> ast.FunctionDef:
        for node in self.cls(module, cls).body:
            if isinstance(node, ast.FunctionDef) and node.name == name:
                return node
        raise AssertionError(f"no method {cls}.{name} in {module}")

    def params(self, module: str, cls: str, name: str) -> tuple[list[str], set[str], bool]:
        """(positional parameter names after self, keyword-accepted names, takes **kwargs)."""
        a = self.method(module, cls, name).args
        positional = [x.arg for x in a.posonlyargs + a.args][1:]
        return positional, set(positional) | {x.arg for x in a.kwonlyargs}, a.kwarg is not None

    def constants(self, module: str, name: str) -> set:
        """Literal values named ``name``: a tuple assigned to it (anywhere, also inside a function),
        a ``Literal[...]`` alias, or the string values of an Enum class."""
        tree = self.trees[module]
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and node.name == name:
                return {
                    s.value.value for s in node.body if isinstance(s, ast.Assign) and isinstance(s.value, ast.Constant)
                }
            if isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if any(isinstance(t, ast.Name) and t.id == name for t in targets) and node.value is not None:
                    value = node.value
                    if isinstance(value, ast.Subscript):  # Literal[...]
                        value = value.slice
                    return set(ast.literal_eval(value))
        raise AssertionError(f"no constant {name} in {module}")

    def names_text(self, module: str) -> set[str]:
        """Every identifier and string constant in a module (for re-exports such as ``vllm.LLM``)."""
        out = set()
        for node in ast.walk(self.trees[module]):
            if isinstance(node, ast.Name):
                out.add(node.id)
            elif isinstance(node, ast.alias):
                out.add(node.asname or node.name)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                out.add(node.value)
        return out
