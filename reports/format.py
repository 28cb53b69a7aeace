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


def grouped(value, digits: int = 4) -> str:
    """A number for a reader: ``11173962`` -> ``'11,173,962'``, ``0.000123``
    -> ``'0.000123'``, ``True`` -> ``'yes'``; text stays text."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        if value.is_integer() and abs(value) < 1e15:
            return f"{int(value):,}"
        return f"{value:,.{digits}g}" if abs(value) >= 1 else f"{value:.{digits}g}"
    return "" if value is None else str(value)


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """``plural(1, "node")`` -> ``'1 node'``; ``plural(3, "node")`` -> ``'3 nodes'``."""
    return f"{count:,} {noun if count == 1 else nouns or noun + 's'}"


#: Units of step options and notes by key (the pipeline page's small tables).
UNITS = {
    "amount": "fraction", "sparsity": "fraction of zeros", "sparsity_before": "fraction of zeros",
    "zeros": "elements", "elements": "elements", "params": "elements", "min_size": "elements",
    "weight_bits": "bits", "activation_bits": "bits", "accumulator_bits": "bits", "bits": "bits",
    "act_bits": "bits", "percentile": "%", "top1": "% top-1", "accuracy": "% top-1",
    "accuracy_before": "% top-1", "measured_drop": "points", "max_drop": "points", "epochs": "epochs",
    "qat_epochs": "epochs", "epochs_run": "epochs", "lr": "per step", "qat_lr": "per step",
    "batch_size": "examples", "batches": "batches", "examples": "examples", "seconds": "s",
    "evaluations_per_second": "per s", "loss": "nats per example",
    "world_size": "processes", "quantized_layers": "layers", "calibration_batches": "batches",
}
