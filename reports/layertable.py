"""The per-layer table of the HTML report.

Rendered on the server (it reads without script); the page's script sorts,
filters, collapses by module and exports CSV from the JSON embedded beside it
(the same columns as ``--csv``). Rows come in network order under one header
row per module, indented by depth.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from .csv_report import COLUMNS as CSV_COLUMNS, _cell
from .format import percent, plural, shape, si
from .page import json_script
from .svg import FAMILY_COLOUR, esc, family, stored

__all__ = ["layer_table", "COLUMNS"]

#: Displayed columns: (row key, label, unit, help, width in px or "fr" for the
#: flexible one). Sorting uses the key. Rows are CSS grids with these tracks,
#: so a row's layout never depends on the others (fast sorting, and rows
#: off screen are skipped with ``content-visibility``).
COLUMNS = (
    ("index", "#", "", "position in network order", 36),
    ("name", "layer", "", "module path, or module path and fx node name for functions", "fr"),
    ("op", "op", "", "operation kind", 120),
    ("status", "status", "", "counted (blank), free (views, cats, size arithmetic) or uncounted (no counter)", 72),
    ("output_shapes", "output", "shape", "shape of the (first) output", 100),
    ("params", "params", "elements", "parameters, every element", 64),
    ("nonzero_params", "nonzero", "elements", "parameters that are not exactly zero", 66),
    ("weight_sparsity", "sparsity", "% zeros", "fraction of zero weights", 62),
    ("storage", "storage", "32-bit eq.",
     "parameter storage in 32-bit equivalents, bitmask included when sparse", 68),
    ("weight_bits", "weights", "bits", "weight bit width", 62),
    ("input_bits", "acts", "bits", "activation (input) bit width", 44),
    ("mults", "mults", "ops", "multiplies after sparsity", 62),
    ("adds", "adds", "ops", "additions after sparsity", 62),
    ("other_ops", "other", "ops", "other operations (transcendentals)", 60),
    ("ops", "MicroNet ops", "32-bit eq.", "MicroNet ops: each op costs its widest input's bits / 32", 100),
    ("macs", "MACs", "mult-adds", "multiply-accumulates (the unit of thop and fvcore)", 66),
    ("share", "share", "% of score", "this node's part of the whole score", 74),
)
_NAME_MIN = 200  # px: the flexible name column's minimum width
_SUMMED = ("params", "nonzero_params", "storage", "mults", "adds", "other_ops", "ops", "macs", "share")
_NAME_SPAN = 4  # name, op, status and output share one cell in module rows

#: Free ops that only move Python values around (attribute and item access,
#: shape checks, size arithmetic): folded away when the table opens, one
#: checkbox shows them. Transformers traced by fx have dozens of them.
BOOKKEEPING = frozenset({"getattr", "getitem", "eq", "ne", "lt", "le", "gt", "ge", "assert", "floordiv",
                         "dim", "sym_size", "len", "not_", "and_", "or_", "truediv_int", "scalar_tensor"})
#: A name part longer than this gets a middle ellipsis (its end stays visible).
_MID_CHARS = 22
_TAIL_CHARS = 12


def bookkeeping(row: Mapping[str, Any]) -> bool:
    """Whether ``row`` is a free bookkeeping node (no params, no cost)."""
    return row["status"] == "free" and row["op"] in BOOKKEEPING and not row["params"] and not row["storage"]


def middle(text: str) -> str:
    """``text`` escaped, split so CSS can cut it in the middle (``.mid``)
    when it does not fit: the start ellipsised, the last characters kept."""
    if len(text) <= _MID_CHARS:
        return esc(text)
    return (f'<span class="mid"><span class="h">{esc(text[:-_TAIL_CHARS])}</span>'
            f'<span class="t">{esc(text[-_TAIL_CHARS:])}</span></span>')


def _columns(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, str, str, str, Any]]:
    has_other = any(r["other_ops"] for r in rows)
    return [c for c in COLUMNS if c[0] != "other_ops" or has_other]


def _ancestors(path: str) -> list[str]:
    parts = path.split(".") if path else []
    return [".".join(parts[:i + 1]) for i in range(len(parts))]


def _sums(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    sums: dict[str, dict[str, float]] = {}
    for row in rows:
        for path in _ancestors(row["module_path"]):
            bucket = sums.setdefault(path, {"count": 0, **{k: 0.0 for k in _SUMMED}})
            bucket["count"] += 1
            for key in _SUMMED:
                bucket[key] += row[key] or 0
    return sums


def _num(value: float, muted_zero: bool = True) -> str:
    if not value:
        return '<td class="num z">0</td>' if muted_zero else '<td class="num"></td>'
    exact = f' title="{value:,.0f}"' if abs(value) >= 1000 and float(value).is_integer() else ""
    return f'<td class="num"{exact}>{si(value)}</td>'


def _share(value: float) -> str:
    if not value:
        return "0"
    return percent(value) if value >= 0.001 else "<0.1%"


def _name_cell(name: str, path: str, depth: int, tip: str) -> str:
    prefix = path + "." if path and name.startswith(path + ".") else ""
    rest = name[len(prefix):]
    pfx = f'<span class="pfx">{esc(prefix)}</span>' if prefix else ""
    return (f'<td class="name" style="--d:{depth}" title="{esc(tip)}">{pfx}'
            f'<span class="leaf">{middle(rest)}</span></td>')


def _status_cell(row: Mapping[str, Any]) -> str:
    status, reason = row["status"], row["reason"]
    if status == "counted":
        return '<td class="st"></td>'
    if stored(row):
        why = "a parameter used outside a layer: no ops, its storage is charged"
        return f'<td class="st"><span class="badge stored" title="{why}">storage</span></td>'
    badge = f'<span class="badge {esc(status)}" title="{esc(reason or status)}">{esc(status)}</span>'
    return f'<td class="st">{badge}</td>'


def _row(i: int, row: Mapping[str, Any], depth: int, columns, top_share: float, table_id: str) -> str:
    status = row["status"]
    tip = f"{row['name']}\ntarget: {row['target']}\nfx node: {row['node']}\ninputs: {shape(row['input_shapes'])}"
    if row["rule"]:
        tip += f"\nrule: {row['rule']}" + (f" (plugin {row['plugin']})" if row["plugin"] else "")
    if row["reason"]:
        tip += f"\n{status}: {row['reason']}"
    cells = [f'<td class="num idx">{i}</td>', _name_cell(row["name"], row["module_path"], depth, tip),
             f'<td class="op" title="{esc(row["op"])}"><i class="dot" '
             f'style="background:{FAMILY_COLOUR[family(row["op"])]}"></i>{esc(row["op"])}</td>',
             _status_cell(row),
             f'<td class="shape">{esc(shape(row["output_shapes"][:1]))}</td>']
    weighted = row["params"] > 0
    for key, *_ in columns[5:]:
        value = row[key]
        if key == "weight_sparsity":
            cells.append(f'<td class="num{"" if value else " z"}">{percent(value) if weighted else ""}</td>')
        elif key == "weight_bits":
            cells.append(f'<td class="num{"" if weighted else " z"}">{value if weighted else "–"}</td>')
        elif key == "input_bits":
            cells.append(f'<td class="num">{value}</td>')
        elif key == "share":
            width = 100 * value / top_share if top_share else 0
            cells.append(f'<td class="num share{"" if value else " z"}">'
                         f'<span class="bar" style="width:{width:.1f}%"></span>{_share(value)}</td>')
        else:
            cells.append(_num(value))
    extra = " bk" if bookkeeping(row) else " stored" if stored(row) else ""
    return (f'<tr id="{table_id}-r{i}" class="row st-{esc(status)}{extra}" data-i="{i}" '
            f'data-path="{esc(row["module_path"])}">{"".join(cells)}</tr>')


def _group_row(path: str, depth: int, sums: Mapping[str, float], columns, top_share: float) -> str:
    parent, _, leaf = path.rpartition(".")
    pfx = f'<span class="pfx">{esc(parent)}.</span>' if parent else ""
    cells = [f'<td class="num idx"></td><td class="name" colspan="{_NAME_SPAN}" style="--d:{depth}">'
             f'<button type="button" class="tog" aria-expanded="true" title="collapse or expand this module">'
             f'</button>{pfx}<b>{esc(leaf)}</b> <span class="muted">{plural(int(sums["count"]), "node")}</span></td>']
    for key, *_ in columns[5:]:
        if key == "share":
            width = 100 * sums["share"] / top_share if top_share else 0
            cells.append(f'<td class="num share"><span class="bar grp" style="width:{min(width, 100):.1f}%">'
                         f'</span>{_share(sums["share"])}</td>')
        elif key in sums:
            cells.append(_num(sums[key], muted_zero=False))
        else:
            cells.append('<td></td>')
    return f'<tr class="grp" data-path="{esc(path)}" data-depth="{depth}">{"".join(cells)}</tr>'


def _body(rows, columns, table_id: str) -> str:
    sums = _sums(rows)
    top_share = max((r["share"] for r in rows), default=0.0)
    out, stack = [], []
    for i, row in enumerate(rows):
        chain = _ancestors(row["module_path"])
        keep = 0
        while keep < min(len(stack), len(chain)) and stack[keep] == chain[keep]:
            keep += 1
        del stack[keep:]
        for path in chain[keep:]:
            out.append(_group_row(path, len(stack), sums[path], columns, top_share))
            stack.append(path)
        out.append(_row(i, row, len(stack), columns, top_share, table_id))
    return "".join(out)


def _head(columns) -> str:
    cells = []
    for key, label, unit, help_text, _ in columns:
        unit_html = f'<span class="unit">{esc(unit)}</span>' if unit else ""
        kind = "text" if key in ("name", "op", "status") else "num"
        cells.append(f'<th data-key="{key}" data-kind="{kind}" title="{esc(help_text)} — click to sort">'
                     f'<span class="lbl">{esc(label)}</span>{unit_html}</th>')
    return "<tr>" + "".join(cells) + "</tr>"


def _bk_toggle(rows) -> str:
    count = sum(map(bookkeeping, rows))
    if not count:
        return ""
    return (f'<label class="bk-toggle" title="free ops that move Python values: getattr, getitem, shape checks">'
            f'<input type="checkbox" class="f-bk"> show {plural(count, "bookkeeping node")}</label>')


def _toolbar(rows, table_id: str) -> str:
    ops = sorted({r["op"] for r in rows})
    options = "".join(f'<option value="{esc(op)}">{esc(op)}</option>' for op in ops)
    return (
        f'<div class="toolbar">'
        f'<input type="search" class="f-name" placeholder="Filter by name…" aria-label="filter by name">'
        f'<select class="f-op" aria-label="filter by op"><option value="">all ops</option>{options}</select>'
        f'<select class="f-status" aria-label="filter by status"><option value="">all nodes</option>'
        f'<option value="counted">counted</option><option value="free">free</option>'
        f'<option value="uncounted">uncounted</option><option value="!free">hide free</option></select>'
        f'{_bk_toggle(rows)}<span class="sep"></span>'
        f'<button type="button" class="b-collapse">Collapse all</button>'
        f'<button type="button" class="b-expand">Expand all</button>'
        f'<button type="button" class="b-order" disabled>Network order</button>'
        f'<span class="count" aria-live="polite">{len(rows)} of {len(rows)} nodes</span>'
        f'<button type="button" class="b-csv primary">Export CSV</button></div>'
    )


def layer_table(result, table_id: str = "t") -> str:
    """The toolbar, the table and its JSON data for ``result``'s rows."""
    rows = result.rows()
    columns = _columns(rows)
    tracks = " ".join(f"minmax({_NAME_MIN}px,1fr)" if w == "fr" else f"{w}px" for *_, w in columns)
    width = sum(_NAME_MIN if w == "fr" else w for *_, w in columns)
    data = {
        "file": f"{result.model}.csv",
        "keys": [key for key, _ in CSV_COLUMNS],
        "header": [header for _, header in CSV_COLUMNS],
        "rows": [[_cell(row[key]) for key, _ in CSV_COLUMNS] for row in rows],
    }
    return (
        f'<div class="layer-table" id="{table_id}" data-json="{table_id}-data">'
        f'{_toolbar(rows, table_id)}'
        f'<div class="scroll"><table style="--cols:{tracks};min-width:{width}px"><thead>{_head(columns)}</thead>'
        f'<tbody class="tree">{_body(rows, columns, table_id)}</tbody></table></div>'
        f'{json_script(table_id + "-data", data)}</div>'
    )
