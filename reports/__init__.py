"""Renderers: the same Result as a terminal table, JSON, CSV (HTML: issue 4)."""
from .csv_report import render_csv, write_csv
from .json_report import render_json, write_json
from .table import render_table, render_what_if

__all__ = ["render_table", "render_what_if", "render_json", "write_json", "render_csv", "write_csv"]
