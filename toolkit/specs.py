"""Model specs: how they are written and split, and what they resolve to.

A spec is ``NAME``, ``torchvision:NAME``, ``micronet:NAME``, ``transformers:CLASS``,
``package.module:factory``, ``path/to/file.py:factory`` or a saved file, each
with ``?key=value&...`` keyword arguments (see :mod:`micronet.resolve`).
Keyword values are Python literals (``ast.literal_eval``: ints, floats,
tuples, quoted strings), ``true`` / ``false`` / ``none`` in any case, and plain
strings otherwise; ``%26`` and friends are URL-unquoted. Parsing imports and
runs nothing. :class:`ModelEntry` is a built-in model a plugin registers,
:class:`ResolvedModel` what :func:`micronet.resolve.resolve_model` returns.
"""
from __future__ import annotations

import ast
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping
from urllib.parse import unquote

from torch import nn

from .errors import SpecError

__all__ = ["ModelEntry", "ResolvedModel", "parse_spec", "parse_value", "HINT_SPEC", "DOTTED", "SAVED_SUFFIXES"]

SAVED_SUFFIXES = frozenset({".pt", ".pth", ".pt2", ".pkl", ".pickle", ".bin", ".ckpt"})
PREFIXES = ("torchvision", "micronet", "transformers")
WORDS = {"true": True, "false": False, "none": None, "null": None}
DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
HINT_SPEC = ("write NAME, torchvision:NAME, micronet:NAME, package.module:factory, "
             "path/to/file.py:factory or a saved .pt/.pt2 file, with ?key=value&... for arguments")


@dataclass(frozen=True)
class ModelEntry:
    """A built-in model, registered by ``micronet_register_models``.

    ``factory(**kwargs)`` returns an ``nn.Module``; ``input_shape`` is its
    default input (batch 1) when the model has one; a later plugin may
    override an entry of the same name with ``replace=True``.
    """

    name: str
    factory: Callable[..., nn.Module]
    description: str = ""
    input_shape: tuple[int, ...] | None = None
    replace: bool = False


@dataclass(frozen=True)
class ResolvedModel:
    """A model built from a spec, in ``eval()`` mode, and where it came from."""

    model: nn.Module
    spec: str
    name: str
    source: str
    kwargs: Mapping[str, object]
    on_meta: bool
    input_shape: tuple[int, ...] | None
    exported: object | None = None



def parse_spec(spec: str) -> tuple[str, str, dict]:
    """Split ``spec`` into ``(scheme, name, kwargs)``.

    Schemes: ``torchvision``, ``micronet`` and ``transformers`` (the prefix is dropped from the
    name), ``python`` (name ``package.module:factory``), ``file`` (name
    ``path.py:factory``), ``path`` (a saved file) and ``name`` (a bare name:
    torchvision first, then the built-ins). Raises :class:`SpecError`.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise SpecError(f"empty model spec {spec!r}", hint=HINT_SPEC)
    head, _, query = spec.strip().partition("?")
    scheme, name = _split_scheme(head.strip())
    return scheme, name, _parse_query(query, spec)


def _split_scheme(head: str) -> tuple[str, str]:
    prefix, sep, rest = head.partition(":")
    if sep and prefix in PREFIXES:
        if not DOTTED.fullmatch(rest):
            raise SpecError(f"bad model name {rest!r} after '{prefix}:'", hint=f"write {prefix}:NAME")
        return prefix, rest
    location, sep, attr = head.rpartition(":")
    if sep and DOTTED.fullmatch(attr):
        if location.endswith(".py"):
            return "file", head
        if DOTTED.fullmatch(location):
            return "python", head
        raise SpecError(f"bad model spec {head!r}: {location!r} is neither a module name nor a .py file",
                        hint="write package.module:factory or path/to/file.py:factory")
    if head.endswith(".py"):
        raise SpecError(f"model spec {head!r} names a Python file but no factory",
                        hint=f"write {head}:FACTORY, the function or class that builds the model")
    if Path(head).suffix in SAVED_SUFFIXES or "/" in head or os.sep in head:
        return "path", head
    if DOTTED.fullmatch(head):
        return "name", head
    if Path(head).is_file():
        return "path", head
    raise SpecError(f"bad model spec {head!r}", hint=HINT_SPEC)


def _parse_query(query: str, spec: str) -> dict:
    kwargs: dict[str, object] = {}
    for item in query.split("&") if query else ():
        if not item:
            continue
        key, sep, raw = item.partition("=")
        key = unquote(key).strip()
        if not sep or not key.isidentifier():
            raise SpecError(f"bad keyword argument {item!r} in spec {spec!r}",
                            hint="write NAME?key=value&key2=value2")
        if key in kwargs:
            raise SpecError(f"keyword argument {key!r} given twice in spec {spec!r}")
        kwargs[key] = parse_value(unquote(raw))
    return kwargs


def parse_value(text: str) -> object:
    """A keyword value: ``true``/``false``/``none`` (any case), a Python
    literal, or else the text itself as a string."""
    text = text.strip()
    if text.lower() in WORDS:
        return WORDS[text.lower()]
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text
