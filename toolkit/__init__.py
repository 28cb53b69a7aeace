"""micronet: MicroNet Challenge scores of any PyTorch model, layer by layer.

>>> import micronet
>>> result = micronet.audit("micronet:wrn_28_10", (1, 3, 32, 32), track="cifar100")
>>> result.score.total  # doctest: +SKIP

A plugin imports what it needs from :mod:`micronet.plugin`.
"""
from __future__ import annotations

from .audit import Result, UncountedWarning, audit, parse_input_shape
from .errors import (CompressionError, CounterError, MicronetError, PluginError, SpecError,
                     TraceError, UsageError)
from .manager import Registries, UnknownPluginWarning, get_plugin_manager, hookimpl
from .pipeline import History, compress
from .records import Counts, LayerRecord, TensorInfo
from .registry import Lazy, Method, OpCall, counter, free, shape_rule
from .rules import LayerCost, Rulebook, Score, ScoreOptions, Track
from .steps import CompressionStep, StepContext, StepOption
from .whatif import WhatIfGrid

from . import plugin  # last: the plugin contract re-exports the names above

__version__ = "0.1.0"

__all__ = [
    "__version__", "plugin", "audit", "Result", "UncountedWarning", "parse_input_shape",
    "compress", "History", "CompressionStep", "StepOption", "StepContext",
    "hookimpl", "get_plugin_manager", "Registries", "UnknownPluginWarning",
    "Counts", "LayerRecord", "TensorInfo", "Method", "Lazy", "OpCall", "counter", "free", "shape_rule",
    "Rulebook", "Track", "Score", "ScoreOptions", "LayerCost", "WhatIfGrid",
    "MicronetError", "UsageError", "SpecError", "TraceError", "CounterError", "PluginError",
    "CompressionError",
]
