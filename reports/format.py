"""Human formatting of raw numbers: the only place K/M/G appear."""
from __future__ import annotations

import math

_UNITS = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K"))


def si(value: float, digits: int = 3) -> str:
    """``12345678`` -> ``'12.3M'``; small values plain; exact ints stay ints."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    magnitude = abs(value)
    for scale, suffix in _UNITS:
        if magnitude >= scale:
            return f"{value / scale:.{digits}g}{suffix}"
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.{digits}g}"


def percent(fraction: float, digits: int = 1) -> str:
    """``0.1234`` -> ``'12.3%'``."""
    return f"{100 * fraction:.{digits}f}%"


def shape(shapes) -> str:
    """``[[1, 64, 56, 56]]`` -> ``'1x64x56x56'`` (several joined by ', ')."""
    return ", ".join("x".join(str(s) for s in item) or "scalar" for item in shapes)
