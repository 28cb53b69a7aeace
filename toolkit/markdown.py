"""A compact Markdown summary of an audit (``micronet audit --markdown FILE``):
the score card and the top layers as GitHub-flavoured Markdown tables, to
paste into a model card or a pull request.

Units as in the audit: params are parameter elements, storage 32-bit
equivalent values (4 bytes each), ops MicroNet ops, MACs multiply-accumulates,
share the fraction of the score.
"""
from __future__ import annotations

import os
from collections import Counter
from typing import Any

from .text import printable

__all__ = ["render_markdown", "write_markdown"]

_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*_[]|#~"} | {"<": "&lt;", ">": "&gt;", "&": "&amp;"})


def md(text: Any) -> str:
    """Text from a model or a user, safe in a Markdown table cell (one line,
    the characters Markdown and tables give a meaning to escaped)."""
    return printable(text).translate(_SPECIAL)


def _table(head: list[str], rows: list[list[str]], align: list[str]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _precision(result) -> str:
    widths = Counter(r.weight_bits for r in result.records if r.params)
    if not widths:
        return "no weights"
    parts = [f"{bits}-bit weights: {count} layer{'s' * (count != 1)}" for bits, count in sorted(widths.items())]
    return ", ".join(parts)


def _card(result) -> list[list[str]]:
    from .reports.format import si

    score, totals, track = result.score, result.totals, result.track
    freebie = "applied (32-bit params and multiplies counted at 16 bits)" if score.freebie else "not applied"
    if result.accuracy is None:
        quality = f"not measured (bar: {md(track.bar_text())})"
    else:
        quality = f"{md(track.compare_text(result.accuracy))} ({'meets' if result.meets_bar else 'misses'} the bar)"
    return [
        ["model", f"{md(result.model)} (input {md(result.input_text)})"],
        ["track", md(track.name)],
        ["rulebook", md(result.rulebook.name)],
        ["score", f"**{score.total:.6g}** = storage {score.storage_term:.4g} + ops {score.ops_term:.4g}"],
        ["params", f"{int(totals['params']):,} (nonzero {int(totals.get('nonzero_params', 0)):,})"],
        ["storage", f"{si(totals['storage'], 4)} 32-bit values ({si(4 * totals['storage'], 4)}B)"],
        ["ops", f"{si(totals['ops'], 4)} MicroNet ops"],
        ["MACs", si(totals.get("macs", 0), 4)],
        ["reference", f"{md(track.reference_model)}: {si(track.reference_params)} params, "
                      f"{si(track.reference_ops, 4)} ops"],
        ["quality", quality],
        ["freebie", freebie],
        ["precision", _precision(result)],
    ]


def render_markdown(result, top: int = 10) -> str:
    """The Markdown summary of ``result``: a score card table, then the
    ``top`` layers by share of the score (params, storage, ops, MACs, weight
    bits, share)."""
    from .reports.format import si

    lines = [f"### MicroNet audit: {md(result.model)}", ""]
    lines += _table(["figure", "value"], _card(result), ["---", "---"])
    rows = sorted((row for row in result.rows() if row["share"] > 0), key=lambda row: -row["share"])[:top]
    lines += ["", f"#### Top {len(rows)} layers by share of the score", ""]
    body = [[str(k), md(r["name"]), md(r["op"]), f"{r['params']:,}", si(r["storage"], 4), si(r["ops"], 4),
             si(r["macs"], 4), str(r["weight_bits"]) if r["params"] else "–", f"{100 * r['share']:.1f}%"]
            for k, r in enumerate(rows, 1)]
    lines += _table(["#", "layer", "op", "params", "storage", "ops", "MACs", "weight bits", "share"], body,
                    ["---:", "---", "---", "---:", "---:", "---:", "---:", "---:", "---:"])
    return "\n".join(lines) + "\n"


def write_markdown(result, path: str | os.PathLike, top: int = 10):
    """Write :func:`render_markdown` atomically; returns the path."""
    from .fileio import atomic_write_text

    return atomic_write_text(path, render_markdown(result, top))
