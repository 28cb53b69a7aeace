"""A model's example inputs: parsing, normalising and binding them to ``forward``.

An audit never computes, so an input is only a shape and a dtype. They are
written as:

- on the command line, ``--input [NAME=]SHAPE[:DTYPE]`` (repeatable:
  ``--input 1x3x224x224 --input attention_mask=1x128:int64``), or
  ``--inputs file.py:make`` (with ``--trust``: the function's return value
  is any of the API forms below);
- in the API, ``inputs=`` a tuple or list of items (positional inputs), a dict
  ``{name: item}`` (keyword inputs), or one item; an item is a shape
  (``(1, 3, 32, 32)`` or ``"1x3x32x32"``), a tensor (only its shape and dtype
  are read) or a ``(shape, dtype)`` pair (dtype a ``torch.dtype`` or a name of
  :data:`INPUT_DTYPES`).

A list of images (what torchvision's detectors take: ``model([img1, img2])``)
is one input: in the API a list of shapes or tensors inside ``inputs=``
(``inputs=[[(3, 320, 320), (3, 240, 400)]]``), on the command line shapes
joined by commas (``--input images=3x320x320,3x240x400``). Its
:class:`InputSpec` keeps each image's shape in ``images``; its ``shape`` is
their stack ``(N, C, max H, max W)``.

:func:`normalise` turns any of these into :class:`InputSpec` records,
:func:`bind` maps them onto the forward's parameters (positional in order,
keywords by name) as :class:`ModelInput` records. Parsing imports and runs
nothing, except :func:`load_inputs` (a user's file, only when trusted).
"""
from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from .errors import UsageError

__all__ = ["InputSpec", "ModelInput", "INPUT_DTYPES", "parse_input_shape", "parse_dtype", "parse_input",
           "normalise", "bind", "load_inputs", "dtype_name", "describe"]

#: dtype names accepted by ``--input-dtype``, ``--input NAME=SHAPE:DTYPE`` and ``(shape, dtype)`` pairs.
INPUT_DTYPES = {"float32": torch.float32, "float": torch.float32, "float16": torch.float16,
                "half": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64,
                "int64": torch.int64, "long": torch.int64, "int32": torch.int32, "int": torch.int32,
                "uint8": torch.uint8, "bool": torch.bool}

_HINT = "e.g. --input 1x3x224x224 --input attention_mask=1x128:int64"


@dataclass(frozen=True)
class InputSpec:
    """One input as written: ``name`` (None for a positional one), its shape
    (element counts per dimension) and dtype (None: the model's default)."""

    name: str | None
    shape: tuple[int, ...]
    dtype: torch.dtype | None = None
    images: tuple[tuple[int, ...], ...] = ()  # a list of images: each one's shape (``shape``: their stack)


@dataclass(frozen=True)
class ModelInput:
    """One input bound to a forward parameter: ``name`` is the parameter's,
    ``keyword`` whether it was given by name, ``index`` its position in the
    forward's signature (``self`` excluded); ``images``: for a list of
    images, each one's shape (``shape`` is then their stack)."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    keyword: bool = False
    index: int = 0
    images: tuple[tuple[int, ...], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """``{"name", "shape", "dtype"}`` for the JSON document (dtype as ``"int64"``;
        ``"images"``, each image's shape, for a list of images)."""
        data = {"name": self.name, "shape": list(self.shape), "dtype": dtype_name(self.dtype)}
        if self.images:
            data["images"] = [list(shape) for shape in self.images]
        return data


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.int64`` -> ``'int64'``."""
    return str(dtype).removeprefix("torch.")


def describe(inputs: Sequence[ModelInput]) -> str:
    """``'x 1x4, y 1x8 int64'``: the inputs in words (dtype shown when not float32)."""
    parts = []
    for item in inputs:
        dtype = "" if item.dtype == torch.float32 else f" {dtype_name(item.dtype)}"
        shape = ", ".join("x".join(map(str, s)) for s in ([item.shape] if not item.images else item.images))
        parts.append(f"{item.name} {'[' + shape + ']' if item.images else shape}{dtype}")
    return ", ".join(parts)


def parse_input_shape(value: str | Sequence[int]) -> tuple[int, ...]:
    """``'1x3x32x32'`` or ``(1, 3, 32, 32)`` -> a tuple of positive ints."""
    if isinstance(value, str):
        if len(value.split(",")) > 1 and all("x" in p.lower() for p in value.split(",") if p.strip()):
            raise UsageError(f"input shape {value!r} is a list of shapes: a list of images is an input "
                             "of its own, by the forward's parameter name",
                             hint="e.g. --input images=3x320x320,3x240x400 (a detector's list of images)")
        parts = value.lower().replace(",", "x").replace("*", "x").split("x")
        try:
            shape = tuple(int(p) for p in parts if p.strip())
        except ValueError:
            raise UsageError(f"input shape {value!r}: expected sizes joined by 'x'",
                             hint="e.g. --input 1x3x32x32") from None
    else:
        try:
            shape = tuple(value)
        except TypeError:
            raise UsageError(f"input shape {value!r}: expected a sequence of sizes",
                             hint="e.g. (1, 3, 32, 32) or '1x3x32x32'") from None
    if not shape or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape):
        raise UsageError(f"input shape {value!r}: every size must be a positive integer",
                         hint="e.g. --input 1x3x32x32")
    return shape


def parse_dtype(value: str | torch.dtype) -> torch.dtype:
    """A dtype, or a name of :data:`INPUT_DTYPES` (``'int64'``, ``'torch.int64'``)."""
    if isinstance(value, torch.dtype):
        return value
    name = value.strip().lower().removeprefix("torch.") if isinstance(value, str) else value
    if name not in INPUT_DTYPES:
        raise UsageError(f"input dtype {value!r} is not one of: {', '.join(INPUT_DTYPES)}",
                         hint="e.g. --input-dtype int64 for token ids")
    return INPUT_DTYPES[name]


def parse_input(text: str) -> InputSpec:
    """``'[NAME=]SHAPE[:DTYPE]'`` (one ``--input``) -> an :class:`InputSpec`."""
    name, sep, rest = text.partition("=")
    if not sep:
        name, rest = None, text
    else:
        name = name.strip()
        if not name.isidentifier():
            raise UsageError(f"--input {text!r}: {name!r} is not a parameter name", hint=_HINT)
    shape, sep, dtype = rest.partition(":")
    if sep and not dtype.strip():
        raise UsageError(f"--input {text!r}: nothing after ':'", hint=_HINT)
    dtype = parse_dtype(dtype) if sep else None
    parts = shape.split(",")
    if len(parts) > 1 and all("x" in p.lower() for p in parts if p.strip()):  # a list of images
        return image_list(name, [parse_input_shape(p) for p in parts if p.strip()], dtype)
    return InputSpec(name, parse_input_shape(shape), dtype)


def image_list(name: str | None, shapes: Sequence[tuple[int, ...]], dtype: torch.dtype | None = None) -> InputSpec:
    """A list of images (each a shape of one rank, equal but for the last two
    sizes) as one :class:`InputSpec`: ``images`` their shapes, ``shape``
    their stack ``(N, C, max H, max W)``."""
    shapes = [tuple(s) for s in shapes]
    hint = "e.g. inputs=[[(3, 320, 320), (3, 240, 400)]] or --input images=3x320x320,3x240x400"
    written = f"{name + ' ' if name else ''}[{', '.join('x'.join(map(str, s)) for s in shapes)}]"
    if not shapes:
        raise UsageError(f"input {written}: an empty list of images", hint=hint)
    first = shapes[0]
    odd = [s for s in shapes if len(s) != len(first) or len(s) < 3 or s[:-2] != first[:-2]]
    if odd:
        raise UsageError(f"input {written}: a list of images needs shapes (C, H, W) of one C; "
                         f"{'x'.join(map(str, odd[0]))} is not", hint=hint)
    stack = (len(shapes), *first[:-2], max(s[-2] for s in shapes), max(s[-1] for s in shapes))
    return InputSpec(name, stack, dtype, tuple(shapes))


def _is_shape(value: Any) -> bool:
    return isinstance(value, (tuple, list, torch.Size)) and bool(value) and \
        all(isinstance(s, int) and not isinstance(s, bool) for s in value)


def _is_pair(value: Any) -> bool:
    """``(shape, dtype)``: a dtype, or a word (a dtype name, never a shape such as ``'1x8'``), second."""
    second = value[1] if isinstance(value, (tuple, list)) and len(value) == 2 else None
    is_dtype = isinstance(second, torch.dtype) or (isinstance(second, str) and not second.strip()[:1].isdigit())
    return is_dtype and (_is_shape(value[0]) or isinstance(value[0], str))


def _is_item(value: Any) -> bool:
    return isinstance(value, (torch.Tensor, str)) or _is_shape(value) or _is_pair(value)


def _item(value: Any, name: str | None) -> InputSpec:
    """One input item (tensor, shape, shape text or (shape, dtype)) as a spec."""
    if isinstance(value, torch.Tensor):  # only its shape and dtype: nothing is read
        return InputSpec(name, parse_input_shape(tuple(value.shape)), value.dtype)
    if isinstance(value, str):
        spec = parse_input(value)
        if spec.name is not None and name is not None and spec.name != name:
            raise UsageError(f"input {name!r} is written {value!r}, naming {spec.name!r}",
                             hint="drop the NAME= part inside a dict of inputs")
        return InputSpec(name or spec.name, spec.shape, spec.dtype, spec.images)
    if _is_pair(value):
        return InputSpec(name, parse_input_shape(value[0]), parse_dtype(value[1]))
    if _is_shape(value):
        return InputSpec(name, parse_input_shape(value))
    if isinstance(value, (tuple, list)) and all(isinstance(v, torch.Tensor) or _is_shape(v) for v in value):
        specs = [_item(v, None) for v in value]  # a list of images: shapes or tensors
        dtypes = {s.dtype for s in specs}
        return image_list(name, [s.shape for s in specs], dtypes.pop() if len(dtypes) == 1 else None)
    raise UsageError(f"input {name + ' ' if name else ''}{value!r} is not a shape, a tensor or a "
                     "(shape, dtype) pair", hint="e.g. inputs=((1, 3, 32, 32), ((1, 128), 'int64'))")


def normalise(value: Any) -> tuple[InputSpec, ...]:
    """Any API form of ``inputs=`` -> :class:`InputSpec` records, positional first."""
    if isinstance(value, InputSpec):
        return (value,)
    if isinstance(value, Mapping):
        specs = []
        for name, item in value.items():
            if not isinstance(name, str) or not name.isidentifier():
                raise UsageError(f"input name {name!r} is not a parameter name",
                                 hint="key a dict of inputs by the forward's parameter names")
            specs.append(_item(item, name))
        return tuple(specs)
    if _is_item(value):
        return (_item(value, None),)
    if isinstance(value, (tuple, list)) and value:
        return tuple(v if isinstance(v, InputSpec) else _item(v, None) for v in value)
    raise UsageError(f"inputs={value!r}: expected a tuple of shapes or tensors, a dict of them, "
                     "or (shape, dtype) pairs", hint="e.g. inputs=((1, 4), (1, 8)) or inputs={'x': (1, 4)}")


_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
_NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def forward_parameters(model: nn.Module) -> list[inspect.Parameter]:
    """The parameters of ``model.forward`` (none when it has no readable signature)."""
    try:
        return list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return []


def bind(model: nn.Module, specs: Sequence[InputSpec], default_dtype: torch.dtype) -> tuple[ModelInput, ...]:
    """Map ``specs`` onto ``model.forward``'s parameters: positional ones in
    order, named ones by name. Every parameter without a default must get an
    input; an unknown name, a parameter given twice, or more positional
    inputs than the forward takes is a :class:`UsageError`."""
    params = forward_parameters(model)
    owner = f"{type(model).__name__}.forward"
    if not params:  # no readable signature: take the inputs as given, positionally
        return tuple(ModelInput(s.name or f"input{i}", s.shape, s.dtype or default_dtype, s.name is not None, i,
                                s.images)
                     for i, s in enumerate(specs))
    index = {p.name: i for i, p in enumerate(params)}
    positional = [p for p in params if p.kind in _POSITIONAL]
    bound: dict[str, ModelInput] = {}
    plain = [s for s in specs if s.name is None]
    if len(plain) > len(positional):
        raise UsageError(f"{len(plain)} positional inputs given, {owner} takes "
                         f"{len(positional)} ({', '.join(p.name for p in positional) or 'none'})",
                         hint="give fewer --input, or name them (--input NAME=SHAPE)")
    for spec, param in zip(plain, positional):
        bound[param.name] = ModelInput(param.name, spec.shape, spec.dtype or default_dtype, False, index[param.name],
                                       spec.images)
    named = {p.name for p in params if p.kind in _NAMED}
    for spec in specs:
        if spec.name is None:
            continue
        if spec.name not in named:
            raise UsageError(f"{owner} has no parameter {spec.name!r}; its parameters: "
                             f"{', '.join(sorted(named)) or 'none by name'}",
                             hint="name an input after one of the forward's parameters")
        if spec.name in bound:
            raise UsageError(f"input {spec.name!r} is given twice (positionally and by name, or twice by name)",
                             hint="give each forward parameter one --input")
        bound[spec.name] = ModelInput(spec.name, spec.shape, spec.dtype or default_dtype, True, index[spec.name],
                                      spec.images)
    missing = [p.name for p in params if p.kind in _POSITIONAL + _NAMED[1:]
               and p.default is inspect.Parameter.empty and p.name not in bound]
    if missing:
        needed = [p.name for p in params if p.kind in _POSITIONAL + _NAMED[1:]
                  and p.default is inspect.Parameter.empty]
        raise UsageError(f"{owner} needs {len(needed)} inputs ({', '.join(needed)}); "
                         f"{_given(bound)} given, missing {', '.join(missing)}",
                         hint="pass one --input per parameter (--input NAME=SHAPE[:DTYPE]), or inputs= in the "
                         "API; or wrap the model in a module whose forward takes one input and builds the others")
    return tuple(sorted(bound.values(), key=lambda m: m.index))


def _given(bound: Mapping[str, ModelInput]) -> str:
    return f"{len(bound)} ({', '.join(bound)})" if bound else "none"


def load_inputs(spec: str, *, trust: bool) -> Any:
    """Call ``file.py:FUNCTION`` or ``package.module:FUNCTION`` (no arguments) and
    return what it returns (any form :func:`normalise` takes). Runs that
    code, so only with ``trust``."""
    location, sep, attr = spec.rpartition(":")
    if not sep or not attr.isidentifier() or not location:
        raise UsageError(f"--inputs {spec!r}: expected file.py:FUNCTION or package.module:FUNCTION",
                         hint="e.g. --inputs make_inputs.py:make --trust")
    if not trust:
        raise UsageError(f"--inputs {spec!r} would run code from that {'file' if location.endswith('.py') else 'module'}",
                         hint="pass --trust only if you trust that code")
    if location.endswith(".py"):
        from .factories import _load_file_module

        path = Path(location).expanduser()
        if not path.is_file():
            raise UsageError(f"--inputs {spec!r}: no such file {location}", hint="check the path of the .py file")
        module = _load_file_module(path)
    else:
        try:
            module = importlib.import_module(location)
        except ImportError as error:
            raise UsageError(f"--inputs {spec!r}: cannot import {location} ({error})") from error
    function = getattr(module, attr, None)
    if not callable(function):
        raise UsageError(f"--inputs {spec!r}: {location} has no function {attr!r}")
    try:
        return function()
    except Exception as error:
        raise UsageError(f"--inputs {spec!r}: {attr}() failed ({type(error).__name__}: {error})",
                         hint="it takes no arguments and returns shapes, tensors, (shape, dtype) pairs or a dict") \
            from error
