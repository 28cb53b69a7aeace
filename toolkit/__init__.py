"""micronet: MicroNet Challenge scores of any PyTorch model, layer by layer."""
from __future__ import annotations

from .errors import (CompressionError, CounterError, MicronetError, PluginError, SpecError,
                     TraceError, UsageError)
from .manager import get_plugin_manager, hookimpl
from .records import Counts, LayerRecord, TensorInfo

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "hookimpl",
    "get_plugin_manager",
    "Counts",
    "LayerRecord",
    "TensorInfo",
    "MicronetError",
    "UsageError",
    "SpecError",
    "TraceError",
    "CounterError",
    "PluginError",
    "CompressionError",
]
