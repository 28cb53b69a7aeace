"""Convolutions, 1d to 3d, plain and transposed, in every traced form.

Forms: ``nn.Conv1d/2d/3d``, ``nn.ConvTranspose1d/2d/3d`` (and their
subclasses), ``F.conv1d/2d/3d`` (the same objects as ``torch.conv1d/2d/3d``),
``F.conv_transpose1d/2d/3d``, and the aten ops ``aten.convolution``,
``aten._convolution``, ``aten.conv1d/2d/3d`` and
``aten.conv_transpose1d/2d/3d``.

Convention (RULES.md section 1, the reference counter): every output element
of a convolution is one dot product over its receptive field,
``L = prod(kernel) * cin / groups`` terms, padded positions included; a bias
adds one addition per output element. The weight's sparsity shrinks ``L``
(``sparse_weight=True``).

Transposed convolutions are not in the rules. Convention chosen here (the
"scatter" reading, as fvcore counts them): each input element is multiplied
by ``prod(kernel) * cout / groups`` weights, so the multiplies are
``M = N * cin * prod(in_spatial) * prod(kernel) * cout / groups``, including
products that land in the cropped border (``padding``) and products with the
zero rows ``output_padding`` adds nothing for. The additions are ``M - E``
(every output element sums the contributions it receives). When ``E``
divides ``M`` this is booked as ``E`` dot products of ``M / E`` terms;
otherwise as ``N * prod(in_spatial) * cout * prod(kernel)`` partial dot
products of ``cin / groups`` terms plus one addition per partial product
beyond the first of each output element (``adds += P - E``, at least 0).
Both bookings give the same mults and adds, dense or sparse.

Padding modes other than ``'zeros'`` (reflect, replicate, circular) only
copy values: they cost nothing and give the same shapes as zero padding.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, replace

import torch
from torch import nn
import torch.nn.functional as F

from micronet.counters._common import ntuple, pooled_size, prod
from micronet.manager import hookimpl
from micronet.records import Counts, TensorInfo
from micronet.registry import OpCall, collect, counter, shape_rule

aten = torch.ops.aten

CONV_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d,
                nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
CONV_FUNCTIONS = (F.conv1d, F.conv2d, F.conv3d)  # `is` torch.conv1d/2d/3d
CONV_TRANSPOSE_FUNCTIONS = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)
ATEN_CONV = (aten.conv1d, aten.conv2d, aten.conv3d)
ATEN_CONV_TRANSPOSE = (aten.conv_transpose1d, aten.conv_transpose2d, aten.conv_transpose3d)
ATEN_CONVOLUTION = (aten.convolution, aten._convolution)


@dataclass(frozen=True, slots=True)
class ConvSpec:
    """One convolution call, normalised: input, weight shape, hyper-parameters.

    ``weight`` is ``[cout, cin/groups, *kernel]``, or for a transposed
    convolution ``[cin, cout/groups, *kernel]``; ``padding`` is a tuple or
    the strings ``'same'`` / ``'valid'``.
    """

    x: TensorInfo
    weight: tuple[int, ...]
    bias: bool
    stride: tuple[int, ...]
    padding: tuple[int, ...] | str
    dilation: tuple[int, ...]
    groups: int
    transposed: bool = False
    output_padding: tuple[int, ...] = ()

    @property
    def nd(self) -> int:
        """Number of spatial dimensions."""
        return len(self.weight) - 2

    @property
    def kernel(self) -> tuple[int, ...]:
        return self.weight[2:]


def _spec(x, weight, bias, stride, padding, dilation, groups, transposed=False,
          output_padding=0) -> ConvSpec:
    if not isinstance(x, TensorInfo) or not isinstance(weight, TensorInfo):
        raise NotImplementedError("convolution input and weight must be tensors")
    nd = weight.ndim - 2
    if nd < 1:
        raise NotImplementedError(f"convolution weight of rank {weight.ndim}")
    if not isinstance(padding, str):
        padding = ntuple(padding, nd)
    return ConvSpec(x, tuple(weight.shape), isinstance(bias, TensorInfo), ntuple(stride, nd),
                    padding, ntuple(dilation, nd), int(groups), bool(transposed),
                    ntuple(output_padding, nd))


def module_spec(call: OpCall) -> ConvSpec:
    """Spec of an ``nn.ConvNd`` / ``nn.ConvTransposeNd`` call ``(input[, output_size])``."""
    m = call.module
    weight, bias = m.weight, m.bias  # each read once: nn.Module.__getattr__ is slow
    weight = TensorInfo(tuple(weight.shape), weight.dtype)
    bias = TensorInfo(tuple(bias.shape)) if bias is not None else None
    spec = _spec(call.x, weight, bias, m.stride, m.padding, m.dilation, m.groups,
                 m.transposed, m.output_padding)
    output_size = call.arg(1, "output_size", None) if m.transposed else None
    if output_size is not None:
        spec = _with_output_size(spec, output_size)
    return spec


def _with_output_size(spec: ConvSpec, output_size) -> ConvSpec:
    """The output padding ``ConvTransposeNd.forward(x, output_size)`` derives:
    ``output_size`` (spatial, or with the leading dims) must lie between the
    smallest output and that plus ``stride - 1``."""
    wanted = tuple(int(s) for s in output_size)
    if len(wanted) == spec.x.ndim:
        wanted = wanted[-spec.nd:]
    smallest = _transposed_sizes(replace(spec, output_padding=(0,) * spec.nd))
    extra = tuple(w - s for w, s in zip(wanted, smallest))
    if len(wanted) != spec.nd or any(not 0 <= e < s for e, s in zip(extra, spec.stride)):
        raise NotImplementedError(f"output_size {output_size} is out of range")  # torch says why
    return replace(spec, output_padding=extra)


def function_spec(call: OpCall) -> ConvSpec:
    """Spec of ``F.convNd(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1)``
    (also ``aten.convNd``, whose ``.padding`` overload takes a string padding)."""
    return _spec(call.arg(0, "input"), call.arg(1, "weight"), call.arg(2, "bias", None),
                 call.arg(3, "stride", 1), call.arg(4, "padding", 0),
                 call.arg(5, "dilation", 1), call.arg(6, "groups", 1))


def transpose_function_spec(call: OpCall) -> ConvSpec:
    """Spec of ``F.conv_transposeNd(input, weight, bias=None, stride=1, padding=0,
    output_padding=0, groups=1, dilation=1)`` (also ``aten.conv_transposeNd``)."""
    return _spec(call.arg(0, "input"), call.arg(1, "weight"), call.arg(2, "bias", None),
                 call.arg(3, "stride", 1), call.arg(4, "padding", 0),
                 call.arg(7, "dilation", 1), call.arg(6, "groups", 1), True,
                 call.arg(5, "output_padding", 0))


def convolution_spec(call: OpCall) -> ConvSpec:
    """Spec of ``aten.convolution(input, weight, bias, stride, padding, dilation,
    transposed, output_padding, groups)`` (``aten._convolution`` adds flags after)."""
    return _spec(call.arg(0, "input"), call.arg(1, "weight"), call.arg(2, "bias"),
                 call.arg(3, "stride"), call.arg(4, "padding"), call.arg(5, "dilation"),
                 call.arg(8, "groups"), call.arg(6, "transposed"), call.arg(7, "output_padding"))


def _transposed_sizes(spec: ConvSpec) -> tuple[int, ...]:
    # out = (in - 1) * stride - 2 * padding + dilation * (k - 1) + output_padding + 1
    if isinstance(spec.padding, str):
        raise NotImplementedError("string padding is not supported for transposed convolutions")
    return tuple((i - 1) * s - 2 * p + d * (k - 1) + op + 1 for i, k, s, p, d, op in zip(
        spec.x.shape[-spec.nd:], spec.kernel, spec.stride, spec.padding, spec.dilation,
        spec.output_padding))


def _plain_sizes(spec: ConvSpec) -> tuple[int, ...]:
    spatial = spec.x.shape[-spec.nd:]
    if spec.padding == "same":
        if any(s != 1 for s in spec.stride):
            raise NotImplementedError("padding='same' needs stride 1")  # torch says why
        return tuple(spatial)
    padding = (0,) * spec.nd if spec.padding == "valid" else spec.padding
    if isinstance(padding, str):
        raise NotImplementedError(f"unknown padding {padding!r}")
    return tuple(pooled_size(i, k, s, p, d) for i, k, s, p, d in zip(
        spatial, spec.kernel, spec.stride, padding, spec.dilation))


def conv_output(spec: ConvSpec) -> TensorInfo:
    """Output of a convolution: ``[N, cout, *spatial]`` (or unbatched ``[cout, *spatial]``).

    Raises NotImplementedError where torch would raise, so that the walker's
    meta fallback reports torch's own error.
    """
    nd, x, w = spec.nd, spec.x, spec.weight
    if x.ndim not in (nd + 1, nd + 2) or spec.groups < 1:
        raise NotImplementedError(f"input of rank {x.ndim} for a {nd}d convolution")
    cin = x.shape[-nd - 1]
    if spec.transposed:
        ok, cout, sizes = cin == w[0] and w[0] % spec.groups == 0, w[1] * spec.groups, _transposed_sizes(spec)
    else:
        ok, cout, sizes = cin == w[1] * spec.groups and w[0] % spec.groups == 0, w[0], _plain_sizes(spec)
    if not ok or any(size <= 0 for size in sizes):
        raise NotImplementedError(f"convolution of {x} with weight {list(w)} does not fit")
    batch = x.shape[:1] if x.ndim == nd + 2 else ()
    return TensorInfo(batch + (cout,) + sizes, x.dtype)


def conv_counts(spec: ConvSpec, out: TensorInfo) -> Counts:
    """Counts of a convolution producing ``out`` (see the module docstring)."""
    e = out.numel
    bias_adds = e if spec.bias else 0
    if e == 0:
        return Counts()
    if not spec.transposed:
        # weight: [cout, cin/groups, *k] -> L = cin/groups * prod(k) terms per output
        return Counts(dot_products=e, dot_length=prod(spec.weight[1:]), sparse_weight=True,
                      adds=bias_adds)
    # weight: [cin, cout/groups, *k]; x: [N, cin, *in_spatial]
    n_in = prod(spec.x.shape[:-spec.nd - 1]) * prod(spec.x.shape[-spec.nd:])  # N * prod(in_spatial)
    cin, cout_g, k = spec.weight[0], spec.weight[1], prod(spec.kernel)
    mults = n_in * cin * k * cout_g  # N * cin * prod(in_spatial) * prod(k) * cout/groups
    if mults % e == 0:
        return Counts(dot_products=e, dot_length=mults // e, sparse_weight=True, adds=bias_adds)
    partial = n_in * cout_g * spec.groups * k  # one per (input position, cout, kernel offset)
    return Counts(dot_products=partial, dot_length=cin // spec.groups, sparse_weight=True,
                  adds=bias_adds + max(partial - e, 0))


@counter(*CONV_MODULES)
def conv_module(call: OpCall) -> Counts:
    """``nn.ConvNd`` / ``nn.ConvTransposeNd``: dot products, in MACs, plus bias adds.

    Args ``(input[, output_size])``; hyper-parameters and the weight's shape
    come from the module. Padding copies (any ``padding_mode``) are free.

    # x: [N, cin, *in]  weight: [cout, cin/g, *k]  out: [N, cout, *o]
    # dot_products = N*cout*prod(o), dot_length = prod(k)*cin/g, adds = N*cout*prod(o) if bias
    # transposed: mults = N*cin*prod(in)*prod(k)*cout/g, adds = mults - E (module docstring)
    """
    return conv_counts(module_spec(call), call.y)


@counter(*CONV_FUNCTIONS, *ATEN_CONV)
def conv_function(call: OpCall) -> Counts:
    """``F.convNd`` / ``torch.convNd`` / ``aten.convNd``: as :func:`conv_module`.

    Args ``(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1)``;
    ``padding`` may be ``'same'`` or ``'valid'``.

    # x: [N, cin, *in]  weight: [cout, cin/g, *k]
    # dot_products = E = N*cout*prod(o), dot_length = prod(k)*cin/g, adds = E if bias
    """
    return conv_counts(function_spec(call), call.y)


@counter(*CONV_TRANSPOSE_FUNCTIONS, *ATEN_CONV_TRANSPOSE)
def conv_transpose_function(call: OpCall) -> Counts:
    """``F.conv_transposeNd`` / ``aten.conv_transposeNd``: scatter convention.

    Args ``(input, weight, bias=None, stride=1, padding=0, output_padding=0,
    groups=1, dilation=1)``.

    # x: [N, cin, *in]  weight: [cin, cout/g, *k]  out: [N, cout, *o], E = N*cout*prod(o)
    # mults = N*cin*prod(in)*prod(k)*cout/g, adds = mults - E (+ E if bias)
    """
    return conv_counts(transpose_function_spec(call), call.y)


@counter(*ATEN_CONVOLUTION)
def convolution_aten(call: OpCall) -> Counts:
    """``aten.convolution`` / ``aten._convolution``, plain or transposed.

    Args ``(input, weight, bias, stride, padding, dilation, transposed,
    output_padding, groups, ...)``. Same formulas as :func:`conv_module`.
    """
    return conv_counts(convolution_spec(call), call.y)


@shape_rule(*CONV_MODULES)
def conv_module_shape(call: OpCall) -> TensorInfo:
    """Output of an ``nn.ConvNd`` / ``nn.ConvTransposeNd`` call."""
    return conv_output(module_spec(call))


@shape_rule(*CONV_FUNCTIONS, *ATEN_CONV)
def conv_function_shape(call: OpCall) -> TensorInfo:
    """Output of ``F.convNd`` / ``aten.convNd``."""
    return conv_output(function_spec(call))


@shape_rule(*CONV_TRANSPOSE_FUNCTIONS, *ATEN_CONV_TRANSPOSE)
def conv_transpose_function_shape(call: OpCall) -> TensorInfo:
    """Output of ``F.conv_transposeNd`` / ``aten.conv_transposeNd``."""
    return conv_output(transpose_function_spec(call))


@shape_rule(*ATEN_CONVOLUTION)
def convolution_aten_shape(call: OpCall) -> TensorInfo:
    """Output of ``aten.convolution`` / ``aten._convolution``."""
    return conv_output(convolution_spec(call))


@hookimpl
def micronet_register_counters():
    return collect(sys.modules[__name__])
