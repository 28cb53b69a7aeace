"""Ops that move, copy or describe values without arithmetic: free.

They are recorded (status "free") and need shape rules so that the walker
never has to run them on meta tensors.

Layout ops: view, reshape, flatten, unflatten, squeeze, unsqueeze, permute,
transpose, t, movedim, contiguous, expand, repeat, tile, cat, stack, chunk,
split, unbind, clone, detach, casts between formats exactly representable in
fp32 (RULES: free) and the ``*_like`` / ``new_*`` constructors. They change
how a tensor is indexed and compute no value. Indexing, padding, selections
and value permutations live in :mod:`micronet.counters.indexing`, which also
says why a permutation is free here and counted for channel and pixel shuffles.

Dropout in all its forms (``nn.Dropout*``, ``F.dropout*``, ``torch.dropout``,
aten's) and ``torchvision.ops.StochasticDepth`` are the identity at
inference; ``nn.Identity`` returns its input. Size queries (``x.size()``,
``x.shape``, ``x.dim()``, ``x.numel()``, ``len(x)``) return ``torch.Size`` /
``int`` values.
"""
from __future__ import annotations

import builtins
import sys
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from micronet.counters._common import (aten_ops, bare_name, distinct, first_tensor, ints, is_int, lenient, like,
                                       methods, packet, prod, promote, unsupported, wrap_dim)
from micronet.manager import hookimpl
from micronet.records import TensorInfo
from micronet.registry import Lazy, Method, OpCall, collect, free, shape_rule

aten = torch.ops.aten


# --------------------------------------------------------------------- targets

VIEW = distinct(*methods("view"), *aten_ops("view", "_unsafe_view", "view_copy"))
RESHAPE = distinct(torch.reshape, *methods("reshape"), *aten_ops("reshape", "_reshape_alias"))
AS = distinct(*methods("view_as", "reshape_as", "expand_as"),
              *aten_ops("view_as", "reshape_as", "expand_as"))
FLATTEN = distinct(nn.Flatten, torch.flatten, *methods("flatten"), *aten_ops("flatten"))
UNFLATTEN = distinct(nn.Unflatten, torch.unflatten, *methods("unflatten"), *aten_ops("unflatten"))
PERMUTE = distinct(torch.permute, *methods("permute"), *aten_ops("permute", "permute_copy"))
TRANSPOSE = distinct(torch.transpose, torch.swapaxes, torch.swapdims,
                     *methods("transpose", "transpose_", "swapaxes", "swapdims"),
                     *aten_ops("transpose", "transpose_", "transpose_copy", "swapaxes"))
MOVEDIM = distinct(torch.movedim, torch.moveaxis, *methods("movedim", "moveaxis"), *aten_ops("movedim"))
T = distinct(torch.t, *methods("t", "t_"), *aten_ops("t", "t_", "t_copy"))
SQUEEZE = distinct(torch.squeeze, *methods("squeeze", "squeeze_"),
                   *aten_ops("squeeze", "squeeze_", "squeeze_copy"))
UNSQUEEZE = distinct(torch.unsqueeze, *methods("unsqueeze", "unsqueeze_"),
                     *aten_ops("unsqueeze", "unsqueeze_", "unsqueeze_copy"))
EXPAND = distinct(torch.broadcast_to, *methods("expand", "broadcast_to"),
                  *aten_ops("expand", "expand_copy", "broadcast_to"))
REPEAT = distinct(*methods("repeat"), *aten_ops("repeat"))
TILE = distinct(torch.tile, *methods("tile"), *aten_ops("tile"))
CAT = distinct(torch.cat, torch.concat, torch.concatenate, *aten_ops("cat", "concat", "concatenate"))
STACK = distinct(torch.stack, *aten_ops("stack"))
CHUNK = distinct(torch.chunk, *methods("chunk"), *aten_ops("chunk"))
SPLIT = distinct(torch.split, torch.split_with_sizes, *methods("split", "split_with_sizes"),
                 *aten_ops("split.Tensor", "split.sizes", "split.default", "split_with_sizes",
                           "split_copy", "split_with_sizes_copy", "unsafe_split", "unsafe_split_with_sizes"),
                 *methods("unsafe_split", "unsafe_split_with_sizes"), torch.unsafe_split,
                 torch.unsafe_split_with_sizes)
#: ``tensor_split`` (torch.export keeps the aten op whole; the fx walk's aten
#: fallback decomposes it into slices): data movement, free.
TENSOR_SPLIT = distinct(torch.tensor_split, *methods("tensor_split"), *aten_ops("tensor_split"))
UNBIND = distinct(torch.unbind, *methods("unbind"), *aten_ops("unbind", "unbind_copy"))
SIZE = distinct(*methods("size"), *aten_ops("sym_size.int", "size.int"))
DIM = distinct(*methods("dim", "ndimension"))
NUMEL = distinct(torch.numel, *methods("numel", "nelement"), *aten_ops("sym_numel"))
GETATTR = (builtins.getattr,)
LEN = (builtins.len, Method("__len__"))
DROPOUT = distinct(
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout,
    F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout,
    torch.dropout, torch.dropout_, torch.feature_dropout, torch.feature_dropout_,
    torch.alpha_dropout, torch.alpha_dropout_, torch.feature_alpha_dropout,
    torch.feature_alpha_dropout_,
    *aten_ops("dropout", "dropout_", "feature_dropout", "alpha_dropout", "feature_alpha_dropout"),
)
NATIVE_DROPOUT = aten_ops("native_dropout")
#: torchvision's, named: importing torchvision costs ~1.7 s, and only its models hold these.
STOCHASTIC_DEPTH = (Lazy("torchvision.ops.stochastic_depth", "StochasticDepth"),
                    Lazy("torchvision.ops.stochastic_depth", "stochastic_depth"))
IDENTITY = (nn.Identity,)
#: torch.export's record of a ``vmap`` (``create_block_mask`` evaluates the mask
#: function under one): entering / leaving a level and adding / removing its
#: batch dimension are bookkeeping and views, free; the mapped ops are counted.
VMAP = tuple(Lazy("torch._functorch.predispatch", name) for name in (
    "_add_batch_dim", "_remove_batch_dim", "_vmap_increment_nesting", "_vmap_decrement_nesting",
    "lazy_load_decompositions"))
COPY = distinct(torch.clone, torch.detach, torch.detach_,
                *methods("clone", "detach", "detach_", "contiguous", "cpu", "cuda"),
                *aten_ops("clone", "detach", "detach_", "alias", "alias_copy", "lift_fresh_copy",
                          "contiguous"))
#: Overwriting with a constant (``x.zero_()``, ``x.fill_(v)``): no arithmetic.
FILL = distinct(getattr(torch, "zero_", None), getattr(torch, "fill_", None),
                *methods("zero_", "fill_"), *aten_ops("zero_", "zero", "fill_", "fill"))
CASTS = {"float": torch.float32, "half": torch.float16, "bfloat16": torch.bfloat16,
         "double": torch.float64, "int": torch.int32, "long": torch.int64, "bool": torch.bool,
         "short": torch.int16, "char": torch.int8, "byte": torch.uint8}
CAST = distinct(*methods(*CASTS))
TO = distinct(*methods("to", "type", "type_as"), *aten_ops("_to_copy", "to", "type_as"))
LIKE = distinct(torch.zeros_like, torch.ones_like, torch.empty_like, torch.full_like,
                *aten_ops("zeros_like", "ones_like", "empty_like", "full_like"))
NEW = distinct(*methods("new_zeros", "new_ones", "new_empty", "new_full"),
               *aten_ops("new_zeros", "new_ones", "new_empty", "new_full"))

layout = free(*VIEW, *RESHAPE, *AS, *FLATTEN, *UNFLATTEN, *PERMUTE, *TRANSPOSE, *MOVEDIM, *T,
              *SQUEEZE, *UNSQUEEZE, *EXPAND, *REPEAT, *TILE)
joins = free(*CAT, *STACK, *CHUNK, *SPLIT, *TENSOR_SPLIT, *UNBIND)
queries = free(*SIZE, *DIM, *NUMEL, *GETATTR, *LEN)
identities = free(*DROPOUT, *NATIVE_DROPOUT, *STOCHASTIC_DEPTH, *IDENTITY, *VMAP)
copies = free(*COPY, *FILL, *CAST, *TO, *LIKE, *NEW)


# ------------------------------------------------------------- small helpers


def _varargs(call: OpCall, keyword: str, start: int = 1) -> Any:
    """``x.view(2, 3)``, ``x.view((2, 3))``, ``x.view(size=(2, 3))``, aten's ``(x, [2, 3])``."""
    if keyword in call.kwargs:
        return call.kwargs[keyword]
    rest = call.args[start:]
    if len(rest) == 1 and isinstance(rest[0], (list, tuple)):
        return rest[0]
    return rest


def infer_size(shape: Sequence[int], numel: int) -> tuple[int, ...]:
    """A view's shape with its one ``-1`` resolved, as ``at::infer_size``."""
    shape = ints(shape, "shape")
    if shape.count(-1) > 1 or any(s < -1 for s in shape):
        raise unsupported(f"shape {shape}")
    known = prod(s for s in shape if s != -1)
    if -1 not in shape:
        if known != numel:
            raise unsupported(f"shape {shape} for {numel} elements")
        return shape
    if known == 0 or numel % known:
        raise unsupported(f"shape {shape} for {numel} elements")
    return tuple(numel // known if s == -1 else s for s in shape)


# ------------------------------------------------------------- views, reshape


def _view_dtype(x: TensorInfo, dtype: torch.dtype) -> TensorInfo:
    old, new = x.dtype.itemsize, dtype.itemsize
    if old == new:
        return like(x, dtype=dtype)
    if x.ndim == 0 or (new > old and x.shape[-1] * old % new):
        raise unsupported("dtype view changing the last dim")
    return TensorInfo(x.shape[:-1] + (x.shape[-1] * old // new,), dtype)


@shape_rule(*VIEW, *RESHAPE)
@lenient
def shape_view(call: OpCall) -> TensorInfo:
    """``view(*shape)`` / ``reshape(shape)`` with one ``-1`` inferred;
    ``x.view(dtype)`` reinterprets the last dim."""
    x = first_tensor(call)
    if len(call.args) < 2 and not call.kwargs:
        raise unsupported("view without a shape")
    shape = _varargs(call, "shape" if "shape" in call.kwargs else "size")
    if len(shape) == 1 and isinstance(shape[0], torch.dtype):
        return _view_dtype(x, shape[0])
    if isinstance(call.kwargs.get("dtype"), torch.dtype):
        return _view_dtype(x, call.kwargs["dtype"])
    if packet(call.target) is aten._reshape_alias:
        shape = call.args[1]
    return like(x, infer_size(shape, x.numel))


@shape_rule(*AS)
@lenient
def shape_as(call: OpCall) -> TensorInfo:
    """``view_as`` / ``reshape_as`` / ``expand_as``: the other tensor's shape."""
    x, other = first_tensor(call), call.arg(1, "other")
    if not isinstance(other, TensorInfo):
        raise unsupported("*_as without a tensor")
    if bare_name(call.target) == "expand_as":
        return like(x, _expand(x, other.shape))
    return like(x, infer_size(other.shape, x.numel))


@shape_rule(*FLATTEN)
@lenient
def shape_flatten(call: OpCall) -> TensorInfo:
    """``flatten(x, start_dim=0, end_dim=-1)`` (nn.Flatten: start_dim=1);
    a 0-dim tensor flattens to ``[1]``."""
    x = first_tensor(call)
    if call.module is not None:
        start, end = call.module.start_dim, call.module.end_dim
    else:
        start, end = call.arg(1, "start_dim", 0), call.arg(2, "end_dim", -1)
    start, end = wrap_dim(start, x.ndim), wrap_dim(end, x.ndim)
    if start > end:
        raise unsupported("flatten with start_dim after end_dim")
    if x.ndim == 0:
        return like(x, (1,))
    return like(x, x.shape[:start] + (prod(x.shape[start:end + 1]),) + x.shape[end + 1:])


@shape_rule(*UNFLATTEN)
@lenient
def shape_unflatten(call: OpCall) -> TensorInfo:
    """``unflatten(x, dim, sizes)``: one ``-1`` may be inferred."""
    x = first_tensor(call)
    if call.module is not None:
        dim, sizes = call.module.dim, call.module.unflattened_size
    else:
        dim, sizes = call.arg(1, "dim"), call.arg(2, "sizes")
    if x.ndim == 0 or not sizes:
        raise unsupported("unflatten of a 0-dim tensor or to no sizes")
    dim = wrap_dim(dim, x.ndim)
    return like(x, x.shape[:dim] + infer_size(sizes, x.shape[dim]) + x.shape[dim + 1:])


def _permutation(dims: Any, ndim: int) -> tuple[int, ...]:
    dims = tuple(wrap_dim(d, ndim) for d in ints(dims, "dims"))
    if sorted(dims) != list(range(ndim)):
        raise unsupported(f"permutation {dims} of {ndim} dims")
    return dims


@shape_rule(*PERMUTE)
@lenient
def shape_permute(call: OpCall) -> TensorInfo:
    """``permute(*dims)``: ``out[i] = x.shape[dims[i]]``."""
    x = first_tensor(call)
    if len(call.args) < 2 and "dims" not in call.kwargs:
        raise unsupported("permute without dims")
    dims = _permutation(_varargs(call, "dims"), x.ndim)
    return like(x, tuple(x.shape[d] for d in dims))


@shape_rule(*TRANSPOSE)
@lenient
def shape_transpose(call: OpCall) -> TensorInfo:
    """``transpose(x, dim0, dim1)`` swaps two dims."""
    x = first_tensor(call)
    a, b = wrap_dim(call.arg(1, "dim0"), x.ndim), wrap_dim(call.arg(2, "dim1"), x.ndim)
    shape = list(x.shape)
    if x.ndim:
        shape[a], shape[b] = shape[b], shape[a]
    return like(x, shape)


@shape_rule(*MOVEDIM)
@lenient
def shape_movedim(call: OpCall) -> TensorInfo:
    """``movedim(x, source, destination)`` (ints or sequences)."""
    x = first_tensor(call)
    source, destination = call.arg(1, "source"), call.arg(2, "destination")
    source = (source,) if is_int(source) else ints(source, "source")
    destination = (destination,) if is_int(destination) else ints(destination, "destination")
    src = [wrap_dim(d, x.ndim) for d in source]
    dst = [wrap_dim(d, x.ndim) for d in destination]
    if len(src) != len(dst) or len(set(src)) != len(src) or len(set(dst)) != len(dst):
        raise unsupported("movedim with mismatched or repeated dims")
    order: list[int | None] = [None] * x.ndim
    for s, d in zip(src, dst):
        order[d] = s
    rest = iter(i for i in range(x.ndim) if i not in src)
    order = [next(rest) if o is None else o for o in order]
    return like(x, tuple(x.shape[o] for o in order))


@shape_rule(*T)
@lenient
def shape_t(call: OpCall) -> TensorInfo:
    """``t(x)``: transposes a 2-D tensor; 0-D and 1-D are unchanged."""
    x = first_tensor(call)
    if x.ndim > 2:
        raise unsupported("t() of more than 2 dims")
    return like(x, x.shape[::-1])


@shape_rule(*SQUEEZE)
@lenient
def shape_squeeze(call: OpCall) -> TensorInfo:
    """``squeeze(x, dim=None)``: removes the given (or every) size-1 dim."""
    x = first_tensor(call)
    dims = call.arg(1, "dim", None)
    if dims is None:
        return like(x, tuple(s for s in x.shape if s != 1))
    dims = [wrap_dim(d, x.ndim) for d in ((dims,) if is_int(dims) else ints(dims, "dims"))]
    if len(set(dims)) != len(dims):
        raise unsupported("squeeze with a repeated dim")
    return like(x, tuple(s for i, s in enumerate(x.shape) if not (i in dims and s == 1)))


@shape_rule(*UNSQUEEZE)
@lenient
def shape_unsqueeze(call: OpCall) -> TensorInfo:
    """``unsqueeze(x, dim)``: inserts a size-1 dim (dim in [-ndim-1, ndim])."""
    x = first_tensor(call)
    dim = wrap_dim(call.arg(1, "dim"), x.ndim + 1)
    return like(x, x.shape[:dim] + (1,) + x.shape[dim:])


def _expand(x: TensorInfo, sizes: Any) -> tuple[int, ...]:
    sizes = ints(sizes, "sizes")
    extra = len(sizes) - x.ndim
    if extra < 0 or any(s < 0 for s in sizes[:extra]):
        raise unsupported(f"expand {x.shape} to {sizes}")
    out = list(sizes[:extra])
    for have, want in zip(x.shape, sizes[extra:]):
        if want == -1 or want == have:
            out.append(have)
        elif have == 1 and want >= 0:
            out.append(want)
        else:
            raise unsupported(f"expand {x.shape} to {sizes}")
    return tuple(out)


@shape_rule(*EXPAND)
@lenient
def shape_expand(call: OpCall) -> TensorInfo:
    """``expand(*sizes)`` / ``broadcast_to(x, shape)``: -1 keeps a dim, 1s grow."""
    x = first_tensor(call)
    return like(x, _expand(x, _varargs(call, "shape" if "shape" in call.kwargs else "size")))


def _repeat(x: TensorInfo, repeats: tuple[int, ...]) -> tuple[int, ...]:
    if len(repeats) < x.ndim or any(r < 0 for r in repeats):
        raise unsupported(f"repeat {x.shape} by {repeats}")
    padded = (1,) * (len(repeats) - x.ndim) + tuple(x.shape)
    return tuple(s * r for s, r in zip(padded, repeats))


@shape_rule(*REPEAT)
@lenient
def shape_repeat(call: OpCall) -> TensorInfo:
    """``repeat(*repeats)``: at least ndim repeats; leading ones add dims."""
    x = first_tensor(call)
    return like(x, _repeat(x, ints(_varargs(call, "repeats"), "repeats")))


@shape_rule(*TILE)
@lenient
def shape_tile(call: OpCall) -> TensorInfo:
    """``tile(x, dims)``: like repeat, fewer dims padded with leading ones."""
    x = first_tensor(call)
    dims = ints(_varargs(call, "dims"), "dims")
    return like(x, _repeat(x, (1,) * (x.ndim - len(dims)) + dims))


# ------------------------------------------------------------- joins, splits


def _tensor_list(value: Any) -> list[TensorInfo]:
    if not isinstance(value, (list, tuple)) or not value or not all(
        isinstance(t, TensorInfo) for t in value
    ):
        raise unsupported("not a non-empty list of tensors")
    return list(value)


@shape_rule(*CAT)
@lenient
def shape_cat(call: OpCall) -> TensorInfo:
    """``cat(tensors, dim=0)`` (``axis`` for concatenate): sizes add along
    ``dim``; legacy 1-D empty tensors are skipped; dtypes promote."""
    tensors = _tensor_list(call.arg(0, "tensors"))
    dim = call.kwargs.get("axis", call.arg(1, "dim", 0))
    dtype = promote(*tensors)
    if any(t.ndim == 0 for t in tensors):
        raise unsupported("cat of a 0-dim tensor")
    kept = [t for t in tensors if t.shape != (0,)]
    if not kept:
        return TensorInfo((0,), dtype)
    first = kept[0]
    dim = wrap_dim(dim, first.ndim)
    before, after = first.shape[:dim], first.shape[dim + 1:]
    for t in kept[1:]:
        if t.ndim != first.ndim or t.shape[:dim] != before or t.shape[dim + 1:] != after:
            raise unsupported("cat of mismatched shapes")
    shape = list(first.shape)
    shape[dim] = sum(t.shape[dim] for t in kept)
    return TensorInfo(tuple(shape), dtype)


@shape_rule(*STACK)
@lenient
def shape_stack(call: OpCall) -> TensorInfo:
    """``stack(tensors, dim=0)``: equal shapes, a new dim of len(tensors)."""
    tensors = _tensor_list(call.arg(0, "tensors"))
    first = tensors[0]
    if any(t.shape != first.shape for t in tensors):
        raise unsupported("stack of unequal shapes")
    dim = wrap_dim(call.arg(1, "dim", 0), first.ndim + 1)
    return TensorInfo(first.shape[:dim] + (len(tensors),) + first.shape[dim:], promote(*tensors))


def _pieces(x: TensorInfo, dim: int, sizes: Sequence[int]) -> tuple[TensorInfo, ...]:
    return tuple(like(x, x.shape[:dim] + (s,) + x.shape[dim + 1:]) for s in sizes)


def _split_sizes(size: int, split_size: int) -> list[int]:
    """torch.split with an int: pieces of split_size, the last one shorter."""
    if split_size < 0 or (split_size == 0 and size != 0):
        raise unsupported(f"split size {split_size} of {size}")
    if split_size == 0:
        return [0]
    count = max(-(-size // split_size), 1)
    return [split_size] * (count - 1) + [size - split_size * (count - 1)]


@shape_rule(*CHUNK)
@lenient
def shape_chunk(call: OpCall) -> tuple[TensorInfo, ...]:
    """``chunk(x, chunks, dim=0)``: pieces of ceil(size / chunks); there may
    be fewer than ``chunks``."""
    x = first_tensor(call)
    chunks, dim = call.arg(1, "chunks"), call.arg(2, "dim", 0)
    if x.ndim == 0 or not is_int(chunks) or chunks <= 0:
        raise unsupported("chunk of a 0-dim tensor or into no chunks")
    dim = wrap_dim(dim, x.ndim)
    size = x.shape[dim]
    step = -(-size // chunks)
    sizes = [0] * chunks if step == 0 else _split_sizes(size, step)
    return _pieces(x, dim, sizes)


@shape_rule(*SPLIT)
@lenient
def shape_split(call: OpCall) -> tuple[TensorInfo, ...]:
    """``split(x, split_size_or_sections, dim=0)`` (``split_size`` /
    ``split_sizes`` as keywords): an int makes equal pieces, a list exact ones."""
    x = first_tensor(call)
    sections = None
    for name in ("split_size_or_sections", "split_size", "split_sizes"):
        if name in call.kwargs:
            sections = call.kwargs[name]
    if sections is None:
        sections = call.arg(1, "split_size")
    dim = call.arg(2, "dim", 0)
    if x.ndim == 0:
        raise unsupported("split of a 0-dim tensor")
    dim = wrap_dim(dim, x.ndim)
    size = x.shape[dim]
    if is_int(sections):
        return _pieces(x, dim, _split_sizes(size, sections))
    sections = ints(sections, "split sizes")
    if sum(sections) != size or any(s < 0 for s in sections):
        raise unsupported(f"split sizes {sections} of {size}")
    return _pieces(x, dim, sections)


@shape_rule(*UNBIND)
@lenient
def shape_unbind(call: OpCall) -> tuple[TensorInfo, ...]:
    """``unbind(x, dim=0)``: shape[dim] tensors without that dim."""
    x = first_tensor(call)
    if x.ndim == 0:
        raise unsupported("unbind of a 0-dim tensor")
    dim = wrap_dim(call.arg(1, "dim", 0), x.ndim)
    rest = like(x, x.shape[:dim] + x.shape[dim + 1:])
    return (rest,) * x.shape[dim]


# ------------------------------------------------------------- size queries


@shape_rule(*SIZE)
@lenient
def shape_size(call: OpCall) -> Any:
    """``x.size()`` -> ``torch.Size``; ``x.size(dim)`` -> int."""
    x = first_tensor(call)
    dim = call.arg(1, "dim", None)
    if dim is None:
        return torch.Size(x.shape)
    if x.ndim == 0:
        raise unsupported("size(dim) of a 0-dim tensor")
    return x.shape[wrap_dim(dim, x.ndim)]


@shape_rule(*DIM)
@lenient
def shape_dim(call: OpCall) -> int:
    """``x.dim()`` -> int."""
    return first_tensor(call).ndim


@shape_rule(*NUMEL)
@lenient
def shape_numel(call: OpCall) -> int:
    """``x.numel()`` / ``torch.numel(x)`` -> int."""
    return first_tensor(call).numel


_ATTRIBUTES = {
    "shape": lambda x: torch.Size(x.shape),
    "dtype": lambda x: x.dtype,
    "ndim": lambda x: x.ndim,
    "data": lambda x: x,
    "T": lambda x: like(x, x.shape[::-1]),
    "mT": lambda x: like(x, x.shape[:-2] + x.shape[-2:][::-1]) if x.ndim != 1 else None,
}


@shape_rule(*GETATTR)
@lenient
def shape_getattr(call: OpCall) -> Any:
    """``getattr(x, name)`` for shape, dtype, ndim, data, T and mT of a
    tensor, or a field of a tuple of outputs (``torch.max(x, 1).values``).
    Anything else (device, requires_grad) is left to meta execution."""
    obj, name = call.args[0], call.args[1]
    if isinstance(obj, TensorInfo):
        rule = _ATTRIBUTES.get(name)
        value = rule(obj) if rule is not None else None
        if value is None:
            raise unsupported(f"tensor attribute {name!r}")
        return value
    value = getattr(obj, name, None) if isinstance(obj, tuple) else None
    if isinstance(value, (TensorInfo, tuple)):
        return value
    raise unsupported(f"attribute {name!r} of a {type(obj).__name__}")


@shape_rule(*LEN)
@lenient
def shape_len(call: OpCall) -> int:
    """``len(x)``: the first dim of a tensor, the length of a tuple."""
    obj = call.args[0]
    if isinstance(obj, TensorInfo):
        if obj.ndim == 0:
            raise unsupported("len() of a 0-dim tensor")
        return obj.shape[0]
    if isinstance(obj, (tuple, list)):
        return len(obj)
    raise unsupported(f"len of a {type(obj).__name__}")


# --------------------------------------------------------------- identities

def _resolved(targets: tuple) -> tuple:
    """The objects of the :class:`Lazy` targets whose module is imported."""
    return tuple(obj for obj in (target.resolve() for target in targets) if obj is not None)


#: Ranks torch insists on (dropout2d / dropout3d only warn about theirs).
_DROPOUT_RANKS = {nn.Dropout1d: (2, 3), F.dropout1d: (2, 3)}


@shape_rule(*DROPOUT, *STOCHASTIC_DEPTH)
@lenient
def shape_dropout(call: OpCall) -> TensorInfo:
    """Dropout / stochastic depth: the input's shape and dtype (p in [0, 1];
    dropout1d needs a 2-d or 3-d input; stochastic depth mode ``batch`` / ``row``)."""
    x = first_tensor(call)
    key = type(call.module) if call.module is not None else call.target
    p = call.module.p if call.module is not None else call.arg(1, "p", 0.5)
    if not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
        raise unsupported(f"dropout probability {p!r}")
    if key in _DROPOUT_RANKS and x.ndim not in _DROPOUT_RANKS[key]:
        raise unsupported(f"{x.ndim}-d input of a rank-checked dropout")
    if key in _resolved(STOCHASTIC_DEPTH):
        mode = call.module.mode if call.module is not None else call.arg(2, "mode")
        if mode not in ("batch", "row"):
            raise unsupported(f"stochastic depth mode {mode!r}")
    return like(x)


@shape_rule(*NATIVE_DROPOUT)
@lenient
def shape_native_dropout(call: OpCall) -> tuple[TensorInfo, TensorInfo]:
    """``aten.native_dropout(x, p, train)`` -> (output, bool mask)."""
    x = first_tensor(call)
    return like(x), like(x, dtype=torch.bool)


@shape_rule(*IDENTITY)
@lenient
def shape_identity(call: OpCall) -> Any:
    """nn.Identity returns its input, whatever it is."""
    return call.args[0]


# ------------------------------------------------------------- copies, casts


@shape_rule(*COPY, *FILL)
@lenient
def shape_copy(call: OpCall) -> TensorInfo:
    """clone / detach / contiguous / alias / cpu / cuda / zero_ / fill_: the same
    tensor description."""
    return like(first_tensor(call))


@shape_rule(*CAST)
@lenient
def shape_cast(call: OpCall) -> TensorInfo:
    """``x.float()``, ``x.half()``, ``x.long()`` ...: the named dtype."""
    return like(first_tensor(call), dtype=CASTS[call.target.name])


@shape_rule(*TO)
@lenient
def shape_to(call: OpCall) -> TensorInfo:
    """``x.to(dtype)``, ``x.to(device, dtype)``, ``x.to(other)``,
    ``x.type(dtype)``, ``x.type_as(other)``, ``aten._to_copy(x, dtype=)``:
    the first dtype or tensor found decides; devices change nothing here."""
    x = first_tensor(call)
    name = bare_name(call.target)
    candidates = list(call.args[1:]) + [call.kwargs.get("dtype")]
    for value in candidates:
        if isinstance(value, torch.dtype):
            return like(x, dtype=value)
        if isinstance(value, TensorInfo):
            return like(x, dtype=value.dtype)
        if isinstance(value, str) and name == "type":
            raise unsupported("x.type() with a type name")
    if name == "type":
        raise unsupported("x.type() returns a string")
    return like(x)


@shape_rule(*LIKE)
@lenient
def shape_like(call: OpCall) -> TensorInfo:
    """``zeros_like(x, *, dtype=None)`` / ``full_like(x, value, *, dtype=None)``."""
    x = first_tensor(call)
    return like(x, dtype=call.kwargs.get("dtype") or x.dtype)


@shape_rule(*NEW)
@lenient
def shape_new(call: OpCall) -> TensorInfo:
    """``x.new_zeros(size, *, dtype=None)`` (size as ints too) /
    ``x.new_full(size, fill_value)``: shape ``size``, x's dtype by default."""
    x = first_tensor(call)
    size = call.arg(1, "size") if bare_name(call.target) == "new_full" else _varargs(call, "size")
    return TensorInfo(ints(tuple(size), "size"), call.kwargs.get("dtype") or x.dtype)


@hookimpl
def micronet_register_counters():
    return collect(sys.modules[__name__])
