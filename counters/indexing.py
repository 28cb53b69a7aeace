"""Indexing, padding, selections and value permutations.

Two readings of RULES' "permutations count as a product with a sparse
permutation matrix" are possible; the counters take both, each for its kind:

- **Layout ops are free**: indexing (advanced indexing too), narrow,
  select, slice, index_select, gather, padding (every mode), roll and flip
  here, like the views, joins and casts of :mod:`micronet.counters.free`.
  They change how a tensor is indexed; PyTorch runs most of them as
  zero-copy stride changes, and the consumer reads through any layout, so
  no value is computed.
- **Value permutations are counted**: ``channel_shuffle``, ``pixel_shuffle``
  and ``pixel_unshuffle`` exist only to permute values across channels, the
  case RULES' clause is about. A product with a permutation matrix (one
  nonzero per row) costs 1 mult and 0 adds per output element. Note that
  torchvision's ShuffleNetV2 writes its shuffle as view / transpose /
  contiguous / view, which this reading counts as free layout.

Selections driven by a mask computed elsewhere (``torch.where``,
``masked_fill``) are free as well: the comparison that made the mask is
counted where it happens (``micronet.counters.elementwise``).

The free ops are recorded (status "free") and have shape rules so that the
walker never has to run them on meta tensors, except advanced indexing
(``ADVANCED_INDEX``), whose shapes are left to meta execution.
"""
from __future__ import annotations

import operator
import sys
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from micronet.counters._common import (aten_ops, bare_name, broadcast_shapes, distinct, first_tensor, ints,
                                       is_int, lenient, like, methods, packet, promote, unsupported, wrap_dim)
from micronet.counters.elementwise import is_inplace
from micronet.manager import hookimpl
from micronet.records import Counts, TensorInfo
from micronet.registry import Method, OpCall, collect, counter, free, shape_rule

aten = torch.ops.aten


# --------------------------------------------------------------------- targets

GETITEM = distinct(operator.getitem, *methods("__getitem__"))
NARROW = distinct(torch.narrow, *methods("narrow"), *aten_ops("narrow.default"))
SELECT = distinct(torch.select, *methods("select"), *aten_ops("select.int", "select_copy"))
SLICE = aten_ops("slice.Tensor", "slice_copy")
PAD_MODULES = tuple(getattr(nn, f"{kind}Pad{n}d")
                    for kind in ("Zero", "Constant", "Reflection", "Replication", "Circular")
                    for n in (1, 2, 3) if hasattr(nn, f"{kind}Pad{n}d"))
PAD = distinct(F.pad, *PAD_MODULES, *aten_ops("constant_pad_nd", "pad"))
PAD_ATEN_MODES = {op: mode
                  for mode, kind in (("reflect", "reflection"), ("replicate", "replication"))
                  for op in aten_ops(*(f"{kind}_pad{n}d" for n in (1, 2, 3)))}
ROLL_FLIP = distinct(torch.roll, torch.flip, torch.fliplr, torch.flipud,
                     *methods("roll", "flip", "fliplr", "flipud"), *aten_ops("roll", "flip"))
INDEX_SELECT = distinct(torch.index_select, *methods("index_select"), *aten_ops("index_select"))
GATHER = distinct(torch.gather, *methods("gather"), *aten_ops("gather"))
WHERE = distinct(torch.where, *methods("where"), *aten_ops("where.self"))
MASKED_FILL = distinct(*methods("masked_fill", "masked_fill_"), torch.masked_fill,
                       *aten_ops("masked_fill", "masked_fill_"))
ADVANCED_INDEX = aten_ops("index.Tensor", "copy_", "copy", "scalar_tensor", "lift_fresh")
CHANNEL_SHUFFLE = distinct(nn.ChannelShuffle, F.channel_shuffle, torch.channel_shuffle,
                           *aten_ops("channel_shuffle", "native_channel_shuffle"))
PIXEL_SHUFFLE = distinct(nn.PixelShuffle, F.pixel_shuffle, *aten_ops("pixel_shuffle"))
PIXEL_UNSHUFFLE = distinct(nn.PixelUnshuffle, F.pixel_unshuffle, *aten_ops("pixel_unshuffle"))

indexing = free(*GETITEM, *NARROW, *SELECT, *SLICE)
moves = free(*PAD, *PAD_ATEN_MODES, *ROLL_FLIP)
selections = free(*INDEX_SELECT, *GATHER, *WHERE, *MASKED_FILL, *ADVANCED_INDEX)


# ------------------------------------------------------------------- indexing


def _slice_length(item: slice, size: int) -> int:
    for bound in (item.start, item.stop, item.step):
        if bound is not None and not is_int(bound):
            raise unsupported(f"slice bound {bound!r}")
    if item.step is not None and item.step <= 0:
        raise unsupported("slice step must be positive")
    return len(range(*item.indices(size)))


def index_shape(shape: tuple[int, ...], index: Any) -> tuple[int, ...]:
    """Shape of ``x[index]`` for basic indexing: ints, slices, None, Ellipsis, bools."""
    items = index if isinstance(index, tuple) else (index,)
    for item in items:
        if not (item is None or item is Ellipsis or isinstance(item, (int, slice))):
            raise unsupported(f"advanced index {item!r}")
    consumed = sum(1 for i in items if isinstance(i, slice) or is_int(i))
    ellipses = sum(1 for i in items if i is Ellipsis)
    bools = sum(1 for i in items if isinstance(i, bool))
    if bools > 1 or bools and any(is_int(i) for i in items):
        raise unsupported("bool indices that torch combines as advanced indexing")
    if consumed > len(shape) or ellipses > 1:  # torch accepts several ellipses: meta decides
        raise unsupported(f"index {index!r} for {len(shape)} dims")
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
                raise unsupported(f"index {item} out of range for size {size}")
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
            raise unsupported(f"index {index!r} of a {type(container).__name__}") from error
    raise unsupported(f"getitem on {type(container).__name__}")


@shape_rule(*NARROW)
@lenient
def shape_narrow(call: OpCall) -> TensorInfo:
    """``narrow(x, dim, start, length)``: ``start`` may be negative."""
    x = first_tensor(call)
    dim, start, length = call.arg(1, "dim"), call.arg(2, "start"), call.arg(3, "length")
    if x.ndim == 0 or not (is_int(start) and is_int(length)):
        raise unsupported("narrow of a 0-dim tensor or with tensor bounds")
    dim = wrap_dim(dim, x.ndim)
    size = x.shape[dim]
    if not -size <= start <= size:
        raise unsupported("narrow start out of range")
    if start < 0:
        start += size
    if length < 0 or start + length > size:
        raise unsupported("narrow length out of range")
    return like(x, x.shape[:dim] + (length,) + x.shape[dim + 1:])


@shape_rule(*SELECT)
@lenient
def shape_select(call: OpCall) -> TensorInfo:
    """``select(x, dim, index)``: drops ``dim``."""
    x = first_tensor(call)
    if x.ndim == 0:
        raise unsupported("select of a 0-dim tensor")
    dim = wrap_dim(call.arg(1, "dim"), x.ndim)
    index = call.arg(2, "index")
    if not is_int(index) or not -x.shape[dim] <= index < x.shape[dim]:
        raise unsupported(f"select index {index!r}")
    return like(x, x.shape[:dim] + x.shape[dim + 1:])


@shape_rule(*SLICE)
@lenient
def shape_slice(call: OpCall) -> TensorInfo:
    """``aten.slice(x, dim=0, start=None, end=None, step=1)``: Python slicing."""
    x = first_tensor(call)
    if x.ndim == 0:
        raise unsupported("slice of a 0-dim tensor")
    dim = wrap_dim(call.arg(1, "dim", 0), x.ndim)
    item = slice(call.arg(2, "start", None), call.arg(3, "end", None), call.arg(4, "step", 1))
    return like(x, x.shape[:dim] + (_slice_length(item, x.shape[dim]),) + x.shape[dim + 1:])


# ------------------------------------------------------- padding, selection


def _pad_args(call: OpCall) -> tuple[tuple[int, ...], str]:
    """(pad widths, last dim first; mode) of F.pad, a padding module or aten."""
    module = call.module
    if module is not None:
        name = type(module).__name__
        mode = next((m for key, m in (("Reflection", "reflect"), ("Replication", "replicate"),
                                      ("Circular", "circular")) if name.startswith(key)), "constant")
        return ints(tuple(module.padding), "padding"), mode
    target = packet(call.target)
    if target in PAD_ATEN_MODES:
        return ints(tuple(call.arg(1, "padding")), "padding"), PAD_ATEN_MODES[target]
    if target is aten.constant_pad_nd:
        return ints(tuple(call.arg(1, "pad")), "pad"), "constant"
    return ints(tuple(call.arg(1, "pad")), "pad"), call.arg(2, "mode", "constant")


@shape_rule(*PAD, *PAD_ATEN_MODES)
def shape_pad(call: OpCall) -> TensorInfo:
    """Padding ``(input, pad, mode='constant', value=None)``: ``pad`` lists
    (left, right) widths from the last dim backwards; constant padding may
    crop (negative widths); the other modes need an input of k + 1 or k + 2
    dims for k padded dims and widths they can reflect or wrap."""
    x = first_tensor(call)
    pad, mode = _pad_args(call)
    if len(pad) % 2 or len(pad) // 2 > x.ndim:
        raise unsupported(f"pad {pad} of a {x.ndim}-d tensor")
    shape = list(x.shape)
    for i in range(len(pad) // 2):
        dim = x.ndim - 1 - i
        before, after = pad[2 * i], pad[2 * i + 1]
        if mode != "constant" and not _pad_fits(mode, shape[dim], before, after):
            raise unsupported(f"{mode} padding {pad} of {x.shape}")
        if shape[dim] + min(before, 0) + min(after, 0) < 0:
            raise unsupported(f"pad {pad} crops more than {x.shape} holds")
        shape[dim] += before + after
        if shape[dim] < 0:
            raise unsupported(f"pad {pad} crops {x.shape} below zero")
    if mode != "constant" and (x.ndim not in (len(pad) // 2 + 1, len(pad) // 2 + 2)
                               or 0 in x.shape[x.ndim - len(pad) // 2 - 1:]):
        raise unsupported(f"{mode} padding of {len(pad) // 2} dims of a {x.shape} tensor")
    if mode not in ("constant", "reflect", "replicate", "circular"):
        raise unsupported(f"padding mode {mode!r}")
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
    x = first_tensor(call)
    name = bare_name(call.target)
    needed = {"fliplr": 2, "flipud": 1}.get(name, 0)
    if x.ndim < needed:
        raise unsupported(f"{name} of a {x.ndim}-d tensor")
    if name in ("roll", "flip"):
        dims = call.arg(2, "dims", None) if name == "roll" else call.arg(1, "dims")
        dims = () if dims is None else (dims,) if is_int(dims) else ints(tuple(dims), "dims")
        wrapped = [wrap_dim(d, x.ndim) for d in dims]
        if name == "flip" and len(set(wrapped)) != len(wrapped) or name == "roll" and dims and x.ndim == 0:
            raise unsupported(f"{name} over a repeated dim, or a dim of a 0-d tensor")
        if name == "roll":
            shifts = call.arg(1, "shifts")
            count = 1 if is_int(shifts) else len(ints(tuple(shifts), "shifts"))
            if dims and count != len(dims) or not dims and count != 1:
                raise unsupported("roll shifts and dims of different lengths")
    return like(x)


@shape_rule(*INDEX_SELECT)
def shape_index_select(call: OpCall) -> TensorInfo:
    """``index_select(x, dim, index)``: ``dim`` becomes index's length (a 0-d or 1-d integer index)."""
    x, index = first_tensor(call), call.arg(2, "index")
    if not isinstance(index, TensorInfo) or index.ndim > 1 or index.dtype not in (torch.int64, torch.int32):
        raise unsupported("index_select with a non-integer or multi-dim index")
    if x.ndim == 0:
        raise unsupported("index_select of a 0-d tensor")
    dim = wrap_dim(call.arg(1, "dim"), x.ndim)
    return like(x, x.shape[:dim] + (index.numel,) + x.shape[dim + 1:])


@shape_rule(*GATHER)
def shape_gather(call: OpCall) -> TensorInfo:
    """``gather(x, dim, index)``: index's shape, x's dtype (index no larger than x off dim)."""
    x, index = first_tensor(call), call.arg(2, "index")
    if not isinstance(index, TensorInfo) or index.dtype != torch.int64:
        raise unsupported("gather without an int64 index")
    dim = wrap_dim(call.arg(1, "dim"), x.ndim)
    if max(index.ndim, 1) != max(x.ndim, 1) or any(
        i > s for d, (i, s) in enumerate(zip(index.shape, x.shape)) if d != dim
    ):
        raise unsupported("gather index larger than its input")
    return like(x, index.shape)


@shape_rule(*WHERE)
def shape_where(call: OpCall) -> TensorInfo:
    """``where(condition, input, other)``: the broadcast of the three, dtypes promoted."""
    if isinstance(call.target, Method):  # x.where(condition, y) is where(condition, x, y)
        a, condition, b = call.args[0], call.arg(1, "condition"), call.arg(2, "other")
    else:
        condition, a, b = call.arg(0, "condition"), call.arg(1, "input"), call.arg(2, "other")
    if not isinstance(condition, TensorInfo) or condition.dtype != torch.bool:
        raise unsupported("where without a bool condition")
    tensors = [t for t in (condition, a, b) if isinstance(t, TensorInfo)]
    try:
        shape = broadcast_shapes(*(t.shape for t in tensors))
    except RuntimeError as error:
        raise unsupported(f"where of shapes that do not broadcast: {error}") from error
    return TensorInfo(tuple(shape), promote(a, b))


@shape_rule(*MASKED_FILL)
def shape_masked_fill(call: OpCall) -> TensorInfo:
    """``masked_fill(x, mask, value)``: x's dtype, the broadcast of x and mask
    (in place: x's shape, which the mask must broadcast to)."""
    x, mask = first_tensor(call), call.arg(1, "mask")
    if not isinstance(mask, TensorInfo) or mask.dtype != torch.bool:
        raise unsupported("masked_fill without a bool mask")
    try:
        shape = tuple(broadcast_shapes(x.shape, mask.shape))
    except RuntimeError as error:
        raise unsupported(f"masked_fill of shapes that do not broadcast: {error}") from error
    value = call.arg(2, "value")
    if isinstance(value, TensorInfo) and value.ndim:
        raise unsupported("masked_fill with a non-scalar value")
    if is_inplace(call.target) and shape != x.shape:
        raise unsupported("in-place masked_fill growing its input")
    return like(x, shape)


# ------------------------------------------------------ value permutations


def _groups(call: OpCall, attribute: str, index: int = 1) -> int:
    value = getattr(call.module, attribute) if call.module is not None else call.arg(index, attribute)
    if not is_int(value) or value <= 0:
        raise unsupported(f"{attribute} {value!r}")
    return value


@shape_rule(*CHANNEL_SHUFFLE)
@lenient
def shape_channel_shuffle(call: OpCall) -> TensorInfo:
    """``channel_shuffle(x, groups)``: same shape; C divisible by groups."""
    x = first_tensor(call)
    groups = _groups(call, "groups")
    if x.ndim < 3 or x.shape[1] % groups:
        raise unsupported("channel_shuffle needs [N, C, *] with C divisible by groups")
    return like(x)


@shape_rule(*PIXEL_SHUFFLE)
@lenient
def shape_pixel_shuffle(call: OpCall) -> TensorInfo:
    """``pixel_shuffle(x, r)``: ``[*, C*r*r, H, W] -> [*, C, H*r, W*r]``."""
    x = first_tensor(call)
    r = _groups(call, "upscale_factor")
    if x.ndim < 3 or x.shape[-3] % (r * r):
        raise unsupported("pixel_shuffle needs channels divisible by r*r")
    c, h, w = x.shape[-3:]
    return like(x, x.shape[:-3] + (c // (r * r), h * r, w * r))


@shape_rule(*PIXEL_UNSHUFFLE)
@lenient
def shape_pixel_unshuffle(call: OpCall) -> TensorInfo:
    """``pixel_unshuffle(x, r)``: ``[*, C, H*r, W*r] -> [*, C*r*r, H, W]``."""
    x = first_tensor(call)
    r = _groups(call, "downscale_factor")
    if x.ndim < 3 or x.shape[-2] % r or x.shape[-1] % r:
        raise unsupported("pixel_unshuffle needs H and W divisible by r")
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
