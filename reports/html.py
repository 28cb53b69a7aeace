"""Self-contained HTML reports: an audit page and a pipeline page.

One file each, with the stylesheet, script and SVG charts inlined: nothing is
fetched when the page is viewed, so it can be mailed or archived. Every
string that comes from a model or a plugin is escaped.

* :func:`render_audit_html`: the score card, charts of the costs per layer and
  of the layers that dominate the score, the per-layer table (sortable,
  filterable, collapsible by module, exportable to CSV), the what-if grid as a
  heat map, the model's graph, and plugins' report sections.
* :func:`render_pipeline_html`: one section per compression step (options,
  plugin, score before and after, per-layer deltas), the score across the
  steps, and the final model's table.
"""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Sequence

from micronet.fileio import atomic_write_text

from .charts import (aggregate, heatmap, layer_chart, module_summary, ordinal, score_accuracy_chart, steps_chart,
                     top_layers_chart)
from .format import UNITS, grouped, percent, plural, shape, si
from .diagram import graph_section
from .layertable import layer_table
from .page import document
from .sections import render_sections
from .search import search_section
from .sensitivity import sensitivity_section
from .svg import FAMILIES, OPS_COLOUR, STORAGE_COLOUR, esc, family, stored

__all__ = ["render_audit_html", "render_pipeline_html", "write_audit_html", "write_pipeline_html"]


# ------------------------------------------------------------------ the score card


def breakable(name: str) -> str:
    """``name`` escaped, with line-break opportunities after ``.``, ``:``, ``/``
    and ``_`` so a long model name wraps between its parts, not mid-word."""
    out = esc(name)
    for mark in (".", ":", "/", "_"):
        out = out.replace(mark, mark + "<wbr>")
    return out


def _split_bar(score) -> str:
    total = (score.storage_term + score.ops_term) or 1.0
    storage = 100 * score.storage_term / total
    return (f'<div class="split" title="storage term {score.storage_term:.5g} + ops term {score.ops_term:.5g}">'
            f'<span style="width:{storage:.2f}%;background:{STORAGE_COLOUR}"></span>'
            f'<span style="width:{100 - storage:.2f}%;background:{OPS_COLOUR}"></span></div>')


def _quality(track, accuracy: float | None) -> str:
    bar = f"{track.bar_text(unicode=True)} on {esc(track.dataset)}"
    label = "perplexity" if track.metric == "perplexity" else "accuracy"
    if accuracy is None:
        return f'{bar} · {label} <span class="muted">not measured</span>'
    verdict = ('<span class="pill good">meets the bar</span>' if track.meets_bar(accuracy)
               else '<span class="pill bad">below the bar</span>')
    return f"{bar} · {label} <b>{_quality_figure(track, accuracy)}</b> {verdict}"


def _quality_figure(track, value: float) -> str:
    """A measured quality figure in the track's metric: ``81.20%`` or ``36.50`` (perplexity)."""
    return f"{value:.2f}" if track.metric == "perplexity" else f"{value:.2f}%"


def _ranking(track, total: float) -> tuple[str, str]:
    """(a sentence, a small table) placing ``total`` among published results."""
    rank = track.rank(total)
    if rank is None:
        return '<span class="muted">no published results for this track</span>', ""
    count = len(track.published) + 1
    sentence = (f"would rank <b>{ordinal(rank)}</b> of {count} "
                f"(with the {plural(count - 1, 'published result')} of the final leaderboard)")
    entries = sorted(track.published, key=lambda item: item[1])
    lines = [(str(entry), value, False) for entry, value in entries]
    lines.insert(rank - 1, ("this model", total, True))
    rows = "".join(f'<tr class="{"me" if me else ""}"><td class="num">{ordinal(k)}</td><td>{esc(entry)}</td>'
                   f'<td class="num">{value:.4g}</td></tr>' for k, (entry, value, me) in enumerate(lines, 1))
    table = f'<table class="ranking"><thead><tr><th colspan="3">{esc(track.name)} results</th></tr></thead>' \
            f'<tbody>{rows}</tbody></table>'
    return sentence, table


def _tiles(totals: Mapping[str, float]) -> str:
    tiles = (("params", "params", "elements"), ("nonzero_params", "nonzero", "elements"),
             ("storage", "storage", "32-bit eq."), ("mults", "mults", "ops"), ("adds", "adds", "ops"),
             ("other_ops", "other", "ops"), ("ops", "MicroNet ops", "32-bit eq."), ("macs", "MACs", "mult-adds"))
    out = []
    for key, label, unit in tiles:
        value = totals.get(key, 0) or 0
        if key == "other_ops" and not value:
            continue
        out.append(f'<div class="tile" title="{value:,.0f}"><div class="t-label">{label}</div>'
                   f'<div class="t-value">{si(value)}</div><div class="t-unit">{unit}</div></div>')
    return f'<div class="tiles">{"".join(out)}</div>'


def _notes(result) -> str:
    items = [f'<li class="warn">{esc(m)}</li>' for m in result.warnings]
    if result.unused_params:
        items.append(f"<li>{result.unused_params:,} parameters of modules the forward never calls "
                     f"(e.g. auxiliary heads) are not charged</li>")
    return f'<ul class="notes">{"".join(items)}</ul>' if items else ""


def _score_card(result, accuracy: float | None = None) -> str:
    score, track, rows = result.score, result.track, result.rows()
    statuses = Counter(r["status"] for r in rows)
    sentence, ranking = _ranking(track, score.total)
    freebie = ("applied: 32-bit parameters and multiplies counted at 16 bits" if score.freebie
               else "not applied")
    outside = sum(map(stored, rows))
    nodes = f"{plural(len(rows), 'node')}: {statuses['counted']:,} counted, {statuses['free'] - outside:,} free"
    if outside:
        nodes += f", {outside:,} stored outside a layer"
    if statuses["uncounted"]:
        nodes += f', <b class="bad-text">{statuses["uncounted"]} uncounted</b>'
    facts = [
        ("Reference", f"{esc(track.reference_model)}: {si(track.reference_params)} params, "
                      f"{si(track.reference_ops)} MicroNet ops"),
        ("Quality bar", _quality(track, accuracy)),
        ("Freebie", freebie),
        ("Published", sentence),
        ("Rulebook", f"{esc(result.rulebook.name)} · track {esc(track.name)}"),
    ]
    dl = "".join(f"<dt>{label}</dt><dd>{value}</dd>" for label, value in facts)
    return (
        f'<section class="card hero" id="summary"><div class="hero-grid"><div class="hero-main">'
        f'<div class="eyebrow">MicroNet score · {esc(result.rulebook.name)} · {esc(track.name)}</div>'
        f'<h1 class="model">{breakable(result.model)}</h1>'
        f'<div class="subtitle">input {esc(result.input_text)} · captured with '
        f'{esc(result.captured_via)} · {nodes}</div>'
        f'<div class="score-row"><div class="score"><span class="big">{score.total:.4g}</span>'
        f'<span class="lower">score, lower is better</span></div><div class="terms">{_split_bar(score)}'
        f'<div class="legend"><span><i class="sw" style="background:{STORAGE_COLOUR}"></i>storage '
        f'<b>{score.storage_term:.4g}</b> <span class="muted">({si(score.storage)} 32-bit eq.)</span></span>'
        f'<span><i class="sw" style="background:{OPS_COLOUR}"></i>ops <b>{score.ops_term:.4g}</b> '
        f'<span class="muted">({si(score.ops)} MicroNet ops)</span></span></div></div></div>'
        f'<dl class="facts">{dl}</dl></div><div class="hero-side">{ranking}</div></div>'
        f'{_tiles(result.totals)}{_notes(result)}</section>'
    )


# ------------------------------------------------------------------ audit sections


def _charts(result, table_id: str) -> str:
    rows = result.rows()
    family_label = {key: label for key, label, _ in FAMILIES}
    modules = module_summary(rows)
    kinds = aggregate(rows, lambda row: family_label[family(row["op"])])
    legend = (f'<i class="sw" style="background:{STORAGE_COLOUR}"></i>storage part '
              f'<i class="sw" style="background:{OPS_COLOUR}"></i>ops part')
    return (
        f'<section class="card" id="charts"><h2>Where the score goes</h2><p class="hint">Each bar is a part '
        f'of the whole score: {legend}. Click a layer to find it in the table.</p>'
        f'<div class="chart-grid"><div><h3>Layers that dominate the score</h3>'
        f'{top_layers_chart(rows, result.score, table_id=table_id)}</div>'
        f'<div><h3>By module</h3>{top_layers_chart(modules, result.score, 8, label="the score by module")}'
        f'<h3 class="gap">By kind of op</h3>'
        f'{top_layers_chart(kinds, result.score, 7, label="the score by op kind")}'
        f'</div></div><h3 class="gap">Costs per layer, in network order</h3><p class="hint">'
        f'<i class="sw" style="background:{OPS_COLOUR}"></i>MicroNet ops (up) · '
        f'<i class="sw" style="background:{STORAGE_COLOUR}"></i>storage in 32-bit equivalents (down) · '
        f'shaded bands are modules · free nodes left out, parameters stored outside a layer kept</p>'
        f'<div class="chart-box">{layer_chart(rows, table_id)}</div>'
        f'</section>'
    )


def _table_section(result, table_id: str, title: str = "Layers", anchor: str = "layers") -> str:
    return (f'<section class="card" id="{anchor}"><h2>{title}</h2><p class="hint">Every node in network order, '
            f'grouped by module (▾ collapses). Click a column to sort, again to reverse; '
            f'hover a name for its target, input shapes and the rule that counted it.</p>'
            f'{layer_table(result, table_id)}</section>')


def freebie_note(grid) -> str:
    """A sentence when levels of the first axis give equal scores because the
    freebie counts 32-bit parameters and multiplies at 16 bits ("" otherwise)."""
    axis, levels = grid.axes[0], grid.levels[0]
    by_level: dict[float, list] = {}
    for cell in grid.cells:
        by_level.setdefault(cell.level(axis), []).append(cell)
    totals = {level: tuple(round(c.total, 12) for c in cells) for level, cells in by_level.items()}
    equal = [level for level in levels if sum(t == totals[level] for t in totals.values()) > 1]
    if not equal or not any(c.freebie for level in equal for c in by_level[level]):
        return ""
    named = " and ".join(f"{axis} = {level:g}" for level in equal)
    return (f'<p class="hint note-freebie">The rows {esc(named)} are equal because of the freebie: without any '
            f'quantization below 16 bits, 32-bit parameters and multiplies are counted at 16 bits.</p>')


def _heat_scale(grid) -> str:
    totals = [c.total for c in grid.cells]
    return (f'<div class="heat-scale" aria-label="colour scale"><span>{min(totals):.4g}</span>'
            f'<span class="ramp"></span><span>{max(totals):.4g}</span><span>score (log scale; lower, greener, '
            f'is better)</span></div>')


def _what_if_section(result, grid) -> str:
    best = grid.best()
    levels = ", ".join(f"{axis} = {value:g}" for axis, value in best.levels)
    return (
        f'<section class="card" id="what-if"><h2>What if</h2><p class="hint">The same layers re-scored '
        f'with every weighted layer at uniform levels, without re-tracing (measured: '
        f'<b>{result.score.total:.4g}</b>). Greener is lower, the best cell is outlined: <b>{esc(levels)}</b> '
        f'gives <b>{best.total:.4g}</b>.</p>{freebie_note(grid)}'
        f'<div class="heat-wrap">{heatmap(grid, result.track)}</div>{_heat_scale(grid)}</section>'
    )


def _plugin_sections(result, sections) -> str:
    out = []
    for title, lines in render_sections(result, sections or {}):
        items = "".join(f"<dt>{esc(label)}</dt><dd>{esc(value)}</dd>" for label, value in lines)
        out.append(f'<section class="card plugin"><h2>{esc(title)}</h2><dl class="facts">{items}</dl></section>')
    return "".join(out)


def render_audit_html(result, *, what_if=None, sections: Mapping[str, Any] | None = None,
                      accuracy: float | None = None) -> str:
    """The audit page of ``result`` as one HTML document.

    ``what_if`` is a :class:`~micronet.whatif.WhatIfGrid` (shown as a heat
    map), ``sections`` plugins' report sections, ``accuracy`` the measured
    top-1 in percent (shown against the track's bar; defaults to
    ``result.accuracy``; "not measured" when None).
    """
    rows = result.rows()
    nav = [("summary", "Score"), ("charts", "Charts"), ("layers", "Layers")]
    if accuracy is None:
        accuracy = getattr(result, "accuracy", None)
    body = [_score_card(result, accuracy), _charts(result, "t"), _table_section(result, "t")]
    if what_if is not None:
        body.append(_what_if_section(result, what_if))
        nav.append(("what-if", "What if"))
    body.append(graph_section(rows, "t"))
    nav.append(("graph", "Graph"))
    body.append(_plugin_sections(result, sections))
    return document(f"{result.model}: MicroNet audit", "audit", "".join(body), nav)


# ------------------------------------------------------------------ pipeline page


def _keyed(rows: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    seen: Counter = Counter()
    keyed = {}
    for row in rows:
        seen[row["name"]] += 1
        keyed[row["name"] if seen[row["name"]] == 1 else f"{row['name']}#{seen[row['name']]}"] = row
    return keyed


_DELTA_KEYS = ("params", "nonzero_params", "weight_sparsity", "storage", "weight_bits", "input_bits", "mults",
               "adds", "ops")


def layer_deltas(before, after) -> list[dict[str, Any]]:
    """Layers whose costs or widths changed between two results, largest
    change of their part of the score first (added and removed layers too)."""
    old, new = _keyed(before.rows()), _keyed(after.rows())
    out = []
    for key in list(new) + [k for k in old if k not in new]:
        a, b = old.get(key), new.get(key)
        if a is not None and b is not None and all(a[k] == b[k] for k in _DELTA_KEYS):
            continue
        part_a = a["share"] * before.score.total if a else 0.0
        part_b = b["share"] * after.score.total if b else 0.0
        out.append({"name": (b or a)["name"], "op": (b or a)["op"], "before": a, "after": b,
                    "score_before": part_a, "score_after": part_b, "change": part_b - part_a})
    out.sort(key=lambda d: -abs(d["change"]))
    return out


def _pair(a, b, key: str, fmt=si) -> str:
    va = a[key] if a else None
    vb = b[key] if b else None
    exact = f' title="{grouped(va)} → {grouped(vb)}"' if va is not None or vb is not None else ""
    if va == vb:
        return f'<td class="num same"{exact}>{fmt(vb)}</td>'
    cls = "up" if (vb or 0) > (va or 0) else "down"
    left = "–" if va is None else fmt(va)
    right = "–" if vb is None else fmt(vb)
    return f'<td class="num {cls}"{exact}>{left} → <b>{right}</b></td>'


def _bits(a, b, key: str) -> str:
    """A bit width before -> after ("–" where the layer has no weight)."""
    def text(row):
        if row is None or (key == "weight_bits" and not row["params"]):
            return "–"
        return str(row[key])
    left, right = text(a), text(b)
    if left == right:
        return f'<td class="num same">{right}</td>'
    return f'<td class="num changed">{left} → <b>{right}</b></td>'


def _sparsity(row) -> str | None:
    return percent(row["weight_sparsity"]) if row and row["params"] else None


def _delta_rows(deltas) -> str:
    out = []
    for d in deltas:
        a, b = d["before"], d["after"]
        tag = '<span class="badge free">added</span> ' if a is None else \
            '<span class="badge uncounted">removed</span> ' if b is None else ""
        sa, sb = _sparsity(a), _sparsity(b)
        if sa == sb:
            sparsity = f'<td class="num same">{sb or "–"}</td>'
        else:
            cls = "down" if (b and a and b["weight_sparsity"] > a["weight_sparsity"]) else "up"
            sparsity = f'<td class="num {cls}">{sa or "–"} → <b>{sb or "–"}</b></td>'
        change = d["change"]
        cls = "down" if change < 0 else "up" if change > 0 else "same"
        name = d["name"]
        out.append(f'<tr><td class="name" title="{esc(name)}">{tag}{esc(name)}</td><td class="op">{esc(d["op"])}</td>'
                   f'{_pair(a, b, "params")}{_pair(a, b, "nonzero_params")}{sparsity}{_pair(a, b, "storage")}'
                   f'{_bits(a, b, "weight_bits")}{_bits(a, b, "input_bits")}{_pair(a, b, "ops")}'
                   f'<td class="num {cls}">{change:+.3g}</td></tr>')
    return "".join(out)


_DELTA_HEAD = ('<thead><tr><th>layer</th><th>op</th><th>params<span class="unit">elements</span></th>'
               '<th>nonzero<span class="unit">elements</span></th><th>sparsity<span class="unit">% zeros</span></th>'
               '<th>storage<span class="unit">32-bit eq.</span></th><th>weights<span class="unit">bits</span></th>'
               '<th>acts<span class="unit">bits</span></th><th>MicroNet ops<span class="unit">32-bit eq.</span></th>'
               '<th>Δ score<span class="unit">score units</span></th></tr></thead>')


def _delta_table(deltas, shown: int = 20) -> str:
    if not deltas:
        return '<p class="muted">No layer changed.</p>'
    head = _DELTA_HEAD
    table = f'<table class="deltas">{head}<tbody>{_delta_rows(deltas[:shown])}</tbody></table>'
    if len(deltas) > shown:
        table += (f'<details><summary>{len(deltas) - shown} more changed layers</summary>'
                  f'<table class="deltas">{head}<tbody>{_delta_rows(deltas[shown:])}</tbody></table></details>')
    return f'<div class="delta-wrap">{table}</div>'


def _options(options: Mapping[str, Any]) -> str:
    """The step's options as a small key / value table (units, thousands separators)."""
    if not options:
        return '<span class="muted">no options</span>'
    return _kv_table(options.items(), "step-options", "option")


def _kv_table(items, cls: str, what: str) -> str:
    rows = "".join(f'<tr><th scope="row">{esc(key)}</th><td>{_value_html(str(key), value)}</td></tr>'
                   for key, value in items)
    return f'<div class="hscroll"><table class="kv {cls}" aria-label="step {what}s">{rows}</table></div>'


def _unit(key: str) -> str:
    unit = UNITS.get(key)
    return f' <span class="u">{esc(unit)}</span>' if unit else ""


def _is_fraction_map(key: str, value) -> bool:
    return (isinstance(value, Mapping) and value and "sparsity" in key
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1
                    for v in value.values()))


def _bar_list(value: Mapping[str, float]) -> str:
    """Per-layer fractions (sparsity) as labelled bars, 0 to 100%."""
    items = "".join(f'<li><span class="bl-name" title="{esc(name)}">{esc(name)}</span>'
                    f'<span class="bl-bar"><i style="width:{100 * frac:.1f}%"></i></span>'
                    f'<span class="bl-val">{percent(frac)}</span></li>' for name, frac in value.items())
    return f'<ul class="bar-list" aria-label="per-layer fraction of zero weights">{items}</ul>'


def _value_html(key: str, value, depth: int = 0) -> str:
    """One option's or note's value for a reader: never a Python repr."""
    if _is_fraction_map(key, value):
        return _bar_list(value)
    if isinstance(value, Mapping):
        if not value:
            return '<span class="muted">none</span>'
        if depth or len(str(value)) > NOTE_CHARS:
            return f"{plural(len(value), 'entry', 'entries')}: whole in history.json"
        rows = "".join(f'<tr><th scope="row">{esc(k)}</th><td>{_value_html(str(k), v, depth + 1)}</td></tr>'
                       for k, v in value.items())
        return f'<table class="kv inner">{rows}</table>'
    if isinstance(value, (list, tuple)):
        if not value:
            return '<span class="muted">none</span>'
        if all(not isinstance(v, (Mapping, list, tuple)) for v in value) and len(value) <= 16:
            return esc(", ".join(grouped(v) for v in value)) + _unit(key)
        return f"{plural(len(value), 'entry', 'entries')}: whole in history.json"
    if value is None or value == "":
        return '<span class="muted">none</span>'
    text = grouped(value)
    if len(text) > NOTE_CHARS:
        return f"{len(text):,} characters: whole in history.json"
    return esc(text) + (_unit(key) if not isinstance(value, (str, bool)) else "")


def _accuracy_line(result) -> str:
    """Top-1 against the track's bar, for a before / after column."""
    track = result.track
    metric = "perplexity" if track.metric == "perplexity" else "top-1"
    if result.accuracy is None:
        return f'<div class="acc muted">{metric} not measured</div>'
    verdict = "good" if result.meets_bar else "bad"
    word = "meets" if result.meets_bar else "below"
    return (f'<div class="acc">{metric} <span class="pill {verdict}">{_quality_figure(track, result.accuracy)}'
            f'</span> <span class="muted">{word} the bar: {esc(track.bar_text(unicode=True))}</span></div>')


def _score_change(before, after) -> str:
    sb, sa = before.score, after.score
    ratio = sa.total / sb.total if sb.total else float("nan")
    cls = "down" if sa.total < sb.total else "up" if sa.total > sb.total else "same"
    return (f'<div class="before-after"><div><div class="t-label">before</div><div class="ba">{sb.total:.4g}</div>'
            f'<div class="muted">storage {sb.storage_term:.4g} + ops {sb.ops_term:.4g}</div>'
            f'{_accuracy_line(before)}</div>'
            f'<div class="arrow">→</div><div><div class="t-label">after</div>'
            f'<div class="ba {cls}">{sa.total:.4g}</div>'
            f'<div class="muted">storage {sa.storage_term:.4g} + ops {sa.ops_term:.4g}</div>'
            f'{_accuracy_line(after)}</div>'
            f'<div class="ratio {cls}">{ratio - 1:+.1%}<div class="muted">{ratio:.3g}× the score</div>'
            f'</div></div>')


def _step_notes(step, hide: frozenset[str] = frozenset()) -> str:
    """What the step reported through ``context.note`` (but the notes in
    ``hide``, shown elsewhere), as a small table."""
    notes = getattr(step, "notes", None) or {}
    shown = [(k, v) for k, v in notes.items() if k not in hide]
    if not shown:
        return ""
    return f'<h3 class="gap">Notes</h3>{_kv_table(shown, "step-notes", "note")}'


#: Notes the sensitivity section shows (left out of the notes table when it does).
_SENSITIVITY_KEYS = frozenset({"baseline", "table", "ranking", "evaluations", "evaluations_per_second", "examples"})


#: A note longer than this is summarised on the page (it is whole in history.json).
NOTE_CHARS = 400


def _seconds(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def _step_section(step, before) -> str:
    where = f' <span class="round">round {step.round} of step {step.repeat}</span>' if step.round else ""
    sensitivity = sensitivity_section(step.notes)
    head = (f'<h2><span class="stepno">{step.index}</span>{esc(step.name)}{where}'
            f'<span class="plugin-name">plugin {esc(step.plugin)}</span>'
            f'<span class="secs">{_seconds(step.seconds)}</span></h2>'
            f'<h3 class="gap">Options</h3>{_options(step.options)}'
            f'{_step_notes(step, _SENSITIVITY_KEYS if sensitivity else frozenset())}'
            f'{sensitivity}{search_section(step, before)}')
    if step.result is None:
        return (f'<section class="card step failed" id="step-{step.index}">{head}<div class="error">'
                f'<b>This step failed</b>; the model before it is kept and the steps after it did not run.'
                f'<pre>{esc(step.error or "unknown error")}</pre></div></section>')
    deltas = layer_deltas(before, step.result)
    return (f'<section class="card step" id="step-{step.index}">{head}{_score_change(before, step.result)}'
            f'<h3>Per-layer changes <span class="muted">{len(deltas)} layer{"s" * (len(deltas) != 1)}, '
            f'largest change of the score first</span></h3>{_delta_table(deltas)}</section>')


def _top1_cell(result) -> str:
    """Top-1 with the bar's verdict, or a dash when accuracy was not measured."""
    if result.accuracy is None:
        return '<span class="muted">—</span>'
    verdict = "good" if result.meets_bar else "bad"
    return f'<span class="pill {verdict}">{_quality_figure(result.track, result.accuracy)}</span>'


def _pipeline_card(history) -> str:
    recipe, first, final = history.recipe, history.input, history.final
    failed = history.failed
    status = (f'<span class="pill bad">step {failed.index} ({esc(failed.name)}) failed</span>' if failed
              else '<span class="pill good">every step ran</span>')
    steps = " → ".join(esc(s.name) for s in history.steps) or "no steps"
    sentence, _ = _ranking(final.track, final.score.total)
    facts = [("Recipe", esc(recipe.source)), ("Steps", steps),
             ("Scoring", f"{esc(recipe.rulebook)} · track {esc(recipe.track)} · freebie "
                         f"{'on' if recipe.freebie else 'off'}"),
             ("Quality bar", _quality(final.track, final.accuracy)
              + ("" if final.accuracy is not None else " (the recipe has no [data] table)")),
             ("Published", sentence)]
    dl = "".join(f"<dt>{label}</dt><dd>{value}</dd>" for label, value in facts)
    return (f'<section class="card hero" id="summary"><div class="eyebrow">compression pipeline · {status}</div>'
            f'<h1 class="model">{breakable(recipe.spec)}</h1><div class="subtitle">input '
            f'{esc(shape([first.input_shape]))} · {len(history.steps)} step{"s" * (len(history.steps) != 1)}</div>'
            f'{_score_change(first, final)}<dl class="facts">{dl}</dl></section>')


def _steps_table(history) -> str:
    rows, previous = [], history.input.score
    lines = [("input", "", history.input.score, None)] + [
        (s.label, s.plugin, s.result.score if s.result is not None else None, s)
        for s in history.steps]
    for label, plugin, score, step in lines:
        took = _seconds(step.seconds) if step is not None else ""
        if score is None:
            rows.append(f'<tr class="failed"><td>{esc(label)}</td><td class="mono">{esc(plugin)}</td>'
                        f'<td class="num" colspan="5">failed</td><td class="num">{took}</td></tr>')
            continue
        result = history.input if step is None else step.result
        change = score.total / previous.total - 1 if step is not None and previous.total else None
        cls = "" if not change else "down" if change < 0 else "up"
        rows.append(f'<tr><td>{esc(label)}</td><td class="mono">{esc(plugin)}</td>'
                    f'<td class="num"><b>{score.total:.4g}</b></td><td class="num">{score.storage_term:.4g}</td>'
                    f'<td class="num">{score.ops_term:.4g}</td>'
                    f'<td class="num {cls}">{"" if change is None else f"{change:+.1%}"}</td>'
                    f'<td class="num">{_top1_cell(result)}</td><td class="num">{took}</td></tr>')
        previous = score
    head = ("<tr><th>step</th><th>plugin</th><th>score</th><th>storage</th><th>ops</th><th>change</th>"
            f'<th title="on the test split; the track\'s bar: {history.input.track.quality_bar:g}%">top-1</th>'
            "<th>time</th></tr>")
    return (f'<div class="hscroll"><table class="steps-table"><thead>{head}</thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


def render_pipeline_html(history, *, sections: Mapping[str, Any] | None = None) -> str:
    """The pipeline page of a :class:`~micronet.pipeline.History` (complete or
    stopped by a failing step) as one HTML document."""
    results = [history.input] + [s.result for s in history.steps]
    labels = ["input"] + [s.label for s in history.steps]
    points = [(label, r.score if r is not None else None) for label, r in zip(labels, results)]
    accuracy = [r.accuracy if r is not None else None for r in results]
    track = history.input.track
    scatter = score_accuracy_chart([(label, score, acc) for (label, score), acc in zip(points, accuracy)],
                                   track.quality_bar, track.meets_bar)
    measured = any(a is not None for a in accuracy)
    acc_hint = (f' <i class="sw" style="background:var(--good)"></i>top-1 (right axis; dashed: the track\'s bar '
                f'{track.quality_bar:g}%)' if measured
                else ' · accuracy not measured (the recipe has no [data] table)')
    scatter_html = (f'<div><h3>Score against accuracy</h3><p class="hint">one point per result; '
                    f'green meets the bar, red does not; lower and higher is better</p>'
                    f'<div class="chart-box">{scatter}</div></div>' if scatter else "")
    body = [_pipeline_card(history),
            f'<section class="card" id="scores"><h2>Score across the steps</h2><p class="hint">'
            f'<i class="sw" style="background:{STORAGE_COLOUR}"></i>storage term '
            f'<i class="sw" style="background:{OPS_COLOUR}"></i>ops term{acc_hint}; the change from the previous '
            f'result under each step</p><div class="steps-charts"><div class="chart-box">'
            f'{steps_chart(points, accuracy if measured else None, track.quality_bar)}</div>{scatter_html}</div>'
            f'{_steps_table(history)}</section>']
    before = history.input
    for step in history.steps:
        body.append(_step_section(step, before))
        before = step.result if step.result is not None else before
    final = history.final
    body.append(_table_section(final, "ft", "The final model, layer by layer", "final"))
    body.append(_plugin_sections(final, sections))
    nav = [("summary", "Summary"), ("scores", "Scores")]
    nav += [(f"step-{s.index}", s.label) for s in history.steps] + [("final", "Final model")]
    return document(f"{history.recipe.spec}: MicroNet compression", "pipeline", "".join(body), nav)


# ------------------------------------------------------------------ files


def write_audit_html(result, path: str | os.PathLike, *, what_if=None, sections=None,
                     accuracy: float | None = None) -> Path:
    """Write the audit page atomically; returns the path."""
    return atomic_write_text(path, render_audit_html(result, what_if=what_if, sections=sections,
                                                     accuracy=accuracy))


def write_pipeline_html(history, path: str | os.PathLike, *, sections=None) -> Path:
    """Write the pipeline page atomically; returns the path."""
    return atomic_write_text(path, render_pipeline_html(history, sections=sections))
