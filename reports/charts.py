"""SVG charts of an audit: costs per layer, the layers that dominate the
score, the what-if grid as a heat map, and the score across pipeline steps.

Every chart is a plain SVG string (no script needed to draw it); marks carry
``data-i`` (their row's index) so the page can jump to the layer in the table,
and ``<title>`` tooltips with the exact figures.
"""
from __future__ import annotations

import itertools
import math
from typing import Any, Mapping, Sequence

from .format import percent, si
from .svg import OPS_COLOUR, STORAGE_COLOUR, band_depth, clip, esc, group_key, number, runs, stored, svg_open

__all__ = ["layer_chart", "top_layers_chart", "aggregate", "module_key", "heatmap", "steps_chart",
           "score_accuracy_chart", "module_summary", "ordinal"]


def _rect(x: float, y: float, width: float, height: float, fill: str = "") -> str:
    colour = f' fill="{fill}"' if fill else ""
    return f'<rect x="{x:.2f}" y="{y:.2f}" width="{width:.2f}" height="{height:.2f}"{colour}/>'


def _hline(x1: float, x2: float, y: float) -> str:
    return f'<line class="grid" x1="{x1:.1f}" x2="{x2:.1f}" y1="{y:.1f}" y2="{y:.1f}"/>'


def ordinal(n: int) -> str:
    """``1`` -> ``'1st'``, ``12`` -> ``'12th'``."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def layer_chart(rows: Sequence[Mapping[str, Any]], table_id: str = "t") -> str:
    """MicroNet ops (up, blue) and storage (down, amber) of every non-free
    layer in network order, over bands naming the modules they belong to."""
    items = [(i, r) for i, r in enumerate(rows) if r["status"] != "free" or stored(r)]
    if not items:
        return '<p class="empty">No counted layers.</p>'
    width, left, right, top = 1160.0, 112.0, 12.0, 22.0
    ops_h, gap, storage_h = 150.0, 22.0, 100.0
    height = top + ops_h + gap + storage_h + 8
    plot = width - left - right
    step = plot / len(items)
    axis = top + ops_h + gap / 2
    max_ops = max(r["ops"] for _, r in items) or 1.0
    max_storage = max(r["storage"] for _, r in items) or 1.0
    out = [svg_open(width, height, "chart layers", "MicroNet ops and storage per layer in network order")]
    out += _bands([r["name"] for _, r in items], left, step, top - 16, height - top + 8)
    for frac in (0.5, 1.0):
        out.append(_hline(left, width - right, axis - gap / 2 - ops_h * frac))
        out.append(_hline(left, width - right, axis + gap / 2 + storage_h * frac))
    for y in (axis - gap / 2, axis + gap / 2):
        out.append(f'<line class="zero" x1="{left}" x2="{width - right:.1f}" y1="{y:.1f}" y2="{y:.1f}"/>')
    out.append(f'<text class="axis" x="{left - 6}" y="{top + 4:.1f}" text-anchor="end">{si(max_ops)} ops</text>')
    out.append(f'<text class="axis" x="{left - 6}" y="{axis - gap / 2 + 3:.1f}" text-anchor="end">0</text>')
    out.append(f'<text class="axis" x="{left - 6}" y="{axis + gap / 2 + 8:.1f}" text-anchor="end">0</text>')
    out.append(f'<text class="axis" x="{left - 6}" y="{height - 8:.1f}" text-anchor="end">'
               f'{si(max_storage)} storage</text>')

    bar = max(step * 0.82, 0.6)
    for k, (i, row) in enumerate(items):
        x = left + k * step
        ops = ops_h * row["ops"] / max_ops
        storage = storage_h * row["storage"] / max_storage
        if ops < 0.05 and storage < 0.05:
            continue
        tip = (f"{row['name']}  [{row['op']}]\nMicroNet ops {number(row['ops'])}\n"
               f"storage {number(row['storage'])} 32-bit eq.\nshare of the score {percent(row['share'])}")
        out.append(f'<g class="mark" data-i="{i}" data-table="{table_id}"><title>{esc(tip)}</title>'
                   f'<rect class="hit" x="{x:.2f}" y="{top:.1f}" width="{step:.2f}" height="{height - top:.1f}"/>')
        if ops >= 0.05:
            out.append(_rect(x, axis - gap / 2 - ops, bar, ops, OPS_COLOUR))
        if storage >= 0.05:
            out.append(_rect(x, axis + gap / 2, bar, storage, STORAGE_COLOUR))
        out.append('</g>')
    out.append("</svg>")
    return "".join(out)


def _bands(names: Sequence[str], left: float, step: float, y: float, height: float) -> list[str]:
    depth = band_depth(names)
    if depth is None:
        return []
    out = ['<g class="bands">']
    for n, (key, start, stop) in enumerate(runs(group_key(name, depth) for name in names)):
        x, w = left + start * step, (stop - start) * step
        shade = "band odd" if n % 2 else "band"
        out.append(f'<rect class="{shade}" x="{x:.2f}" y="{y:.1f}" width="{w:.2f}" height="{height:.1f}">'
                   f'<title>{esc(key)}</title></rect>')
        label = key.rsplit(".", 1)[-1] if "." in key else key
        if w >= 7 * len(label) + 6:
            out.append(f'<text class="band-label" x="{x + 3:.1f}" y="{y + 11:.1f}">{esc(label)}</text>')
    out.append("</g>")
    return out


def top_layers_chart(rows: Sequence[Mapping[str, Any]], score, count: int = 15, table_id: str = "t",
                     label: str = "the layers with the largest share of the score") -> str:
    """The ``count`` rows with the largest share of the score, each bar split
    into its storage part (amber) and its ops part (blue). Rows are layers
    (with ``data-i`` pointing at the table) or aggregates (``index`` None)."""
    ranked = sorted((r for r in rows if r["share"] > 0), key=lambda r: -r["share"])[:count]
    if not ranked:
        return '<p class="empty">Nothing costs anything.</p>'
    index = {id(r): r.get("index", i) for i, r in enumerate(rows)}
    width, label_w, line = 470.0, 190.0, 22.0
    height = line * len(ranked) + 8
    plot = width - label_w - 50
    biggest = ranked[0]["share"] or 1.0
    out = [svg_open(width, height, "chart top", label),
           f'<line class="zero" x1="{label_w}" x2="{label_w}" y1="2" y2="{height - 2:.1f}"/>']
    for k, row in enumerate(ranked):
        y = 4 + k * line
        storage, ops = score.parts(row["storage"], row["ops"])
        ws, wo = plot * storage / biggest, plot * ops / biggest
        what = f"  [{row['op']}]" if row.get("op") else ""
        tip = (f"{row['name']}{what}\nshare of the score {percent(row['share'], 2)}: "
               f"storage {percent(storage, 2)} + ops {percent(ops, 2)}")
        target = index[id(row)]
        attrs = f' data-i="{target}" data-table="{table_id}"' if target is not None else ""
        out.append(f'<g class="mark"{attrs}><title>{esc(tip)}</title>'
                   f'<rect class="hit" x="0" y="{y:.1f}" width="{width}" height="{line:.1f}"/>'
                   f'<text class="label" x="{label_w - 8}" y="{y + 15:.1f}" text-anchor="end">'
                   f'{esc(clip(row["name"], 22))}</text>'
                   f'{_rect(label_w, y + 4, ws, line - 8, STORAGE_COLOUR)}'
                   f'{_rect(label_w + ws, y + 4, wo, line - 8, OPS_COLOUR)}'
                   f'<text class="value" x="{label_w + ws + wo + 6:.1f}" y="{y + 15:.1f}">'
                   f'{percent(row["share"])}</text></g>')
    out.append("</svg>")
    return "".join(out)


def aggregate(rows: Sequence[Mapping[str, Any]], key) -> list[dict[str, Any]]:
    """Rows summed by ``key(row)`` (storage, ops, share), first-seen order;
    the result's ``index`` is None (no single table row to jump to)."""
    groups: dict[str, dict[str, Any]] = {}
    for row in rows:
        name = key(row)
        item = groups.setdefault(name, {"name": name, "op": "", "storage": 0.0, "ops": 0.0, "share": 0.0,
                                        "index": None})
        for cost in ("storage", "ops", "share"):
            item[cost] += row[cost]
    return list(groups.values())


def module_key(rows: Sequence[Mapping[str, Any]]):
    """A function naming each row's module at the depth the per-layer chart's
    bands use (or its top-level module)."""
    depth = band_depth([r["name"] for r in rows if r["status"] != "free"]) or 1
    return lambda row: group_key(row["name"], depth)


def module_summary(rows: Sequence[Mapping[str, Any]], dominant: float = 0.9) -> list[dict[str, Any]]:
    """Rows summed by module (:func:`aggregate`) at the bands' depth; a module
    holding more than ``dominant`` of the score is replaced by its submodules
    (again while one of them dominates), so the chart says something about
    a model that is one big module (``features``, ``encoder``)."""
    key = module_key(rows)
    depth_of: dict[str, int] = {}
    names = lambda row: _deeper(row["name"], depth_of, key(row))  # noqa: E731 (no split yet: key(row))
    for _ in range(8):
        groups = aggregate(rows, names)
        top = max(groups, key=lambda g: g["share"], default=None)
        if top is None or top["share"] <= dominant:
            return groups
        inside = [r["name"] for r in rows if names(r) == top["name"]]
        depth = top["name"].count(".") + 2
        if not any(n.count(".") + 1 >= depth for n in inside):
            return groups
        depth_of[top["name"]] = depth
    return aggregate(rows, names)


def _deeper(name: str, depth_of: Mapping[str, int], base: str) -> str:
    """``name``'s group when some groups were split into submodules."""
    key = base
    while key in depth_of:
        finer = group_key(name, depth_of[key])
        if finer == key:
            break
        key = finer
    return key


def _heat(fraction: float) -> str:
    """Green (low, good) through yellow to red (high) for 0..1."""
    stops = ((0.0, (46, 158, 110)), (0.5, (247, 214, 102)), (1.0, (214, 84, 84)))
    for (f0, c0), (f1, c1) in zip(stops, stops[1:]):
        if fraction <= f1:
            t = 0.0 if f1 == f0 else (fraction - f0) / (f1 - f0)
            return "#%02x%02x%02x" % tuple(round(a + (b - a) * t) for a, b in zip(c0, c1))
    return "#%02x%02x%02x" % stops[-1][1]


def heatmap(grid, track=None) -> str:
    """The what-if grid: rows are the first axis' levels, columns the second's
    (one row for a single axis; one panel per level of any further axes).
    Colours follow the score on a log scale; each cell says where it would rank."""
    totals = [c.total for c in grid.cells]
    low, high = math.log(min(totals) or 1e-12), math.log(max(totals) or 1e-12)
    axes, levels = list(grid.axes), list(grid.levels)
    by_levels = {tuple(v for _, v in cell.levels): cell for cell in grid.cells}
    row_levels = levels[0]
    col_levels = levels[1] if len(axes) > 1 else (None,)
    best = min(totals)
    out = []
    for rest in itertools.product(*levels[2:]):
        cells = [by_levels[(a, *((b,) if b is not None else ()), *rest)] for a in row_levels for b in col_levels]
        caption = ", ".join(f"{axis} = {value:g}" for axis, value in zip(axes[2:], rest))
        out.append(_heat_panel(cells, axes[0], row_levels, axes[1] if len(axes) > 1 else None, col_levels,
                               (low, high, best), track, caption))
    return "".join(out)


def _heat_panel(cells, rows_axis, row_levels, cols_axis, col_levels, scale, track, caption) -> str:
    low, high, best = scale
    cw, ch, left, top = 96.0, 44.0, 86.0, 44.0
    width = left + cw * len(col_levels) + 8
    height = top + ch * len(row_levels) + 8
    out = [f'<figure class="heat">{f"<figcaption>{esc(caption)}</figcaption>" if caption else ""}',
           svg_open(width, height, "chart heatmap", f"what-if scores by {rows_axis}"
                    + (f" and {cols_axis}" if cols_axis else ""), fluid=False)]
    out.append(f'<text class="axis-title" x="{left - 8}" y="16" text-anchor="end">{esc(rows_axis)} ↓</text>')
    if cols_axis:
        out.append(f'<text class="axis-title" x="{left + 4}" y="16">{esc(cols_axis)} →</text>')
        for j, level in enumerate(col_levels):
            out.append(f'<text class="axis" x="{left + cw * (j + 0.5):.1f}" y="{top - 8}" '
                       f'text-anchor="middle">{level:g}</text>')
    for i, level in enumerate(row_levels):
        out.append(f'<text class="axis" x="{left - 8}" y="{top + ch * (i + 0.5) + 4:.1f}" '
                   f'text-anchor="end">{level:g}</text>')
    for k, cell in enumerate(cells):
        i, j = divmod(k, len(col_levels))
        x, y = left + cw * j, top + ch * i
        span = high - low
        fraction = (math.log(cell.total) - low) / span if span > 0 and cell.total > 0 else 0.0
        rank = track.rank(cell.total) if track is not None else None
        where = f"would rank {ordinal(rank)} of {len(track.published) + 1}" if rank else ""
        levels = ", ".join(f"{a}={v:g}" for a, v in cell.levels)
        tip = (f"{levels}\nscore {cell.total:.5g} = storage {cell.storage_term:.5g} + ops {cell.ops_term:.5g}"
               + (f"\n{where}" if where else "") + ("\nfreebie applied" if cell.freebie else ""))
        cls = "cell best" if cell.total == best else "cell"
        out.append(f'<g class="{cls}" data-total="{cell.total:.6g}"><title>{esc(tip)}</title>'
                   f'<rect x="{x + 1:.1f}" y="{y + 1:.1f}" width="{cw - 2:.1f}" height="{ch - 2:.1f}" rx="4" '
                   f'fill="{_heat(fraction)}"/>'
                   f'<text class="score" x="{x + cw / 2:.1f}" y="{y + (19 if rank else 26):.1f}" '
                   f'text-anchor="middle">{cell.total:.4g}</text>')
        if rank:
            out.append(f'<text class="rank" x="{x + cw / 2:.1f}" y="{y + 34:.1f}" text-anchor="middle">'
                       f'{ordinal(rank)} place</text>')
        out.append("</g>")
    out.append("</svg></figure>")
    return "".join(out)


def _nice(high: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten that is >= ``high`` (> 0)."""
    if high <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(high))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= high * (1 - 1e-9))


def steps_chart(points: Sequence[tuple[str, Any]], accuracy: Sequence[float | None] | None = None,
                quality_bar: float | None = None) -> str:
    """The score after each step as stacked bars (storage term amber, ops term
    blue, total on top); ``points`` are (label, Score or None when it failed).
    With ``accuracy`` (top-1 in percent per point, None where not measured) a
    green line on a right-hand 0-100% axis, and the track's bar dashed."""
    measured = accuracy is not None and any(a is not None for a in accuracy)
    right = 46.0 if measured else 10.0
    width, left, top, bottom = max(420.0, 130.0 * len(points) + 60 + right), 56.0, 24.0, 46.0
    plot_h = 160.0
    height = top + plot_h + bottom
    slot = (width - left - right) / max(len(points), 1)
    highest = _nice(max((s.total for _, s in points if s is not None), default=1.0) or 1.0)
    out = [svg_open(width, height, "chart steps", "the score across the steps"
                    + (" and top-1 accuracy" if measured else ""), fluid=False)]
    base = top + plot_h
    for frac in (0.0, 0.5, 1.0):
        y = top + plot_h * (1 - frac)
        line = f'<line class="zero" x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}"/>' if not frac \
            else _hline(left, width - right, y)
        out.append(line + f'<text class="axis" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">'
                   f'{highest * frac:.3g}</text>')
    out.append(f'<text class="axis-unit" x="{left - 6}" y="{top - 10:.1f}" text-anchor="end">score</text>')
    if measured:
        for frac in (0.0, 0.5, 1.0):
            y = top + plot_h * (1 - frac)
            out.append(f'<text class="axis" x="{width - right + 6:.1f}" y="{y + 4:.1f}">{100 * frac:.0f}%</text>')
        out.append(f'<text class="axis-unit" x="{width - right + 6:.1f}" y="{top - 10:.1f}">top-1</text>')
        if quality_bar is not None and 0 <= quality_bar <= 100:
            y = base - plot_h * quality_bar / 100
            out.append(f'<line class="bar-line" x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}">'
                       f'<title>the track\'s bar: {quality_bar:g}% top-1</title></line>'
                       f'<text class="bar-label" x="{width - right - 4:.1f}" y="{y - 4:.1f}" text-anchor="end">'
                       f'bar {quality_bar:g}%</text>')
    bar = min(slot * 0.56, 72)
    previous = None
    for k, (label, score) in enumerate(points):
        x = left + slot * k + (slot - bar) / 2
        out.append(f'<text class="axis step-label" x="{x + bar / 2:.1f}" y="{base + 18:.1f}" '
                   f'text-anchor="middle">{esc(clip(label, 18))}<title>{esc(label)}</title></text>')
        if score is None:
            out.append(f'<g class="failed"><title>{esc(label)}: failed, no score</title>'
                       f'{_rect(x, top + plot_h * 0.35, bar, plot_h * 0.65)}'
                       f'<text x="{x + bar / 2:.1f}" y="{base - 10:.1f}" text-anchor="middle">failed</text></g>')
            continue
        hs, ho = plot_h * score.storage_term / highest, plot_h * score.ops_term / highest
        tip = f"{label}\nscore {score.total:.5g} = storage {score.storage_term:.5g} + ops {score.ops_term:.5g}"
        out.append(f'<g class="step-bar"><title>{esc(tip)}</title>'
                   f'{_rect(x, base - hs, bar, hs, STORAGE_COLOUR)}{_rect(x, base - hs - ho, bar, ho, OPS_COLOUR)}'
                   f'<text class="value" x="{x + bar / 2:.1f}" y="{base - hs - ho - 6:.1f}" '
                   f'text-anchor="middle">{score.total:.4g}</text></g>')
        if previous is not None and previous.total:
            change = score.total / previous.total - 1
            out.append(f'<text class="delta {"down" if change < 0 else "up" if change > 0 else ""}" '
                       f'x="{x + bar / 2:.1f}" y="{base + 34:.1f}" text-anchor="middle">'
                       f'{change:+.1%}</text>')
        previous = score
    if measured:
        marks = [(left + slot * (k + 0.5), base - plot_h * a / 100, a) for k, a in enumerate(accuracy)
                 if a is not None and k < len(points)]
        path = " ".join(f"{'M' if n == 0 else 'L'}{x:.1f},{y:.1f}" for n, (x, y, _) in enumerate(marks))
        out.append(f'<g class="acc"><path class="acc-line" d="{path}"/>')
        out += [f'<circle class="acc-pt" cx="{x:.1f}" cy="{y:.1f}" r="3.5"><title>top-1 {a:.2f}%</title></circle>'
                for x, y, a in marks]
        out.append("</g>")
    out.append("</svg>")
    return "".join(out)


def score_accuracy_chart(points: Sequence[tuple[str, Any, float | None]], quality_bar: float | None = None,
                         meets=None) -> str:
    """Each step as a point: x its score (from 0), y its top-1 in percent;
    ``points`` are (label, Score or None, top-1 or None); those without both
    are left out. The track's bar is dashed; ``meets(top1)`` colours a point
    green (meets the bar) or red. Empty when fewer than one point has both."""
    shown = [(label, score.total, acc) for label, score, acc in points if score is not None and acc is not None]
    if not shown:
        return ""
    width, height, left, right, top, bottom = 420.0, 250.0, 48.0, 16.0, 20.0, 40.0
    plot_w, plot_h = width - left - right, height - top - bottom
    x_high = _nice(max(total for _, total, _ in shown))
    accs = [acc for *_, acc in shown] + ([quality_bar] if quality_bar is not None else [])
    y_low = 0.0 if min(accs) < 50 else 10 * math.floor(min(accs) / 10 - 0.5)
    y_low = max(0.0, min(y_low, 100.0 - 10))
    sx = lambda v: left + plot_w * v / x_high  # noqa: E731
    sy = lambda v: top + plot_h * (1 - (v - y_low) / (100 - y_low))  # noqa: E731
    out = [svg_open(width, height, "chart scatter", "score against top-1 accuracy, one point per step", fluid=False)]
    for frac in (0.0, 0.5, 1.0):
        x = left + plot_w * frac
        out.append(f'<line class="{"zero" if not frac else "grid"}" x1="{x:.1f}" x2="{x:.1f}" y1="{top}" '
                   f'y2="{top + plot_h}"/><text class="axis" x="{x:.1f}" y="{top + plot_h + 14:.1f}" '
                   f'text-anchor="middle">{x_high * frac:.3g}</text>')
        value = y_low + (100 - y_low) * frac
        y = sy(value)
        out.append(f'<line class="{"zero" if not frac else "grid"}" x1="{left}" x2="{width - right}" '
                   f'y1="{y:.1f}" y2="{y:.1f}"/><text class="axis" x="{left - 6}" y="{y + 4:.1f}" '
                   f'text-anchor="end">{value:.0f}%</text>')
    out.append(f'<text class="axis-unit" x="{left + plot_w / 2:.1f}" y="{height - 6:.1f}" text-anchor="middle">'
               f'score (lower is better) →</text>'
               f'<text class="axis-unit" x="{left - 6}" y="{top - 8:.1f}" text-anchor="end">top-1</text>')
    if quality_bar is not None and y_low <= quality_bar <= 100:
        y = sy(quality_bar)
        out.append(f'<line class="bar-line" x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}"/>'
                   f'<text class="bar-label" x="{width - right - 4:.1f}" y="{y - 4:.1f}" text-anchor="end">'
                   f'bar {quality_bar:g}%</text>')
    spots: dict[tuple[float, float], list[tuple[str, float, float]]] = {}
    for label, total, acc in shown:  # results at the same place share one point and one label
        spots.setdefault((round(sx(total), 1), round(sy(acc), 1)), []).append((label, total, acc))
    for (x, y), same in spots.items():
        label, total, acc = same[-1]
        verdict = "none" if meets is None else "good" if meets(acc) else "bad"
        names = ", ".join(lab.split(".", 1)[0] if lab[:1].isdigit() else lab for lab, _, _ in same)
        tips = "\n".join(f"{lab}: score {t:.5g}, top-1 {a:.2f}%" for lab, t, a in same)
        flip = x > left + plot_w * 0.7
        anchor = ' text-anchor="end"' if flip else ""
        out.append(f'<g class="pt-g"><title>{esc(tips)}</title>'
                   f'<circle class="pt {verdict}" cx="{x:.1f}" cy="{y:.1f}" r="5"/>'
                   f'<text class="pt-label" x="{x - 8 if flip else x + 8:.1f}" y="{y + 4:.1f}"'
                   f'{anchor}>{esc(clip(names, 16))}</text></g>')
    out.append("</svg>")
    return "".join(out)
