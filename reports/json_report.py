"""The audit as JSON (the format of ``--json`` and ``Result.to_dict()``)."""
from __future__ import annotations

import json
import math
import os

from micronet.fileio import atomic_write_text

from .sections import sections_document


def clean(value):
    """Floats that are whole numbers become ints; NaN/inf become null."""
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return int(value) if value.is_integer() and abs(value) < 2**63 else value
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


def render_json(result, what_if=None, sections=None) -> str:
    """JSON text of ``result.to_dict()``, plus ``what_if`` and plugin
    ``sections`` (``{title: [[label, value], ...]}``) when given."""
    document = result.to_dict()
    if what_if is not None:
        document["what_if"] = what_if.to_dict()
    if sections:
        document["sections"] = sections_document(result, sections)
    return json.dumps(clean(document), indent=1)


def write_json(result, path: str | os.PathLike, what_if=None, sections=None):
    """Write the JSON report atomically; returns the path."""
    return atomic_write_text(path, render_json(result, what_if, sections) + "\n")
