"""Report sections contributed by plugins (``micronet_register_report_sections``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

__all__ = ["ReportSection", "render_sections"]


@dataclass(frozen=True)
class ReportSection:
    """A titled block of (label, value) lines computed from a Result.

    ``render(result)`` returns the lines, or an empty list when the section
    has nothing to say about this result; it must not modify the result.
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
