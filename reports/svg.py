"""Small pieces shared by the HTML report's SVG charts and graph view.

Escaping, the colour palette, op families and module grouping live here so
that the table, the charts and the graph agree on names and colours.
"""
from __future__ import annotations

import html
from typing import Any, Iterable, Mapping, Sequence

from .format import si

#: Colours of the two score terms, used the same way on the whole page.
OPS_COLOUR = "#3b6fd8"
STORAGE_COLOUR = "#e39b2d"

#: Op families and their colours (graph nodes, legends).
FAMILIES = (
    ("conv", "convolution", "#3b6fd8"),
    ("linear", "linear / matmul", "#8e5bd0"),
    ("norm", "normalisation", "#2f9e6e"),
    ("activation", "activation", "#e39b2d"),
    ("pool", "pooling", "#1fa3b8"),
    ("elementwise", "elementwise", "#d9546b"),
    ("other", "other", "#7b8494"),
)
FAMILY_COLOUR = {key: colour for key, _, colour in FAMILIES}

_ACTIVATIONS = ("relu", "gelu", "silu", "swish", "sigmoid", "tanh", "elu", "softmax", "softmin",
                "hardswish", "hardsigmoid", "mish", "softplus", "softsign", "shrink", "glu", "clamp",
                "hardtanh", "prelu", "selu", "celu", "threshold")
_ELEMENTWISE = ("add", "sub", "mul", "div", "pow", "sqrt", "exp", "log", "neg", "abs", "mean", "sum",
                "max", "min", "amax", "amin", "normalize", "vector_norm", "floor_divide")


def esc(value: Any) -> str:
    """Text from a model or plugin, safe inside HTML/SVG text and attributes."""
    return html.escape(str(value), quote=True)


def stored(row: Mapping[str, Any]) -> bool:
    """A parameter used outside a layer (class token, position embedding):
    free of ops but charged as storage."""
    return row["status"] == "free" and row["storage"] > 0


def family(op: str) -> str:
    """The family of an op name (``conv2d`` -> ``conv``), for colours."""
    op = (op or "").lower()
    if "conv" in op:
        return "conv"
    if any(k in op for k in ("linear", "matmul", "einsum", "attention", "bmm", "addmm", "embedding")):
        return "linear"
    if "norm" in op and op not in ("normalize", "vector_norm"):
        return "norm"
    if "pool" in op:
        return "pool"
    if any(k in op for k in _ACTIVATIONS):
        return "activation"
    if op in _ELEMENTWISE or any(op.startswith(k) for k in ("add", "mul", "sub", "div")):
        return "elementwise"
    return "other"


def group_key(name: str, depth: int) -> str:
    """The first ``depth`` parts of a dotted layer name (the module at that depth)."""
    parts = name.split(".")
    return ".".join(parts[:depth])


def runs(keys: Iterable[str]) -> list[tuple[str, int, int]]:
    """Contiguous runs of equal keys as (key, start, stop)."""
    out: list[tuple[str, int, int]] = []
    for i, key in enumerate(keys):
        if out and out[-1][0] == key:
            out[-1] = (key, out[-1][1], i + 1)
        else:
            out.append((key, i, i + 1))
    return out


def band_depth(names: Sequence[str], low: int = 3, high: int = 40) -> int | None:
    """The shallowest module depth whose contiguous groups number between
    ``low`` and ``high`` (for the bands under the per-layer chart)."""
    deepest = max((n.count(".") for n in names), default=0)
    for depth in range(1, deepest + 1):
        count = len(runs(group_key(n, depth) for n in names))
        if low <= count <= high:
            return depth
        if count > high:
            return None
    return None


def number(value: float) -> str:
    """``1234567`` -> ``'1.23M (1,234,567)'`` for tooltips."""
    if value is None:
        return "-"
    if float(value).is_integer() and abs(value) >= 1000:
        return f"{si(value)} ({int(value):,})"
    return si(value)


def svg_open(width: float, height: float, cls: str, label: str, fluid: bool = True) -> str:
    """An ``<svg>`` start tag; ``fluid`` scales it to the container's width."""
    size = 'width="100%"' if fluid else f'width="{width:.0f}" height="{height:.0f}"'
    return (f'<svg class="{cls}" viewBox="0 0 {width:.0f} {height:.0f}" {size} role="img" '
            f'aria-label="{esc(label)}">')


def clip(text: str, limit: int) -> str:
    """Cut a long name in the middle, where dotted names repeat themselves,
    keeping its start and its end: ``features.d…layer16.conv2``."""
    if len(text) <= limit:
        return text
    head = (limit - 1) // 3
    return text[:head] + "…" + text[len(text) - (limit - 1 - head):]
