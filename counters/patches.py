"""Sliding-window patches: ``Tensor.unfold``, ``F.unfold`` / ``nn.Unfold`` and
``F.fold`` / ``nn.Fold`` (aten ``unfold``, ``im2col``, ``col2im``).

- ``x.unfold(dim, size, step)`` is a view of overlapping windows: free.
- ``F.unfold`` (im2col) copies each ``k``-window of ``[N, C, *spatial]`` into a
  column of ``[N, C*prod(k), L]``: a copy, free (the matmul that usually
  follows is counted by the matmul counter).
- ``F.fold`` (col2im) sums the columns back into ``[N, C, *output_size]``:
  every column value lands on one output position (those in the padding are
  dropped), so an output position reached by ``r`` values costs ``r - 1``
  adds. Blocks form a grid, so reach factorises by dimension:
  adds per ``(N, C)`` = ``prod(sum reach_d) - prod(positions reached_d)``.
"""
from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from torch import nn

from micronet.counters._common import aten_ops, distinct, is_int, lenient, ntuple, prod, unsupported, wrap_dim
from micronet.manager import hookimpl
from micronet.records import Counts, TensorInfo
from micronet.registry import Method, OpCall, collect, counter, free, shape_rule

aten = torch.ops.aten

WINDOWS = distinct(Method("unfold"), *aten_ops("unfold"))
IM2COL = distinct(nn.Unfold, F.unfold, *aten_ops("im2col"))
COL2IM = distinct(nn.Fold, F.fold, *aten_ops("col2im"))

views = free(*WINDOWS, *IM2COL)


def _window_args(call: OpCall, fold: bool) -> tuple[tuple[int, ...], ...]:
    """(output_size (fold only), kernel, dilation, padding, stride), 2-d, from a
    module's attributes or the function's arguments (aten orders them alike)."""
    m = call.module
    if m is not None:
        values = ([m.output_size] if fold else []) + [m.kernel_size, m.dilation, m.padding, m.stride]
    else:
        first = 1
        names = (["output_size"] if fold else []) + ["kernel_size", "dilation", "padding", "stride"]
        defaults = {"dilation": 1, "padding": 0, "stride": 1}
        values = [call.arg(first + i, name, defaults.get(name)) for i, name in enumerate(names)]
    out = tuple(ntuple(v, 2) for v in values)
    if any(not is_int(s) for group in out for s in group):
        raise unsupported("non-integer window arguments")
    return out


def _blocks(size: int, kernel: int, dilation: int, padding: int, stride: int) -> int:
    """Window positions along one dimension."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


@shape_rule(*WINDOWS)
@lenient
def shape_windows(call: OpCall) -> TensorInfo:
    """``x.unfold(dimension, size, step)``: that dim becomes the window count,
    a last dim of ``size`` is appended."""
    x = call.x
    dim, size, step = call.arg(1, "dimension"), call.arg(2, "size"), call.arg(3, "step")
    if not (is_int(size) and is_int(step)) or size < 0 or step <= 0:
        raise unsupported("unfold size and step")
    if x.ndim == 0:
        if size > 1:
            raise unsupported("window larger than a 0-d tensor")  # torch refuses
        return TensorInfo((size,), x.dtype)
    dim = wrap_dim(dim, x.ndim)
    if size > x.shape[dim]:
        raise unsupported("window larger than the dim")  # torch refuses
    shape = list(x.shape)
    shape[dim] = (x.shape[dim] - size) // step + 1
    return TensorInfo(tuple(shape) + (size,), x.dtype)


@shape_rule(*IM2COL)
@lenient
def shape_im2col(call: OpCall) -> TensorInfo:
    """``F.unfold(input [N,] C, H, W)`` -> ``[N,] C*kh*kw, L`` with ``L`` the window count."""
    x = call.x
    if x.ndim not in (3, 4):
        raise unsupported("unfold of other than 3-d or 4-d input")
    kernel, dilation, padding, stride = _window_args(call, fold=False)
    blocks = [_blocks(x.shape[-2 + d], kernel[d], dilation[d], padding[d], stride[d]) for d in range(2)]
    if min(blocks) < 1 or min(stride) < 1 or min(kernel) < 1 or min(dilation) < 1 or min(padding) < 0:
        raise unsupported("no window fits")  # torch refuses
    return TensorInfo(x.shape[:-3] + (x.shape[-3] * prod(kernel), prod(blocks)), x.dtype)


@shape_rule(*COL2IM)
@lenient
def shape_col2im(call: OpCall) -> TensorInfo:
    """``F.fold(input [N,] C*kh*kw, L)`` -> ``[N,] C, *output_size``; ``L`` must
    equal the window count of ``output_size``."""
    x = call.x
    if x.ndim not in (2, 3):
        raise unsupported("fold of other than 2-d or 3-d input")
    output_size, kernel, dilation, padding, stride = _window_args(call, fold=True)
    blocks = [_blocks(output_size[d], kernel[d], dilation[d], padding[d], stride[d]) for d in range(2)]
    if x.shape[-2] % prod(kernel) or x.shape[-1] != prod(blocks) or min(blocks) < 1:
        raise unsupported("fold input does not match its windows")  # torch refuses
    return TensorInfo(x.shape[:-2] + (x.shape[-2] // prod(kernel),) + output_size, x.dtype)


def _reach(size: int, kernel: int, dilation: int, padding: int, stride: int) -> tuple[int, int]:
    """(values landing inside, positions reached) along one dimension of a fold."""
    reach = [0] * size
    for block in range(_blocks(size, kernel, dilation, padding, stride)):
        for k in range(kernel):
            position = block * stride + k * dilation - padding
            if 0 <= position < size:
                reach[position] += 1
    return sum(reach), sum(r > 0 for r in reach)


@counter(*COL2IM, op="fold")
def count_col2im(call: OpCall) -> Counts:
    """``F.fold``: ``r - 1`` adds at each output position reached ``r`` times,
    per (batch, channel); see the module docstring."""
    output_size, kernel, dilation, padding, stride = _window_args(call, fold=True)
    landed, reached = zip(*(_reach(output_size[d], kernel[d], dilation[d], padding[d], stride[d])
                            for d in range(2)))
    planes = call.y.numel // prod(output_size)
    return Counts(adds=planes * (prod(landed) - prod(reached)))


@hookimpl
def micronet_register_counters():
    return collect(sys.modules[__name__])
