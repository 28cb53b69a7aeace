"""Renderers: the same Result as a terminal table, JSON, CSV and HTML.

The HTML renderers (which need networkx) are imported on first use."""
from .csv_report import render_csv, write_csv
from .json_report import render_json, write_json
from .table import render_table, render_what_if

__all__ = ["render_table", "render_what_if", "render_json", "write_json", "render_csv", "write_csv",
           "render_audit_html", "render_pipeline_html", "write_audit_html", "write_pipeline_html"]

_HTML = ("render_audit_html", "render_pipeline_html", "write_audit_html", "write_pipeline_html")


def __getattr__(name):
    if name in _HTML:
        from . import html

        return getattr(html, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
