"""The diff page (``micronet diff --html``): two audits side by side in the
report's style, one self-contained file (the report's stylesheet inlined,
nothing fetched), every name from a model escaped."""
from __future__ import annotations

import os
from typing import Any, Mapping

from micronet.fileio import atomic_write_text

from .format import si
from .page import document
from .svg import esc

__all__ = ["render_diff_html", "write_diff_html"]

_TOTALS = (("params", "params", "elements"), ("storage", "storage", "32-bit eq."),
           ("ops", "MicroNet ops", "32-bit eq."), ("macs", "MACs", "mult-adds"))
_COLUMNS = (("params", "params", "elements"), ("storage", "storage", "32-bit eq."),
            ("ops", "ops", "MicroNet ops"), ("macs", "MACs", "mult-adds"), ("weight_bits", "weight", "bits"),
            ("weight_sparsity", "sparsity", "fraction"))


def _change(before: float, after: float, fmt=si) -> str:
    cls = "same" if before == after else "up" if after > before else "down"
    return f'<td class="num {cls}" title="{before:,} → {after:,}">{fmt(before)}&nbsp;→&nbsp;<b>{fmt(after)}</b></td>'


def _side(label: str, side: Mapping[str, Any]) -> str:
    score = side["score"]
    return (f'<div><div class="eyebrow">{esc(label)} · {esc(side["rulebook"])} · {esc(side["track"])}</div>'
            f'<h1 class="model">{esc(side["model"])}</h1>'
            f'<div class="score"><span class="big">{score["total"]:.5g}</span>'
            f'<span class="lower">storage {score["storage_term"]:.4g} + ops {score["ops_term"]:.4g}</span></div>'
            "</div>")


def _summary(diff) -> str:
    fraction = diff.score_delta_fraction
    pill = "bad" if diff.score_delta > 0 else "good"
    change = f"{diff.score_delta:+.5g}" + (f" ({100 * fraction:+.2f}%)" if fraction is not None else "")
    rows = "".join(f"<tr><td>{label} <span class=\"muted\">{unit}</span></td>"
                   f"{_change(diff.before['totals'][key], diff.after['totals'][key])}</tr>"
                   for key, label, unit in _TOTALS)
    text = " · ".join(f"{label} {si(diff.before['totals'][key])} → {si(diff.after['totals'][key])}"
                      for key, label, _ in _TOTALS)
    notes = "".join(f'<li class="warn">{esc(n)}</li>' for n in diff.notes)
    return (f'<section class="card hero" id="summary"><div class="hero-grid" style="grid-template-columns:1fr 1fr">'
            f'{_side("before", diff.before)}'
            f'{_side("after", diff.after)}</div>'
            f'<p>score <span class="pill {pill}">{esc(change)}</span> <span class="muted">{esc(text)}</span></p>'
            f'<table class="deltas"><thead><tr><th>total</th><th>before → after</th></tr></thead>'
            f"<tbody>{rows}</tbody></table>"
            + (f'<ul class="notes">{notes}</ul>' if notes else "") + "</section>")


def _value(side: Mapping[str, Any], key: str):
    return side.get(key) if side else None


def _cell(change, key: str) -> str:
    a, b = _value(change.before, key), _value(change.after, key)
    fmt = (lambda v: f"{100 * v:.1f}%") if key == "weight_sparsity" else si
    if a is None or b is None:
        shown = b if a is None else a
        return f'<td class="num">{"–" if shown is None else esc(fmt(shown))}</td>'
    return _change(a, b, fmt)


def _layers(diff) -> str:
    if not diff.changes:
        return '<section class="card" id="layers"><h2>Layers</h2><p class="empty">no layer changed</p></section>'
    head = "".join(f'<th>{label}<span class="unit">{unit}</span></th>' for _, label, unit in _COLUMNS)
    rows = []
    for c in diff.changes:
        what = {"added": '<span class="badge free">added</span>', "removed": '<span class="badge uncounted">removed</span>',
                "changed": "changed", "renamed": f"renamed from <code>{esc(c.before_name)}</code>"}[c.kind]
        cells = "".join(_cell(c, key) for key, _, _ in _COLUMNS)
        rows.append(f'<tr><td class="name">{esc(c.name)}</td><td>{what} <span class="muted">{esc(c.op)}</span></td>'
                    f'<td class="num">{c.score_effect:+.4g}</td>{cells}</tr>')
    return (f'<section class="card" id="layers"><h2>Layers that changed</h2>'
            f'<p class="hint">{len(diff.changes)} layer(s), by their effect on the score (their part of the '
            "score after minus before). Layers are matched by module path; a vanished layer and a new one "
            "with the same op, shapes and parameter count are shown as renamed.</p>"
            f'<table class="deltas"><thead><tr><th>layer</th><th>change</th>'
            f'<th>score effect<span class="unit">score units</span></th>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></section>')


def render_diff_html(diff) -> str:
    """A self-contained page of an :class:`~micronet.diff.AuditDiff`."""
    title = f"{diff.before['model']} → {diff.after['model']}: MicroNet diff"
    return document(title, "diff", _summary(diff) + _layers(diff), [("summary", "Summary"), ("layers", "Layers")])


def write_diff_html(diff, path: str | os.PathLike) -> str | os.PathLike:
    """Write the diff page atomically; returns the path."""
    return atomic_write_text(path, render_diff_html(diff))
