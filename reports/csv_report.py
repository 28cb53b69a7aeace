"""Per-layer rows as CSV, one row per node, units in the header.

Names come from the model, so a text cell could be a spreadsheet formula
(``=HYPERLINK(...)``). Following OWASP's advice on CSV injection, a text
cell starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return
gets a leading single quote, which spreadsheets show as text; numbers,
negative ones included, stay numbers.
"""
from __future__ import annotations

import csv
import io
import os

from micronet.fileio import atomic_write_text

#: (row key, CSV header with its unit)
COLUMNS = (
    ("name", "name"), ("op", "op"), ("status", "status"), ("target", "target"),
    ("input_shapes", "input_shapes"), ("output_shapes", "output_shapes"),
    ("params", "params [elements]"), ("nonzero_params", "nonzero_params [elements]"),
    ("weight_sparsity", "weight_sparsity [fraction]"),
    ("storage", "storage [32-bit equivalents]"),
    ("mults", "mults [ops]"), ("adds", "adds [ops]"), ("other_ops", "other_ops [ops]"),
    ("ops", "ops [MicroNet 32-bit ops]"), ("macs", "macs [multiply-accumulates]"),
    ("weight_bits", "weight_bits"), ("input_bits", "input_bits"), ("accumulator_bits", "accumulator_bits"),
    ("share", "share_of_score [fraction]"), ("rule", "rule"), ("plugin", "plugin"), ("reason", "reason"),
)


#: First characters that make a spreadsheet read a cell as a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value):
    if isinstance(value, list):
        return ";".join("x".join(map(str, v)) if isinstance(v, list) else str(v) for v in value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def defuse(value):
    """``value`` with a leading ``'`` when it is text a spreadsheet would
    evaluate (``'=HYPERLINK(...)``); numbers and other text as they are."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def render_csv(result) -> str:
    """CSV text of ``result.rows()``.

    Lines end in ``\n``, so the csv module quotes a cell holding ``\n`` but
    not one holding a lone ``\r``, where a spreadsheet would start a new row
    (whose first cell could be a formula): a row with a ``\r`` anywhere
    quotes all its text cells.
    """
    buffer = io.StringIO()
    plain = csv.writer(buffer, lineterminator="\n")
    quoted = csv.writer(buffer, lineterminator="\n", quoting=csv.QUOTE_NONNUMERIC)
    plain.writerow([header for _, header in COLUMNS])
    for row in result.rows():
        cells = [defuse(_cell(row[key])) for key, _ in COLUMNS]
        has_cr = any(isinstance(cell, str) and "\r" in cell for cell in cells)
        (quoted if has_cr else plain).writerow(cells)
    return buffer.getvalue()


def write_csv(result, path: str | os.PathLike):
    """Write the CSV report atomically; returns the path."""
    return atomic_write_text(path, render_csv(result))
