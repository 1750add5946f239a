"""The plugin manager and the registries it fills.

Every plugin, built-in or not, is a module listed under the ``discover``
entry-point group. Built-ins ship in this distribution; outside plugins in their
own. ``DISCOVER_PLUGINS`` (a comma-separated list of distribution names) limits
which outside plugins load; set it to an empty string to load none.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import pluggy

from . import hookspecs
from .errors import UserError

ENTRY_POINT_GROUP = "discover"
BUILTIN_DIST = "discover-ttt"
ENV_FILTER = "DISCOVER_PLUGINS"
KINDS = ("problems", "samplers", "estimators", "backends")


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

    def add_module(self, module: Any, name: str | None = None, dist: str = "(registered at run time)") -> None:
        name = name or getattr(module, "__name__", repr(module))
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
        allowed_set = None if allowed is None else {a.strip() for a in allowed.split(",") if a.strip()}
        eps = sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: (ep.dist.name != BUILTIN_DIST, ep.name))
        for ep in eps:
            dist = ep.dist.name if ep.dist else "?"
            if dist != BUILTIN_DIST and allowed_set is not None and dist not in allowed_set:
                continue
            if self.pm.has_plugin(ep.name):
                continue
            try:
                module = ep.load()
            except Exception as e:
                raise PluginError(f"plugin {ep.name!r} (from {dist}) failed to import: {type(e).__name__}: {e}") from e
            self.add_module(module, name=ep.name, dist=dist)

    # -- look-ups ------------------------------------------------------------------
    def get(self, kind: str, name: str) -> Entry:
        """A component by registry name or by import path ``package.module:Name``."""
        registry = self.registries[kind]
        if name in registry.entries:
            return registry.entries[name]
        if ":" in name:
            module_name, _, attr = name.partition(":")
            try:
                obj = getattr(importlib.import_module(module_name), attr)
            except (ImportError, AttributeError) as e:
                raise KeyError(f"cannot import {name!r}: {e}") from None
            return Entry(name, obj, kind, module_name, "(import path)")
        raise KeyError(name)

    def hook(self):
        return self.pm.hook


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
