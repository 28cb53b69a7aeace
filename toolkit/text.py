"""Text that comes from models and users, made safe to show and to parse.

Layer and class names come from the model (``nn.Module.add_module`` accepts
any name without a dot), so a name can hold an escape sequence that retitles
the terminal (``ESC ] 0 ; ... BEL``), a carriage return that overwrites the
line, a line separator, or a right-to-left override that shows ``exe.txt``
for ``txt.exe``. :func:`printable` is the one place such characters are made
visible before any text reaches a terminal.
"""
from __future__ import annotations

import argparse

__all__ = ["printable", "positive_int"]

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(char: str) -> str:
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text: object) -> str:
    """``str(text)`` with every character that is not printable written as
    its Python escape, so the result is one visible line.

    Escaped: every C0 and C1 control (``ESC`` -> ``\\x1b``, ``BEL`` ->
    ``\\x07``, ``CR``/``LF``/``TAB`` -> ``\\r``/``\\n``/``\\t``, ``DEL``),
    the line and paragraph separators (``\\u2028``, ``\\u2029``), the
    bidirectional overrides, embeddings, isolates and marks (``\\u202e``,
    ``\\u2066``-``\\u2069``, ``\\u200f``, ...) and every other character
    :meth:`str.isprintable` refuses (format characters, non-ASCII spaces,
    surrogates, unassigned code points). The space and every printable
    character, accented or not, stay as they are; backslashes are not
    doubled, so ``printable(printable(s)) == printable(s)``.
    """
    text = str(text)
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else _escape(char) for char in text)


def positive_int(text: str) -> int:
    """An argparse ``type``: a whole number of at least 1 (``--top 5``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {value}")
    return value
