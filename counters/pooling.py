"""Pooling and reductions: average, max, adaptive, Lp, mean / sum / max over dims.

Counts per output element (E = output elements, batch included; a window of
k input elements):

==========================  =====================================  ==============================
op                          count                                  source
==========================  =====================================  ==============================
global average pool         C mults + (H*W - 1)*C adds             RULES (reference ``GlobalAvg``)
avg_pool{1,2,3}d            (k - 1) adds + 1 mult                  RULES' global pool, per window
adaptive_avg_pool{1,2,3}d   (k_i - 1) adds + 1 mult, k_i the       same, exact per output index
                            window of output i
mean over dims              (k - 1) adds + 1 mult                  same (``x.mean((2, 3))`` is a
                                                                   global average pool)
sum over dims               (k - 1) adds                           a sum
max_pool{1,2,3}d,           (k - 1) comparisons, booked as adds    choice: RULES leaves max pooling
adaptive_max_pool, amax,                                           unspecified; a comparison is a
amin, max / min over a dim                                         subtraction and a sign test, so
                                                                   it is booked like the sum of an
                                                                   average pool. Indices are free.
max / min of two tensors    1 add (comparison) per element         same convention
lp_pool{1,2,3}d             k powers (p = 2: k mults, else k       x^p summed, then the p-th root
                            other ops), k - 1 adds, 1 root (other)
==========================  =====================================  ==============================

For avg_pool, k is the full kernel volume: ``count_include_pad``,
``divisor_override`` and windows clipped by padding change nothing in the
counts (one mult is the division by whichever divisor). Dilation changes
the window's span, not its k. Adaptive windows follow torch's index
formula: output i along a dim of input size n and output size m reads
``[floor(i*n/m), ceil((i+1)*n/m))``; windows are separable, so the summed
window volume is the product over dims of the summed window lengths.

Shape rules are torch's own formulas (``ceil_mode``, padding, dilation,
unbatched inputs); a form torch would reject, an empty input or a dim given
as an empty list raises ``NotImplementedError`` so that the walker runs the
op on meta tensors and gets torch's error or answer.
"""
from __future__ import annotations

import sys
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from micronet.counters._common import (bare_name, distinct, lenient, like, ntuple, packet, pooled_size,
                                       prod, unsupported)
from micronet.counters.elementwise import binary_out
from micronet.manager import hookimpl
from micronet.records import Counts, TensorInfo
from micronet.registry import Method, OpCall, collect, counter, shape_rule

aten = torch.ops.aten


# --------------------------------------------------------------------- targets

MAX_POOL = {
    1: distinct(nn.MaxPool1d, F.max_pool1d, F.max_pool1d_with_indices, torch.max_pool1d,
                torch.max_pool1d_with_indices, aten.max_pool1d, aten.max_pool1d_with_indices),
    2: distinct(nn.MaxPool2d, F.max_pool2d, F.max_pool2d_with_indices, torch.max_pool2d,
                aten.max_pool2d, aten.max_pool2d_with_indices),
    3: distinct(nn.MaxPool3d, F.max_pool3d, F.max_pool3d_with_indices, torch.max_pool3d,
                aten.max_pool3d, aten.max_pool3d_with_indices),
}
AVG_POOL = {
    1: distinct(nn.AvgPool1d, F.avg_pool1d, torch.avg_pool1d, aten.avg_pool1d),
    2: distinct(nn.AvgPool2d, F.avg_pool2d, aten.avg_pool2d),
    3: distinct(nn.AvgPool3d, F.avg_pool3d, aten.avg_pool3d),
}
ADAPTIVE_AVG = {
    1: distinct(nn.AdaptiveAvgPool1d, F.adaptive_avg_pool1d, torch.adaptive_avg_pool1d,
                aten.adaptive_avg_pool1d),
    2: distinct(nn.AdaptiveAvgPool2d, F.adaptive_avg_pool2d, aten.adaptive_avg_pool2d,
                aten._adaptive_avg_pool2d),
    3: distinct(nn.AdaptiveAvgPool3d, F.adaptive_avg_pool3d, aten.adaptive_avg_pool3d,
                aten._adaptive_avg_pool3d),
}
ADAPTIVE_MAX = {
    1: distinct(nn.AdaptiveMaxPool1d, F.adaptive_max_pool1d, F.adaptive_max_pool1d_with_indices,
                torch.adaptive_max_pool1d, aten.adaptive_max_pool1d),
    2: distinct(nn.AdaptiveMaxPool2d, F.adaptive_max_pool2d, F.adaptive_max_pool2d_with_indices,
                aten.adaptive_max_pool2d),
    3: distinct(nn.AdaptiveMaxPool3d, F.adaptive_max_pool3d, F.adaptive_max_pool3d_with_indices,
                aten.adaptive_max_pool3d),
}
LP_POOL = {
    1: distinct(nn.LPPool1d, F.lp_pool1d),
    2: distinct(nn.LPPool2d, F.lp_pool2d),
    3: distinct(*(t for t in (getattr(nn, "LPPool3d", None), getattr(F, "lp_pool3d", None)) if t)),
}
MEAN = distinct(torch.mean, Method("mean"), aten.mean)
SUM = distinct(torch.sum, Method("sum"), aten.sum.default, aten.sum.dim_IntList)
AMAX = distinct(torch.amax, torch.amin, Method("amax"), Method("amin"), aten.amax, aten.amin)
VAR = distinct(torch.var, Method("var"), aten.var, torch.var_mean, aten.var_mean)
STD = distinct(torch.std, Method("std"), aten.std, torch.std_mean, aten.std_mean)
ALL_ANY = distinct(torch.all, torch.any, Method("all"), Method("any"), aten.all, aten.any)
CUMSUM = distinct(torch.cumsum, Method("cumsum"), Method("cumsum_"), aten.cumsum, aten.cumsum_)
CUMPROD = distinct(torch.cumprod, Method("cumprod"), Method("cumprod_"), aten.cumprod, aten.cumprod_)
MAX = distinct(torch.max, torch.min, Method("max"), Method("min"),
               aten.max.default, aten.max.dim, aten.max.other,
               aten.min.default, aten.min.dim, aten.min.other)

#: Which pooling family and rank each target belongs to.
_FAMILY: dict[Any, tuple[str, int]] = {
    target: (family, n)
    for family, table in (("max", MAX_POOL), ("avg", AVG_POOL), ("adaptive_avg", ADAPTIVE_AVG),
                          ("adaptive_max", ADAPTIVE_MAX), ("lp", LP_POOL))
    for n, targets in table.items()
    for target in targets
}


def _family(call: OpCall) -> tuple[str, int]:
    target = call.target
    if target in _FAMILY:
        return _FAMILY[target]
    return _FAMILY[packet(target)]


# ------------------------------------------------------------ window geometry


def _spatial(x: TensorInfo, n: int) -> tuple[int, ...]:
    """The last n dims of an input with an optional batch dim, all non-empty."""
    if x.ndim not in (n + 1, n + 2):
        raise unsupported(f"{n}-d pooling of a {x.ndim}-d input")
    if 0 in x.shape:
        raise unsupported("pooling of an empty tensor")
    return tuple(x.shape[-n:])


def _window_args(call: OpCall, family: str, n: int) -> dict[str, Any]:
    """kernel, stride, padding, dilation, ceil_mode, return_indices as n-tuples/bools.

    Layouts: max ``(input, kernel_size, stride=None, padding=0, dilation=1,
    ceil_mode=False, return_indices=False)``; avg ``(input, kernel_size,
    stride=None, padding=0, ceil_mode=False, ...)``; lp ``(input, norm_type,
    kernel_size, stride=None, ceil_mode=False)``; modules: their attributes.
    """
    module = call.module
    if module is not None:
        values = dict(kernel=module.kernel_size, stride=module.stride,
                      padding=getattr(module, "padding", 0), dilation=getattr(module, "dilation", 1),
                      ceil_mode=module.ceil_mode, indices=getattr(module, "return_indices", False))
    elif family == "max":
        values = dict(kernel=call.arg(1, "kernel_size"), stride=call.arg(2, "stride", None),
                      padding=call.arg(3, "padding", 0), dilation=call.arg(4, "dilation", 1),
                      ceil_mode=call.arg(5, "ceil_mode", False),
                      indices=_returns_indices(call, 6))
    elif family == "avg":
        values = dict(kernel=call.arg(1, "kernel_size"), stride=call.arg(2, "stride", None),
                      padding=call.arg(3, "padding", 0), dilation=1,
                      ceil_mode=call.arg(4, "ceil_mode", False), indices=False)
    else:  # lp
        values = dict(kernel=call.arg(2, "kernel_size"), stride=call.arg(3, "stride", None),
                      padding=0, dilation=1, ceil_mode=call.arg(4, "ceil_mode", False), indices=False)
    kernel = ntuple(values["kernel"], n)
    stride = values["stride"]
    stride = kernel if stride is None or (isinstance(stride, (list, tuple)) and not stride) else ntuple(stride, n)
    geometry = dict(kernel=kernel, stride=stride, padding=ntuple(values["padding"], n),
                    dilation=ntuple(values["dilation"], n))
    if any(len(v) != n for v in geometry.values()):
        raise unsupported("window arguments of the wrong length")
    return dict(geometry, ceil_mode=bool(values["ceil_mode"]), indices=bool(values["indices"]))


def _returns_indices(call: OpCall, index: int) -> bool:
    """Whether a functional / aten max pool returns (values, indices)."""
    target = packet(call.target)
    name = getattr(target, "__name__", "")
    if name.endswith("_with_indices"):
        return True
    if target in (F.max_pool1d, F.max_pool2d, F.max_pool3d):
        return bool(call.arg(index, "return_indices", False))
    return False


def _pooled_shape(x: TensorInfo, n: int, window: dict[str, Any]) -> tuple[int, ...]:
    sizes = _spatial(x, n)
    out = []
    for size, k, s, p, d in zip(sizes, window["kernel"], window["stride"], window["padding"],
                                window["dilation"]):
        if k <= 0 or s <= 0 or d <= 0 or p < 0 or p > k // 2:
            raise unsupported("invalid pooling window")
        length = pooled_size(size, k, s, p, d, window["ceil_mode"])
        if length < 1:
            raise unsupported("pooling output too small")
        out.append(length)
    return tuple(x.shape[:-n]) + tuple(out)


def adaptive_windows(size: int, out: int) -> list[int]:
    """Window length of each output index of an adaptive pool (torch's formula)."""
    return [-(-((i + 1) * size) // out) - (i * size) // out for i in range(out)]


def _adaptive_out(call: OpCall, n: int) -> tuple[int, ...]:
    """Output spatial sizes; ``None`` entries keep the input size."""
    x = call.x
    sizes = _spatial(x, n)
    output_size = call.module.output_size if call.module is not None else call.arg(1, "output_size")
    wanted = ntuple(output_size, n)
    if len(wanted) != n:
        raise unsupported("output_size of the wrong length")
    if None in wanted and (n == 1 or call.kind == "aten"):
        raise unsupported("None in a 1-d or aten adaptive output_size")
    out = tuple(size if w is None else w for size, w in zip(sizes, wanted))
    if any(not isinstance(o, int) or o < 1 for o in out):
        raise unsupported("adaptive pooling to an empty or symbolic size")
    return out


# ------------------------------------------------------------------ shape rules


def _with_indices(values: TensorInfo, indices: bool):
    return (values, TensorInfo(values.shape, torch.int64)) if indices else values


@shape_rule(*(t for table in (MAX_POOL, AVG_POOL, LP_POOL) for ts in table.values() for t in ts))
@lenient
def shape_pool(call: OpCall):
    """Max / avg / Lp pooling: torch's pooled length per spatial dim; max pools
    with indices return ``(values, int64 indices)``."""
    family, n = _family(call)
    x = call.x
    if not x.dtype.is_floating_point:
        raise unsupported(f"{family} pooling of {x.dtype}")
    window = _window_args(call, family, n)
    if family == "lp" and sum(window["padding"]):
        raise unsupported("lp pooling has no padding")
    if family == "avg" and n == 3 and any(s < k for s, k in zip(x.shape[-3:], window["kernel"])):
        raise unsupported("avg_pool3d of an input smaller than its kernel")
    values = like(x, _pooled_shape(x, n, window))
    return _with_indices(values, window["indices"])


@shape_rule(*(t for table in (ADAPTIVE_AVG, ADAPTIVE_MAX) for ts in table.values() for t in ts))
@lenient
def shape_adaptive(call: OpCall):
    """Adaptive pooling: ``[*, *spatial] -> [*, *output_size]``; max pools
    return ``(values, indices)`` for modules/F with ``return_indices`` and for
    ``torch.adaptive_max_pool1d`` and the aten ops."""
    family, n = _family(call)
    x = call.x
    if not x.dtype.is_floating_point:
        raise unsupported(f"adaptive pooling of {x.dtype}")
    values = like(x, tuple(x.shape[:-n]) + _adaptive_out(call, n))
    if family == "adaptive_avg":
        return values
    if call.module is not None:
        indices = call.module.return_indices
    elif packet(call.target) in (F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d):
        indices = bool(call.arg(2, "return_indices", False))
    else:
        indices = True
    return _with_indices(values, indices)


# --------------------------------------------------------------------- counters


@counter(*(t for ts in MAX_POOL.values() for t in ts), op="max_pool")
def count_max_pool(call: OpCall) -> Counts:
    """Max pooling: (k - 1) comparisons per output element, booked as adds."""
    family, n = _family(call)
    k = prod(_window_args(call, family, n)["kernel"])
    return Counts(adds=call.y.numel * (k - 1))


@counter(*(t for ts in AVG_POOL.values() for t in ts), op="avg_pool")
def count_avg_pool(call: OpCall) -> Counts:
    """Average pooling: (k - 1) adds + 1 mult per output element, k the kernel volume."""
    family, n = _family(call)
    k = prod(_window_args(call, family, n)["kernel"])
    e = call.y.numel
    return Counts(mults=e, adds=e * (k - 1))


@counter(*(t for ts in LP_POOL.values() for t in ts), op="lp_pool")
def count_lp_pool(call: OpCall) -> Counts:
    """Lp pooling ``(input, norm_type, kernel_size, ...)``: per output element k
    powers (mults when p = 2, other ops otherwise), k - 1 adds, 1 root."""
    family, n = _family(call)
    k = prod(_window_args(call, family, n)["kernel"])
    p = call.module.norm_type if call.module is not None else call.arg(1, "norm_type")
    e = call.y.numel
    if float(p) == 2.0:
        return Counts(mults=e * k, adds=e * (k - 1), other_ops=e)
    return Counts(adds=e * (k - 1), other_ops=e * (k + 1))


def _adaptive_volume(call: OpCall, n: int) -> tuple[int, int]:
    """(output elements, summed window volume over all outputs)."""
    x = call.x
    out = tuple(call.y.shape[-n:])
    lead = prod(x.shape[:-n])
    volume = lead * prod(sum(adaptive_windows(size, o)) for size, o in zip(x.shape[-n:], out))
    return lead * prod(out), volume


@counter(*(t for ts in ADAPTIVE_AVG.values() for t in ts), op="adaptive_avg_pool")
def count_adaptive_avg(call: OpCall) -> Counts:
    """Adaptive average pooling: per output i, (k_i - 1) adds + 1 mult.

    To 1x1 this is RULES' global average pool: C mults, (H*W - 1)*C adds."""
    _, n = _family(call)
    outputs, volume = _adaptive_volume(call, n)
    return Counts(mults=outputs, adds=volume - outputs)


@counter(*(t for ts in ADAPTIVE_MAX.values() for t in ts), op="adaptive_max_pool")
def count_adaptive_max(call: OpCall) -> Counts:
    """Adaptive max pooling: per output i, k_i - 1 comparisons booked as adds."""
    _, n = _family(call)
    outputs, volume = _adaptive_volume(call, n)
    return Counts(adds=volume - outputs)


# ------------------------------------------------------------------ reductions


def _reduced_dims(dims: Any, ndim: int) -> tuple[int, ...]:
    """Wrapped, sorted reduced dims; ``None`` or ``()`` means every dim."""
    if dims is None:
        return tuple(range(ndim))
    if isinstance(dims, int):
        dims = (dims,)
    rank = max(ndim, 1)
    wrapped = []
    for dim in dims:
        if not isinstance(dim, int) or not -rank <= dim < rank:
            raise unsupported(f"reduction dim {dim!r}")
        wrapped.append(dim % rank)
    if len(set(wrapped)) != len(wrapped):
        raise unsupported("repeated reduction dim")
    return tuple(sorted(d for d in wrapped if d < ndim))


def _reduce_shape(x: TensorInfo, dims: tuple[int, ...], keepdim: bool) -> tuple[int, ...]:
    if keepdim:
        return tuple(1 if i in dims else size for i, size in enumerate(x.shape))
    return tuple(size for i, size in enumerate(x.shape) if i not in dims)


def _reduction(call: OpCall, empty_means_all: bool) -> tuple[TensorInfo, tuple[int, ...], bool]:
    """(input, reduced dims, keepdim) of ``(input, dim=None, keepdim=False)``."""
    x = call.x
    dims = call.arg(1, "dim", None)
    if isinstance(dims, (list, tuple)) and not dims:
        if not empty_means_all:
            raise unsupported("reduction over an empty dim list")
        dims = None
    return x, _reduced_dims(dims, x.ndim), bool(call.arg(2, "keepdim", False))


@shape_rule(*MEAN)
@lenient
def shape_mean(call: OpCall) -> TensorInfo:
    """``mean(input, dim=None, keepdim=False, *, dtype=None)``; floating only."""
    x, dims, keepdim = _reduction(call, empty_means_all=False)
    dtype = call.kwargs.get("dtype") or x.dtype
    if not (x.dtype.is_floating_point and dtype.is_floating_point):
        raise unsupported(f"mean of {x.dtype}")
    return TensorInfo(_reduce_shape(x, dims, keepdim), dtype)


@shape_rule(*SUM)
@lenient
def shape_sum(call: OpCall) -> TensorInfo:
    """``sum(input, dim=None, keepdim=False, *, dtype=None)``: integers and
    bools sum to int64."""
    x, dims, keepdim = _reduction(call, empty_means_all=False)
    dtype = call.kwargs.get("dtype")
    if dtype is None:
        dtype = x.dtype if x.dtype.is_floating_point or x.dtype.is_complex else torch.int64
    return TensorInfo(_reduce_shape(x, dims, keepdim), dtype)


@shape_rule(*AMAX)
@lenient
def shape_amax(call: OpCall) -> TensorInfo:
    """``amax(input, dim=(), keepdim=False)``: ``()`` reduces every dim."""
    x, dims, keepdim = _reduction(call, empty_means_all=True)
    if 0 in x.shape:
        raise unsupported("amax of an empty tensor")
    return like(x, _reduce_shape(x, dims, keepdim))


@shape_rule(*VAR, *STD)
@lenient
def shape_var(call: OpCall):
    """``var / std (input, dim=None, *, correction=1, keepdim=False)`` and the
    legacy ``(input, unbiased)`` / ``(input, dim, unbiased, keepdim)`` forms;
    ``var_mean`` / ``std_mean`` return the pair. Floating inputs only."""
    x = call.x
    dims = call.arg(1, "dim", None)
    if isinstance(dims, bool):  # (input, unbiased): every dim
        dims = None
    if isinstance(dims, (list, tuple)) and not dims:
        dims = None
    positional_keepdim = call.args[3] if len(call.args) > 3 else False
    if len(call.args) > 2 and not isinstance(call.args[2], bool) or not isinstance(positional_keepdim, bool):
        raise unsupported("var arguments")
    keepdim = bool(call.kwargs.get("keepdim", positional_keepdim))
    if not x.dtype.is_floating_point:
        raise unsupported(f"var of {x.dtype}")  # torch refuses integers
    out = like(x, _reduce_shape(x, _reduced_dims(dims, x.ndim), keepdim))
    return (out, out) if bare_name(call.target).endswith("_mean") else out


@shape_rule(*ALL_ANY)
@lenient
def shape_all_any(call: OpCall) -> TensorInfo:
    """``all / any (input, dim=None, keepdim=False)``: bool (uint8 stays uint8)."""
    x, dims, keepdim = _reduction(call, empty_means_all=True)
    return TensorInfo(_reduce_shape(x, dims, keepdim), torch.uint8 if x.dtype == torch.uint8 else torch.bool)


@shape_rule(*CUMSUM, *CUMPROD)
@lenient
def shape_cumulative(call: OpCall) -> TensorInfo:
    """``cumsum / cumprod (input, dim, *, dtype=None)``: input's shape; integers
    and bools accumulate in int64 unless ``dtype`` says otherwise (in place: self's)."""
    x = call.x
    _reduced_dims(call.arg(1, "dim"), x.ndim)  # checks the dim as torch does
    dtype = call.kwargs.get("dtype")
    target = call.target
    if target.name.endswith("_") if isinstance(target, Method) else packet(target) in (aten.cumsum_, aten.cumprod_):
        if dtype is not None and dtype != x.dtype or x.dtype == torch.bool:
            raise unsupported("in-place scan to another dtype, or of bools")  # CPU has no bool kernel
        return x
    if dtype is None:
        dtype = x.dtype if x.dtype.is_floating_point or x.dtype.is_complex else torch.int64
    return like(x, dtype=dtype)


def _scan_steps(call: OpCall) -> int:
    """Steps of a running sum or product along ``dim``: (n - 1) per line of n."""
    x = call.x
    dim = _reduced_dims(call.arg(1, "dim"), x.ndim)[0] if x.ndim else 0
    n = x.shape[dim] if x.ndim else 1
    return (x.numel // n) * max(n - 1, 0) if n else 0


def _max_form(call: OpCall) -> str:
    """'all' for max(x), 'dim' for max(x, dim, keepdim), 'binary' for max(x, other)."""
    other = call.arg(1, "dim", None) if "other" not in call.kwargs else call.kwargs["other"]
    if isinstance(other, TensorInfo):
        return "binary"
    return "all" if other is None else "dim"


@shape_rule(*MAX)
@lenient
def shape_max(call: OpCall):
    """torch.max / min: ``(x)`` -> 0-dim; ``(x, dim, keepdim=False)`` ->
    ``return_types.max(values, indices)``; ``(x, other)`` -> broadcast."""
    form = _max_form(call)
    x = call.x
    if form == "binary":
        return binary_out(call)
    if 0 in x.shape:
        raise unsupported("max of an empty tensor")
    if form == "all":
        return like(x, ())
    dims = _reduced_dims(call.arg(1, "dim"), x.ndim)
    values = like(x, _reduce_shape(x, dims, bool(call.arg(2, "keepdim", False))))
    name = "min" if bare_name(call.target).startswith("min") else "max"
    return getattr(torch.return_types, name)((values, TensorInfo(values.shape, torch.int64)))


def _window(call: OpCall) -> tuple[int, int]:
    """(output elements, input elements per output) of a reduction."""
    e = call.y.numel
    return e, (call.x.numel // e if e else 0)


@counter(*MEAN, op="mean")
def count_mean(call: OpCall) -> Counts:
    """Mean: per output element (k - 1) adds + 1 mult; ``x.mean((2, 3))`` on
    ``[N, C, H, W]`` is RULES' global average pool: N*C mults, N*C*(H*W - 1) adds."""
    e, k = _window(call)
    return Counts(mults=e, adds=e * max(k - 1, 0))


@counter(*SUM, op="sum")
def count_sum(call: OpCall) -> Counts:
    """Sum: (k - 1) adds per output element."""
    e, k = _window(call)
    return Counts(adds=e * max(k - 1, 0))


@counter(*AMAX, op="amax")
def count_amax(call: OpCall) -> Counts:
    """amax / amin: (k - 1) comparisons per output element, booked as adds."""
    e, k = _window(call)
    return Counts(adds=e * max(k - 1, 0))


@counter(*VAR, op="var")
def count_var(call: OpCall) -> Counts:
    """Variance of k values per output: the mean ((k - 1) adds + 1 mult), k
    deviations (adds), k squares (mults), their sum (k - 1 adds) and one
    division (mult): 3k - 2 adds and k + 2 mults (``var_mean`` shares the mean)."""
    e, k = _window(call)
    return Counts(mults=e * (k + 2), adds=e * max(3 * k - 2, 0))


@counter(*STD, op="std")
def count_std(call: OpCall) -> Counts:
    """Standard deviation: the variance and one square root (other op) per output."""
    return count_var(call) + Counts(other_ops=call.y.numel)


@counter(*ALL_ANY, op="all")
def count_all_any(call: OpCall) -> Counts:
    """all / any: (k - 1) logical ands or ors per output (bitwise: other ops)."""
    e, k = _window(call)
    return Counts(other_ops=e * max(k - 1, 0))


@counter(*CUMSUM, op="cumsum")
def count_cumsum(call: OpCall) -> Counts:
    """Running sum along ``dim``: (n - 1) adds per line of n elements."""
    return Counts(adds=_scan_steps(call))


@counter(*CUMPROD, op="cumprod")
def count_cumprod(call: OpCall) -> Counts:
    """Running product along ``dim``: (n - 1) mults per line of n elements."""
    return Counts(mults=_scan_steps(call))


@counter(*MAX, op="max")
def count_max(call: OpCall) -> Counts:
    """torch.max / min: a reduction costs (k - 1) comparisons per output (adds,
    indices free); the two-tensor form 1 comparison (add) per element."""
    if _max_form(call) == "binary":
        return Counts(adds=call.y.numel)
    e, k = _window(call)
    return Counts(adds=e * max(k - 1, 0))


@hookimpl
def micronet_register_counters():
    return collect(sys.modules[__name__])
