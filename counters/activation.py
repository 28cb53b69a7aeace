"""Activation functions: per-element costs, softmax per row.

Every activation is counted per output element E (batch included) as
``(mults, adds, other_ops)``. RULES.md fixes three rows (the reference
counter's ``get_flops_per_activation``); the others are derived "in the same
spirit" and are named choices of this module:

=================  =================  ==========================================
activation         per element        derivation
=================  =================  ==========================================
relu               (1, 0, 0)          RULES: the comparison is booked as a
                                      multiply so that it gets the freebie
relu6, hardtanh,   (1, 0, 0)          the relu family: one clip or select against
leaky_relu, prelu,                    constants, booked like relu (the slope of
rrelu (eval),                         leaky_relu / prelu is part of the select,
threshold,                            as the brief for this module asks)
hardshrink
sigmoid            (2, 1, 0)          RULES, exactly: exp(x) / (1 + exp(x)); the
                                      exp is inside the two mults, no other op
silu / swish       (3, 1, 0)          RULES, exactly: x * sigmoid(x)
hardsigmoid        (2, 1, 0)          x/6 (1 mult) + 1/2 (1 add), then a clip
                                      booked like relu (1 mult)
hardswish          (3, 1, 0)          x * hardsigmoid(x)
tanh               (0, 0, 1)          one transcendental (RULES: count 1)
gelu (erf)         (3, 1, 1)          x * 1/sqrt(2), erf, 1 + ., 0.5 * x, product
gelu (tanh)        (6, 2, 1)          x*x*x (2), 0.044715 * . (1), + x (1 add),
                                      sqrt(2/pi) * . (1), tanh, 1 + ., 0.5 * x,
                                      product (2 more mults)
softplus           (1, 1, 2)          log(1 + exp(x)): exp and log (2 other), one
                                      add, the linear-region switch at
                                      ``threshold`` booked like relu; beta != 1
                                      adds 2 mults (beta * x and / beta)
elu family         (1, 1, 1) + k      select like relu, exp, exp - 1; one more
(elu, selu, celu)                     mult for each of alpha, scale, input_scale
                                      that is not 1: ELU(1) (1, 1, 1),
                                      SELU (3, 1, 1), CELU(a != 1) (3, 1, 1)
mish               (2, 1, 3)          x * tanh(softplus(x)): softplus (1, 1, 2),
                                      tanh (1 other), the product (1 mult)
logsigmoid         (2, 1, 1)          log(sigmoid(x)): sigmoid as RULES plus a log
softsign           (1, 1, 1)          x / (1 + |x|): |x| is a sign-bit clear (a
                                      bitwise op, 1 other), one add, the division
                                      (1 mult)
tanhshrink         (0, 1, 1)          x - tanh(x)
softshrink         (1, 1, 0)          select like relu, then x -/+ lambda
glu                (3, 1, 0)          a * sigmoid(b) per output element (the
                                      output is half the input along ``dim``)
=================  =================  ==========================================

Softmax over rows of n elements (R = E / n rows), per row:

- ``softmax``: n exp (other ops), n - 1 adds for the sum, n mults for the
  divisions. The max subtracted for numerical stability is an implementation
  detail of the kernel and is not counted.
- ``softmin``: softmax of -x: as softmax plus n sign flips (other ops).
- ``log_softmax``: x - log(sum(exp(x))): n exp and 1 log (other ops), n - 1
  adds for the sum and n adds (subtractions) for the result; no mults.

Targets: module classes, ``F.``/``torch.`` functions (in-place ``_`` forms
too), ``Tensor`` methods, and aten packets as seen under a dispatch mode or in
``torch.export`` graphs. Shape rules return the input's shape and dtype
(softmax honours ``dtype=`` and aten's ``half_to_float``; glu halves ``dim``);
integer inputs fall back to meta execution.
"""
from __future__ import annotations

import sys
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from micronet.counters._common import bare_name, distinct, lenient, like, packet, wrap_dim
from micronet.manager import hookimpl
from micronet.records import Counts, TensorInfo
from micronet.registry import Method, OpCall, collect, counter, shape_rule

aten = torch.ops.aten

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def _per_element(call: OpCall, mults: int, adds: int, other_ops: int = 0) -> Counts:
    n = call.y.numel
    return Counts(mults=mults * n, adds=adds * n, other_ops=other_ops * n)


def _is_aten(target: Any) -> bool:
    return isinstance(target, (torch._ops.OpOverload, torch._ops.OpOverloadPacket))


# --------------------------------------------------------------------- targets

PRELU = distinct(nn.PReLU, F.prelu, torch.prelu, Method("prelu"), aten.prelu, aten._prelu_kernel)
RELU_FAMILY = distinct(*PRELU,
    nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.Threshold, nn.Hardshrink,
    F.relu, F.relu_, torch.relu, torch.relu_, F.relu6, F.hardtanh, F.hardtanh_,
    F.leaky_relu, F.leaky_relu_, F.prelu, torch.prelu, F.rrelu, F.rrelu_, torch.rrelu, torch.rrelu_,
    F.threshold, F.threshold_, torch.threshold, torch.threshold_, F.hardshrink, torch.hardshrink,
    Method("relu"), Method("relu_"), Method("prelu"), Method("hardshrink"),
    aten.relu, aten.relu_, aten.relu6, aten.hardtanh, aten.hardtanh_, aten.leaky_relu,
    aten.leaky_relu_, aten.prelu, aten._prelu_kernel, aten.rrelu, aten.rrelu_with_noise,
    aten.threshold, aten.threshold_, aten.hardshrink,
)
SIGMOID = distinct(
    nn.Sigmoid, torch.sigmoid, torch.sigmoid_, F.sigmoid, torch.special.expit,
    Method("sigmoid"), Method("sigmoid_"), aten.sigmoid, aten.sigmoid_,
)
SILU = distinct(nn.SiLU, F.silu, aten.silu, aten.silu_)
HARDSIGMOID = distinct(nn.Hardsigmoid, F.hardsigmoid, aten.hardsigmoid, aten.hardsigmoid_)
HARDSWISH = distinct(nn.Hardswish, F.hardswish, aten.hardswish, aten.hardswish_)
TANH = distinct(nn.Tanh, torch.tanh, torch.tanh_, F.tanh, Method("tanh"), Method("tanh_"),
                aten.tanh, aten.tanh_)
GELU = distinct(nn.GELU, F.gelu, aten.gelu, aten.gelu_)
SOFTPLUS = distinct(nn.Softplus, F.softplus, aten.softplus)
ELU = distinct(nn.ELU, nn.SELU, nn.CELU, F.elu, F.elu_, F.selu, F.selu_, torch.selu, torch.selu_,
               F.celu, F.celu_, torch.celu, torch.celu_, aten.elu, aten.elu_, aten.selu,
               aten.selu_, aten.celu, aten.celu_)
MISH = distinct(nn.Mish, F.mish, aten.mish, aten.mish_)
LOGSIGMOID = distinct(nn.LogSigmoid, F.logsigmoid, aten.log_sigmoid, aten.log_sigmoid_forward)
SOFTSIGN = distinct(nn.Softsign, F.softsign)
TANHSHRINK = distinct(nn.Tanhshrink, F.tanhshrink)
SOFTSHRINK = distinct(nn.Softshrink, F.softshrink, aten.softshrink)
GLU = distinct(nn.GLU, F.glu, aten.glu)
SOFTMAX = distinct(nn.Softmax, nn.Softmax2d, F.softmax, torch.softmax, Method("softmax"),
                   aten._softmax, aten.softmax, getattr(aten, "_safe_softmax", None))  # SDPA's, on meta
SOFTMIN = distinct(nn.Softmin, F.softmin)
LOG_SOFTMAX = distinct(nn.LogSoftmax, F.log_softmax, torch.log_softmax, Method("log_softmax"),
                       aten._log_softmax, aten.log_softmax)

#: Activations whose output has the input's shape and dtype.
SAME_SHAPE = distinct(
    *(t for t in RELU_FAMILY if t not in PRELU), *SIGMOID, *SILU, *HARDSIGMOID, *HARDSWISH, *TANH, *GELU,
    *SOFTPLUS, *ELU,
    *MISH, *(t for t in LOGSIGMOID if t is not aten.log_sigmoid_forward), *SOFTSIGN,
    *TANHSHRINK, *SOFTSHRINK,
)


# --------------------------------------------------------------------- counters


@counter(*RELU_FAMILY, op="relu")
def count_relu(call: OpCall) -> Counts:
    """Relu family: 1 mult per output element (RULES books relu's comparison as
    a multiply). ``args[0]``: the input ``[*]``; slopes and bounds are free."""
    return _per_element(call, 1, 0)


@counter(*SIGMOID, op="sigmoid")
def count_sigmoid(call: OpCall) -> Counts:
    """Sigmoid, RULES: 2 mults + 1 add per output element, no other op."""
    return _per_element(call, 2, 1)


@counter(*SILU, op="silu")
def count_silu(call: OpCall) -> Counts:
    """SiLU / swish, RULES: 3 mults + 1 add per output element, no other op."""
    return _per_element(call, 3, 1)


@counter(*HARDSIGMOID, op="hardsigmoid")
def count_hardsigmoid(call: OpCall) -> Counts:
    """relu6(x + 3) / 6 = clip(x/6 + 1/2): 2 mults + 1 add per element."""
    return _per_element(call, 2, 1)


@counter(*HARDSWISH, op="hardswish")
def count_hardswish(call: OpCall) -> Counts:
    """x * hardsigmoid(x): 3 mults + 1 add per element."""
    return _per_element(call, 3, 1)


@counter(*TANH, op="tanh")
def count_tanh(call: OpCall) -> Counts:
    """tanh: one transcendental (other op) per element."""
    return _per_element(call, 0, 0, 1)


@counter(*GELU, op="gelu")
def count_gelu(call: OpCall) -> Counts:
    """GELU per element: erf form (3, 1, 1); ``approximate='tanh'`` (6, 2, 1).

    ``approximate`` comes from the module, or keyword / position 1."""
    approximate = call.module.approximate if call.module is not None else call.arg(1, "approximate", "none")
    return _per_element(call, 6, 2, 1) if approximate == "tanh" else _per_element(call, 3, 1, 1)


@counter(*SOFTPLUS, op="softplus")
def count_softplus(call: OpCall) -> Counts:
    """softplus = log(1 + exp(beta x)) / beta: (1, 1, 2) per element, plus 2
    mults when beta != 1. ``(input, beta=1, threshold=20)``."""
    beta = call.module.beta if call.module is not None else call.arg(1, "beta", 1)
    return _per_element(call, 1 + 2 * (beta != 1), 1, 2)


def _elu_constants(call: OpCall) -> tuple[float, float, float]:
    """(alpha, scale, input_scale) of an ELU-family call, aten.elu's layout."""
    module, name = call.module, bare_name(call.target)
    if module is not None:
        if isinstance(module, nn.SELU):
            return SELU_ALPHA, SELU_SCALE, 1.0
        if isinstance(module, nn.CELU):
            return module.alpha, 1.0, 1.0 / module.alpha
        return module.alpha, 1.0, 1.0
    if name.startswith("selu"):
        return SELU_ALPHA, SELU_SCALE, 1.0
    if name.startswith("celu"):
        alpha = call.arg(1, "alpha", 1.0)
        return alpha, 1.0, 1.0 / alpha
    if _is_aten(call.target):
        return call.arg(1, "alpha", 1), call.arg(2, "scale", 1), call.arg(3, "input_scale", 1)
    return call.arg(1, "alpha", 1.0), 1.0, 1.0


@counter(*ELU, op="elu")
def count_elu(call: OpCall) -> Counts:
    """ELU / SELU / CELU: select (1 mult), exp (1 other), exp - 1 (1 add), and
    one mult for each of alpha, scale, input_scale that is not 1."""
    extra = sum(constant != 1 for constant in _elu_constants(call))
    return _per_element(call, 1 + extra, 1, 1)


@counter(*MISH, op="mish")
def count_mish(call: OpCall) -> Counts:
    """x * tanh(softplus(x)): (2, 1, 3) per element."""
    return _per_element(call, 2, 1, 3)


@counter(*LOGSIGMOID, op="logsigmoid")
def count_logsigmoid(call: OpCall) -> Counts:
    """log(sigmoid(x)): sigmoid (2, 1) plus a log: (2, 1, 1) per element.
    ``aten.log_sigmoid_forward`` returns (output, buffer): the output counts."""
    return _per_element(call, 2, 1, 1)


@counter(*SOFTSIGN, op="softsign")
def count_softsign(call: OpCall) -> Counts:
    """x / (1 + |x|): (1, 1, 1) per element (|x| is a bitwise sign clear)."""
    return _per_element(call, 1, 1, 1)


@counter(*TANHSHRINK, op="tanhshrink")
def count_tanhshrink(call: OpCall) -> Counts:
    """x - tanh(x): (0, 1, 1) per element."""
    return _per_element(call, 0, 1, 1)


@counter(*SOFTSHRINK, op="softshrink")
def count_softshrink(call: OpCall) -> Counts:
    """select (like relu) then x -/+ lambda: (1, 1, 0) per element."""
    return _per_element(call, 1, 1)


@counter(*GLU, op="glu")
def count_glu(call: OpCall) -> Counts:
    """a * sigmoid(b), per output element: sigmoid (2, 1) + 1 mult."""
    return _per_element(call, 3, 1)


def _softmax_rows(call: OpCall) -> tuple[int, int]:
    """(elements, row length n) of a softmax-like call."""
    x = call.x
    dim = _softmax_dim(call)
    n = x.shape[dim] if x.ndim else 1
    return call.y.numel, n


@counter(*SOFTMAX, op="softmax")
def count_softmax(call: OpCall) -> Counts:
    """Per row of n: n exp (other), n - 1 adds, n mults (the divisions)."""
    elements, n = _softmax_rows(call)
    rows = elements // n if n else 0
    return Counts(mults=elements, adds=elements - rows, other_ops=elements)


@counter(*SOFTMIN, op="softmin")
def count_softmin(call: OpCall) -> Counts:
    """softmax(-x): softmax plus n sign flips (other ops) per row."""
    elements, n = _softmax_rows(call)
    rows = elements // n if n else 0
    return Counts(mults=elements, adds=elements - rows, other_ops=2 * elements)


@counter(*LOG_SOFTMAX, op="log_softmax")
def count_log_softmax(call: OpCall) -> Counts:
    """x - log(sum(exp(x))) per row of n: n exp + 1 log (other), 2n - 1 adds."""
    elements, n = _softmax_rows(call)
    rows = elements // n if n else 0
    return Counts(adds=2 * elements - rows, other_ops=elements + rows)


# ------------------------------------------------------------------ shape rules


def _floating(x: TensorInfo) -> TensorInfo:
    if not x.dtype.is_floating_point:
        raise NotImplementedError(f"activation on {x.dtype}: left to meta execution")
    return x


@shape_rule(*SAME_SHAPE)
@lenient
def shape_same(call: OpCall) -> TensorInfo:
    """Same shape and dtype as the input (floating inputs only)."""
    return like(_floating(call.x))


@shape_rule(*PRELU)
@lenient
def shape_prelu(call: OpCall) -> TensorInfo:
    """prelu ``(input, weight)``: the input's shape when the weight has 1 or
    C = shape[1] elements of the input's dtype; a 0-dim input broadcasts to
    the weight and is left to meta execution."""
    x = _floating(call.x)
    if call.module is not None:
        weight = TensorInfo(tuple(call.module.weight.shape), call.module.weight.dtype)
    else:
        weight = call.arg(1, "weight")
    channels = x.shape[1] if x.ndim >= 2 else 1
    matches = isinstance(weight, TensorInfo) and weight.dtype == x.dtype and weight.numel in (1, channels)
    if x.ndim == 0 or not matches:
        raise NotImplementedError("prelu with a 0-dim input or a mismatched weight")
    return like(x)


def _softmax_dim(call: OpCall) -> int:
    """The reduced dimension, wrapped; F's legacy implicit dim when None."""
    x = call.x
    if call.module is not None:
        dim = -3 if isinstance(call.module, nn.Softmax2d) else call.module.dim
    else:
        dim = call.arg(1, "dim", None)
    if dim is None:
        dim = 0 if x.ndim in (0, 1, 3) else 1
    if isinstance(call.module, nn.Softmax2d) and x.ndim not in (3, 4):
        raise NotImplementedError("Softmax2d needs a 3-D or 4-D input")
    return wrap_dim(dim, x.ndim)


def _softmax_dtype(call: OpCall) -> torch.dtype:
    x = _floating(call.x)
    if call.module is not None:
        return x.dtype
    target = packet(call.target)
    if target in (aten._softmax, aten._log_softmax):
        half_to_float = call.arg(2, "half_to_float", False)
        return torch.float32 if half_to_float and x.dtype == torch.float16 else x.dtype
    index = 3 if target in (F.softmax, F.softmin, F.log_softmax) else 2
    dtype = call.arg(index, "dtype", None)
    return x.dtype if dtype is None else dtype


@shape_rule(*SOFTMAX, *SOFTMIN, *LOG_SOFTMAX)
@lenient
def shape_softmax(call: OpCall) -> TensorInfo:
    """Input's shape; dtype from ``dtype=`` (F: position 3, torch / Tensor /
    aten.softmax: position 2) or aten._softmax's ``half_to_float``."""
    _softmax_dim(call)  # validates dim
    return like(call.x, dtype=_softmax_dtype(call))


@shape_rule(*GLU)
@lenient
def shape_glu(call: OpCall) -> TensorInfo:
    """glu halves ``dim`` (default -1), which must be even: ``[*, 2n, *] -> [*, n, *]``."""
    x = _floating(call.x)
    dim = call.module.dim if call.module is not None else call.arg(1, "dim", -1)
    if x.ndim == 0:
        raise NotImplementedError("glu on a 0-dim tensor")
    dim = wrap_dim(dim, x.ndim)
    if x.shape[dim] % 2:
        raise NotImplementedError("glu needs an even size along dim")
    shape = list(x.shape)
    shape[dim] //= 2
    return like(x, shape)


@hookimpl
def micronet_register_counters():
    return collect(sys.modules[__name__])
