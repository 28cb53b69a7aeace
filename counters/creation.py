"""Making tensors, and the checks compilers leave in graphs: free.

Constructors (``torch.zeros``, ``arange``, ``eye``, ``linspace`` ... and their
aten forms) compute constants, not functions of the input: free, as RULES
charges only the arithmetic applied to an input. On the fx path a call with
no tensor argument is evaluated for real by the walker, so these need no
shape rule; inside an exported graph or a meta-executed module they appear as
aten ops, priced here. ``meshgrid``, ``one_hot`` and ``repeat_interleave``
take tensors and only place or copy values: free, with shape rules.

Checks (``aten._assert_tensor_metadata``, ``_assert_scalar``,
``sym_constrain_range``, ...), which ``torch.export`` inserts, compute nothing
the model returns.
"""
from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

from micronet.counters._common import aten_ops, distinct, is_int, lenient, unsupported, wrap_dim
from micronet.manager import hookimpl
from micronet.records import TensorInfo
from micronet.registry import Method, OpCall, collect, free, shape_rule

aten = torch.ops.aten

CONSTRUCTORS = ("zeros", "ones", "empty", "full", "arange", "eye", "linspace", "logspace",
                "empty_strided", "tril_indices", "triu_indices")  # scalar_tensor: see indexing
CREATE = distinct(*(getattr(torch, name, None) for name in CONSTRUCTORS), *aten_ops(*CONSTRUCTORS))
CHECKS = aten_ops("_assert_tensor_metadata", "_assert_scalar", "_assert_async", "_functional_assert_async",
                  "sym_constrain_range", "sym_constrain_range_for_size")
MESHGRID = distinct(torch.meshgrid, *aten_ops("meshgrid"))
ONE_HOT = distinct(F.one_hot, *aten_ops("one_hot"))
REPEAT_INTERLEAVE = distinct(torch.repeat_interleave, Method("repeat_interleave"),
                             *aten_ops("repeat_interleave.self_int"))

constants = free(*CREATE, *CHECKS, op="constant")
placements = free(*MESHGRID, *ONE_HOT, *REPEAT_INTERLEAVE)


@shape_rule(*MESHGRID)
@lenient
def shape_meshgrid(call: OpCall) -> tuple[TensorInfo, ...]:
    """``meshgrid(*tensors, indexing='ij')``: one grid per 0-d or 1-d input,
    each of shape (n1, n2, ...); ``'xy'`` swaps the first two sizes."""
    tensors = call.args[0] if len(call.args) == 1 and isinstance(call.args[0], (list, tuple)) else call.args
    if not tensors or not all(isinstance(t, TensorInfo) and t.ndim <= 1 for t in tensors):
        raise unsupported("meshgrid of other than 0-d or 1-d tensors")
    if len({t.dtype for t in tensors}) != 1:
        raise unsupported("meshgrid of mixed dtypes")  # torch refuses
    sizes = [t.shape[0] if t.ndim else 1 for t in tensors]
    indexing = call.kwargs.get("indexing", "ij")
    if indexing not in ("ij", "xy"):
        raise unsupported(f"meshgrid indexing {indexing!r}")
    if indexing == "xy" and len(sizes) >= 2:
        sizes[0], sizes[1] = sizes[1], sizes[0]
    return tuple(TensorInfo(tuple(sizes), t.dtype) for t in tensors)


@shape_rule(*ONE_HOT)
@lenient
def shape_one_hot(call: OpCall) -> TensorInfo:
    """``one_hot(indices, num_classes)``: int64 ``indices.shape + (num_classes,)``;
    without ``num_classes`` the size depends on the data (left to meta execution)."""
    x = call.x
    classes = call.arg(1, "num_classes", -1)
    if x.dtype != torch.int64 or not is_int(classes) or classes < 0:
        raise unsupported("one_hot without num_classes, or of non-int64 indices")
    return TensorInfo(x.shape + (classes,), torch.int64)


@shape_rule(*REPEAT_INTERLEAVE)
@lenient
def shape_repeat_interleave(call: OpCall) -> TensorInfo:
    """``repeat_interleave(x, repeats: int, dim=None)``: each element ``repeats``
    times along ``dim`` (flattened without one); tensor repeats depend on data."""
    x, repeats, dim = call.x, call.arg(1, "repeats"), call.arg(2, "dim", None)
    if not is_int(repeats) or repeats < 0:
        raise unsupported("repeat_interleave with tensor repeats")
    if dim is None:
        return TensorInfo((x.numel * repeats,), x.dtype)
    if not x.ndim:
        raise unsupported("repeat_interleave along a dim of a 0-d tensor")
    dim = wrap_dim(dim, x.ndim)
    return TensorInfo(tuple(s * repeats if i == dim else s for i, s in enumerate(x.shape)), x.dtype)


@hookimpl
def micronet_register_counters():
    return collect(sys.modules[__name__])
