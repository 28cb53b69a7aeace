"""Per-layer rows as CSV, one row per node, units in the header."""
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
    ("share", "share_of_score [fraction]"), ("reason", "reason"),
)


def _cell(value):
    if isinstance(value, list):
        return ";".join("x".join(map(str, v)) if isinstance(v, list) else str(v) for v in value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def render_csv(result) -> str:
    """CSV text of ``result.rows()``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([header for _, header in COLUMNS])
    for row in result.rows():
        writer.writerow([_cell(row[key]) for key, _ in COLUMNS])
    return buffer.getvalue()


def write_csv(result, path: str | os.PathLike):
    """Write the CSV report atomically; returns the path."""
    return atomic_write_text(path, render_csv(result))
