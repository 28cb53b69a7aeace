"""micronet: MicroNet Challenge scores of any PyTorch model, layer by layer.

>>> import micronet
>>> result = micronet.audit("micronet:wrn_28_10", (1, 3, 32, 32), track="cifar100")
>>> result.score.total  # doctest: +SKIP

A plugin imports what it needs from :mod:`micronet.plugin`.

The names below are imported on first use (PEP 562): ``import micronet``
imports no torch, so the pytest plugin (:mod:`micronet.pytest_plugin`,
loaded by every pytest run where the package is installed) costs nothing
until a test audits a model. ``micronet.audit`` is always the function,
also after the submodule of the same name was imported.
"""
from __future__ import annotations

import importlib
import importlib.util
import types

__version__ = "0.1.0"

#: public name -> the submodule defining it
_EXPORTS = {
    **dict.fromkeys(("Result", "UncountedWarning", "audit", "parse_input_shape"), "audit"),
    **dict.fromkeys(("BudgetExceeded", "assert_budget"), "budget"),
    **dict.fromkeys(("AuditDiff", "diff_audits"), "diff"),
    **dict.fromkeys(("CompressionError", "CounterError", "MicronetError", "PluginError", "SpecError",
                     "TraceError", "UsageError"), "errors"),
    **dict.fromkeys(("Registries", "UnknownPluginWarning", "get_plugin_manager", "hookimpl"), "manager"),
    **dict.fromkeys(("PerToken", "audit_per_token"), "per_token"),
    **dict.fromkeys(("History", "compress"), "pipeline"),
    **dict.fromkeys(("Counts", "LayerRecord", "TensorInfo"), "records"),
    **dict.fromkeys(("Lazy", "Method", "OpCall", "counter", "free", "shape_rule"), "registry"),
    **dict.fromkeys(("LayerCost", "Rulebook", "Score", "ScoreOptions", "Track"), "rules"),
    **dict.fromkeys(("CompressionStep", "StepContext", "StepOption"), "steps"),
    "WhatIfGrid": "whatif",
}

__all__ = [
    "__version__", "plugin", "audit", "Result", "UncountedWarning", "parse_input_shape",
    "audit_per_token", "PerToken", "assert_budget", "BudgetExceeded", "diff_audits", "AuditDiff",
    "compress", "History", "CompressionStep", "StepOption", "StepContext",
    "hookimpl", "get_plugin_manager", "Registries", "UnknownPluginWarning",
    "Counts", "LayerRecord", "TensorInfo", "Method", "Lazy", "OpCall", "counter", "free", "shape_rule",
    "Rulebook", "Track", "Score", "ScoreOptions", "LayerCost", "WhatIfGrid",
    "MicronetError", "UsageError", "SpecError", "TraceError", "CounterError", "PluginError",
    "CompressionError",
]


def __getattr__(name: str):
    """Import a public name's module (or a submodule) on first use."""
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value  # never "audit": the _Package property answers for it first
        return value
    if not name.startswith("__") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS) | {"plugin"})


class _Package(types.ModuleType):
    """The package's module type: ``audit`` names the function, although
    importing ``micronet.audit`` (the submodule) binds that name to the
    module; an explicit assignment (a test's monkeypatch) still wins."""

    @property
    def audit(self):
        override = self.__dict__.get("_audit_override")
        if override is not None:
            return override
        return importlib.import_module(f"{self.__name__}.audit").audit

    @audit.setter
    def audit(self, value):
        if not isinstance(value, types.ModuleType):  # the import system binds the submodule: ignored
            self.__dict__["_audit_override"] = value

    @audit.deleter
    def audit(self):
        self.__dict__.pop("_audit_override", None)


import sys as _sys  # noqa: E402

_sys.modules[__name__].__class__ = _Package
del _sys
