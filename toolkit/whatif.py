"""What-if grids: the same records re-scored under uniform bits and sparsity.

Nothing is re-traced: each cell calls the rulebook's ``evaluate`` on the
columns prepared once, so a 100-cell grid costs milliseconds.
"""
from __future__ import annotations

import itertools
import math
import numbers
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from .errors import UsageError
from .precision import check_bits
from .rules import ScoreOptions

if TYPE_CHECKING:
    from .audit import Result

__all__ = ["WhatIfCell", "WhatIfGrid", "parse_what_if", "what_if_grid", "AXES"]

#: Grid axes: ``bits`` sets weights and activations together.
AXES = ("bits", "weight_bits", "act_bits", "sparsity")


@dataclass(frozen=True)
class WhatIfCell:
    """One configuration and its score terms (MicroNet units)."""

    levels: tuple[tuple[str, float], ...]
    total: float
    storage_term: float
    ops_term: float
    storage: float
    ops: float
    freebie: bool

    def level(self, axis: str) -> float | None:
        return dict(self.levels).get(axis)


@dataclass(frozen=True)
class WhatIfGrid:
    """Cells in row-major order over ``axes`` (each with its ``levels``)."""

    axes: tuple[str, ...]
    levels: tuple[tuple[float, ...], ...]
    cells: tuple[WhatIfCell, ...]

    def best(self) -> WhatIfCell:
        return min(self.cells, key=lambda c: c.total)

    def to_dict(self) -> dict[str, Any]:
        return {
            "axes": list(self.axes),
            "levels": [list(v) for v in self.levels],
            "cells": [{**dict(c.levels), "total": c.total, "storage_term": c.storage_term,
                       "ops_term": c.ops_term, "freebie": c.freebie} for c in self.cells],
        }


_EXAMPLE = "e.g. --what-if 'bits=32,16,8,4;sparsity=0,0.5,0.9'"


def parse_what_if(text: str) -> dict[str, list[float]]:
    """``'bits=32,16,8,4;sparsity=0,0.5,0.9'`` -> ``{'bits': [...], 'sparsity': [...]}``.

    Each axis once (``weight-bits`` and ``weight_bits`` are one axis), each
    level checked (finite; bits whole, sparsity in [0, 1)), so the command
    line is refused before any work.
    """
    levels: dict[str, list[float]] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        axis, sep, values = part.partition("=")
        axis = axis.strip().replace("-", "_")
        if not sep or not values.strip():
            raise UsageError(f"--what-if {part!r}: expected AXIS=V1,V2,...", hint=_EXAMPLE)
        if axis in levels:
            raise UsageError(f"--what-if names the axis {axis!r} twice",
                             hint=f"list its levels once, comma-separated: {axis}=32,16,8")
        try:
            levels[axis] = [float(v) for v in values.split(",") if v.strip()]
        except ValueError:
            raise UsageError(f"--what-if {part!r}: levels must be numbers", hint=_EXAMPLE) from None
    if not levels:
        raise UsageError("--what-if is empty", hint=_EXAMPLE)
    for axis, values in levels.items():
        _check(axis, values)
    return levels


def _options(levels: Mapping[str, float], freebie: bool) -> ScoreOptions:
    bits = levels.get("bits")
    weight_bits = levels.get("weight_bits", bits)
    act_bits = levels.get("act_bits", bits)
    return ScoreOptions(
        freebie=freebie,
        weight_bits=None if weight_bits is None else int(weight_bits),
        act_bits=None if act_bits is None else int(act_bits),
        sparsity=levels.get("sparsity"),
    )


def _check(axis: str, values: Sequence[float]) -> tuple[float, ...]:
    if axis not in AXES:
        raise UsageError(f"unknown what-if axis {axis!r}; choose from {', '.join(AXES)}")
    if not values:
        raise UsageError(f"what-if axis {axis!r} has no levels")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise UsageError(f"what-if {axis} level {value!r}: expected a finite number",
                             hint="sparsity levels are fractions in [0, 1)" if axis == "sparsity"
                             else "bit widths are whole numbers from 1 to 64")
        if axis == "sparsity":
            if not 0.0 <= value < 1.0:
                raise UsageError(f"what-if sparsity {value}: must be at least 0 and below 1",
                                 hint="sparsity is the fraction of zero weights, e.g. 0,0.5,0.9")
        elif value != int(value):
            raise UsageError(f"what-if {axis} {value}: bit widths are whole numbers", hint="e.g. bits=32,16,8,4")
        else:
            check_bits(int(value), f"what-if {axis}")
    return tuple(values)


def what_if_grid(result: "Result", levels: Mapping[str, Sequence[float]]) -> WhatIfGrid:
    """Score ``result``'s records for every combination of ``levels``."""
    axes = tuple(levels)
    values = tuple(_check(axis, levels[axis]) for axis in axes)
    cells = []
    for combo in itertools.product(*values):
        chosen = dict(zip(axes, combo))
        score = result.rescore(_options(chosen, result.options.freebie)).score
        cells.append(WhatIfCell(tuple(chosen.items()), score.total, score.storage_term,
                                score.ops_term, score.storage, score.ops, score.freebie))
    return WhatIfGrid(axes, values, tuple(cells))
