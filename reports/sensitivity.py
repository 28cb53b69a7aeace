"""The pipeline page's "Per-layer sensitivity" section, and its terminal
table, from a ``sensitivity`` step's notes (see :mod:`micronet.plugins.sensitivity`).

The notes hold ``baseline`` ``{top1, loss}``, ``table`` (one row per (layer,
setting): ``{layer, kind, level, top1, loss, drop, loss_increase}``, drops in
percentage points of top-1), ``ranking`` (most sensitive first) and the
evaluation counts. The section shows the baseline, one small SVG per layer in
ranking order (x: weight bits from high to low, activation bits from high to
low, sparsity from low to high, channels from low to high, then any other
kind; y: the top-1 drop in points, 0 at the top, one scale for every layer so
they can be compared) and a compact table of the same drops. A kind this
module does not know is drawn in grey and labelled ``"<kind> <level>"``; a
row without a numeric drop is left out. Layer names come from the model and
are escaped everywhere (``printable`` in the terminal).
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

from micronet.text import printable

from .svg import OPS_COLOUR, STORAGE_COLOUR, clip, esc, svg_open

__all__ = ["sensitivity_section", "sensitivity_text", "settings", "setting_label", "sensitivity_rows"]

Setting = tuple[str, Any]

#: Known kinds of setting, in chart order: (kind, legend label, colour, levels ascending?).
#: Weight bits share the ops blue, sparsity the storage amber.
KINDS = (("bits", "weight bits", OPS_COLOUR, False), ("act_bits", "activation bits", "#8e5bd0", False),
         ("sparsity", "sparsity", STORAGE_COLOUR, True), ("channels", "channels", "#2f9e6e", True))
KIND_COLOUR = {kind: colour for kind, _, colour, _ in KINDS}
OTHER_COLOUR = "#7b8494"

# chart geometry, in viewBox units
_WIDTH, _LEFT, _RIGHT, _TOP, _PLOT_H, _BOTTOM = 240.0, 34.0, 8.0, 10.0, 78.0, 30.0


def _float(value: Any) -> float | None:
    """``value`` as a finite float, or None (text, None, NaN, booleans)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def setting_label(kind: str, level: Any) -> str:
    """``("bits", 4)`` -> ``'4b'``; ``("act_bits", 8)`` -> ``'a8'``;
    ``("sparsity", 0.75)`` -> ``'75%'``; ``("channels", 0.25)`` -> ``'ch 25%'``;
    any other kind (or a level that is not a number) -> ``'<kind> <level>'``."""
    number = _float(level)
    if number is not None and kind == "bits":
        return f"{number:g}b"
    if number is not None and kind == "act_bits":
        return f"a{number:g}"
    if number is not None and kind == "sparsity":
        return f"{100 * number:.4g}%"
    if number is not None and kind == "channels":
        return f"ch {100 * number:.4g}%"
    return f"{kind} {level}"


def sensitivity_rows(rows: Any) -> list[Mapping[str, Any]]:
    """The rows of a ``table`` note that can be shown: mappings with a layer,
    a kind, a level and a numeric drop (others are left out, not fatal)."""
    if not isinstance(rows, (list, tuple)):
        return []
    return [row for row in rows if isinstance(row, Mapping) and all(k in row for k in ("layer", "kind", "level"))
            and _float(row.get("drop")) is not None
            and (row["kind"] not in KIND_COLOUR or _float(row["level"]) is not None)]


def settings(rows: Iterable[Mapping[str, Any]]) -> list[Setting]:
    """The settings measured, in chart order: weight bits from high to low,
    activation bits from high to low, sparsity from low to high, channels from
    low to high, then any other kind as first seen."""
    seen = list(dict.fromkeys((str(row["kind"]), row["level"]) for row in rows))
    order: list[Setting] = []
    for kind, _, _, ascending in KINDS:
        found = [s for s in seen if s[0] == kind]
        order += sorted(found, key=lambda s: float(s[1]) if ascending else -float(s[1]))
    return order + [s for s in seen if s[0] not in KIND_COLOUR]


def _by_layer(rows: Sequence[Mapping[str, Any]], ranking: Sequence[str]) -> dict[str, dict[Setting, Mapping]]:
    """Rows keyed by layer (in ranking order, layers missing from it after) and setting."""
    layers: dict[str, dict[Setting, Mapping]] = {name: {} for name in ranking}
    for row in rows:
        layers.setdefault(str(row["layer"]), {})[(str(row["kind"]), row["level"])] = row
    return {name: found for name, found in layers.items() if found}


def _number(value: Any, fmt: str) -> str:
    number = _float(value)
    return "–" if number is None else format(number, fmt)


def _worst(found: Mapping[Setting, Mapping]) -> float:
    return max(float(row["drop"]) for row in found.values())


def _ranked(notes: Mapping[str, Any]) -> tuple[list[Setting], dict[str, dict[Setting, Mapping]]]:
    """The settings in chart order and the rows by layer: in the notes'
    ``ranking`` (most sensitive first), layers it does not name after, by
    their worst drop."""
    rows = sensitivity_rows(notes.get("table"))
    ranking = notes.get("ranking")
    names = [str(name) for name in ranking] if isinstance(ranking, (list, tuple)) else []
    layers = _by_layer(rows, names)
    ranked = [name for name in names if name in layers]
    rest = sorted((name for name in layers if name not in ranked), key=lambda name: -_worst(layers[name]))
    return settings(rows), {name: layers[name] for name in ranked + rest}


# ------------------------------------------------------------------ one chart


class _Scale:
    """x positions of the settings (a gap between kinds) and y of a drop
    (``low`` at the top: 0, or the largest improvement)."""

    def __init__(self, order: Sequence[Setting], low: float, high: float):
        kinds = list(dict.fromkeys(kind for kind, _ in order))
        slots, self.x = 0, {}
        for kind in kinds:
            slots += 1 if self.x else 0  # an empty slot between two kinds
            for setting in (s for s in order if s[0] == kind):
                self.x[setting], slots = slots, slots + 1
        step = (_WIDTH - _LEFT - _RIGHT) / max(slots, 1)
        self.x = {s: _LEFT + (k + 0.5) * step for s, k in self.x.items()}
        self.low, self.high = low, high

    def y(self, drop: float) -> float:
        return _TOP + _PLOT_H * (drop - self.low) / (self.high - self.low)


def _axes(scale: _Scale) -> list[str]:
    zero, bottom = scale.y(0.0), _TOP + _PLOT_H
    out = [f'<line class="grid" x1="{_LEFT}" x2="{_WIDTH - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
           for y in sorted({zero, bottom})]
    out.append(f'<text class="axis" x="{_LEFT - 4}" y="{zero + 3:.1f}" text-anchor="end">0</text>')
    out.append(f'<text class="axis" x="{_LEFT - 4}" y="{bottom + 3:.1f}" text-anchor="end">'
               f'{scale.high:.3g}</text>')
    for (kind, level), x in scale.x.items():
        out.append(f'<text class="axis" x="{x:.1f}" y="{bottom + 13:.1f}" text-anchor="middle">'
                   f'{esc(setting_label(kind, level))}</text>')
    out.append(f'<text class="axis" x="{_LEFT}" y="{bottom + 26:.1f}">top-1 drop, points (down is worse)</text>')
    return out


def _point(layer: str, row: Mapping[str, Any], x: float, y: float, colour: str) -> str:
    kind, level, drop = row["kind"], row["level"], float(row["drop"])
    tip = (f"{layer} · {setting_label(kind, level)}: top-1 drop {drop:.2f} points "
           f"(top-1 {_number(row.get('top1'), '.2f')}%, loss +{_number(row.get('loss_increase'), '.4f')})")
    return (f'<circle class="pt" cx="{x:.1f}" cy="{y:.1f}" r="3.2" fill="{colour}" data-kind="{esc(kind)}" '
            f'data-level="{esc(level)}" data-drop="{esc(repr(drop))}"><title>{esc(tip)}</title></circle>')


def _chart(layer: str, found: Mapping[Setting, Mapping], scale: _Scale) -> str:
    out = [svg_open(_WIDTH, _TOP + _PLOT_H + _BOTTOM, "chart sens", f"top-1 drop of {layer} per setting")]
    out += _axes(scale)
    for kind in dict.fromkeys(kind for kind, _ in scale.x):
        colour = KIND_COLOUR.get(kind, OTHER_COLOUR)
        points = [(scale.x[s], scale.y(float(found[s]["drop"])), found[s]) for s in scale.x
                  if s[0] == kind and s in found]
        if not points:  # a kind only other layers were measured at
            continue
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y, _ in points)
        out.append(f'<polyline class="sens-line" points="{path}" stroke="{colour}"/>')
        out += [_point(layer, row, x, y, colour) for x, y, row in points]
    out.append("</svg>")
    return "".join(out)


def _figure(layer: str, found: Mapping[Setting, Mapping], scale: _Scale) -> str:
    worst = _worst(found)
    return (f'<figure class="sens-chart" data-layer="{esc(layer)}"><figcaption title="{esc(layer)}">'
            f'<span class="mono">{esc(clip(layer, 34))}</span> <span class="muted">worst {worst:.2f}</span>'
            f'</figcaption>{_chart(layer, found, scale)}</figure>')


# ------------------------------------------------------------------ table and section


def _table(layers: Mapping[str, Mapping[Setting, Mapping]], order: Sequence[Setting]) -> str:
    heads = "".join(f'<th class="num">{esc(setting_label(*s))}</th>' for s in order)
    body = []
    for layer, found in layers.items():
        worst = _worst(found)
        cells = "".join(f'<td class="num">{_number(found[s]["drop"], ".2f") if s in found else "–"}</td>'
                        for s in order)
        body.append(f'<tr><td class="name">{esc(layer)}</td><td class="num worst">{worst:.2f}</td>{cells}</tr>')
    return (f'<div class="delta-wrap"><table class="sens-table"><thead><tr><th>layer</th>'
            f'<th class="num" aria-sort="descending">worst drop</th>{heads}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def _baseline(notes: Mapping[str, Any]) -> str:
    base = notes.get("baseline") or {}
    facts = [f'baseline top-1 <b>{_number(base.get("top1"), ".2f")}%</b>',
             f'loss <b>{_number(base.get("loss"), ".4f")}</b> nats per example']
    if notes.get("examples") is not None:
        facts.append(f'on {esc(notes["examples"])} calibration examples')
    if notes.get("evaluations") is not None:
        facts.append(f'{esc(notes["evaluations"])} evaluations'
                     f' ({_number(notes.get("evaluations_per_second"), ".3g")} per second)')
    return f'<p class="sens-baseline">{" · ".join(facts)}</p>'


def sensitivity_section(notes: Mapping[str, Any] | None) -> str:
    """The "Per-layer sensitivity" block of a step's card, or ``""`` when
    ``notes`` hold no sensitivity ``table``."""
    order, layers = _ranked(notes or {})
    if not layers:
        return ""
    drops = [float(row["drop"]) for found in layers.values() for row in found.values()]
    scale = _Scale(order, min(0.0, min(drops)), max(1.0, max(drops)))
    kinds = dict.fromkeys(kind for kind, _ in order)
    labels = {kind: label for kind, label, _, _ in KINDS}
    legend = "".join(f'<i class="sw" style="background:{KIND_COLOUR.get(k, OTHER_COLOUR)}"></i>'
                     f'{esc(labels.get(k, k))} ' for k in kinds)
    charts = "".join(_figure(layer, found, scale) for layer, found in layers.items())
    return (f'<div class="sensitivity"><h3>Per-layer sensitivity <span class="muted">{len(layers)} '
            f'layer{"s" * (len(layers) != 1)}, most sensitive first</span></h3>{_baseline(notes)}'
            f'<p class="hint">Each layer alone at each setting, on the calibration split: {legend}· '
            f'the same scale for every layer; hover a point for its figures.</p>'
            f'<div class="sens-grid">{charts}</div>{_table(layers, order)}</div>')


# ------------------------------------------------------------------ terminal


def _cells(line: Sequence[str], widths: Sequence[int]) -> str:
    return "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths)))


def sensitivity_text(notes: Mapping[str, Any] | None, *, limit: int = 10, where: str = "history.json",
                     max_name: int = 32) -> list[str]:
    """The terminal table of a sensitivity step: one line per layer, most
    sensitive first (at most ``limit``), its worst drop then one column per
    setting, drops in top-1 points; a last ``...`` line says how many layers
    more are in ``where``. ``[]`` when ``notes`` hold no table. Every line is
    :func:`~micronet.text.printable`."""
    order, layers = _ranked(notes or {})
    if not layers:
        return []
    head = ["layer", "worst"] + [printable(setting_label(*s)) for s in order]
    lines = [head]
    for name, found in list(layers.items())[:limit]:
        shown = printable(name)
        shown = shown if len(shown) <= max_name else "…" + shown[-max_name + 1:]
        lines.append([shown, f"{_worst(found):.2f}"]
                     + [f"{float(found[s]['drop']):.2f}" if s in found else "–" for s in order])
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    base = (notes or {}).get("baseline") or {}
    top1 = _float(base.get("top1")) if isinstance(base, Mapping) else None
    examples = _float((notes or {}).get("examples"))
    against = (f" (baseline {top1:.2f}%" + (f" on {examples:g} calibration examples)" if examples else ")")
               if top1 is not None else "")
    out = [f"top-1 drop in points, each layer alone, most sensitive first{against}"]
    out += ["  " + _cells(line, widths) for line in lines]
    if len(layers) > limit:
        more = len(layers) - limit
        out.append(f"  ... {more} more layer{'s' * (more != 1)} in {where}")
    return [printable(line) for line in out]
