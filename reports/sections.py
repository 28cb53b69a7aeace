"""Report sections contributed by plugins (``micronet_register_report_sections``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

__all__ = ["ReportSection", "render_sections", "sections_document"]


@dataclass(frozen=True)
class ReportSection:
    """A titled block of (label, value) lines computed from a Result.

    ``render(result)`` receives a :class:`~micronet.audit.Result` (its
    ``records``, per-layer ``layers`` as (record, cost) pairs, ``score``,
    ``totals``, ``track``, ``accuracy``) and returns the lines as pairs of
    strings, or an empty list when the section has nothing to say about this
    result; it must not modify the result. A section that raises shows its
    error in place of its lines. ``name`` is unique among sections
    (``replace=True`` overrides an earlier one); ``title`` heads the block in
    the terminal table, keys it in ``--json`` and ``history.json``
    (``"sections": {title: [[label, value], ...]}``) and in the HTML page.
    """

    name: str
    title: str
    render: Callable[[Any], list[tuple[str, str]]]
    replace: bool = False


def render_sections(result, sections: Mapping[str, ReportSection]) -> list[tuple[str, list[tuple[str, str]]]]:
    """(title, lines) of every section with something to say, in registration
    order; a section that raises shows its error instead of breaking the report."""
    rendered = []
    for section in sections.values():
        try:
            lines = [(str(label), str(value)) for label, value in section.render(result)]
        except Exception as error:
            lines = [("error", f"section {section.name!r} failed: {type(error).__name__}: {error}")]
        if lines:
            rendered.append((section.title, lines))
    return rendered


def sections_document(result, sections: Mapping[str, ReportSection]) -> dict[str, list[tuple[str, str]]]:
    """``{title: [(label, value), ...]}``: the ``"sections"`` entry of a JSON
    document (``--json``, each entry of ``history.json``)."""
    return {title: lines for title, lines in render_sections(result, sections)}
