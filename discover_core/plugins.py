"""The plugin manager and the registries it fills.

Every plugin, built-in or not, is a module listed under the ``discover``
entry-point group. Built-ins ship in this distribution; outside plugins in their
own. ``DISCOVER_PLUGINS`` (a comma-separated list of distribution names or
entry-point names) limits which outside plugins load; set it to an empty string
to load none.

An outside plugin that fails to load (its module raises on import, it defines an
unknown hook, it reuses a name) is reported once on stderr and skipped, so one
broken package cannot stop commands that do not use it; a command that asks for
one of its components gets the real exception (``Plugins.get``), and
``discover plugins`` lists it as broken.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import sys
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pluggy

from . import hookspecs
from .errors import UserError

ENTRY_POINT_GROUP = "discover"
BUILTIN_DIST = "discover-ttt"
ENV_FILTER = "DISCOVER_PLUGINS"
KINDS = ("problems", "samplers", "estimators", "backends")
#: the config sections that name a component
COMPONENT_SECTIONS = ("problem", "backend", "sampler", "estimator")

log = logging.getLogger("discover.plugins")


class PluginError(UserError):
    """A plugin is broken: an unknown hook, a duplicate name, a module that fails to import."""


@dataclass
class Entry:
    """One registered component and where it came from."""

    name: str
    obj: Any
    kind: str
    plugin: str
    dist: str
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Broken:
    """An outside plugin that failed to load, and why (``error`` is the real exception, one line)."""

    name: str
    dist: str
    error: str
    value: str = ""  # the entry point's target, "package.module"

    def describe(self, outcome: str = " and is skipped") -> str:
        return f"plugin {self.name!r} (from {self.dist}) failed to load{outcome}: {self.error}"


def _normalize(dist: str) -> str:
    """PEP 503 form of a distribution name, so ``discover_spread`` matches ``discover-spread``."""
    return re.sub(r"[-_.]+", "-", dist).lower()


class Registry:
    """name → Entry for one kind of component."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.entries: dict[str, Entry] = {}

    def add(self, obj: Any, name: str | None, plugin: str, dist: str, **extra: Any) -> None:
        name = name or getattr(obj, "name", None) or getattr(obj, "__name__", None)
        if not name or not isinstance(name, str):
            raise PluginError(f"plugin {plugin!r} registered a {self.kind[:-1]} without a name: {obj!r}")
        if name in self.entries:
            first = self.entries[name]
            raise PluginError(
                f"two plugins register a {self.kind[:-1]} named {name!r}: "
                f"{first.plugin!r} (from {first.dist}) and {plugin!r} (from {dist}). "
                "Rename one of them, or uninstall one plugin."
            )
        self.entries[name] = Entry(name, obj, self.kind, plugin, dist, extra)

    def get(self, name: str) -> Entry:
        try:
            return self.entries[name]
        except KeyError:
            raise KeyError(name) from None

    def names(self) -> list[str]:
        return sorted(self.entries)


class Plugins:
    """A plugin manager with its registries filled."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
        self.pm.add_hookspecs(hookspecs)
        self.dists: dict[str, str] = {}  # plugin name -> distribution name
        self.registries = {kind: Registry(kind) for kind in KINDS}
        self.broken: dict[str, Broken] = {}  # entry-point name -> why it did not load

    def add_module(self, module: Any, name: str | None = None, dist: str = "(registered at run time)") -> None:
        name = name or str(getattr(module, "__name__", repr(module)))
        try:
            self.pm.register(module, name=name)
            self.pm.check_pending()
        except pluggy.PluginValidationError as e:
            self.pm.unregister(name=name)
            known = ", ".join(sorted(n for n in dir(hookspecs) if n.startswith("register_")))
            raise PluginError(f"plugin {name!r} (from {dist}) is invalid: {e}. Known hooks: {known}.") from None
        self.dists[name] = dist
        for kind in KINDS:
            self._collect(kind, name)

    def _collect(self, kind: str, plugin_name: str) -> None:
        plugin = self.pm.get_plugin(plugin_name)
        impl = getattr(plugin, f"register_{kind}", None)
        if impl is None:
            return
        registry, dist = self.registries[kind], self.dists[plugin_name]

        def register(obj: Any, name: str | None = None, **extra: Any) -> None:
            registry.add(obj, name, plugin_name, dist, **extra)

        impl(register=register)

    def load_entry_points(self) -> None:
        allowed = os.environ.get(ENV_FILTER)
        allowed_set = None if allowed is None else {_normalize(a.strip()) for a in allowed.split(",") if a.strip()}
        eps = sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: (_dist(ep) != BUILTIN_DIST, ep.name))
        if allowed_set:
            known = {_normalize(_dist(ep)) for ep in eps} | {_normalize(ep.name) for ep in eps}
            for unknown in sorted(allowed_set - known):
                outside = sorted({f"{_dist(ep)} ({ep.name})" for ep in eps if _dist(ep) != BUILTIN_DIST})
                log.warning(
                    "%s names %r, which is neither an installed plugin distribution nor an entry-point name; "
                    "installed outside plugins: %s.",
                    ENV_FILTER,
                    unknown,
                    ", ".join(outside) or "(none)",
                )
        for ep in eps:
            dist = _dist(ep)
            if dist != BUILTIN_DIST and allowed_set is not None:
                if _normalize(dist) not in allowed_set and _normalize(ep.name) not in allowed_set:
                    continue
            if self.pm.has_plugin(ep.name) or ep.name in self.broken:
                continue
            try:
                module = ep.load()
                self.add_module(module, name=ep.name, dist=dist)
            except Exception as e:
                if dist == BUILTIN_DIST:  # this package itself is broken: nothing sensible can run
                    raise PluginError(
                        f"plugin {ep.name!r} (from {dist}) failed to import: {type(e).__name__}: {e}"
                    ) from e
                self._forget(ep.name)
                error = str(e) if isinstance(e, PluginError) else f"{type(e).__name__}: {e}"
                self.broken[ep.name] = Broken(ep.name, dist, error, ep.value)
                log.warning("%s", self.broken[ep.name].describe())

    def _forget(self, plugin_name: str) -> None:
        """Undo whatever a plugin registered before it failed."""
        if self.pm.has_plugin(plugin_name):
            self.pm.unregister(name=plugin_name)
        for registry in self.registries.values():
            for name in [n for n, e in registry.entries.items() if e.plugin == plugin_name]:
                del registry.entries[name]
        self.dists.pop(plugin_name, None)

    # -- look-ups ------------------------------------------------------------------
    def get(self, kind: str, name: str, search: list[Path] | None = None) -> Entry:
        """A component by registry name or by import path ``package.module:Name``.

        Import paths are looked up on ``sys.path`` and then in the ``search``
        folders (a config file's folder), which are appended to ``sys.path``.
        A name that a broken plugin would have supplied raises ``PluginError``
        with that plugin's real exception; an unknown name raises ``KeyError``.
        """
        registry = self.registries[kind]
        if name in registry.entries:
            return registry.entries[name]
        if ":" in name:
            return self._import(kind, name, search or [])
        if name in self.broken:
            raise PluginError(
                f"{self.broken[name].describe('')}; it was needed for the {kind[:-1]} {name!r}. "
                "Fix or uninstall that package."
            )
        raise KeyError(name)

    def _import(self, kind: str, name: str, search: list[Path]) -> Entry:
        module_name, _, attr = name.partition(":")
        for folder in search:
            if str(folder) not in sys.path:
                sys.path.append(str(folder))
        try:
            module = importlib.import_module(module_name)
        except Exception as e:
            where = "" if not search else f" and in {', '.join(str(f) for f in search)}"
            raise PluginError(
                f"cannot import the {kind[:-1]} {name!r}: importing {module_name!r} raised "
                f"{type(e).__name__}: {e}. Modules of 'module:Name' paths are looked up on the Python path{where}."
            ) from e
        try:
            obj = getattr(module, attr)
        except AttributeError:
            public = sorted(n for n in vars(module) if not n.startswith("_"))
            raise PluginError(
                f"cannot import the {kind[:-1]} {name!r}: module {module_name!r} ({getattr(module, '__file__', '?')}) "
                f"has no attribute {attr!r}; it defines: {', '.join(public) or '(nothing public)'}."
            ) from None
        return Entry(name, obj, kind, module_name, "(import path)")

    def broken_hint(self) -> str:
        """A sentence naming every broken plugin, for "unknown name" errors."""
        if not self.broken:
            return ""
        return " Not loaded: " + "; ".join(b.describe() for b in self.broken.values()) + "."

    def hook(self):
        return self.pm.hook


def import_root(name: str) -> Path | None:
    """The folder a ``package.module:Name`` component was imported from (its root on ``sys.path``).

    None for registry names and modules not imported (yet). ``discover verify``, ``plot``,
    ``report`` and ``resume`` put the roots a run recorded back on the path, so a problem
    module beside its config works for them as it did for ``run``.
    """
    if ":" not in str(name):
        return None
    module_name = str(name).partition(":")[0]
    file = getattr(sys.modules.get(module_name), "__file__", None)
    if not file:
        return None
    path = Path(file).resolve()
    depth = module_name.count(".") + (1 if path.name == "__init__.py" else 0)
    return path.parents[depth]


def import_roots(resolved_config: dict[str, Any]) -> list[Path]:
    """The import roots of a config's ``module:Name`` components (problem, backend, sampler, estimator)."""
    names = [(resolved_config.get(section) or {}).get("name", "") for section in COMPONENT_SECTIONS]
    return sorted({root for root in map(import_root, names) if root is not None})


def use_import_path(folders: list[Path]) -> None:
    """Append ``folders`` to ``sys.path`` (those not on it yet)."""
    for folder in folders:
        if str(folder) not in sys.path:
            sys.path.append(str(folder))


def _dist(ep: Any) -> str:
    return ep.dist.name if ep.dist else "?"


_plugins: Plugins | None = None


def get_plugins() -> Plugins:
    """The process-wide plugin manager, loaded from entry points on first use."""
    global _plugins
    if _plugins is None:
        plugins = Plugins()
        plugins.load_entry_points()
        _plugins = plugins
    return _plugins


def reset_plugins() -> None:
    """Forget the loaded plugins (tests use this after changing the environment)."""
    global _plugins
    _plugins = None
