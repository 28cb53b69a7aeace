"""The shell of an HTML report: one self-contained document with the
stylesheet and script inlined (read from ``assets/`` with importlib.resources)
and data embedded as JSON that cannot close its ``<script>`` element."""
from __future__ import annotations

import datetime as _dt
import functools
import json
from importlib import resources
from typing import Any

from .json_report import clean
from .svg import esc

__all__ = ["document", "json_script", "asset"]


@functools.lru_cache(maxsize=None)
def asset(name: str) -> str:
    """The text of ``reports/assets/<name>`` (package data)."""
    return resources.files("micronet.reports").joinpath("assets", name).read_text(encoding="utf-8")


def json_script(element_id: str, data: Any) -> str:
    """``data`` as a JSON ``<script>`` block; ``<``, ``>`` and ``&`` are
    written as ``\\u003c``... so no string in it can end the element."""
    text = json.dumps(clean(data), separators=(",", ":"), ensure_ascii=False)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return f'<script type="application/json" id="{esc(element_id)}">{text}</script>'


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("micronet-toolkit")
    except Exception:  # not installed as a distribution (a source checkout)
        return "dev"


def document(title: str, kind: str, body: str, nav: list[tuple[str, str]] = ()) -> str:
    """A complete HTML page: ``body`` inside the report's frame, with a top
    bar naming ``kind`` ("audit", "pipeline") and links to ``nav`` anchors."""
    stamp = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z").strip()
    links = "".join(f'<a href="#{esc(anchor)}">{esc(label)}</a>' for anchor, label in nav)
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="generator" content="micronet-toolkit {esc(_version())}">'
        f"<title>{esc(title)}</title><style>{asset('report.css')}</style></head>"
        f'<body class="{esc(kind)}"><header class="topbar"><span class="brand">micronet</span>'
        f'<span class="kind">{esc(kind)} report</span><nav>{links}</nav>'
        f'<span class="stamp">generated {esc(stamp)} · micronet-toolkit {esc(_version())}</span></header>'
        f"<main>{body}</main><script>{asset('report.js')}</script></body></html>\n"
    )
