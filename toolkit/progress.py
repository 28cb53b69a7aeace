"""Progress bars on the terminal: tqdm on stderr, or nothing.

A bar is drawn only when it is asked for (the CLI asks unless ``--quiet``),
stderr is a terminal (not a log file or CI) and tqdm is installed (the
``distributed`` and ``test`` extras install it); otherwise the same calls
show nothing. Used by sweeps (:mod:`micronet.sweep`, evaluations) and by
training (:mod:`micronet.training.train`, the batches of an epoch).
"""
from __future__ import annotations

import sys

__all__ = ["progress_bar"]


class _NoBar:
    """What :func:`progress_bar` returns when no bar is drawn: the same calls, doing nothing."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, text: str = "", refresh: bool = True) -> None:
        pass


def progress_bar(total: int, label: str, enabled: bool, unit: str = "eval"):
    """A tqdm bar of ``total`` ``unit``\\ s on stderr, named ``label``, when
    ``enabled``, stderr is a terminal and tqdm is installed; else an object
    with the same ``update(n)`` and ``set_postfix_str(text)`` that shows
    nothing. Use it in a ``with``: the bar is erased on leaving."""
    if not enabled or not sys.stderr.isatty():
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, desc=label, unit=unit, file=sys.stderr, leave=False, dynamic_ncols=True)
