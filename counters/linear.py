"""Fully connected layers: ``nn.Linear``, ``F.linear``, ``aten.linear``,
``aten.addmm`` (what ``F.linear`` with a bias decomposes into), and the
bilinear form ``nn.Bilinear`` / ``F.bilinear`` / ``aten.bilinear``.

Convention (RULES.md section 1): every output element, leading dimensions
included, is one dot product of ``in_features`` terms over the weight, so
weight sparsity shrinks it (``sparse_weight=True``); a bias adds one
addition per output element. The rules count per example (``cout`` outputs);
here the traced batch is included, the rulebook divides it out.
"""
from __future__ import annotations

import sys

import torch
from torch import nn
import torch.nn.functional as F

from micronet.counters._common import broadcasts_to, prod, tensor_arg
from micronet.manager import hookimpl
from micronet.records import Counts, TensorInfo
from micronet.registry import OpCall, collect, counter, shape_rule

aten = torch.ops.aten


def linear_output(x: TensorInfo, weight: tuple[int, ...]) -> TensorInfo:
    """``[..., in] x [out, in]^T -> [..., out]``; NotImplementedError if they do not fit."""
    if x.ndim < 1 or len(weight) not in (1, 2) or x.shape[-1] != weight[-1]:
        raise NotImplementedError(f"linear of {x} with weight {list(weight)} does not fit")
    return TensorInfo(x.shape[:-1] + tuple(weight[:-1]), x.dtype)


def linear_counts(out: TensorInfo, in_features: int, bias: bool) -> Counts:
    """One weighted sum of ``in_features`` terms per output element, plus bias adds."""
    e = out.numel  # prod(out.shape), leading dims included
    return Counts(dot_products=e, dot_length=in_features, sparse_weight=True,
                  adds=e if bias else 0)


@counter(nn.Linear)
def linear_module(call: OpCall) -> Counts:
    """``nn.Linear``: dot products over the weight (MACs) plus one add per output for the bias.

    Args ``(input,)``; ``in_features`` and the bias come from the module.

    # x: [..., in]  weight: [out, in]  y: [..., out]
    # dot_products = prod(y.shape), dot_length = in, adds = prod(y.shape) if bias
    """
    m = call.module
    return linear_counts(call.y, m.weight.shape[-1], m.bias is not None)


@counter(F.linear, aten.linear)
def linear_function(call: OpCall) -> Counts:
    """``F.linear`` / ``aten.linear``: as :func:`linear_module`.

    Args ``(input, weight, bias=None)``.

    # x: [..., in]  weight: [out, in]  y: [..., out]
    # dot_products = prod(y.shape), dot_length = in, adds = prod(y.shape) if bias
    """
    weight = tensor_arg(call.arg(1, "weight"), "weight")
    return linear_counts(call.y, weight.shape[-1], call.arg(2, "bias", None) is not None)


@counter(aten.addmm)
def addmm_aten(call: OpCall) -> Counts:
    """``aten.addmm(self, mat1, mat2, *, beta=1, alpha=1)``: ``beta*self + alpha*(mat1 @ mat2)``.

    This is how a linear layer with a bias reaches aten (``mat2`` is the
    transposed weight), so the dot products are weighted (``sparse_weight``).
    Leaves out nothing; ``beta == 0`` drops the added term.

    # mat1: [n, k]  mat2: [k, p]  self: broadcast to [n, p]
    # dot_products = n*p, dot_length = k
    # adds = n*p if beta != 0; mults += n*p if alpha != 1; mults += n*p if beta not in (0, 1)
    """
    mat1 = tensor_arg(call.arg(1, "mat1"), "mat1")
    e = call.y.numel
    beta, alpha = call.kwargs.get("beta", 1), call.kwargs.get("alpha", 1)
    mults = (e if alpha != 1 else 0) + (e if beta not in (0, 1) else 0)
    return Counts(dot_products=e, dot_length=mat1.shape[-1], sparse_weight=True,
                  mults=mults, adds=e if beta != 0 else 0)


def bilinear_counts(x1: TensorInfo, weight: tuple[int, ...], bias: bool, out: TensorInfo) -> Counts:
    """``y_o = x1^T W_o x2 + b_o``, evaluated as ``x1 . (W_o x2)``.

    # x1: [..., in1]  x2: [..., in2]  weight: [out, in1, in2]  y: [..., out]; R = prod(y.shape[:-1])
    # W_o x2: R*out*in1 weighted dot products of in2 terms (sparse_weight)
    # x1 . (W_o x2): mults += R*out*in1, adds += R*out*(in1 - 1); bias: adds += R*out
    """
    n_out, in1, in2 = weight
    rows = prod(out.shape[:-1])
    e = rows * n_out
    return Counts(dot_products=e * in1, dot_length=in2, sparse_weight=True,
                  mults=e * in1, adds=e * max(in1 - 1, 0) + (e if bias else 0))


@counter(nn.Bilinear)
def bilinear_module(call: OpCall) -> Counts:
    """``nn.Bilinear(input1, input2)``: see :func:`bilinear_counts` (args ``(input1, input2)``)."""
    m = call.module
    return bilinear_counts(call.x, tuple(m.weight.shape), m.bias is not None, call.y)


@counter(F.bilinear, aten.bilinear)
def bilinear_function(call: OpCall) -> Counts:
    """``F.bilinear(input1, input2, weight, bias=None)``: see :func:`bilinear_counts`."""
    weight = tensor_arg(call.arg(2, "weight"), "weight")
    return bilinear_counts(call.x, weight.shape, call.arg(3, "bias", None) is not None, call.y)


@shape_rule(nn.Linear)
def linear_module_shape(call: OpCall) -> TensorInfo:
    """``[..., in] -> [..., out]`` (``out`` from the module's weight)."""
    return linear_output(call.x, tuple(call.module.weight.shape))


@shape_rule(F.linear, aten.linear)
def linear_function_shape(call: OpCall) -> TensorInfo:
    """``F.linear(input, weight, bias=None)``: ``[..., in] -> [..., out]``; a 1-D weight drops the last dim."""
    x = tensor_arg(call.arg(0, "input"), "input")
    weight = tensor_arg(call.arg(1, "weight"), "weight")
    bias = call.arg(2, "bias", None)
    out = linear_output(x, weight.shape)
    if isinstance(bias, TensorInfo) and not broadcasts_to(bias.shape, out.shape):
        raise NotImplementedError("bias does not broadcast to the output")
    return out


@shape_rule(aten.addmm)
def addmm_aten_shape(call: OpCall) -> TensorInfo:
    """``aten.addmm(self, mat1, mat2)``: ``[n, k] @ [k, p] -> [n, p]`` (default overload only)."""
    if isinstance(call.target, torch._ops.OpOverload) and call.target._overloadname != "default":
        raise NotImplementedError(f"{call.target} is left to meta execution")
    bias = tensor_arg(call.arg(0, "self"), "self")
    mat1, mat2 = tensor_arg(call.arg(1, "mat1"), "mat1"), tensor_arg(call.arg(2, "mat2"), "mat2")
    if mat1.ndim != 2 or mat2.ndim != 2 or mat1.shape[1] != mat2.shape[0] or mat1.dtype != mat2.dtype:
        raise NotImplementedError("addmm operands do not fit")
    shape = (mat1.shape[0], mat2.shape[1])
    if not broadcasts_to(bias.shape, shape):
        raise NotImplementedError("addmm self does not broadcast to the output")
    return TensorInfo(shape, mat1.dtype)


@shape_rule(nn.Bilinear)
def bilinear_module_shape(call: OpCall) -> TensorInfo:
    """``nn.Bilinear``: ``[..., in1], [..., in2] -> [..., out]``."""
    return _bilinear_output(call.arg(0, "input1"), call.arg(1, "input2"), tuple(call.module.weight.shape))


@shape_rule(F.bilinear, aten.bilinear)
def bilinear_function_shape(call: OpCall) -> TensorInfo:
    """``F.bilinear(input1, input2, weight, bias=None)``: ``[..., out]``."""
    weight = tensor_arg(call.arg(2, "weight"), "weight")
    return _bilinear_output(call.arg(0, "input1"), call.arg(1, "input2"), weight.shape)


def _bilinear_output(x1, x2, weight: tuple[int, ...]) -> TensorInfo:
    x1, x2 = tensor_arg(x1, "input1"), tensor_arg(x2, "input2")
    if (len(weight) != 3 or x1.ndim < 1 or x1.shape[:-1] != x2.shape[:-1]
            or (x1.shape[-1], x2.shape[-1]) != tuple(weight[1:])):
        raise NotImplementedError("bilinear operands do not fit")
    return TensorInfo(x1.shape[:-1] + (weight[0],), x1.dtype)


@hookimpl
def micronet_register_counters():
    return collect(sys.modules[__name__])
