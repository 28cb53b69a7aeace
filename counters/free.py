"""Ops that move, copy, select or describe values without arithmetic: free.

They are recorded (status "free") and need shape rules so that the walker
never has to run them on meta tensors.

Two readings of RULES' "permutations count as a product with a sparse
permutation matrix" are possible; this module takes both, each for its kind:

- **Layout ops are free**: view, reshape, flatten, unflatten, squeeze,
  unsqueeze, permute, transpose, t, movedim, contiguous, expand, repeat,
  tile, cat, stack, chunk, split, unbind, indexing (advanced indexing too),
  narrow, select, index_select, gather, padding (every mode), roll, flip,
  clone, detach, casts between formats exactly representable in fp32
  (RULES: free) and the ``*_like`` / ``new_*`` constructors. They change how a tensor is
  indexed; PyTorch runs most of them as zero-copy stride changes, and the
  consumer reads through any layout, so no value is computed.
- **Value permutations are counted**: ``channel_shuffle``, ``pixel_shuffle``
  and ``pixel_unshuffle`` exist only to permute values across channels, the
  case RULES' clause is about. A product with a permutation matrix (one
  nonzero per row) costs 1 mult and 0 adds per output element. Note that
  torchvision's ShuffleNetV2 writes its shuffle as view / transpose /
  contiguous / view, which this reading counts as free layout.

Selections driven by a mask computed elsewhere (``torch.where``,
``masked_fill``) are free as well: the comparison that made the mask is
counted where it happens (``micronet.counters.elementwise``).

Dropout in all its forms (``nn.Dropout*``, ``F.dropout*``, ``torch.dropout``,
aten's) and ``torchvision.ops.StochasticDepth`` are the identity at
inference; ``nn.Identity`` returns its input. Size queries (``x.size()``,
``x.shape``, ``x.dim()``, ``x.numel()``, ``len(x)``) return ``torch.Size`` /
``int`` values.
"""
from __future__ import annotations

import builtins
import operator
import sys
from typing import Any, Sequence

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from micronet.counters._common import broadcast_shapes, like, prod, result_dtype
from micronet.counters.elementwise import is_inplace, lenient, promote
from micronet.manager import hookimpl
from micronet.records import Counts, TensorInfo
from micronet.registry import Method, OpCall, collect, counter, free, shape_rule

aten = torch.ops.aten


def _distinct(*targets: Any) -> tuple:
    return tuple(dict.fromkeys(t for t in targets if t is not None))


def _methods(*names: str) -> tuple:
    return tuple(Method(name) for name in names)


def _aten(*names: str) -> tuple:
    """aten packets (``"view"``) or overloads (``"split.Tensor"``) that exist."""
    found = []
    for name in names:
        packet, _, overload = name.partition(".")
        op = getattr(aten, packet, None) if hasattr(aten, packet) else None
        if op is not None and overload:
            op = getattr(op, overload, None)
        found.append(op)
    return _distinct(*found)


def _unsupported(why: str):
    return NotImplementedError(f"{why}: left to meta execution")


# --------------------------------------------------------------------- targets

VIEW = _distinct(*_methods("view"), *_aten("view", "_unsafe_view", "view_copy"))
RESHAPE = _distinct(torch.reshape, *_methods("reshape"), *_aten("reshape", "_reshape_alias"))
AS = _distinct(*_methods("view_as", "reshape_as", "expand_as"),
               *_aten("view_as", "reshape_as", "expand_as"))
FLATTEN = _distinct(nn.Flatten, torch.flatten, *_methods("flatten"), *_aten("flatten"))
UNFLATTEN = _distinct(nn.Unflatten, torch.unflatten, *_methods("unflatten"), *_aten("unflatten"))
PERMUTE = _distinct(torch.permute, *_methods("permute"), *_aten("permute", "permute_copy"))
TRANSPOSE = _distinct(torch.transpose, torch.swapaxes, torch.swapdims,
                      *_methods("transpose", "transpose_", "swapaxes", "swapdims"),
                      *_aten("transpose", "transpose_", "transpose_copy", "swapaxes"))
MOVEDIM = _distinct(torch.movedim, torch.moveaxis, *_methods("movedim", "moveaxis"), *_aten("movedim"))
T = _distinct(torch.t, *_methods("t", "t_"), *_aten("t", "t_", "t_copy"))
SQUEEZE = _distinct(torch.squeeze, *_methods("squeeze", "squeeze_"),
                    *_aten("squeeze", "squeeze_", "squeeze_copy"))
UNSQUEEZE = _distinct(torch.unsqueeze, *_methods("unsqueeze", "unsqueeze_"),
                      *_aten("unsqueeze", "unsqueeze_", "unsqueeze_copy"))
EXPAND = _distinct(torch.broadcast_to, *_methods("expand", "broadcast_to"),
                   *_aten("expand", "expand_copy", "broadcast_to"))
REPEAT = _distinct(*_methods("repeat"), *_aten("repeat"))
TILE = _distinct(torch.tile, *_methods("tile"), *_aten("tile"))
CAT = _distinct(torch.cat, torch.concat, torch.concatenate, *_aten("cat", "concat", "concatenate"))
STACK = _distinct(torch.stack, *_aten("stack"))
CHUNK = _distinct(torch.chunk, *_methods("chunk"), *_aten("chunk"))
SPLIT = _distinct(torch.split, torch.split_with_sizes, *_methods("split", "split_with_sizes"),
                  *_aten("split.Tensor", "split.sizes", "split.default", "split_with_sizes",
                         "split_copy", "split_with_sizes_copy"))
UNBIND = _distinct(torch.unbind, *_methods("unbind"), *_aten("unbind", "unbind_copy"))
GETITEM = _distinct(operator.getitem, *_methods("__getitem__"))
NARROW = _distinct(torch.narrow, *_methods("narrow"), *_aten("narrow.default"))
SELECT = _distinct(torch.select, *_methods("select"), *_aten("select.int", "select_copy"))
SLICE = _aten("slice.Tensor", "slice_copy")
SIZE = _distinct(*_methods("size"), *_aten("sym_size.int", "size.int"))
DIM = _distinct(*_methods("dim", "ndimension"))
NUMEL = _distinct(torch.numel, *_methods("numel", "nelement"), *_aten("sym_numel"))
GETATTR = (builtins.getattr,)
LEN = (builtins.len, Method("__len__"))
DROPOUT = _distinct(
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout,
    F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout,
    torch.dropout, torch.dropout_, torch.feature_dropout, torch.feature_dropout_,
    torch.alpha_dropout, torch.alpha_dropout_, torch.feature_alpha_dropout,
    torch.feature_alpha_dropout_,
    *_aten("dropout", "dropout_", "feature_dropout", "alpha_dropout", "feature_alpha_dropout"),
)
NATIVE_DROPOUT = _aten("native_dropout")
STOCHASTIC_DEPTH = (torchvision.ops.StochasticDepth, torchvision.ops.stochastic_depth)
IDENTITY = (nn.Identity,)
COPY = _distinct(torch.clone, torch.detach, torch.detach_,
                 *_methods("clone", "detach", "detach_", "contiguous", "cpu", "cuda"),
                 *_aten("clone", "detach", "detach_", "alias", "alias_copy", "lift_fresh_copy",
                        "contiguous"))
#: Overwriting with a constant (``x.zero_()``, ``x.fill_(v)``): no arithmetic.
FILL = _distinct(getattr(torch, "zero_", None), getattr(torch, "fill_", None),
                 *_methods("zero_", "fill_"), *_aten("zero_", "zero", "fill_", "fill"))
CASTS = {"float": torch.float32, "half": torch.float16, "bfloat16": torch.bfloat16,
         "double": torch.float64, "int": torch.int32, "long": torch.int64, "bool": torch.bool,
         "short": torch.int16, "char": torch.int8, "byte": torch.uint8}
CAST = _distinct(*_methods(*CASTS))
TO = _distinct(*_methods("to", "type", "type_as"), *_aten("_to_copy", "to", "type_as"))
LIKE = _distinct(torch.zeros_like, torch.ones_like, torch.empty_like, torch.full_like,
                 *_aten("zeros_like", "ones_like", "empty_like", "full_like"))
NEW = _distinct(*_methods("new_zeros", "new_ones", "new_empty", "new_full"),
                *_aten("new_zeros", "new_ones", "new_empty", "new_full"))
PAD_MODULES = tuple(getattr(nn, f"{kind}Pad{n}d")
                    for kind in ("Zero", "Constant", "Reflection", "Replication", "Circular")
                    for n in (1, 2, 3) if hasattr(nn, f"{kind}Pad{n}d"))
PAD = _distinct(F.pad, *PAD_MODULES, *_aten("constant_pad_nd", "pad"))
PAD_ATEN_MODES = {op: mode
                  for mode, kind in (("reflect", "reflection"), ("replicate", "replication"))
                  for op in _aten(*(f"{kind}_pad{n}d" for n in (1, 2, 3)))}
ROLL_FLIP = _distinct(torch.roll, torch.flip, torch.fliplr, torch.flipud,
                      *_methods("roll", "flip", "fliplr", "flipud"), *_aten("roll", "flip"))
INDEX_SELECT = _distinct(torch.index_select, *_methods("index_select"), *_aten("index_select"))
GATHER = _distinct(torch.gather, *_methods("gather"), *_aten("gather"))
WHERE = _distinct(torch.where, *_methods("where"), *_aten("where.self"))
MASKED_FILL = _distinct(*_methods("masked_fill", "masked_fill_"), torch.masked_fill,
                        *_aten("masked_fill", "masked_fill_"))
ADVANCED_INDEX = _aten("index.Tensor", "copy_", "copy", "scalar_tensor", "lift_fresh")
CHANNEL_SHUFFLE = _distinct(nn.ChannelShuffle, F.channel_shuffle, torch.channel_shuffle,
                            *_aten("channel_shuffle", "native_channel_shuffle"))
PIXEL_SHUFFLE = _distinct(nn.PixelShuffle, F.pixel_shuffle, *_aten("pixel_shuffle"))
PIXEL_UNSHUFFLE = _distinct(nn.PixelUnshuffle, F.pixel_unshuffle, *_aten("pixel_unshuffle"))

layout = free(*VIEW, *RESHAPE, *AS, *FLATTEN, *UNFLATTEN, *PERMUTE, *TRANSPOSE, *MOVEDIM, *T,
              *SQUEEZE, *UNSQUEEZE, *EXPAND, *REPEAT, *TILE)
joins = free(*CAT, *STACK, *CHUNK, *SPLIT, *UNBIND)
indexing = free(*GETITEM, *NARROW, *SELECT, *SLICE)
queries = free(*SIZE, *DIM, *NUMEL, *GETATTR, *LEN)
identities = free(*DROPOUT, *NATIVE_DROPOUT, *STOCHASTIC_DEPTH, *IDENTITY)
copies = free(*COPY, *FILL, *CAST, *TO, *LIKE, *NEW)
moves = free(*PAD, *PAD_ATEN_MODES, *ROLL_FLIP)
selections = free(*INDEX_SELECT, *GATHER, *WHERE, *MASKED_FILL, *ADVANCED_INDEX)


# ------------------------------------------------------------- small helpers


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _ints(values: Any, what: str) -> tuple[int, ...]:
    if not isinstance(values, (list, tuple)) or not all(_is_int(v) for v in values):
        raise _unsupported(f"{what} {values!r}")
    return tuple(values)


def _wrap(dim: Any, ndim: int) -> int:
    """torch's dim wrapping (a 0-dim tensor accepts dims -1 and 0)."""
    rank = max(ndim, 1)
    if not _is_int(dim) or not -rank <= dim < rank:
        raise _unsupported(f"dim {dim!r} for {ndim} dims")
    return dim % rank


def _varargs(call: OpCall, keyword: str, start: int = 1) -> Any:
    """``x.view(2, 3)``, ``x.view((2, 3))``, ``x.view(size=(2, 3))``, aten's ``(x, [2, 3])``."""
    if keyword in call.kwargs:
        return call.kwargs[keyword]
    rest = call.args[start:]
    if len(rest) == 1 and isinstance(rest[0], (list, tuple)):
        return rest[0]
    return rest


def _tensor(call: OpCall) -> TensorInfo:
    x = call.args[0] if call.args else call.x
    if not isinstance(x, TensorInfo):
        raise _unsupported("first argument is not a tensor")
    return x


def infer_size(shape: Sequence[int], numel: int) -> tuple[int, ...]:
    """A view's shape with its one ``-1`` resolved, as ``at::infer_size``."""
    shape = _ints(shape, "shape")
    if shape.count(-1) > 1 or any(s < -1 for s in shape):
        raise _unsupported(f"shape {shape}")
    known = prod(s for s in shape if s != -1)
    if -1 not in shape:
        if known != numel:
            raise _unsupported(f"shape {shape} for {numel} elements")
        return shape
    if known == 0 or numel % known:
        raise _unsupported(f"shape {shape} for {numel} elements")
    return tuple(numel // known if s == -1 else s for s in shape)


# ------------------------------------------------------------- views, reshape


def _view_dtype(x: TensorInfo, dtype: torch.dtype) -> TensorInfo:
    old, new = x.dtype.itemsize, dtype.itemsize
    if old == new:
        return like(x, dtype=dtype)
    if x.ndim == 0 or (new > old and x.shape[-1] * old % new):
        raise _unsupported("dtype view changing the last dim")
    return TensorInfo(x.shape[:-1] + (x.shape[-1] * old // new,), dtype)


@shape_rule(*VIEW, *RESHAPE)
@lenient
def shape_view(call: OpCall) -> TensorInfo:
    """``view(*shape)`` / ``reshape(shape)`` with one ``-1`` inferred;
    ``x.view(dtype)`` reinterprets the last dim."""
    x = _tensor(call)
    if len(call.args) < 2 and not call.kwargs:
        raise _unsupported("view without a shape")
    shape = _varargs(call, "shape" if "shape" in call.kwargs else "size")
    if len(shape) == 1 and isinstance(shape[0], torch.dtype):
        return _view_dtype(x, shape[0])
    if isinstance(call.kwargs.get("dtype"), torch.dtype):
        return _view_dtype(x, call.kwargs["dtype"])
    if _packet(call.target) is aten._reshape_alias:
        shape = call.args[1]
    return like(x, infer_size(shape, x.numel))


def _packet(target: Any) -> Any:
    return target.overloadpacket if isinstance(target, torch._ops.OpOverload) else target


@shape_rule(*AS)
@lenient
def shape_as(call: OpCall) -> TensorInfo:
    """``view_as`` / ``reshape_as`` / ``expand_as``: the other tensor's shape."""
    x, other = _tensor(call), call.arg(1, "other")
    if not isinstance(other, TensorInfo):
        raise _unsupported("*_as without a tensor")
    name = call.target.name if isinstance(call.target, Method) else _packet(call.target).__name__
    if name == "expand_as":
        return like(x, _expand(x, other.shape))
    return like(x, infer_size(other.shape, x.numel))


@shape_rule(*FLATTEN)
@lenient
def shape_flatten(call: OpCall) -> TensorInfo:
    """``flatten(x, start_dim=0, end_dim=-1)`` (nn.Flatten: start_dim=1);
    a 0-dim tensor flattens to ``[1]``."""
    x = _tensor(call)
    if call.module is not None:
        start, end = call.module.start_dim, call.module.end_dim
    else:
        start, end = call.arg(1, "start_dim", 0), call.arg(2, "end_dim", -1)
    start, end = _wrap(start, x.ndim), _wrap(end, x.ndim)
    if start > end:
        raise _unsupported("flatten with start_dim after end_dim")
    if x.ndim == 0:
        return like(x, (1,))
    return like(x, x.shape[:start] + (prod(x.shape[start:end + 1]),) + x.shape[end + 1:])


@shape_rule(*UNFLATTEN)
@lenient
def shape_unflatten(call: OpCall) -> TensorInfo:
    """``unflatten(x, dim, sizes)``: one ``-1`` may be inferred."""
    x = _tensor(call)
    if call.module is not None:
        dim, sizes = call.module.dim, call.module.unflattened_size
    else:
        dim, sizes = call.arg(1, "dim"), call.arg(2, "sizes")
    if x.ndim == 0 or not sizes:
        raise _unsupported("unflatten of a 0-dim tensor or to no sizes")
    dim = _wrap(dim, x.ndim)
    return like(x, x.shape[:dim] + infer_size(sizes, x.shape[dim]) + x.shape[dim + 1:])


def _permutation(dims: Any, ndim: int) -> tuple[int, ...]:
    dims = tuple(_wrap(d, ndim) for d in _ints(dims, "dims"))
    if sorted(dims) != list(range(ndim)):
        raise _unsupported(f"permutation {dims} of {ndim} dims")
    return dims


@shape_rule(*PERMUTE)
@lenient
def shape_permute(call: OpCall) -> TensorInfo:
    """``permute(*dims)``: ``out[i] = x.shape[dims[i]]``."""
    x = _tensor(call)
    if len(call.args) < 2 and "dims" not in call.kwargs:
        raise _unsupported("permute without dims")
    dims = _permutation(_varargs(call, "dims"), x.ndim)
    return like(x, tuple(x.shape[d] for d in dims))


@shape_rule(*TRANSPOSE)
@lenient
def shape_transpose(call: OpCall) -> TensorInfo:
    """``transpose(x, dim0, dim1)`` swaps two dims."""
    x = _tensor(call)
    a, b = _wrap(call.arg(1, "dim0"), x.ndim), _wrap(call.arg(2, "dim1"), x.ndim)
    shape = list(x.shape)
    if x.ndim:
        shape[a], shape[b] = shape[b], shape[a]
    return like(x, shape)


@shape_rule(*MOVEDIM)
@lenient
def shape_movedim(call: OpCall) -> TensorInfo:
    """``movedim(x, source, destination)`` (ints or sequences)."""
    x = _tensor(call)
    source, destination = call.arg(1, "source"), call.arg(2, "destination")
    source = (source,) if _is_int(source) else _ints(source, "source")
    destination = (destination,) if _is_int(destination) else _ints(destination, "destination")
    src = [_wrap(d, x.ndim) for d in source]
    dst = [_wrap(d, x.ndim) for d in destination]
    if len(src) != len(dst) or len(set(src)) != len(src) or len(set(dst)) != len(dst):
        raise _unsupported("movedim with mismatched or repeated dims")
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
    x = _tensor(call)
    if x.ndim > 2:
        raise _unsupported("t() of more than 2 dims")
    return like(x, x.shape[::-1])


@shape_rule(*SQUEEZE)
@lenient
def shape_squeeze(call: OpCall) -> TensorInfo:
    """``squeeze(x, dim=None)``: removes the given (or every) size-1 dim."""
    x = _tensor(call)
    dims = call.arg(1, "dim", None)
    if dims is None:
        return like(x, tuple(s for s in x.shape if s != 1))
    dims = [_wrap(d, x.ndim) for d in ((dims,) if _is_int(dims) else _ints(dims, "dims"))]
    if len(set(dims)) != len(dims):
        raise _unsupported("squeeze with a repeated dim")
    return like(x, tuple(s for i, s in enumerate(x.shape) if not (i in dims and s == 1)))


@shape_rule(*UNSQUEEZE)
@lenient
def shape_unsqueeze(call: OpCall) -> TensorInfo:
    """``unsqueeze(x, dim)``: inserts a size-1 dim (dim in [-ndim-1, ndim])."""
    x = _tensor(call)
    dim = _wrap(call.arg(1, "dim"), x.ndim + 1)
    return like(x, x.shape[:dim] + (1,) + x.shape[dim:])


def _expand(x: TensorInfo, sizes: Any) -> tuple[int, ...]:
    sizes = _ints(sizes, "sizes")
    extra = len(sizes) - x.ndim
    if extra < 0 or any(s < 0 for s in sizes[:extra]):
        raise _unsupported(f"expand {x.shape} to {sizes}")
    out = list(sizes[:extra])
    for have, want in zip(x.shape, sizes[extra:]):
        if want == -1 or want == have:
            out.append(have)
        elif have == 1 and want >= 0:
            out.append(want)
        else:
            raise _unsupported(f"expand {x.shape} to {sizes}")
    return tuple(out)


@shape_rule(*EXPAND)
@lenient
def shape_expand(call: OpCall) -> TensorInfo:
    """``expand(*sizes)`` / ``broadcast_to(x, shape)``: -1 keeps a dim, 1s grow."""
    x = _tensor(call)
    return like(x, _expand(x, _varargs(call, "shape" if "shape" in call.kwargs else "size")))


def _repeat(x: TensorInfo, repeats: tuple[int, ...]) -> tuple[int, ...]:
    if len(repeats) < x.ndim or any(r < 0 for r in repeats):
        raise _unsupported(f"repeat {x.shape} by {repeats}")
    padded = (1,) * (len(repeats) - x.ndim) + tuple(x.shape)
    return tuple(s * r for s, r in zip(padded, repeats))


@shape_rule(*REPEAT)
@lenient
def shape_repeat(call: OpCall) -> TensorInfo:
    """``repeat(*repeats)``: at least ndim repeats; leading ones add dims."""
    x = _tensor(call)
    return like(x, _repeat(x, _ints(_varargs(call, "repeats"), "repeats")))


@shape_rule(*TILE)
@lenient
def shape_tile(call: OpCall) -> TensorInfo:
    """``tile(x, dims)``: like repeat, fewer dims padded with leading ones."""
    x = _tensor(call)
    dims = _ints(_varargs(call, "dims"), "dims")
    return like(x, _repeat(x, (1,) * (x.ndim - len(dims)) + dims))


# ------------------------------------------------------------- joins, splits


def _tensor_list(value: Any) -> list[TensorInfo]:
    if not isinstance(value, (list, tuple)) or not value or not all(
        isinstance(t, TensorInfo) for t in value
    ):
        raise _unsupported("not a non-empty list of tensors")
    return list(value)


@shape_rule(*CAT)
@lenient
def shape_cat(call: OpCall) -> TensorInfo:
    """``cat(tensors, dim=0)`` (``axis`` for concatenate): sizes add along
    ``dim``; legacy 1-D empty tensors are skipped; dtypes promote."""
    tensors = _tensor_list(call.arg(0, "tensors"))
    dim = call.kwargs.get("axis", call.arg(1, "dim", 0))
    dtype = result_dtype(*tensors)
    if any(t.ndim == 0 for t in tensors):
        raise _unsupported("cat of a 0-dim tensor")
    kept = [t for t in tensors if t.shape != (0,)]
    if not kept:
        return TensorInfo((0,), dtype)
    first = kept[0]
    dim = _wrap(dim, first.ndim)
    for t in kept[1:]:
        if t.ndim != first.ndim or any(a != b for i, (a, b) in enumerate(zip(t.shape, first.shape)) if i != dim):
            raise _unsupported("cat of mismatched shapes")
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
        raise _unsupported("stack of unequal shapes")
    dim = _wrap(call.arg(1, "dim", 0), first.ndim + 1)
    return TensorInfo(first.shape[:dim] + (len(tensors),) + first.shape[dim:], result_dtype(*tensors))


def _pieces(x: TensorInfo, dim: int, sizes: Sequence[int]) -> tuple[TensorInfo, ...]:
    return tuple(like(x, x.shape[:dim] + (s,) + x.shape[dim + 1:]) for s in sizes)


def _split_sizes(size: int, split_size: int) -> list[int]:
    """torch.split with an int: pieces of split_size, the last one shorter."""
    if split_size < 0 or (split_size == 0 and size != 0):
        raise _unsupported(f"split size {split_size} of {size}")
    if split_size == 0:
        return [0]
    count = max(-(-size // split_size), 1)
    return [split_size] * (count - 1) + [size - split_size * (count - 1)]


@shape_rule(*CHUNK)
@lenient
def shape_chunk(call: OpCall) -> tuple[TensorInfo, ...]:
    """``chunk(x, chunks, dim=0)``: pieces of ceil(size / chunks); there may
    be fewer than ``chunks``."""
    x = _tensor(call)
    chunks, dim = call.arg(1, "chunks"), call.arg(2, "dim", 0)
    if x.ndim == 0 or not _is_int(chunks) or chunks <= 0:
        raise _unsupported("chunk of a 0-dim tensor or into no chunks")
    dim = _wrap(dim, x.ndim)
    size = x.shape[dim]
    step = -(-size // chunks)
    sizes = [0] * chunks if step == 0 else _split_sizes(size, step)
    return _pieces(x, dim, sizes)


@shape_rule(*SPLIT)
@lenient
def shape_split(call: OpCall) -> tuple[TensorInfo, ...]:
    """``split(x, split_size_or_sections, dim=0)`` (``split_size`` /
    ``split_sizes`` as keywords): an int makes equal pieces, a list exact ones."""
    x = _tensor(call)
    sections = None
    for name in ("split_size_or_sections", "split_size", "split_sizes"):
        if name in call.kwargs:
            sections = call.kwargs[name]
    if sections is None:
        sections = call.arg(1, "split_size")
    dim = call.arg(2, "dim", 0)
    if x.ndim == 0:
        raise _unsupported("split of a 0-dim tensor")
    dim = _wrap(dim, x.ndim)
    size = x.shape[dim]
    if _is_int(sections):
        return _pieces(x, dim, _split_sizes(size, sections))
    sections = _ints(sections, "split sizes")
    if sum(sections) != size or any(s < 0 for s in sections):
        raise _unsupported(f"split sizes {sections} of {size}")
    return _pieces(x, dim, sections)


@shape_rule(*UNBIND)
@lenient
def shape_unbind(call: OpCall) -> tuple[TensorInfo, ...]:
    """``unbind(x, dim=0)``: shape[dim] tensors without that dim."""
    x = _tensor(call)
    if x.ndim == 0:
        raise _unsupported("unbind of a 0-dim tensor")
    dim = _wrap(call.arg(1, "dim", 0), x.ndim)
    rest = like(x, x.shape[:dim] + x.shape[dim + 1:])
    return (rest,) * x.shape[dim]


# ------------------------------------------------------------------- indexing


def _slice_length(item: slice, size: int) -> int:
    for bound in (item.start, item.stop, item.step):
        if bound is not None and not _is_int(bound):
            raise _unsupported(f"slice bound {bound!r}")
    if item.step is not None and item.step <= 0:
        raise _unsupported("slice step must be positive")
    return len(range(*item.indices(size)))


def index_shape(shape: tuple[int, ...], index: Any) -> tuple[int, ...]:
    """Shape of ``x[index]`` for basic indexing: ints, slices, None, Ellipsis, bools."""
    items = index if isinstance(index, tuple) else (index,)
    for item in items:
        if not (item is None or item is Ellipsis or isinstance(item, (int, slice))):
            raise _unsupported(f"advanced index {item!r}")
    consumed = sum(1 for i in items if isinstance(i, slice) or _is_int(i))
    ellipses = sum(1 for i in items if i is Ellipsis)
    bools = sum(1 for i in items if isinstance(i, bool))
    if bools > 1 or bools and any(_is_int(i) for i in items):
        raise _unsupported("bool indices that torch combines as advanced indexing")
    if consumed > len(shape) or ellipses > 1:  # torch accepts several ellipses: meta decides
        raise _unsupported(f"index {index!r} for {len(shape)} dims")
    fill = (slice(None),) * (len(shape) - consumed)
    if ellipses:
        at = items.index(Ellipsis)
        items = items[:at] + fill + items[at + 1:]
    else:
        items = items + fill
    out, dims = [], iter(shape)
    for item in items:
        if item is None or item is True:
            out.append(1)
        elif item is False:
            out.append(0)
        elif isinstance(item, slice):
            out.append(_slice_length(item, next(dims)))
        else:
            size = next(dims)
            if not -size <= item < size:
                raise _unsupported(f"index {item} out of range for size {size}")
    return tuple(out)


@shape_rule(*GETITEM)
@lenient
def shape_getitem(call: OpCall) -> Any:
    """``x[index]``: basic indexing of a tensor; an element (or slice) of a
    tuple or list of outputs (chunk, split, a module returning a tuple) or
    of a torch.Size."""
    container, index = call.args[0], call.args[1]
    if isinstance(container, TensorInfo):
        return like(container, index_shape(container.shape, index))
    if isinstance(container, (tuple, list)):
        try:
            return container[index]
        except (IndexError, TypeError) as error:
            raise _unsupported(f"index {index!r} of a {type(container).__name__}") from error
    raise _unsupported(f"getitem on {type(container).__name__}")


@shape_rule(*NARROW)
@lenient
def shape_narrow(call: OpCall) -> TensorInfo:
    """``narrow(x, dim, start, length)``: ``start`` may be negative."""
    x = _tensor(call)
    dim, start, length = call.arg(1, "dim"), call.arg(2, "start"), call.arg(3, "length")
    if x.ndim == 0 or not (_is_int(start) and _is_int(length)):
        raise _unsupported("narrow of a 0-dim tensor or with tensor bounds")
    dim = _wrap(dim, x.ndim)
    size = x.shape[dim]
    if not -size <= start <= size:
        raise _unsupported("narrow start out of range")
    if start < 0:
        start += size
    if length < 0 or start + length > size:
        raise _unsupported("narrow length out of range")
    return like(x, x.shape[:dim] + (length,) + x.shape[dim + 1:])


@shape_rule(*SELECT)
@lenient
def shape_select(call: OpCall) -> TensorInfo:
    """``select(x, dim, index)``: drops ``dim``."""
    x = _tensor(call)
    if x.ndim == 0:
        raise _unsupported("select of a 0-dim tensor")
    dim = _wrap(call.arg(1, "dim"), x.ndim)
    index = call.arg(2, "index")
    if not _is_int(index) or not -x.shape[dim] <= index < x.shape[dim]:
        raise _unsupported(f"select index {index!r}")
    return like(x, x.shape[:dim] + x.shape[dim + 1:])


@shape_rule(*SLICE)
@lenient
def shape_slice(call: OpCall) -> TensorInfo:
    """``aten.slice(x, dim=0, start=None, end=None, step=1)``: Python slicing."""
    x = _tensor(call)
    if x.ndim == 0:
        raise _unsupported("slice of a 0-dim tensor")
    dim = _wrap(call.arg(1, "dim", 0), x.ndim)
    item = slice(call.arg(2, "start", None), call.arg(3, "end", None), call.arg(4, "step", 1))
    return like(x, x.shape[:dim] + (_slice_length(item, x.shape[dim]),) + x.shape[dim + 1:])


# ------------------------------------------------------------- size queries


@shape_rule(*SIZE)
@lenient
def shape_size(call: OpCall) -> Any:
    """``x.size()`` -> ``torch.Size``; ``x.size(dim)`` -> int."""
    x = _tensor(call)
    dim = call.arg(1, "dim", None)
    if dim is None:
        return torch.Size(x.shape)
    if x.ndim == 0:
        raise _unsupported("size(dim) of a 0-dim tensor")
    return x.shape[_wrap(dim, x.ndim)]


@shape_rule(*DIM)
@lenient
def shape_dim(call: OpCall) -> int:
    """``x.dim()`` -> int."""
    return _tensor(call).ndim


@shape_rule(*NUMEL)
@lenient
def shape_numel(call: OpCall) -> int:
    """``x.numel()`` / ``torch.numel(x)`` -> int."""
    return _tensor(call).numel


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
            raise _unsupported(f"tensor attribute {name!r}")
        return value
    value = getattr(obj, name, None) if isinstance(obj, tuple) else None
    if isinstance(value, (TensorInfo, tuple)):
        return value
    raise _unsupported(f"attribute {name!r} of a {type(obj).__name__}")


@shape_rule(*LEN)
@lenient
def shape_len(call: OpCall) -> int:
    """``len(x)``: the first dim of a tensor, the length of a tuple."""
    obj = call.args[0]
    if isinstance(obj, TensorInfo):
        if obj.ndim == 0:
            raise _unsupported("len() of a 0-dim tensor")
        return obj.shape[0]
    if isinstance(obj, (tuple, list)):
        return len(obj)
    raise _unsupported(f"len of a {type(obj).__name__}")


# --------------------------------------------------------------- identities

#: Ranks torch insists on (dropout2d / dropout3d only warn about theirs).
_DROPOUT_RANKS = {nn.Dropout1d: (2, 3), F.dropout1d: (2, 3)}


@shape_rule(*DROPOUT, *STOCHASTIC_DEPTH)
@lenient
def shape_dropout(call: OpCall) -> TensorInfo:
    """Dropout / stochastic depth: the input's shape and dtype (p in [0, 1];
    dropout1d needs a 2-d or 3-d input; stochastic depth mode ``batch`` / ``row``)."""
    x = _tensor(call)
    key = type(call.module) if call.module is not None else call.target
    p = call.module.p if call.module is not None else call.arg(1, "p", 0.5)
    if not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
        raise _unsupported(f"dropout probability {p!r}")
    if key in _DROPOUT_RANKS and x.ndim not in _DROPOUT_RANKS[key]:
        raise _unsupported(f"{x.ndim}-d input of a rank-checked dropout")
    if key in STOCHASTIC_DEPTH:
        mode = call.module.mode if call.module is not None else call.arg(2, "mode")
        if mode not in ("batch", "row"):
            raise _unsupported(f"stochastic depth mode {mode!r}")
    return like(x)


@shape_rule(*NATIVE_DROPOUT)
@lenient
def shape_native_dropout(call: OpCall) -> tuple[TensorInfo, TensorInfo]:
    """``aten.native_dropout(x, p, train)`` -> (output, bool mask)."""
    x = _tensor(call)
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
    return like(_tensor(call))


@shape_rule(*CAST)
@lenient
def shape_cast(call: OpCall) -> TensorInfo:
    """``x.float()``, ``x.half()``, ``x.long()`` ...: the named dtype."""
    return like(_tensor(call), dtype=CASTS[call.target.name])


@shape_rule(*TO)
@lenient
def shape_to(call: OpCall) -> TensorInfo:
    """``x.to(dtype)``, ``x.to(device, dtype)``, ``x.to(other)``,
    ``x.type(dtype)``, ``x.type_as(other)``, ``aten._to_copy(x, dtype=)``:
    the first dtype or tensor found decides; devices change nothing here."""
    x = _tensor(call)
    name = call.target.name if isinstance(call.target, Method) else _packet(call.target).__name__
    candidates = list(call.args[1:]) + [call.kwargs.get("dtype")]
    for value in candidates:
        if isinstance(value, torch.dtype):
            return like(x, dtype=value)
        if isinstance(value, TensorInfo):
            return like(x, dtype=value.dtype)
        if isinstance(value, str) and name == "type":
            raise _unsupported("x.type() with a type name")
    if name == "type":
        raise _unsupported("x.type() returns a string")
    return like(x)


@shape_rule(*LIKE)
@lenient
def shape_like(call: OpCall) -> TensorInfo:
    """``zeros_like(x, *, dtype=None)`` / ``full_like(x, value, *, dtype=None)``."""
    x = _tensor(call)
    return like(x, dtype=call.kwargs.get("dtype") or x.dtype)


@shape_rule(*NEW)
@lenient
def shape_new(call: OpCall) -> TensorInfo:
    """``x.new_zeros(size, *, dtype=None)`` (size as ints too) /
    ``x.new_full(size, fill_value)``: shape ``size``, x's dtype by default."""
    x = _tensor(call)
    name = call.target.name if isinstance(call.target, Method) else _packet(call.target).__name__
    if name == "new_full":
        size = call.arg(1, "size")
    else:
        size = _varargs(call, "size")
    return TensorInfo(_ints(tuple(size), "size"), call.kwargs.get("dtype") or x.dtype)


# ------------------------------------------------------- padding, selection


def _pad_args(call: OpCall) -> tuple[tuple[int, ...], str]:
    """(pad widths, last dim first; mode) of F.pad, a padding module or aten."""
    module = call.module
    if module is not None:
        name = type(module).__name__
        mode = next((m for key, m in (("Reflection", "reflect"), ("Replication", "replicate"),
                                      ("Circular", "circular")) if name.startswith(key)), "constant")
        return _ints(tuple(module.padding), "padding"), mode
    target = _packet(call.target)
    if target in PAD_ATEN_MODES:
        return _ints(tuple(call.arg(1, "padding")), "padding"), PAD_ATEN_MODES[target]
    if target is aten.constant_pad_nd:
        return _ints(tuple(call.arg(1, "pad")), "pad"), "constant"
    return _ints(tuple(call.arg(1, "pad")), "pad"), call.arg(2, "mode", "constant")


@shape_rule(*PAD, *PAD_ATEN_MODES)
def shape_pad(call: OpCall) -> TensorInfo:
    """Padding ``(input, pad, mode='constant', value=None)``: ``pad`` lists
    (left, right) widths from the last dim backwards; constant padding may
    crop (negative widths); the other modes need an input of k + 1 or k + 2
    dims for k padded dims and widths they can reflect or wrap."""
    x = _tensor(call)
    pad, mode = _pad_args(call)
    if len(pad) % 2 or len(pad) // 2 > x.ndim:
        raise _unsupported(f"pad {pad} of a {x.ndim}-d tensor")
    shape = list(x.shape)
    for i in range(len(pad) // 2):
        dim = x.ndim - 1 - i
        before, after = pad[2 * i], pad[2 * i + 1]
        if mode != "constant" and not _pad_fits(mode, shape[dim], before, after):
            raise _unsupported(f"{mode} padding {pad} of {x.shape}")
        if shape[dim] + min(before, 0) + min(after, 0) < 0:
            raise _unsupported(f"pad {pad} crops more than {x.shape} holds")
        shape[dim] += before + after
        if shape[dim] < 0:
            raise _unsupported(f"pad {pad} crops {x.shape} below zero")
    if mode != "constant" and (x.ndim not in (len(pad) // 2 + 1, len(pad) // 2 + 2)
                               or 0 in x.shape[x.ndim - len(pad) // 2 - 1:]):
        raise _unsupported(f"{mode} padding of {len(pad) // 2} dims of a {x.shape} tensor")
    if mode not in ("constant", "reflect", "replicate", "circular"):
        raise _unsupported(f"padding mode {mode!r}")
    return like(x, shape)


def _pad_fits(mode: str, size: int, before: int, after: int) -> bool:
    if before < 0 or after < 0:
        return False
    if mode == "reflect":
        return before < size and after < size
    if mode == "circular":
        return before <= size and after <= size
    return size > 0  # replicate


@shape_rule(*ROLL_FLIP)
def shape_roll_flip(call: OpCall) -> TensorInfo:
    """roll / flip: the input's shape (fliplr needs 2 dims or more, flipud 1)."""
    x = _tensor(call)
    name = call.target.name if isinstance(call.target, Method) else _packet(call.target).__name__
    needed = {"fliplr": 2, "flipud": 1}.get(name, 0)
    if x.ndim < needed:
        raise _unsupported(f"{name} of a {x.ndim}-d tensor")
    if name in ("roll", "flip"):
        dims = call.arg(2, "dims", None) if name == "roll" else call.arg(1, "dims")
        dims = () if dims is None else (dims,) if _is_int(dims) else _ints(tuple(dims), "dims")
        wrapped = [_wrap(d, x.ndim) for d in dims]
        if name == "flip" and len(set(wrapped)) != len(wrapped) or name == "roll" and dims and x.ndim == 0:
            raise _unsupported(f"{name} over a repeated dim, or a dim of a 0-d tensor")
        if name == "roll":
            shifts = call.arg(1, "shifts")
            count = 1 if _is_int(shifts) else len(_ints(tuple(shifts), "shifts"))
            if dims and count != len(dims) or not dims and count != 1:
                raise _unsupported("roll shifts and dims of different lengths")
    return like(x)


@shape_rule(*INDEX_SELECT)
def shape_index_select(call: OpCall) -> TensorInfo:
    """``index_select(x, dim, index)``: ``dim`` becomes index's length (a 0-d or 1-d integer index)."""
    x, index = _tensor(call), call.arg(2, "index")
    if not isinstance(index, TensorInfo) or index.ndim > 1 or index.dtype not in (torch.int64, torch.int32):
        raise _unsupported("index_select with a non-integer or multi-dim index")
    if x.ndim == 0:
        raise _unsupported("index_select of a 0-d tensor")
    dim = _wrap(call.arg(1, "dim"), x.ndim)
    return like(x, x.shape[:dim] + (index.numel,) + x.shape[dim + 1:])


@shape_rule(*GATHER)
def shape_gather(call: OpCall) -> TensorInfo:
    """``gather(x, dim, index)``: index's shape, x's dtype (index no larger than x off dim)."""
    x, index = _tensor(call), call.arg(2, "index")
    if not isinstance(index, TensorInfo) or index.dtype != torch.int64:
        raise _unsupported("gather without an int64 index")
    dim = _wrap(call.arg(1, "dim"), x.ndim)
    if max(index.ndim, 1) != max(x.ndim, 1) or any(
        i > s for d, (i, s) in enumerate(zip(index.shape, x.shape)) if d != dim
    ):
        raise _unsupported("gather index larger than its input")
    return like(x, index.shape)


@shape_rule(*WHERE)
def shape_where(call: OpCall) -> TensorInfo:
    """``where(condition, input, other)``: the broadcast of the three, dtypes promoted."""
    if isinstance(call.target, Method):  # x.where(condition, y) is where(condition, x, y)
        a, condition, b = call.args[0], call.arg(1, "condition"), call.arg(2, "other")
    else:
        condition, a, b = call.arg(0, "condition"), call.arg(1, "input"), call.arg(2, "other")
    if not isinstance(condition, TensorInfo) or condition.dtype != torch.bool:
        raise _unsupported("where without a bool condition")
    tensors = [t for t in (condition, a, b) if isinstance(t, TensorInfo)]
    try:
        shape = broadcast_shapes(*(t.shape for t in tensors))
    except RuntimeError as error:
        raise _unsupported(f"where of shapes that do not broadcast: {error}") from error
    return TensorInfo(tuple(shape), promote(a, b))


@shape_rule(*MASKED_FILL)
def shape_masked_fill(call: OpCall) -> TensorInfo:
    """``masked_fill(x, mask, value)``: x's dtype, the broadcast of x and mask
    (in place: x's shape, which the mask must broadcast to)."""
    x, mask = _tensor(call), call.arg(1, "mask")
    if not isinstance(mask, TensorInfo) or mask.dtype != torch.bool:
        raise _unsupported("masked_fill without a bool mask")
    try:
        shape = tuple(broadcast_shapes(x.shape, mask.shape))
    except RuntimeError as error:
        raise _unsupported(f"masked_fill of shapes that do not broadcast: {error}") from error
    value = call.arg(2, "value")
    if isinstance(value, TensorInfo) and value.ndim:
        raise _unsupported("masked_fill with a non-scalar value")
    if is_inplace(call.target) and shape != x.shape:
        raise _unsupported("in-place masked_fill growing its input")
    return like(x, shape)


# ------------------------------------------------------ value permutations


def _groups(call: OpCall, attribute: str, index: int = 1) -> int:
    value = getattr(call.module, attribute) if call.module is not None else call.arg(index, attribute)
    if not _is_int(value) or value <= 0:
        raise _unsupported(f"{attribute} {value!r}")
    return value


@shape_rule(*CHANNEL_SHUFFLE)
@lenient
def shape_channel_shuffle(call: OpCall) -> TensorInfo:
    """``channel_shuffle(x, groups)``: same shape; C divisible by groups."""
    x = _tensor(call)
    groups = _groups(call, "groups")
    if x.ndim < 3 or x.shape[1] % groups:
        raise _unsupported("channel_shuffle needs [N, C, *] with C divisible by groups")
    return like(x)


@shape_rule(*PIXEL_SHUFFLE)
@lenient
def shape_pixel_shuffle(call: OpCall) -> TensorInfo:
    """``pixel_shuffle(x, r)``: ``[*, C*r*r, H, W] -> [*, C, H*r, W*r]``."""
    x = _tensor(call)
    r = _groups(call, "upscale_factor")
    if x.ndim < 3 or x.shape[-3] % (r * r):
        raise _unsupported("pixel_shuffle needs channels divisible by r*r")
    c, h, w = x.shape[-3:]
    return like(x, x.shape[:-3] + (c // (r * r), h * r, w * r))


@shape_rule(*PIXEL_UNSHUFFLE)
@lenient
def shape_pixel_unshuffle(call: OpCall) -> TensorInfo:
    """``pixel_unshuffle(x, r)``: ``[*, C, H*r, W*r] -> [*, C*r*r, H, W]``."""
    x = _tensor(call)
    r = _groups(call, "downscale_factor")
    if x.ndim < 3 or x.shape[-2] % r or x.shape[-1] % r:
        raise _unsupported("pixel_unshuffle needs H and W divisible by r")
    c, h, w = x.shape[-3:]
    return like(x, x.shape[:-3] + (c * r * r, h // r, w // r))


@counter(*CHANNEL_SHUFFLE, *PIXEL_SHUFFLE, *PIXEL_UNSHUFFLE, op="shuffle")
def count_shuffle(call: OpCall) -> Counts:
    """A value permutation (RULES: a product with a sparse permutation
    matrix, one nonzero per row): 1 mult per output element, 0 adds."""
    return Counts(mults=call.y.numel)


@hookimpl
def micronet_register_counters():
    return collect(sys.modules[__name__])
