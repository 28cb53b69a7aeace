"""A readable terminal table of an audit, and of a what-if grid.

Names come from the model and may hold terminal escapes, line breaks or
bidirectional overrides: every cell and every line goes through
:func:`micronet.text.printable` before it is measured or joined.
"""
from __future__ import annotations

from micronet.records import UNCOUNTED
from micronet.text import printable

from .format import percent, shape, si
from .sections import render_sections

_HEAD = ("layer", "op", "output", "params", "sparsity", "w/a bits", "mults", "adds", "ops", "share")


def _layer_line(row) -> tuple[str, ...]:
    return tuple(map(printable, (
        row["name"], row["op"], shape(row["output_shapes"][:1]), si(row["params"]),
        percent(row["weight_sparsity"]) if row["weight_sparsity"] else "",
        f"{row['weight_bits']}/{row['input_bits']}", si(row["mults"]), si(row["adds"]),
        si(row["ops"]), percent(row["share"]),
    )))


def _format(rows, widths) -> list[str]:
    return ["  ".join(cell.ljust(w) if i < 3 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths)))
            for r in rows]


def render_table(result, *, show_free: bool = False, top: int | None = None, max_name: int = 48,
                 sections=None) -> str:
    """The per-layer table followed by totals, the score and plugin sections.

    Free nodes are hidden unless ``show_free``; ``top`` keeps the N layers
    with the largest share of the score; ``sections`` maps names to
    :class:`~micronet.reports.sections.ReportSection` (plugins' extra blocks).
    """
    rows = [r for r in result.rows() if show_free or r["status"] != "free"]
    if top is not None:
        rows = sorted(rows, key=lambda r: -r["share"])[:top]
    lines = [_layer_line(r) for r in rows]
    lines = [(n if len(n) <= max_name else "…" + n[-max_name + 1:], *rest) for n, *rest in lines]
    widths = [max([len(h)] + [len(l[i]) for l in lines]) for i, h in enumerate(_HEAD)]
    out = _format([_HEAD, tuple("-" * w for w in widths)] + lines, widths)
    totals, score, track = result.totals, result.score, result.track
    out += [
        "",
        f"model      {result.model}   input {printable(result.input_text)}   "
        f"captured with {result.captured_via}",
        f"params     {si(totals['params'])} ({totals['params']:,}), nonzero {si(totals['nonzero_params'])}, "
        f"storage {si(totals['storage'])} 32-bit equivalents",
        f"math       {si(totals['mults'])} mults + {si(totals['adds'])} adds"
        f" + {si(totals['other_ops'])} other = {si(totals['ops'])} MicroNet ops ({si(totals['macs'])} MACs)",
        f"rulebook   {result.rulebook.name}, track {track.name} (reference {track.reference_model}: "
        f"{si(track.reference_params)} params, {si(track.reference_ops)} ops; bar {track.bar_text()})",
        f"freebie    {'applied: 32-bit params and mults counted at 16 bits' if score.freebie else 'not applied'}",
        _accuracy_line(result),
        f"score      {score.total:.4f} = storage {score.storage_term:.4f} + ops {score.ops_term:.4f}",
    ]
    uncounted = [r for r in result.rows() if r["status"] == UNCOUNTED]
    if uncounted:
        out.append(f"UNCOUNTED  {len(uncounted)} node(s): " + ", ".join(
            f"{r['name']} ({r['reason']})" for r in uncounted[:8]))
    for message in result.warnings:
        if not message.startswith(f"{len(uncounted)} node(s) not counted"):
            out.append(f"warning    {message}")
    for title, lines in render_sections(result, sections or {}):
        out += ["", title] + [f"  {label}: {value}" for label, value in lines]
    return "\n".join(map(printable, out))


def _accuracy_line(result) -> str:
    accuracy, track = getattr(result, "accuracy", None), result.track
    if track.metric == "perplexity":  # micronet measures top-1 only: a perplexity comes from the caller
        if accuracy is None:
            return f"quality    perplexity not measured (micronet measures top-1 only; the bar is {track.bar_text()})"
        verdict = "meets the bar" if result.meets_bar else "misses the bar: the score does not count"
        return f"quality    {track.compare_text(accuracy)} on {track.dataset}: {verdict}"
    if accuracy is None:
        return f"accuracy   not measured (--data DATASET measures top-1; the bar is {result.track.quality_bar:g}%)"
    verdict = "meets the bar" if result.meets_bar else "BELOW the bar: the score does not count"
    return f"accuracy   top-1 {accuracy:.2f}% on {result.track.dataset}: {verdict} ({result.track.quality_bar:g}%)"


def render_what_if(grid) -> str:
    """The what-if grid: a matrix for two axes, a list otherwise."""
    if len(grid.axes) == 2:
        (a, b), (la, lb) = grid.axes, grid.levels
        header = [f"{a} \\ {b}"] + [f"{v:g}" for v in lb]
        rows = [header]
        cells = iter(grid.cells)
        for va in la:
            rows.append([f"{va:g}"] + [f"{next(cells).total:.4f}" for _ in lb])
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows)
    lines = []
    for cell in grid.cells:
        levels = ", ".join(f"{k}={v:g}" for k, v in cell.levels)
        lines.append(f"{levels}: {cell.total:.4f} (storage {cell.storage_term:.4f} + ops {cell.ops_term:.4f})")
    return "\n".join(lines)
