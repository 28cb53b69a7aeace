"""Budgets: assert that an audited model fits, and say which layers break it.

:func:`assert_budget` checks an audit (a :class:`~micronet.audit.Result` or
its JSON document) against upper bounds and raises :class:`BudgetExceeded`,
an ``AssertionError`` (pytest shows it as a failure), naming each bound that
is broken, by how much, and the five layers that contribute most to it.

Quantities and their units (those of :mod:`micronet.records` and the rules):

- ``score``: the MicroNet score (storage / reference params + ops /
  reference ops; dimensionless, lower is better); layers ranked by their
  share of the score.
- ``params``: parameter elements (every value, zeros included).
- ``storage``: 32-bit-equivalent values (a b-bit value counts b/32, a sparse
  weight its nonzeros plus a 1-bit-per-element mask); 4 bytes each.
- ``ops``: MicroNet ops, the 32-bit-equivalent multiplies, additions and
  other operations the rulebook charges.
- ``macs``: multiply-accumulates (the thop / fvcore convention), not ops.
- ``accuracy``: a lower bound on the measured top-1 (percent); on a track
  whose quality figure is lower-is-better (perplexity) an upper bound.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Mapping

from .errors import UsageError
from .text import printable

__all__ = ["BudgetExceeded", "Violation", "assert_budget", "check_budget", "parse_amount", "QUANTITIES"]

#: quantity -> (the words after its value, the row key ranking the layers, what that ranking is)
QUANTITIES: dict[str, tuple[str, str, str]] = {
    "score": ("(MicroNet score)", "share", "largest shares of the score"),
    "params": ("parameters", "params", "most parameters"),
    "storage": ("32-bit-equivalent values of storage", "storage", "most storage"),
    "ops": ("MicroNet ops (32-bit equivalents)", "ops", "most MicroNet ops"),
    "macs": ("MACs (multiply-accumulates)", "macs", "most MACs"),
}
TOP_LAYERS = 5

_SUFFIX = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "b": 1e9, "t": 1e12}
_AMOUNT = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([kmgbt]?)\s*$", re.IGNORECASE)


def parse_amount(value: Any, what: str) -> float:
    """A non-negative finite number from ``value``: a number, or text such as
    ``1.5M``, ``2e9``, ``300k``, ``1_000`` (K = 1e3, M = 1e6, G or B = 1e9,
    T = 1e12). ``what`` names the option in the error (``--max-params``)."""
    if isinstance(value, bool):
        raise UsageError(f"{what} expects a number, got {value!r}", hint="e.g. 1.5M, 2e9 or 0.05")
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        match = _AMOUNT.match(str(value).replace("_", "").replace(",", ""))
        if not match:
            raise UsageError(f"{what} expects a number such as 1.5M, 2e9 or 0.05, got {printable(value)!r}",
                             hint="suffixes: K (1e3), M (1e6), G or B (1e9), T (1e12)")
        number = float(match.group(1)) * _SUFFIX[match.group(2).lower()]
    if not math.isfinite(number) or number < 0:
        raise UsageError(f"{what} expects a finite number of at least 0, got {printable(value)!r}")
    return number


@dataclass(frozen=True)
class Violation:
    """One broken bound: ``quantity`` measured ``actual`` against ``limit``
    (units as in this module's documentation). ``maximum`` is False for a
    lower bound (accuracy on a top-1 track). ``top`` lists ``(layer,
    amount)`` of the layers contributing most (amount in the quantity's
    unit; for the score, the fraction of the score)."""

    model: str
    quantity: str
    actual: float
    limit: float
    maximum: bool = True
    top: tuple[tuple[str, float], ...] = ()

    @property
    def excess(self) -> float:
        """How far past the limit, in the quantity's unit (positive)."""
        return self.actual - self.limit if self.maximum else self.limit - self.actual

    @property
    def excess_fraction(self) -> float | None:
        """``excess`` as a fraction of the limit (None for a limit of 0)."""
        return self.excess / self.limit if self.limit else None

    def line(self) -> str:
        """The violation as one line of text."""
        from .reports.format import si

        if self.quantity == "accuracy":
            relation = "is below the minimum" if self.maximum is False else "is above the maximum"
            return (f"{printable(self.model)}: accuracy {self.actual:.2f} {relation} {self.limit:g} "
                    f"by {self.excess:.2f} points{_percent(self.excess_fraction)}")
        words, _, ranking = QUANTITIES[self.quantity]
        fmt = (lambda v: f"{v:.6g}") if self.quantity == "score" else (lambda v: si(v, 4))
        text = (f"{printable(self.model)}: {self.quantity} {fmt(self.actual)} {words} exceeds the budget "
                f"{fmt(self.limit)} by {fmt(self.excess)}{_percent(self.excess_fraction)}")
        if self.quantity == "storage":
            text += f" (4 bytes each: {si(4 * self.actual, 4)}B against {si(4 * self.limit, 4)}B)"
        if self.top:
            shown = (f"{100 * v:.1f}%" if self.quantity == "score" else fmt(v) for _, v in self.top)
            text += f"; {ranking}: " + ", ".join(f"{printable(n)} {v}" for (n, _), v in zip(self.top, shown))
        return text


def _percent(fraction: float | None) -> str:
    return f" (+{100 * fraction:.1f}%)" if fraction is not None else " (the limit is 0)"


class BudgetExceeded(AssertionError):
    """An audit broke a budget. ``violations`` holds each broken bound;
    the message is one line per bound (what, actual vs limit, by how much
    and the five layers contributing most)."""

    def __init__(self, violations: tuple[Violation, ...]):
        self.violations = tuple(violations)
        super().__init__("\n".join(v.line() for v in self.violations))

    def __reduce__(self):  # pickled (a worker process, a test runner) with its violations
        return type(self), (self.violations,)


def _document(result: Any, *, needed: bool = True) -> Mapping[str, Any]:
    """The audit JSON document of a Result (or the document itself); with
    ``needed`` False only the kind of ``result`` is checked (no document built)."""
    if isinstance(result, Mapping):
        return result
    if hasattr(result, "to_dict"):
        return result.to_dict() if needed else {}
    raise UsageError(f"a budget checks an audit result or its JSON document, got {type(result).__name__}",
                     hint="pass what micronet.audit() returned")


def _top(document: Mapping[str, Any], key: str) -> tuple[tuple[str, float], ...]:
    rows = [(row["name"], float(row.get(key) or 0)) for row in document.get("layers", ())]
    rows = [item for item in rows if item[1] > 0]
    rows.sort(key=lambda item: -item[1])
    return tuple(rows[:TOP_LAYERS])


def _higher_is_better(result: Any, document: Mapping[str, Any]) -> bool:
    """Whether the quality figure is a minimum (top-1) or a maximum (perplexity):
    from the Result's track, else the document's ``accuracy.metric``."""
    track = getattr(result, "track", None)
    if track is not None:
        return track.higher_is_better
    from .rules import TRACK_METRICS  # here: the module is imported by the pytest plugin at start-up

    return TRACK_METRICS[(document.get("accuracy") or {}).get("metric", "top1")]


def check_budget(result: Any, *, score: Any = None, params: Any = None, storage: Any = None,
                 ops: Any = None, macs: Any = None, accuracy: Any = None) -> tuple[Violation, ...]:
    """The bounds ``result`` breaks (empty when it fits); see :func:`assert_budget`."""
    bounds = {"score": score, "params": params, "storage": storage, "ops": ops, "macs": macs}
    limits = {name: parse_amount(value, name) for name, value in bounds.items() if value is not None}
    # the whole document (every layer's row) only when a bound needs it: the CLI asks on every audit
    document = _document(result, needed=bool(limits) or accuracy is not None)
    model = str(document.get("model", "model"))
    found = []
    for name, limit in limits.items():
        actual = float(document["score"]["total"] if name == "score" else document["totals"].get(name, 0))
        if actual > limit:
            found.append(Violation(model, name, actual, limit, True, _top(document, QUANTITIES[name][1])))
    if accuracy is not None:
        found.extend(_check_accuracy(result, document, model, parse_amount(accuracy, "accuracy")))
    return tuple(found)


def _check_accuracy(result: Any, document: Mapping[str, Any], model: str, limit: float) -> list[Violation]:
    measured = document.get("accuracy")
    if not measured:
        raise UsageError("an accuracy budget needs a measured accuracy, and this audit measured none",
                         hint="audit with data=... (--data DATASET)")
    actual = float(measured["top1"])
    minimum = _higher_is_better(result, document)
    broken = actual < limit if minimum else actual > limit
    return [Violation(model, "accuracy", actual, limit, not minimum)] if broken else []


def assert_budget(result: Any, *, score: Any = None, params: Any = None, storage: Any = None,
                  ops: Any = None, macs: Any = None, accuracy: Any = None) -> Any:
    """Raise :class:`BudgetExceeded` when ``result`` breaks a bound; return it otherwise.

    ``result`` is a :class:`~micronet.audit.Result` or its JSON document.
    Upper bounds: ``score`` (MicroNet score), ``params`` (parameter
    elements), ``storage`` (32-bit-equivalent values), ``ops`` (MicroNet
    ops), ``macs`` (multiply-accumulates); each a number or text such as
    ``"1.5M"`` / ``"2e9"``. ``accuracy``: the least top-1 (percent) the
    audit measured (the most, for a perplexity track). A bound left at None
    is not checked; a malformed one is a :class:`~micronet.errors.UsageError`.

    >>> micronet.assert_budget(micronet.audit(model), score=0.05, params="1M")  # doctest: +SKIP
    """
    violations = check_budget(result, score=score, params=params, storage=storage, ops=ops, macs=macs,
                              accuracy=accuracy)
    if violations:
        raise BudgetExceeded(violations)
    return result
