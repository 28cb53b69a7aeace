"""The pipeline page's "Per-layer sensitivity" section, from a ``sensitivity``
step's notes (see :mod:`micronet.plugins.sensitivity`).

The notes hold ``baseline`` ``{top1, loss}``, ``table`` (one row per (layer,
setting): ``{layer, kind, level, top1, loss, drop, loss_increase}``, drops in
percentage points of top-1), ``ranking`` (most sensitive first) and the
evaluation counts. The section shows the baseline, one small SVG per layer in
ranking order (x: bits from high to low, then sparsity from low to high; y:
the top-1 drop in points, 0 at the top, one scale for every layer so they can
be compared) and a compact table of the same drops. Layer names come from the
model and are escaped everywhere.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

from .svg import OPS_COLOUR, STORAGE_COLOUR, clip, esc, svg_open

__all__ = ["sensitivity_section", "settings", "setting_label"]

Setting = tuple[str, float]

#: Line colour of each kind of setting (bits share the ops blue, sparsity the storage amber).
KIND_COLOUR = {"bits": OPS_COLOUR, "sparsity": STORAGE_COLOUR}

# chart geometry, in viewBox units
_WIDTH, _LEFT, _RIGHT, _TOP, _PLOT_H, _BOTTOM = 240.0, 34.0, 8.0, 10.0, 78.0, 30.0


def setting_label(kind: str, level: float) -> str:
    """``("bits", 4)`` -> ``'4b'``; ``("sparsity", 0.75)`` -> ``'75%'``."""
    if kind == "bits":
        return f"{float(level):g}b"
    if kind == "sparsity":
        return f"{100 * float(level):.4g}%"
    return f"{kind} {level}"


def settings(rows: Iterable[Mapping[str, Any]]) -> list[Setting]:
    """The settings measured, in chart order: bits from high to low, then
    sparsity from low to high, then any other kind as first seen."""
    seen = list(dict.fromkeys((row["kind"], row["level"]) for row in rows))
    bits = sorted((s for s in seen if s[0] == "bits"), key=lambda s: -s[1])
    sparse = sorted((s for s in seen if s[0] == "sparsity"), key=lambda s: s[1])
    return bits + sparse + [s for s in seen if s[0] not in KIND_COLOUR]


def _by_layer(rows: Sequence[Mapping[str, Any]], ranking: Sequence[str]) -> dict[str, dict[Setting, Mapping]]:
    """Rows keyed by layer (in ranking order, layers missing from it after) and setting."""
    layers: dict[str, dict[Setting, Mapping]] = {name: {} for name in ranking}
    for row in rows:
        layers.setdefault(row["layer"], {})[(row["kind"], row["level"])] = row
    return {name: found for name, found in layers.items() if found}


def _number(value: Any, fmt: str) -> str:
    return format(value, fmt) if isinstance(value, (int, float)) else "–"


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
        colour = KIND_COLOUR.get(kind, "#7b8494")
        points = [(scale.x[s], scale.y(float(found[s]["drop"])), found[s]) for s in scale.x
                  if s[0] == kind and s in found]
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y, _ in points)
        out.append(f'<polyline class="sens-line" points="{path}" stroke="{colour}"/>')
        out += [_point(layer, row, x, y, colour) for x, y, row in points]
    out.append("</svg>")
    return "".join(out)


def _figure(layer: str, found: Mapping[Setting, Mapping], scale: _Scale) -> str:
    worst = max(float(row["drop"]) for row in found.values())
    return (f'<figure class="sens-chart" data-layer="{esc(layer)}"><figcaption title="{esc(layer)}">'
            f'<span class="mono">{esc(clip(layer, 34))}</span> <span class="muted">worst {worst:.2f}</span>'
            f'</figcaption>{_chart(layer, found, scale)}</figure>')


# ------------------------------------------------------------------ table and section


def _table(layers: Mapping[str, Mapping[Setting, Mapping]], order: Sequence[Setting]) -> str:
    heads = "".join(f'<th class="num">{esc(setting_label(*s))}</th>' for s in order)
    body = []
    for layer, found in layers.items():
        worst = max(float(row["drop"]) for row in found.values())
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
    rows = (notes or {}).get("table")
    if not isinstance(rows, list) or not rows:
        return ""
    order = settings(rows)
    layers = _by_layer(rows, [str(name) for name in notes.get("ranking") or ()])
    drops = [float(row["drop"]) for row in rows]
    scale = _Scale(order, min(0.0, min(drops)), max(1.0, max(drops)))
    legend = "".join(f'<i class="sw" style="background:{KIND_COLOUR[k]}"></i>{k} '
                     for k in KIND_COLOUR if any(s[0] == k for s in order))
    charts = "".join(_figure(layer, found, scale) for layer, found in layers.items())
    return (f'<div class="sensitivity"><h3>Per-layer sensitivity <span class="muted">{len(layers)} '
            f'layer{"s" * (len(layers) != 1)}, most sensitive first</span></h3>{_baseline(notes)}'
            f'<p class="hint">Each layer alone at each setting, on the calibration split: {legend}· '
            f'the same scale for every layer; hover a point for its figures.</p>'
            f'<div class="sens-grid">{charts}</div>{_table(layers, order)}</div>')
