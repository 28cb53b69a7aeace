"""The plugin manager: the only mutable registry state in micronet.

``get_plugin_manager()`` builds a fresh manager each call (tests get their
own): hook specs, the default plugins, the ``micronet`` entry points minus
those named in ``MICRONET_DISABLE_PLUGINS``, then ``check_pending()``.
``Registries.from_manager`` merges what the registration hooks return.
"""
from __future__ import annotations

import functools
import importlib
import os
import re
import warnings
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Iterable

import pluggy

from . import hookspecs
from .errors import PluginError, UsageError
from .registry import CounterRegistry, Registration
from .steps import WeightedLayer
from .text import printable

__all__ = [
    "hookimpl",
    "DEFAULT_PLUGINS",
    "ESSENTIAL_PLUGINS",
    "DISABLE_ENV",
    "get_plugin_manager",
    "Registries",
    "default_registries",
    "UnknownPluginWarning",
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
    "micronet.counters.recurrent",
    "micronet.counters.norm",
    "micronet.counters.activation",
    "micronet.counters.pooling",
    "micronet.counters.elementwise",
    "micronet.counters.interpolate",
    "micronet.counters.embedding",
    "micronet.counters.free",
    "micronet.counters.indexing",
    "micronet.counters.creation",
    "micronet.counters.patches",
    "micronet.counters.transformers_ops",
    "micronet.counters.vision_ops",
    "micronet.rules",
    "micronet.models",
    "micronet.plugins.imta",
    "micronet.plugins.half",
    "micronet.plugins.prune",
    "micronet.plugins.sparsify",
    "micronet.plugins.factorise",
    "micronet.plugins.finetune",
    "micronet.plugins.quantize",
    "micronet.plugins.sensitivity",
    "micronet.plugins.search",
)

#: The subset that cannot be disabled: without them nothing can be scored.
ESSENTIAL_PLUGINS: frozenset[str] = frozenset({"micronet.rules"})


class UnknownPluginWarning(UserWarning):
    """``MICRONET_DISABLE_PLUGINS`` names no plugin that is installed."""


def disabled_plugins() -> set[str]:
    """Plugin names listed in ``MICRONET_DISABLE_PLUGINS`` (comma-separated)."""
    raw = os.environ.get(DISABLE_ENV, "")
    return {name.strip() for name in raw.split(",") if name.strip()}


def get_plugin_manager(*, entry_points: bool = True, extra: Iterable[Any] = ()) -> pluggy.PluginManager:
    """A fresh manager with specs, default plugins, entry points and ``extra``
    plugin objects registered.

    ``MICRONET_DISABLE_PLUGINS`` names plugins (an entry point's name or its
    distribution's) to leave out; a name that is no plugin is an
    :class:`UnknownPluginWarning`. A plugin that fails to load, or whose
    registration hook raises, is left out and kept in ``pm.micronet_failed``
    (name -> one-line error); the rest keep working.
    """
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
    pm.micronet_failed, pm.micronet_failed_origin, pm.micronet_dists = {}, {}, {}
    found = _entry_points() if entry_points or blocked - set(DEFAULT_PLUGINS) else []
    if entry_points:
        _load_entry_points(pm, found, blocked)
    extra = list(extra)
    for plugin in extra:
        pm.register(plugin)
    _warn_unknown(blocked, found, [pm.get_canonical_name(plugin) for plugin in extra])
    _drop_failing_registrations(pm)
    pm.check_pending()
    return pm


def _entry_points() -> list:
    from importlib.metadata import entry_points

    return list(entry_points(group=PROJECT))


def _dist_name(ep) -> str:
    """The canonical name (PEP 503) of the distribution that ships ``ep``, or ""."""
    name = ep.dist.metadata["Name"] if ep.dist is not None else ""
    return _canonical(name or "")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _load_entry_points(pm: pluggy.PluginManager, found: list, blocked: set[str]) -> None:
    blocked_dists = {_canonical(name) for name in blocked}
    for ep in found:
        if ep.name in blocked or _dist_name(ep) in blocked_dists:
            pm.set_blocked(ep.name)
            continue
        if pm.get_plugin(ep.name) is not None:
            continue
        try:
            pm.register(ep.load(), name=ep.name)
            pm.micronet_dists[ep.name] = ep.dist
        except Exception as error:  # a broken plugin must not take the others down
            pm.micronet_failed[ep.name] = printable(f"{type(error).__name__}: {error}")
            pm.micronet_failed_origin[ep.name] = _entry_point_origin(ep.dist)


def _warn_unknown(blocked: set[str], found: list, extra_names: list[str]) -> None:
    """Warn about disabled names that match no plugin (a typo disables nothing)."""
    known = {*DEFAULT_PLUGINS, *extra_names, *(ep.name for ep in found)}
    dists = {_dist_name(ep): ep.dist.metadata["Name"] for ep in found if ep.dist is not None}
    for name in sorted(blocked):
        if name not in known and _canonical(name) not in dists:
            named = {n for n in known - set(DEFAULT_PLUGINS) if not n.isdigit()}  # not pluggy's id() names
            choices = sorted(named) + sorted(dists.values()) + list(DEFAULT_PLUGINS)
            warnings.warn(UnknownPluginWarning(
                f"{DISABLE_ENV} names {printable(repr(name))}, which is no installed plugin; "
                f"known: {', '.join(choices)}"), stacklevel=3)


def _drop_failing_registrations(pm: pluggy.PluginManager) -> None:
    """Call every registration hook once; a plugin whose hook raises is
    unregistered and recorded like a plugin that failed to load."""
    for kind in _REGISTRATION_HOOKS:
        hook_name = f"micronet_register_{kind}"
        hook = getattr(pm.hook, hook_name, None)
        for impl in hook.get_hookimpls() if hook is not None else ():
            try:
                impl.function()
            except Exception as error:
                _drop(pm, impl.plugin_name, impl.plugin, hook_name, error)


def _drop(pm: pluggy.PluginManager, name: str, plugin: Any, hook_name: str, error: Exception) -> None:
    if name in ESSENTIAL_PLUGINS:
        raise PluginError(printable(f"plugin {name!r} failed in {hook_name}: {type(error).__name__}: {error}"),
                          hint="it is essential: reinstall micronet-toolkit") from error
    pm.micronet_failed_origin[name] = _origin(pm, name, plugin)
    pm.micronet_failed[name] = printable(f"{type(error).__name__} in {hook_name}: {error}")
    pm.unregister(plugin, name=name)


def _named_results(pm: pluggy.PluginManager, hook_name: str):
    """(plugin name, result item) for every item every plugin returned (none
    when no spec or plugin declares the hook)."""
    hook = getattr(pm.hook, hook_name, None)
    for impl in hook.get_hookimpls() if hook is not None else ():  # registration order (calls run in reverse)
        try:
            items = impl.function()
        except Exception as error:
            raise PluginError(f"plugin {impl.plugin_name!r} failed in {hook_name}: {error}") from error
        for item in items or ():
            yield impl.plugin_name, item


def _unique(pm, hook_name: str, what: str) -> tuple[dict[str, Any], dict[str, str]]:
    """(name -> item, name -> plugin) for a registration hook; duplicates fail."""
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
    return table, origin


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
    def _named(self) -> dict[str, tuple[dict[str, Any], dict[str, str]]]:
        return {}

    def _kind(self, kind: str) -> tuple[dict[str, Any], dict[str, str]]:
        if kind not in self._named:
            self._named[kind] = _unique(self.pm, f"micronet_register_{kind}", _SINGULAR[kind])
        return self._named[kind]

    @property
    def rulebooks(self) -> dict[str, Any]:
        """name -> :class:`~micronet.rules.Rulebook`."""
        return self._kind("rulebooks")[0]

    @property
    def tracks(self) -> dict[str, Any]:
        """name -> :class:`~micronet.rules.Track`."""
        return self._kind("tracks")[0]

    @property
    def models(self) -> dict[str, Any]:
        """name -> :class:`~micronet.resolve.ModelEntry`."""
        return self._kind("models")[0]

    @property
    def steps(self) -> dict[str, Any]:
        """name -> :class:`~micronet.steps.CompressionStep`."""
        return self._kind("steps")[0]

    @property
    def report_sections(self) -> dict[str, Any]:
        """name -> :class:`~micronet.reports.sections.ReportSection`."""
        return self._kind("report_sections")[0]

    @cached_property
    def weighted_layers(self) -> dict[str, WeightedLayer]:
        """Dotted class path -> :class:`~micronet.steps.WeightedLayer`: the
        module classes whose weight the built-in steps may select, besides
        Conv*/Linear (``micronet_register_weighted_layers``; none when no
        plugin declares the hook)."""
        for plugin, item in _named_results(self.pm, "micronet_register_weighted_layers"):
            if not isinstance(item, WeightedLayer):
                raise PluginError(f"plugin {plugin!r} returned {item!r} from micronet_register_weighted_layers",
                                  hint="return a list of micronet.steps.WeightedLayer")
        return self._kind("weighted_layers")[0]

    def origin(self, kind: str, name: str) -> str:
        """The plugin that registered ``name`` among ``kind`` (e.g. "steps")."""
        return self._kind(kind)[1][name]

    @property
    def failed_plugins(self) -> tuple[tuple[str, str], ...]:
        """(plugin name, one-line error) of every plugin left out because it
        failed to load or its registration hook raised, in the order found."""
        return tuple(getattr(self.pm, "micronet_failed", {}).items())


_SINGULAR = {"rulebooks": "rulebook", "tracks": "track", "models": "model", "steps": "step",
             "report_sections": "report section", "weighted_layers": "weighted layer"}


@functools.lru_cache(maxsize=1)
def default_registries() -> Registries:
    """A convenience for library callers: the registries of the installed
    plugins, built on the first call and reused by later ones.

    ``audit()``, ``compress()`` and ``resolve_model()`` use it when they are
    not given ``registries=`` / ``models=``, so that a script auditing many
    models pays for the plugin manager once: a fresh
    ``Registries.from_manager()`` costs about 9 ms, 14 ms with every table
    merged (after the first, which imports the built-in plugins: 0.05 s;
    1.6 s while they imported torchvision and Torch-Pruning),
    against a few milliseconds for auditing a small model. It is a snapshot:
    plugins installed or disabled (``MICRONET_DISABLE_PLUGINS``) later are
    not seen until ``default_registries.cache_clear()``. Treat it as read
    only: to add a plugin object, or to observe a pipeline, build your own
    ``Registries.from_manager(get_plugin_manager(extra=[...]))`` and pass it
    down, as the command line does for every command (it never calls this).
    """
    return Registries.from_manager()


def _with_plugin(item: Registration, plugin: str) -> Registration:
    from dataclasses import replace

    return replace(item, plugin=plugin)


@dataclass(frozen=True)
class PluginInfo:
    """What ``micronet plugins`` shows about one plugin."""

    name: str
    version: str
    origin: str
    registered: dict[str, list[str]]
    error: str = ""


_REGISTRATION_HOOKS = ("counters", "rulebooks", "tracks", "models", "steps", "weighted_layers", "report_sections")


def describe_plugins(pm: pluggy.PluginManager) -> list[PluginInfo]:
    """Every plugin with its version, origin and what each registration hook
    returned; plugins that failed to load or to register are listed with their error."""
    infos = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:
            continue
        try:
            registered, error = _registered(plugin), ""
        except Exception as failure:  # registered after the manager was built, so never checked
            registered, error = {}, printable(f"{type(failure).__name__}: {failure}")
        infos.append(PluginInfo(name, _version(pm, name), _origin(pm, name, plugin), registered, error))
    origins = getattr(pm, "micronet_failed_origin", {})
    for name, error in getattr(pm, "micronet_failed", {}).items():
        origin = origins.get(name, "entry point")
        infos.append(PluginInfo(name, "", f"{origin} (failed to load)", {}, error))
    return infos


def _version(pm: pluggy.PluginManager, name: str) -> str:
    from importlib.metadata import version as dist_version

    dists = getattr(pm, "micronet_dists", {})
    if name in dists:
        return dists[name].version if dists[name] is not None else ""
    return dist_version("micronet-toolkit") if name in DEFAULT_PLUGINS else ""


def _origin(pm: pluggy.PluginManager, name: str, plugin: Any) -> str:
    dists = getattr(pm, "micronet_dists", {})
    if name in dists:
        return _entry_point_origin(dists[name])
    if name in DEFAULT_PLUGINS:
        return "built in"
    return f"registered in code ({getattr(plugin, '__name__', type(plugin).__name__)})"


def _entry_point_origin(dist) -> str:
    return f"entry point of {dist.metadata['Name']}" if dist is not None else "entry point"


def _registered(plugin: Any) -> dict[str, list[str]]:
    """kind -> names of what ``plugin``'s registration hooks return."""
    from .registry import target_name

    registered: dict[str, list[str]] = {}
    for kind in _REGISTRATION_HOOKS:
        hook = getattr(plugin, f"micronet_register_{kind}", None)
        if hook is None:
            continue
        items = hook() or []
        if kind == "counters":
            registered[kind] = sorted({target_name(t) for item in items for t in item.targets})
        else:
            registered[kind] = [item.name for item in items]
    return registered
