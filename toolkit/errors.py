"""The one error hierarchy of micronet.

Every failure a user can cause is a :class:`MicronetError` whose message is one
line saying what is wrong, expected versus got, and a hint when there is one.
The CLI prints that line (exit code 2 for :class:`UsageError`, 1 otherwise) and
shows the traceback only with ``--debug``.
"""
from __future__ import annotations

__all__ = [
    "MicronetError",
    "UsageError",
    "SpecError",
    "TraceError",
    "CounterError",
    "PluginError",
    "CompressionError",
    "first_line",
]


def first_line(error: BaseException, limit: int | None = None) -> str:
    """The first line of ``error``'s message (at most ``limit`` characters), for
    a one-line message quoting what a library raised."""
    lines = str(error).strip().splitlines()
    return lines[0][:limit] if lines else ""


class MicronetError(Exception):
    """Base of every error micronet raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None):
        self.hint = hint
        super().__init__(f"{message} (hint: {hint})" if hint else message)


class UsageError(MicronetError):
    """The user asked for something malformed: a bad option, shape or bit width."""

    exit_code = 2


class SpecError(UsageError):
    """A model spec that does not resolve to a model."""


class TraceError(MicronetError):
    """Neither torch.fx nor torch.export could capture the model."""


class CounterError(MicronetError):
    """A counter failed on a node, or a node has no counter under ``--strict``."""


class PluginError(MicronetError):
    """A plugin failed to load or registered something invalid."""


class CompressionError(MicronetError):
    """A compression step failed; the input model is left untouched."""
