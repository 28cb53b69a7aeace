"""The plugin manager: the only mutable registry state in micronet.

``get_plugin_manager()`` builds a fresh manager each call (tests get their
own): hook specs, the default plugins, the ``micronet`` entry points minus
those named in ``MICRONET_DISABLE_PLUGINS``, then ``check_pending()``.
``Registries.from_manager`` merges what the registration hooks return.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Iterable

import pluggy

from . import hookspecs
from .errors import PluginError, UsageError
from .registry import CounterRegistry, Registration

__all__ = [
    "hookimpl",
    "DEFAULT_PLUGINS",
    "ESSENTIAL_PLUGINS",
    "DISABLE_ENV",
    "get_plugin_manager",
    "Registries",
]

PROJECT = "micronet"
DISABLE_ENV = "MICRONET_DISABLE_PLUGINS"
hookimpl = pluggy.HookimplMarker(PROJECT)

#: Built-in plugins, registered through the same hooks as third-party ones.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "micronet.counters.conv",
    "micronet.counters.linear",
    "micronet.counters.matmul",
    "micronet.counters.attention",
    "micronet.counters.norm",
    "micronet.counters.activation",
    "micronet.counters.pooling",
    "micronet.counters.elementwise",
    "micronet.counters.interpolate",
    "micronet.counters.embedding",
    "micronet.counters.free",
    "micronet.rules",
    "micronet.models",
)

#: The subset that cannot be disabled: without them nothing can be scored.
ESSENTIAL_PLUGINS: frozenset[str] = frozenset({"micronet.rules"})


def disabled_plugins() -> set[str]:
    """Plugin names listed in ``MICRONET_DISABLE_PLUGINS`` (comma-separated)."""
    raw = os.environ.get(DISABLE_ENV, "")
    return {name.strip() for name in raw.split(",") if name.strip()}


def get_plugin_manager(*, entry_points: bool = True, extra: Iterable[Any] = ()) -> pluggy.PluginManager:
    """A fresh manager with specs, default plugins, entry points and ``extra``
    plugin objects registered. Failed entry points are kept in
    ``pm.micronet_failed`` (name -> error text); the rest keep working."""
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    blocked = disabled_plugins()
    for name in blocked & ESSENTIAL_PLUGINS:
        raise UsageError(f"plugin {name!r} is essential and cannot be disabled",
                         hint=f"remove it from {DISABLE_ENV}")
    for name in blocked:
        pm.set_blocked(name)
    for name in DEFAULT_PLUGINS:
        if name not in blocked:
            pm.register(importlib.import_module(name), name=name)
    pm.micronet_failed = {}
    if entry_points:
        _load_entry_points(pm, blocked)
    for plugin in extra:
        pm.register(plugin)
    pm.check_pending()
    return pm


def _load_entry_points(pm: pluggy.PluginManager, blocked: set[str]) -> None:
    from importlib.metadata import entry_points

    for ep in entry_points(group=PROJECT):
        if ep.name in blocked or pm.get_plugin(ep.name) is not None:
            continue
        try:
            pm.register(ep.load(), name=ep.name)
        except Exception as error:  # a broken plugin must not take the others down
            pm.micronet_failed[ep.name] = f"{type(error).__name__}: {error}"


def _named_results(pm: pluggy.PluginManager, hook_name: str):
    """(plugin name, result item) for every item every plugin returned."""
    hook = getattr(pm.hook, hook_name)
    for impl in hook.get_hookimpls():  # registration order (calls run in reverse)
        try:
            items = impl.function()
        except Exception as error:
            raise PluginError(f"plugin {impl.plugin_name!r} failed in {hook_name}: {error}") from error
        for item in items or ():
            yield impl.plugin_name, item


def _unique(pm, hook_name: str, what: str) -> dict[str, Any]:
    table: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for plugin, item in _named_results(pm, hook_name):
        name = item.name
        if name in table and not getattr(item, "replace", False):
            raise PluginError(
                f"{what} {name!r} registered twice: by plugin {origin[name]!r} and by plugin {plugin!r}",
                hint="give it another name, or replace=True in the later one",
            )
        table[name], origin[name] = item, plugin
    return table


@dataclass
class Registries:
    """What every plugin registered, merged for one run."""

    pm: pluggy.PluginManager

    @classmethod
    def from_manager(cls, pm: pluggy.PluginManager | None = None) -> "Registries":
        return cls(pm if pm is not None else get_plugin_manager())

    @cached_property
    def counters(self) -> CounterRegistry:
        registry = CounterRegistry()
        for plugin, item in _named_results(self.pm, "micronet_register_counters"):
            if not isinstance(item, Registration):
                raise PluginError(f"plugin {plugin!r} returned {item!r} from micronet_register_counters",
                                  hint="return micronet.registry.collect(module) or Registration objects")
            registry.add(_with_plugin(item, plugin))
        return registry

    @cached_property
    def rulebooks(self) -> dict[str, Any]:
        return _unique(self.pm, "micronet_register_rulebooks", "rulebook")

    @cached_property
    def tracks(self) -> dict[str, Any]:
        return _unique(self.pm, "micronet_register_tracks", "track")

    @cached_property
    def models(self) -> dict[str, Any]:
        return _unique(self.pm, "micronet_register_models", "model")


def _with_plugin(item: Registration, plugin: str) -> Registration:
    from dataclasses import replace

    return replace(item, plugin=plugin)
