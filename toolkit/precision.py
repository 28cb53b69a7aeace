"""Bit widths of weights, activations and accumulators, per layer.

Sources, strongest first: the user's overrides (``--bits`` / ``--act-bits``
glob patterns on layer names, the last match wins: an explicit request by
name), then what the model declares (:func:`micronet.bits.set_bits`, the one
way a plugin sets widths), then the tensors' dtypes (fp16/bf16 are 16 bits,
int8 and float8 are 8, torch.int4 / uint4 are 4). The accumulator: the declared width, else ``--accumulator-bits``.
"""
from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import torch

from .errors import UsageError

__all__ = ["BitOverride", "Precision", "parse_bits", "dtype_bits", "MIN_BITS", "MAX_BITS"]

MIN_BITS, MAX_BITS = 1, 64

_DTYPE_BITS = {
    torch.float64: 64, torch.float32: 32, torch.float16: 16, torch.bfloat16: 16,
    torch.int64: 64, torch.int32: 32, torch.int16: 16, torch.int8: 8, torch.uint8: 8,
    torch.qint8: 8, torch.quint8: 8, torch.qint32: 32, torch.bool: 1,
}
for _name in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu",
              "float4_e2m1fn_x2"):  # float4_x2: one element is a byte packing two 4-bit values
    if hasattr(torch, _name):
        _DTYPE_BITS[getattr(torch, _name)] = 8
for _bits in range(1, 8):  # torch.uint1..uint7 / int1..int7: the values' own width, not the byte
    for _name in (f"uint{_bits}", f"int{_bits}"):
        if hasattr(torch, _name):
            _DTYPE_BITS[getattr(torch, _name)] = _bits


def dtype_bits(dtype: torch.dtype) -> int:
    """Bits of one value of ``dtype`` (32 for unknown dtypes)."""
    return _DTYPE_BITS.get(dtype, 32)


@dataclass(frozen=True, slots=True)
class BitOverride:
    """``pattern=bits``: layers whose name matches the glob get ``bits``."""

    pattern: str
    bits: int

    def matches(self, name: str) -> bool:
        return fnmatch.fnmatchcase(name, self.pattern)


_OVERRIDE = re.compile(r"^\s*(?P<pattern>[^=]+?)\s*=\s*(?P<bits>[^=]+?)\s*$")


def parse_bits(texts: Iterable[str], what: str = "--bits") -> tuple[BitOverride, ...]:
    """Parse ``'features.*=8'`` items (also comma-separated); raises UsageError.

    Refused, each with the form expected: an empty item, a missing pattern
    or width, a width that is not a whole number from ``MIN_BITS`` to
    ``MAX_BITS`` (ASCII digits), and a glob with an unclosed ``[``.
    """
    overrides: list[BitOverride] = []
    for text in texts:
        if not isinstance(text, str):
            raise UsageError(f"{what} takes PATTERN=BITS text, got {type(text).__name__} {text!r}",
                             hint=_example(what))
        overrides += [_parse_item(item.strip(), text, what) for item in text.split(",")]
    return tuple(overrides)


def _example(what: str) -> str:
    return f"e.g. {what} 'features.*=8' or {what} '*=16'"


def _parse_item(item: str, text: str, what: str) -> BitOverride:
    if not item:
        raise UsageError(f"{what} {text!r}: an empty item where PATTERN=BITS was expected", hint=_example(what))
    match = _OVERRIDE.match(item)
    if match is None:
        raise UsageError(f"{what} {item!r}: expected PATTERN=BITS", hint=_example(what))
    raw = match["bits"]
    if not (raw.isascii() and raw.isdigit()) or not MIN_BITS <= int(raw) <= MAX_BITS:
        raise UsageError(f"{what} {item!r}: bit width must be a whole number from "
                         f"{MIN_BITS} to {MAX_BITS}, got {raw!r}", hint=_example(what))
    _check_glob(match["pattern"], item, what)
    return BitOverride(match["pattern"], int(raw))


def _check_glob(pattern: str, item: str, what: str) -> None:
    """Refuse a ``[`` that no ``]`` closes (fnmatch would silently match it
    literally). As in fnmatch, a ``]`` right after ``[`` or ``[!`` is a member."""
    start = pattern.find("[")
    while start >= 0:
        end = start + 1
        if pattern.startswith("!", end):
            end += 1
        if pattern.startswith("]", end):
            end += 1
        end = pattern.find("]", end)
        if end < 0:
            raise UsageError(f"{what} {item!r}: the '[' at position {start + 1} of the pattern is never closed",
                             hint="a set is written [abc] or [0-9]; write [[] for a literal '['")
        start = pattern.find("[", end + 1)


def check_bits(bits: int, what: str) -> int:
    """Validate one bit width given in Python (not parsed from text)."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise UsageError(f"{what} must be a whole number from {MIN_BITS} to {MAX_BITS}, got {bits!r}")
    return bits


def _last_match(overrides: Sequence[BitOverride], name: str) -> int | None:
    for override in reversed(overrides):
        if override.matches(name):
            return override.bits
    return None


@dataclass(frozen=True, slots=True)
class Precision:
    """Resolves the three bit widths of a layer from metadata, overrides and dtypes."""

    weight_overrides: tuple[BitOverride, ...] = ()
    act_overrides: tuple[BitOverride, ...] = ()
    accumulator_bits: int = 32

    def weight_bits(self, name: str, declared: Mapping[str, int], param_dtype: torch.dtype | None) -> int:
        """Bits of this layer's stored parameters (``declared``: :func:`micronet.bits.bits_of`)."""
        bits = _last_match(self.weight_overrides, name)
        if bits is not None:
            return bits
        if "weight" in declared:
            return int(declared["weight"])
        return dtype_bits(param_dtype) if param_dtype is not None else 32

    def input_bits(self, name: str, declared: Mapping[str, int], input_dtype: torch.dtype | None) -> int:
        """Bits of this layer's input activations."""
        bits = _last_match(self.act_overrides, name)
        if bits is not None:
            return bits
        if "input" in declared:
            return int(declared["input"])
        if input_dtype is None or not (input_dtype.is_floating_point or input_dtype == torch.qint8
                                       or input_dtype == torch.quint8):
            return 32  # integer index tensors and sizes are not activations
        return dtype_bits(input_dtype)

    def acc_bits(self, declared: Mapping[str, int]) -> int:
        """Bits of the dot products' accumulator."""
        return int(declared.get("accumulator", self.accumulator_bits))

    def unmatched(self, names: Iterable[str]) -> list[str]:
        """Override patterns that match no layer name (worth a warning)."""
        names = list(names)
        return [o.pattern for o in self.weight_overrides + self.act_overrides
                if not any(o.matches(n) for n in names)]
