"""Diff two audits: totals and score before and after, and the layers that changed.

An audit is read from (:func:`load_audit`): a :class:`~micronet.audit.Result`,
its JSON document (``micronet audit --json``), a ``history.json`` entry of a
compression run, or a model spec audited on the spot.

Layers are matched by name (a module call's dotted module path, as in
``named_modules()``; ``path.node`` for functions and methods). A layer of
the first audit that has no namesake in the second and a new layer of the
second with the same op, the same input and output shapes and the same
number of parameters are taken as one layer *renamed* (paired in graph
order). The others are *removed* / *added*. Free nodes (views, reshapes,
``getitem``) are matched too but never listed as added or removed.

Each change carries its effect on the score: the layer's part of the score
after minus before (its share times the score total), in score units; the
list is sorted by the size of that effect.
"""
from __future__ import annotations

import json
import math
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from .errors import UsageError
from .text import printable

__all__ = ["AuditDiff", "LayerChange", "diff_audits", "load_audit", "parse_delta", "FIELDS"]

#: per-layer fields compared (units as in the audit JSON: elements, 32-bit
#: equivalents, MicroNet ops, MACs, bits, fraction of zero weights)
FIELDS = ("params", "nonzero_params", "storage", "ops", "macs", "weight_bits", "input_bits", "weight_sparsity")
TOTALS = ("params", "nonzero_params", "storage", "ops", "macs", "mults", "adds")


def _differ(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(a - b) > 1e-9 * max(1.0, abs(a), abs(b))
    return a != b


@dataclass(frozen=True)
class LayerChange:
    """One layer that differs. ``kind`` is ``added``, ``removed``,
    ``renamed`` or ``changed``; ``name`` its name in the second audit (the
    first's for a removed layer), ``before_name`` its name in the first
    (None for an added layer). ``before`` / ``after`` hold :data:`FIELDS`
    (empty on the side where it does not exist); ``changed`` names the
    fields that differ; ``score_effect`` is its part of the score after
    minus before (score units)."""

    kind: str
    name: str
    before_name: str | None
    op: str
    before: Mapping[str, Any]
    after: Mapping[str, Any]
    changed: tuple[str, ...]
    score_effect: float

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "before_name": self.before_name, "op": self.op,
                "score_effect": self.score_effect, "changed": list(self.changed),
                "before": dict(self.before), "after": dict(self.after),
                "delta": {k: self.after.get(k, 0) - self.before.get(k, 0) for k in FIELDS
                          if isinstance(self.after.get(k, 0), (int, float))
                          and isinstance(self.before.get(k, 0), (int, float))}}

    def describe(self) -> str:
        """What changed, in words (one line)."""
        from .reports.format import si

        parts = []
        for key in self.changed:
            a, b = self.before.get(key), self.after.get(key)
            if a is None or b is None:
                continue
            parts.append(f"{key} {si(a, 4)} -> {si(b, 4)}")
        head = {"added": "added", "removed": "removed", "changed": "changed",
                "renamed": f"renamed from {printable(self.before_name)}"}[self.kind]
        if self.kind == "added":
            parts = [f"{k} {si(self.after[k], 4)}" for k in ("params", "storage", "ops", "macs")]
        elif self.kind == "removed":
            parts = [f"{k} {si(self.before[k], 4)}" for k in ("params", "storage", "ops", "macs")]
        return f"{head} ({printable(self.op)})" + (": " + ", ".join(parts) if parts else "")


def _summary(document: Mapping[str, Any]) -> dict[str, Any]:
    return {"model": document.get("model"), "rulebook": document.get("rulebook"), "track": document.get("track"),
            "input_shape": document.get("input_shape"), "score": dict(document["score"]),
            "totals": {k: document.get("totals", {}).get(k, 0) for k in TOTALS}}


@dataclass(frozen=True)
class AuditDiff:
    """What changed from audit ``before`` to audit ``after``: their
    summaries (model, rulebook, track, score terms, totals), the changed
    layers sorted by the size of their effect on the score, and notes (a
    different rulebook or track: the scores are then not comparable)."""

    before: Mapping[str, Any]
    after: Mapping[str, Any]
    changes: tuple[LayerChange, ...]
    notes: tuple[str, ...] = field(default=())

    @property
    def score_delta(self) -> float:
        """Score after minus before (score units; positive = worse)."""
        return self.after["score"]["total"] - self.before["score"]["total"]

    @property
    def score_delta_fraction(self) -> float | None:
        """``score_delta`` as a fraction of the score before (None if that is 0)."""
        before = self.before["score"]["total"]
        return self.score_delta / before if before else None

    def exceeds(self, limit: tuple[float, bool]) -> bool:
        """Whether the score grew by more than ``limit`` (see :func:`parse_delta`)."""
        value, relative = limit
        if relative:
            fraction = self.score_delta_fraction
            return self.score_delta > 0 if fraction is None else fraction * 100 > value + 1e-12
        return self.score_delta > value + 1e-15

    def to_dict(self) -> dict[str, Any]:
        """The diff as a JSON-ready document (``micronet diff --json``)."""
        totals = {k: self.after["totals"][k] - self.before["totals"][k] for k in TOTALS}
        return {"before": dict(self.before), "after": dict(self.after),
                "delta": {"score": self.score_delta, "score_fraction": self.score_delta_fraction,
                          "totals": totals},
                "notes": list(self.notes), "changes": [c.to_dict() for c in self.changes]}

    def text(self, top: int | None = None) -> str:
        """Totals and score before and after, then the changed layers (the
        ``top`` with the largest effect, or all), one line each."""
        from .reports.format import si

        lines = []
        for label, side in (("before", self.before), ("after", self.after)):
            score = side["score"]
            lines.append(f"{label:<7}{printable(side['model'])}: score {score['total']:.6g} "
                         f"(storage {score['storage_term']:.6g} + ops {score['ops_term']:.6g}), "
                         + ", ".join(f"{k} {si(side['totals'][k], 4)}" for k in ("params", "storage", "ops", "macs")))
        fraction = self.score_delta_fraction
        lines.append(f"score {self.score_delta:+.6g}" + (f" ({100 * fraction:+.2f}%)" if fraction is not None else ""))
        lines.extend(f"note: {printable(note)}" for note in self.notes)
        shown = self.changes if top is None else self.changes[:top]
        lines.append(f"{len(self.changes)} layer(s) changed" + (", by effect on the score:" if self.changes else ""))
        for change in shown:
            lines.append(f"  {change.score_effect:+.4g}  {printable(change.name)}  {change.describe()}")
        if len(shown) < len(self.changes):
            lines.append(f"  ... {len(self.changes) - len(shown)} more")
        return "\n".join(lines)


def parse_delta(text: Any, what: str = "--fail-above-delta") -> tuple[float, bool]:
    """``(value, relative)`` from ``0.01`` (score units) or ``5%`` (percent
    of the score before)."""
    raw = str(text).strip()
    relative = raw.endswith("%")
    try:
        value = float(raw.removesuffix("%"))
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise UsageError(f"{what} expects a score difference such as 0.01 or a percentage such as 5%, "
                         f"got {printable(text)!r}")
    return value, relative


# ------------------------------------------------------------------ matching


def _unique(rows: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    out: dict[str, Mapping[str, Any]] = {}
    for row in rows:
        name, k = row["name"], 1
        while name in out:
            k += 1
            name = f"{row['name']}#{k}"
        out[name] = row
    return out


def _fields(row: Mapping[str, Any], total: float) -> dict[str, Any]:
    values = {k: row.get(k, 0) for k in FIELDS}
    values["score_part"] = (row.get("share") or 0) * total
    return values


def _signature(row: Mapping[str, Any]) -> tuple:
    shapes = tuple(tuple(tuple(s) for s in row.get(k, ())) for k in ("input_shapes", "output_shapes"))
    return row.get("op"), shapes, row.get("params", 0)


def diff_audits(before: Any, after: Any) -> AuditDiff:
    """The :class:`AuditDiff` from ``before`` to ``after`` (each a Result or
    an audit JSON document; see :func:`load_audit` for files and specs)."""
    a, b = _as_document(before), _as_document(after)
    total_a, total_b = a["score"]["total"], b["score"]["total"]
    rows_a, rows_b = _unique(a.get("layers", ())), _unique(b.get("layers", ()))
    changes = []
    for name in rows_a.keys() & rows_b.keys():
        change = _compare("changed", name, name, rows_a[name], rows_b[name], total_a, total_b)
        if change is not None:
            changes.append(change)
    # a vanished layer pairs with the first unpaired new one of its signature, both in graph order
    waiting: dict[tuple, deque[str]] = {}
    for new in (n for n in rows_b if n not in rows_a):
        waiting.setdefault(_signature(rows_b[new]), deque()).append(new)
    removed, renamed = [], set()
    for old in (n for n in rows_a if n not in rows_b):
        match = waiting.get(_signature(rows_a[old]))
        if match:
            new = match.popleft()
            renamed.add(new)
            changes.append(_compare("renamed", new, old, rows_a[old], rows_b[new], total_a, total_b))
        else:
            removed.append(old)
    added = [n for n in rows_b if n not in rows_a and n not in renamed]
    for name in removed:
        if rows_a[name].get("status") != "free":
            fields = _fields(rows_a[name], total_a)
            changes.append(LayerChange("removed", name, name, rows_a[name].get("op", ""), fields, {},
                                       FIELDS, -fields["score_part"]))
    for name in added:
        if rows_b[name].get("status") != "free":
            fields = _fields(rows_b[name], total_b)
            changes.append(LayerChange("added", name, None, rows_b[name].get("op", ""), {}, fields,
                                       FIELDS, fields["score_part"]))
    changes.sort(key=lambda c: (-abs(c.score_effect), c.name))
    return AuditDiff(_summary(a), _summary(b), tuple(changes), _notes(a, b))


def _compare(kind, name, before_name, row_a, row_b, total_a, total_b) -> LayerChange | None:
    fa, fb = _fields(row_a, total_a), _fields(row_b, total_b)
    changed = tuple(k for k in FIELDS if _differ(fa[k], fb[k]))
    if kind == "changed" and not changed:
        return None
    # the same storage and ops are the same part of the score (no rounding noise)
    effect = fb["score_part"] - fa["score_part"] if {"storage", "ops"} & set(changed) else 0.0
    return LayerChange(kind, name, before_name, row_b.get("op", ""), fa, fb, changed, effect)


def _notes(a: Mapping[str, Any], b: Mapping[str, Any]) -> tuple[str, ...]:
    notes = []
    for key in ("rulebook", "track"):
        if a.get(key) != b.get(key):
            notes.append(f"the audits use different {key}s ({a.get(key)} and {b.get(key)}): "
                         "their scores are not comparable")
    return tuple(notes)


# ------------------------------------------------------------------ reading audits


def _as_document(value: Any) -> Mapping[str, Any]:
    if isinstance(value, Mapping):
        if "score" not in value or "layers" not in value:
            raise UsageError("not an audit document (it has no 'score' and 'layers')",
                             hint="write one with micronet audit SPEC --json FILE")
        return value
    if hasattr(value, "to_dict"):
        from .reports.json_report import render_json

        return json.loads(render_json(value))
    raise UsageError(f"cannot diff a {type(value).__name__}: give audit results or their JSON documents")


def _history_entry(entries: list, selector: str, path: str) -> Mapping[str, Any]:
    """The entry ``selector`` names: an index (0 = the input, -1 = the
    last), ``input``, ``final`` (the last entry with a result) or a step's name."""
    scored = [i for i, e in enumerate(entries) if isinstance(e, Mapping) and "score" in e]
    names = [((e.get("step") or {}).get("name") if isinstance(e, Mapping) else None) for e in entries]
    if selector in ("", "final"):
        index = scored[-1] if scored else None
    elif selector == "input":
        index = 0
    elif selector.lstrip("-").isdigit():
        index = int(selector)
        if not -len(entries) <= index < len(entries):
            raise UsageError(f"{path} has entries 0 to {len(entries) - 1}, not #{selector}")
        index %= len(entries)
    else:
        found = [i for i, n in enumerate(names) if n == selector]
        if len(found) != 1:
            choices = ", ".join(f"#{i} {n}" for i, n in enumerate(names) if n) or "none"
            what = "several steps" if found else "no step"
            raise UsageError(f"{path} has {what} named {selector!r}; its steps: {choices}",
                             hint="name the entry by its index, e.g. history.json#2")
        index = found[0]
    if index is None or "score" not in entries[index]:
        raise UsageError(f"{path}#{selector} has no audit (the step failed)",
                         hint="pick an earlier entry, e.g. history.json#0 for the input")
    return entries[index]


def read_audit_file(text: str) -> Mapping[str, Any] | None:
    """The audit document at ``FILE.json`` or ``history.json#ENTRY``; None
    when ``text`` does not name a JSON file (it is then a model spec)."""
    path, _, selector = str(text).partition("#")
    if not path.endswith(".json"):
        return None
    if not Path(path).is_file():
        raise UsageError(f"no such audit file: {printable(path)}",
                         hint="write one with micronet audit SPEC --json FILE")
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot read {printable(path)} as JSON: {error}") from error
    if isinstance(document, list):
        return _history_entry(document, selector, path)
    if selector:
        raise UsageError(f"{printable(path)} is one audit, not a history: drop #{printable(selector)}")
    return _as_document(document)


def load_audit(source: Any, **audit_options: Any) -> Mapping[str, Any]:
    """The audit JSON document of ``source``: a Result, a document, a file
    (``FILE.json``; ``history.json#N``, ``#NAME`` for a step's name,
    ``#input``, ``#final``, or the bare ``history.json`` for its final
    entry), else a model spec audited with ``audit_options``
    (:func:`micronet.audit`'s keywords)."""
    if isinstance(source, (str, Path)):
        document = read_audit_file(str(source))
        if document is not None:
            return document
        from .audit import audit

        source = audit(str(source), **audit_options)
    return _as_document(source)
