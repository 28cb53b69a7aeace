"""Small shape helpers shared by the counter families (no registrations here)."""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import torch

from micronet.records import TensorInfo


def ntuple(value, n: int) -> tuple[int, ...]:
    """``3`` -> ``(3, 3)``; a sequence is returned as a tuple unchanged."""
    if isinstance(value, (list, tuple)):
        if len(value) == 1 and n > 1:
            return tuple(value) * n
        return tuple(value)
    return (value,) * n


def prod(values: Iterable[int]) -> int:
    """Product of integers (1 for an empty sequence)."""
    return math.prod(values)


def broadcast_shapes(*shapes: Sequence[int]) -> tuple[int, ...]:
    """NumPy broadcasting of shapes (raises on mismatch, like torch)."""
    return tuple(torch.broadcast_shapes(*[torch.Size(s) for s in shapes]))


def like(x: TensorInfo, shape: Sequence[int] | None = None, dtype: torch.dtype | None = None) -> TensorInfo:
    """A TensorInfo with ``x``'s dtype (or ``dtype``) and ``shape`` (or x's)."""
    return TensorInfo(tuple(x.shape if shape is None else shape), dtype or x.dtype)


def result_dtype(*values) -> torch.dtype:
    """Type promotion of tensor and scalar operands, as torch does it."""
    tensors = [v for v in values if isinstance(v, TensorInfo)]
    if not tensors:
        return torch.get_default_dtype()
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    if any(isinstance(v, float) for v in values) and not dtype.is_floating_point and not dtype.is_complex:
        dtype = torch.get_default_dtype()
    return dtype


def pooled_size(size: int, kernel: int, stride: int, padding: int, dilation: int = 1,
                ceil_mode: bool = False) -> int:
    """Output length of a convolution or pooling window along one dimension."""
    span = dilation * (kernel - 1) + 1
    numerator = size + 2 * padding - span
    if ceil_mode:
        out = -(-numerator // stride) + 1
        # the last window must start inside the input or left padding (torch's rule)
        if (out - 1) * stride >= size + padding:
            out -= 1
        return out
    return numerator // stride + 1
