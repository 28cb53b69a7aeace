"""Resampling: ``F.interpolate``, ``nn.Upsample*`` and the aten upsample ops.

Counts per output element E (batch included), a named choice since RULES
says nothing about resampling: each output is a weighted sum of its input
neighbours with weights fixed by the shapes (precomputable, like a conv's
weights), i.e. a dot product of t taps: t mults and t - 1 adds.

=====================  =========  ==============================================
mode                   taps t     per output element
=====================  =========  ==============================================
nearest, nearest-exact   -        free: a copy (0 mults, 0 adds)
linear (1-D)           2          2 mults + 1 add
bilinear (2-D)         2 x 2      4 mults + 3 adds
trilinear (3-D)        2 x 2 x 2  8 mults + 7 adds
bicubic (2-D)          4 x 4      16 mults + 15 adds
area                   window     adaptive average pooling: (k_i - 1) adds + 1
                                  mult per output (``micronet.counters.pooling``)
antialias=True         window     bilinear / bicubic / lanczos with antialias:
                                  the taps of output i along each dim are torch's
                                  clipped filter window (support = taps/2, times
                                  in/out when downsampling); the 2-D window is
                                  their product. Lanczos has 6 taps (a = 3).
=====================  =========  ==============================================

``align_corners`` changes the weights, not the taps. Output sizes follow
``F.interpolate``: ``size`` when given, else ``floor(in * scale_factor)``
per spatial dim (with or without ``recompute_scale_factor``: torch computes
the size the same way, in double precision, either way). The aten forms
take ``(input, output_size, [align_corners,] scale_factors)`` (``.vec``) or
``(input, output_size, [align_corners,] scales...)`` (``.default``, where
``output_size`` is explicit).
"""
from __future__ import annotations

import sys
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from micronet.counters._common import lenient, like, packet, prod, unsupported
from micronet.counters.pooling import adaptive_windows
from micronet.manager import hookimpl
from micronet.records import Counts, TensorInfo
from micronet.registry import OpCall, collect, counter, free, shape_rule

aten = torch.ops.aten

#: (mode, spatial dims) of each aten upsample packet.
ATEN_MODES: dict[Any, tuple[str, int]] = {
    aten.upsample_nearest1d: ("nearest", 1),
    aten.upsample_nearest2d: ("nearest", 2),
    aten.upsample_nearest3d: ("nearest", 3),
    aten._upsample_nearest_exact1d: ("nearest-exact", 1),
    aten._upsample_nearest_exact2d: ("nearest-exact", 2),
    aten._upsample_nearest_exact3d: ("nearest-exact", 3),
    aten.upsample_linear1d: ("linear", 1),
    aten.upsample_bilinear2d: ("bilinear", 2),
    aten.upsample_trilinear3d: ("trilinear", 3),
    aten.upsample_bicubic2d: ("bicubic", 2),
    aten._upsample_bilinear2d_aa: ("bilinear-aa", 2),
    aten._upsample_bicubic2d_aa: ("bicubic-aa", 2),
}
if hasattr(aten, "_upsample_lanczos2d_aa"):
    ATEN_MODES[aten._upsample_lanczos2d_aa] = ("lanczos-aa", 2)

NEAREST_ATEN = tuple(t for t, (mode, _) in ATEN_MODES.items() if mode.startswith("nearest"))
INTERP_ATEN = tuple(t for t, (mode, _) in ATEN_MODES.items() if not mode.startswith("nearest"))
INTERPOLATE = (nn.Upsample, F.interpolate, F.upsample, F.upsample_nearest, F.upsample_bilinear)

#: Neighbours one output element reads, per mode (no antialias).
TAPS = {"linear": 2, "bilinear": 4, "trilinear": 8, "bicubic": 16}
#: Filter width per dim of the antialiased modes.
AA_TAPS = {"bilinear": 2, "bicubic": 4, "lanczos": 6}
#: Rank of the input each mode needs (``None``: 3-D, 4-D or 5-D).
MODE_RANK = {"nearest": None, "nearest-exact": None, "area": None, "linear": 3, "bilinear": 4,
             "trilinear": 5, "bicubic": 4, "lanczos": 4}

nearest_upsampling = free(nn.UpsamplingNearest2d, *NEAREST_ATEN, op="upsample_nearest")


# -------------------------------------------------------------- the arguments


def _interpolate_args(call: OpCall) -> dict[str, Any]:
    """size, scale_factor, mode, align_corners, recompute, antialias of a
    module or functional call, ``F.interpolate``'s layout."""
    module = call.module
    if module is not None:
        return dict(size=module.size, scale=module.scale_factor, mode=module.mode,
                    align_corners=module.align_corners,
                    recompute=getattr(module, "recompute_scale_factor", None), antialias=False)
    target = call.target
    size, scale = call.arg(1, "size", None), call.arg(2, "scale_factor", None)
    if target is F.upsample_nearest:
        return dict(size=size, scale=scale, mode="nearest", align_corners=None, recompute=None,
                    antialias=False)
    if target is F.upsample_bilinear:
        return dict(size=size, scale=scale, mode="bilinear", align_corners=True, recompute=None,
                    antialias=False)
    return dict(size=size, scale=scale, mode=call.arg(3, "mode", "nearest"),
                align_corners=call.arg(4, "align_corners", None),
                recompute=call.arg(5, "recompute_scale_factor", None),
                antialias=bool(call.arg(6, "antialias", False)))


def _spatial_out(x: TensorInfo, size: Any, scale: Any, empty_ok: bool = False) -> tuple[int, ...]:
    """``F.interpolate``'s output size: ``size``, else floor(in * scale)
    (``empty_ok``: 'area' mode, adaptive pooling, accepts empty outputs)."""
    dims = x.ndim - 2
    if (size is None) == (scale is None):
        raise unsupported("interpolate needs exactly one of size and scale_factor")
    if size is not None:
        sizes = tuple(size) if isinstance(size, (list, tuple)) else (size,) * dims
        if len(sizes) != dims or not all(isinstance(s, int) and not isinstance(s, bool) for s in sizes):
            raise unsupported(f"size {size!r} for {dims} spatial dims")
        out = sizes
    else:
        scales = tuple(scale) if isinstance(scale, (list, tuple)) else (scale,) * dims
        if len(scales) != dims or not all(isinstance(s, (int, float)) for s in scales):
            raise unsupported(f"scale_factor {scale!r} for {dims} spatial dims")
        out = tuple(int(float(n) * float(s)) for n, s in zip(x.shape[2:], scales))
    if any(o < 0 or o == 0 and not empty_ok for o in out) or any(n <= 0 for n in x.shape[2:]):
        raise unsupported("interpolate to or from an empty size")
    return out


def _check_mode(x: TensorInfo, args: dict[str, Any]) -> str:
    mode = args["mode"]
    if mode not in MODE_RANK:
        raise unsupported(f"mode {mode!r}")
    rank = MODE_RANK[mode]
    if x.ndim not in (3, 4, 5) or (rank is not None and x.ndim != rank):
        raise unsupported(f"mode {mode!r} on a {x.ndim}-d input")
    if mode in ("nearest", "nearest-exact", "area") and args["align_corners"] is not None:
        raise unsupported("align_corners with a non-interpolating mode")
    if args["recompute"] and args["size"] is not None:
        raise unsupported("recompute_scale_factor with an explicit size")
    if args["antialias"] and mode not in ("bilinear", "bicubic", "lanczos"):
        raise unsupported("antialias with a mode that has none")
    if mode == "lanczos" and (not args["antialias"] or args["align_corners"]):
        raise unsupported("lanczos needs antialias=True and align_corners=False")
    if not x.dtype.is_floating_point:
        raise unsupported(f"{mode} interpolation of {x.dtype}")
    return mode


def _aten_args(call: OpCall) -> tuple[str, int, tuple[int, ...] | None, Any, bool]:
    """(mode, spatial dims, output size or None, scale factors, align_corners) of an aten call."""
    mode, dims = ATEN_MODES[packet(call.target)]
    interpolating = not mode.startswith("nearest")
    output_size = call.arg(1, "output_size", None)
    align = bool(call.arg(2, "align_corners", False)) if interpolating else False
    rest = 3 if interpolating else 2
    overload = getattr(call.target, "_overloadname", None)
    if overload is None:  # a packet: guess the overload from the arguments
        overload = "vec" if output_size is None or len(call.args) == rest + 1 else "default"
    if overload == "vec":
        scales = call.arg(rest, "scale_factors", None)
    elif overload == "default":
        scales = tuple(call.arg(rest + i, name, None) for i, name in enumerate(_scale_names(dims)))
        if output_size is None:
            raise unsupported("aten upsample without output_size")
    else:
        raise unsupported(f"aten upsample overload {overload}")
    return mode, dims, (tuple(output_size) if output_size is not None else None), scales, align


def _scale_names(dims: int) -> tuple[str, ...]:
    return {1: ("scales",), 2: ("scales_h", "scales_w"), 3: ("scales_d", "scales_h", "scales_w")}[dims]


def _aten_out(call: OpCall) -> tuple[str, tuple[int, ...], Any, bool]:
    """(mode, output spatial sizes, scales, align_corners) of an aten call."""
    x = call.x
    mode, dims, output_size, scales, align = _aten_args(call)
    if x.ndim != dims + 2:
        raise unsupported(f"aten upsample of a {x.ndim}-d input")
    if output_size is not None:
        if len(output_size) != dims or any(o <= 0 for o in output_size):
            raise unsupported("aten upsample output_size")
        return mode, output_size, scales, align
    return mode, _spatial_out(x, None, scales), scales, align


# ------------------------------------------------------------------ shape rules


@shape_rule(*INTERPOLATE, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d)
@lenient
def shape_interpolate(call: OpCall) -> TensorInfo:
    """``[N, C, *in] -> [N, C, *out]``: ``size``, or floor(in * scale_factor)."""
    x = call.x
    args = _interpolate_args(call)
    mode = _check_mode(x, args)
    return like(x, tuple(x.shape[:2]) + _spatial_out(x, args["size"], args["scale"], mode == "area"))


@shape_rule(*ATEN_MODES)
@lenient
def shape_aten_upsample(call: OpCall) -> TensorInfo:
    """aten upsample: ``output_size`` when given, else floor(in * scale)."""
    x = call.x
    mode, out, _, _ = _aten_out(call)
    if not x.dtype.is_floating_point:
        raise unsupported(f"{mode} of {x.dtype}")
    return like(x, tuple(x.shape[:2]) + tuple(out))


# --------------------------------------------------------------------- counters


def _aa_window_sum(size: int, out: int, taps: int, align_corners: bool, scale: Any) -> int:
    """Summed filter-window length over the outputs of one antialiased dim
    (torch's ``_compute_indices_min_size_weights_aa``, in double precision)."""
    if align_corners:
        ratio = (size - 1) / (out - 1) if out > 1 else 0.0
    elif scale is not None and scale > 0:
        ratio = 1.0 / scale
    else:
        ratio = size / out
    support = taps * 0.5 * ratio if ratio >= 1.0 else taps * 0.5
    total = 0
    for i in range(out):
        center = ratio * (i + 0.5)
        xmin = max(int(center - support + 0.5), 0)
        total += min(int(center + support + 0.5), size) - xmin
    return total


def _resample_counts(x: TensorInfo, y: TensorInfo, mode: str, antialias: bool, align: bool,
                     scales: Any) -> Counts:
    e = y.numel
    n = x.ndim - 2
    if mode in ("nearest", "nearest-exact"):
        return Counts()
    if mode == "area":
        lead = prod(x.shape[:2])
        volume = lead * prod(sum(adaptive_windows(i, o)) for i, o in zip(x.shape[2:], y.shape[2:]))
        return Counts(mults=e, adds=volume - e)
    if antialias:
        scales = scales if isinstance(scales, (list, tuple)) else (scales,) * n
        taps = AA_TAPS[mode]
        volume = prod(x.shape[:2]) * prod(
            _aa_window_sum(i, o, taps, align, s) for i, o, s in zip(x.shape[2:], y.shape[2:], scales)
        )
        return Counts(mults=volume, adds=volume - e)
    taps = TAPS[mode]
    return Counts(mults=taps * e, adds=(taps - 1) * e)


@counter(*INTERPOLATE, nn.UpsamplingBilinear2d, op="interpolate")
def count_interpolate(call: OpCall) -> Counts:
    """F.interpolate / nn.Upsample: nearest free; linear family t mults and
    t - 1 adds per output element (t = 2, 4, 8, 16); area as adaptive pooling."""
    args = _interpolate_args(call)
    scales = None if args["recompute"] else args["scale"]
    return _resample_counts(call.x, call.y, args["mode"], args["antialias"],
                            bool(args["align_corners"]), scales)


@counter(*INTERP_ATEN, op="interpolate")
def count_aten_upsample(call: OpCall) -> Counts:
    """aten upsample_linear1d / bilinear2d / trilinear3d / bicubic2d (and the
    ``_aa`` antialiased ones): as :func:`count_interpolate`."""
    mode, _, scales, align = _aten_out(call)
    antialias = mode.endswith("-aa")
    return _resample_counts(call.x, call.y, mode.removesuffix("-aa"), antialias, align, scales)


@hookimpl
def micronet_register_counters():
    return collect(sys.modules[__name__])
