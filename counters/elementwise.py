"""Elementwise arithmetic: add, sub, mul, div, pow, unary math, clamps.

Counted per output element E (the broadcast shape, batch included):

=============================  ====================  =========================================
op                             per element           why
=============================  ====================  =========================================
add, sub, rsub (tensor or      1 add                 RULES: elementwise add; a scalar operand
scalar operand)                                      costs the same
... with ``alpha != 1``        + 1 mult              alpha * other
mul                            1 mult                RULES: elementwise scale
div, true_divide               1 mult                choice: a division by a constant is a
                                                     multiply by its reciprocal; a division by
                                                     a tensor is also booked as 1 mult (RULES
                                                     has no division; the reference counter
                                                     books global pooling's divisions as mults)
div with ``rounding_mode``,    1 mult + 1 other      the division plus a rounding
floor_divide
reciprocal                     1 mult                a division
square                         1 mult                x * x
pow, integer exponent n        square-and-multiply   n = 2: 1 mult; n >= 2: bit_length(n) - 1
                               mults                 squarings + popcount(n) - 1 products;
                                                     n = 0, 1: free; n < 0: |n| plus 1 mult
                                                     (the reciprocal)
pow, exponent 0.5 / -0.5       1 other               sqrt / rsqrt
pow, any other exponent        1 other               exp(y log x) counted as one
                                                     transcendental, like exp
exp, exp2, expm1, log, log2,   1 other               RULES: transcendentals count 1
log10, log1p, sqrt, rsqrt,
sin, cos, erf
neg, abs, sign                 1 other               choice: a sign-bit flip / clear / read is
                                                     a bitwise op (RULES: bitwise ops count 1)
floor, ceil, round, trunc      1 other               a rounding, like a bitwise op
clamp, clip, clamp_min,        1 mult                the relu family: a clip against
clamp_max                                            constants is booked like relu (RULES)
minimum, maximum, fmin, fmax   1 add                 choice: a comparison of two values is a
                                                     subtraction and a sign test, booked as an
                                                     add (as max pooling's comparisons)
eq, ne, lt, le, gt, ge         1 add                 the same comparison; the output is bool
addcmul, addcdiv               1 mult + 1 add        input + value * t1 * t2 (or / t2); + 1
                                                     mult when ``value != 1``
=============================  ====================  =========================================

Targets: ``operator`` functions (``x + y``, ``x += y``, ``-x``, ``abs(x)``,
``x ** 2``), ``torch.`` functions, ``Tensor`` methods (plain, in-place ``_``
and dunder forms, the tensor as ``args[0]``) and aten packets.

Shapes: out-of-place ops broadcast every tensor operand and promote dtypes
exactly as torch does (:func:`~micronet.counters._common.promote`: dimensioned tensors, then 0-dim
tensors, then Python scalars, by category); true divisions and the
transcendentals turn integers into the default float dtype. In-place ops
return ``self``'s shape and dtype, and fall back to meta execution when
torch would refuse (a broadcast that grows ``self``, a cast to a lower
category).
"""
from __future__ import annotations

import operator
import sys
from typing import Any

import torch

from micronet.counters._common import broadcast_shapes, distinct, lenient, packet, promote
from micronet.manager import hookimpl
from micronet.records import Counts, TensorInfo
from micronet.registry import Method, OpCall, collect, counter, shape_rule

aten = torch.ops.aten


def _forms(*names: str) -> tuple:
    """``torch.name``, ``torch.name_``, ``Tensor.name(_)`` and ``aten.name(_)``
    for each name, where they exist."""
    found = []
    for name in names:
        for variant in (name, name + "_"):
            found.append(getattr(torch, variant, None))
            if hasattr(torch.Tensor, variant):
                found.append(Method(variant))
            found.append(getattr(aten, variant, None))
    return distinct(*found)


def _dunders(*names: str) -> tuple:
    """``Tensor.__name__``, ``__rname__`` and ``__iname__`` where they exist."""
    found = [Method(f"__{prefix}{name}__") for name in names for prefix in ("", "r", "i")
             if hasattr(torch.Tensor, f"__{prefix}{name}__")]
    return distinct(*found)


def _to_float(dtype: torch.dtype) -> torch.dtype:
    """Integer and bool results of a true division or a transcendental become float."""
    return dtype if dtype.is_floating_point or dtype.is_complex else torch.get_default_dtype()


# ------------------------------------------------------------------ the forms

INPLACE_OPERATORS = frozenset({operator.iadd, operator.isub, operator.imul, operator.itruediv,
                               operator.ifloordiv, operator.ipow, operator.imod, operator.iand, operator.ior,
                               operator.ixor})


def is_inplace(target: Any) -> bool:
    """Whether a target writes into its first argument (``x.add_(y)``, ``x += y``)."""
    if target in INPLACE_OPERATORS:
        return True
    if target in (operator.and_, operator.or_):  # named with a trailing "_", yet they return a new value
        return False
    if isinstance(target, Method):
        name = target.name
        return name.startswith("__i") if name.startswith("__") else name.endswith("_")
    if isinstance(target, torch._ops.OpOverload):
        target = target.overloadpacket
    name = getattr(target, "__name__", "")
    return name.endswith("_") and not name.endswith("__")


def _operands(call: OpCall, positional: int) -> list[Any]:
    """Tensor and number operands: the first ``positional`` arguments and the
    operand keywords (hyper-parameters such as ``alpha`` left out)."""
    skip = {"alpha", "value", "rounding_mode", "out", "dtype"}
    values = list(call.args[:positional]) + [v for k, v in call.kwargs.items() if k not in skip]
    return [v for v in values if isinstance(v, (TensorInfo, bool, int, float, complex))]


def binary_out(call: OpCall, positional: int = 2, to_float: bool = False) -> TensorInfo:
    """Output of an elementwise op: broadcast shape and promoted dtype of its
    operands, or ``self``'s for in-place forms (checked as torch checks them)."""
    operands = _operands(call, positional)
    tensors = [v for v in operands if isinstance(v, TensorInfo)]
    if not tensors:
        raise NotImplementedError("no tensor operand")
    try:
        shape = broadcast_shapes(*(t.shape for t in tensors))
    except RuntimeError as error:
        raise NotImplementedError(f"shapes do not broadcast: {error}") from error
    dtype = promote(*operands)
    if to_float:
        dtype = _to_float(dtype)
    self = call.args[0] if call.args else None
    if is_inplace(call.target) and isinstance(self, TensorInfo):
        if tuple(shape) != tuple(self.shape) or not torch.can_cast(dtype, self.dtype):
            raise NotImplementedError("in-place op torch would refuse")
        return TensorInfo(self.shape, self.dtype)
    return TensorInfo(tuple(shape), dtype)


# --------------------------------------------------------------------- targets

ADD = distinct(operator.add, operator.sub, operator.iadd, operator.isub,
               *_forms("add", "sub", "subtract", "rsub"), *_dunders("add", "sub"))
MUL = distinct(operator.mul, operator.imul, *_forms("mul", "multiply"), *_dunders("mul"))
DIV = distinct(operator.truediv, operator.itruediv, *_forms("div", "divide", "true_divide"),
               *_dunders("truediv"))
FLOOR_DIV = distinct(operator.floordiv, operator.ifloordiv, *_forms("floor_divide"),
                     *_dunders("floordiv"))
POW = distinct(operator.pow, operator.ipow, *_forms("pow"), *_dunders("pow"))
REMAINDER = distinct(operator.mod, operator.imod, *_forms("remainder", "fmod"), *_dunders("mod"))
TRANSCENDENTAL = _forms("exp", "exp2", "expm1", "log", "log2", "log10", "log1p", "sqrt", "rsqrt",
                        "sin", "cos", "erf")
RECIPROCAL = _forms("reciprocal")
BITWISE = distinct(operator.neg, operator.abs, Method("__neg__"), Method("__abs__"),
                   *_forms("neg", "negative", "abs", "absolute", "sign", "floor", "ceil", "round",
                           "trunc"))
SQUARE = _forms("square")
#: bitwise and logical ops on masks and integers: 1 other op per element, as the rules price bitwise ops
INVERT = distinct(operator.invert, Method("__invert__"), *_forms("bitwise_not"))
LOGICAL_NOT = _forms("logical_not")
BITWISE_BINARY = distinct(operator.and_, operator.or_, operator.xor, operator.iand, operator.ior,
                          operator.ixor, *_forms("bitwise_and", "bitwise_or", "bitwise_xor"),
                          *_dunders("and", "or", "xor"))
LOGICAL_BINARY = _forms("logical_and", "logical_or", "logical_xor")
CLAMP = _forms("clamp", "clip", "clamp_min", "clamp_max")
MINMAX = _forms("minimum", "maximum", "fmin", "fmax")
ADDC = _forms("addcmul", "addcdiv")
COMPARE = distinct(operator.eq, operator.ne, operator.lt, operator.le, operator.gt, operator.ge,
                   *_forms("eq", "ne", "lt", "le", "gt", "ge", "greater", "greater_equal", "less",
                           "less_equal", "not_equal"),
                   *(Method(f"__{name}__") for name in ("eq", "ne", "lt", "le", "gt", "ge")))


# ------------------------------------------------------------------ shape rules


@shape_rule(*ADD, *MUL, *FLOOR_DIV, *POW, *MINMAX, *REMAINDER)
@lenient
def shape_binary(call: OpCall) -> TensorInfo:
    """``(a, b)`` with tensor or number operands: broadcast and promote."""
    out = binary_out(call)
    name = _base_name(call.target)
    if (packet(call.target) in (torch.rsub, aten.rsub) or name == "fmod") \
            and not isinstance(call.args[0], TensorInfo):
        raise NotImplementedError(f"{name} needs a tensor first")  # torch raises a TypeError
    if name in ("sub", "rsub", "subtract") and any(
        isinstance(v, bool) or isinstance(v, TensorInfo) and v.dtype == torch.bool for v in _operands(call, 2)
    ):
        raise NotImplementedError("subtraction with a bool")
    if name in _TENSOR_ONLY and not all(isinstance(v, TensorInfo) for v in _operands(call, 2)):
        raise NotImplementedError(f"{name} takes two tensors")
    if out.dtype == torch.bool and name not in _BOOL_OK:
        raise NotImplementedError(f"{name} of bools")
    if name == "pow" and not (out.dtype.is_floating_point or out.dtype.is_complex):
        exponent = _pow_operands(call)[1]
        if _is_number(exponent) and exponent < 0:
            raise NotImplementedError("integers to negative integer powers")
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


#: Binary ops whose operands must both be tensors.
_TENSOR_ONLY = frozenset({"minimum", "maximum", "fmin", "fmax"})
#: Binary ops torch runs on bool operands; the others (sub, floor_divide, pow,
#: which promotes bools to int64) are left to meta execution when the
#: promoted dtype is bool.
_BOOL_OK = frozenset({"add", "mul", "multiply", "minimum", "maximum", "fmin", "fmax"})


@shape_rule(*DIV)
@lenient
def shape_div(call: OpCall) -> TensorInfo:
    """True division: integers become the default float; with
    ``rounding_mode`` the promoted dtype stays. ``x.__rtruediv__(y)`` is
    torch's ``x.reciprocal() * y``: ``x`` is made float on its own first
    (a 0-d bool ``x`` and a 0-d float16 ``y`` give float32, not float16)."""
    if call.kind == "method" and call.target.name in ("__rtruediv__", "__rdiv__") \
            and isinstance(call.args[0], TensorInfo):
        x = call.args[0]
        reciprocal = TensorInfo(x.shape, _to_float(x.dtype))
        return binary_out(OpCall(call.kind, call.target, (reciprocal, *call.args[1:]), call.kwargs,
                                 call.module), to_float=True)
    return binary_out(call, to_float=call.kwargs.get("rounding_mode") is None)


@shape_rule(*TRANSCENDENTAL, *RECIPROCAL)
@lenient
def shape_to_float(call: OpCall) -> TensorInfo:
    """Unary op producing floats: integer and bool inputs give the default float."""
    return binary_out(call, positional=1, to_float=True)


@shape_rule(*BITWISE, *SQUARE)
@lenient
def shape_same_dtype(call: OpCall) -> TensorInfo:
    """Unary op keeping the dtype (bool inputs left to meta execution)."""
    if call.x.dtype == torch.bool:
        raise NotImplementedError("unary op on bool")
    return binary_out(call, positional=1)


@shape_rule(*INVERT)
@lenient
def shape_invert(call: OpCall) -> TensorInfo:
    """``~x`` / ``bitwise_not``: same shape and dtype, bool or integer only."""
    x = call.x
    if x.dtype.is_floating_point or x.dtype.is_complex:
        raise NotImplementedError("bitwise not of a float")  # torch refuses
    return TensorInfo(x.shape, x.dtype)


@shape_rule(*LOGICAL_NOT)
@lenient
def shape_logical_not(call: OpCall) -> TensorInfo:
    """``logical_not(x)``: bool, or self's dtype in place."""
    x = call.x
    return TensorInfo(x.shape, x.dtype if is_inplace(call.target) else torch.bool)


@shape_rule(*BITWISE_BINARY)
@lenient
def shape_bitwise_binary(call: OpCall) -> TensorInfo:
    """``a & b`` / ``|`` / ``^`` and ``bitwise_*``: broadcast and promote, bool or integer only."""
    out = binary_out(call)
    if out.dtype.is_floating_point or out.dtype.is_complex:
        raise NotImplementedError("bitwise op on floats")  # torch refuses
    return out


@shape_rule(*LOGICAL_BINARY)
@lenient
def shape_logical_binary(call: OpCall) -> TensorInfo:
    """``logical_and / or / xor (a, b)``: two tensors; broadcast shape, bool (in place: self's)."""
    if not all(isinstance(v, TensorInfo) for v in _operands(call, 2)):
        raise NotImplementedError("logical op takes two tensors")  # torch raises a TypeError
    if is_inplace(call.target):
        return binary_out(call)
    return TensorInfo(binary_out(call).shape, torch.bool)


@shape_rule(*COMPARE)
@lenient
def shape_compare(call: OpCall) -> TensorInfo:
    """Comparisons ``(a, b)``: the broadcast shape, bool (in place: self's)."""
    if is_inplace(call.target):  # the bools are written into self as its dtype
        self = call.args[0]
        shape = binary_out(OpCall(call.kind, torch.eq, call.args, call.kwargs)).shape
        if shape != self.shape:
            raise NotImplementedError("in-place comparison growing self")
        return self
    out = binary_out(call)
    if out.dtype.is_complex and _base_name(call.target) not in ("eq", "ne", "not_equal"):
        raise NotImplementedError("ordering of complex numbers")
    return TensorInfo(out.shape, torch.bool)


@shape_rule(*CLAMP, *ADDC)
@lenient
def shape_ternary(call: OpCall) -> TensorInfo:
    """``clamp(x, min, max)`` / ``addcmul(x, t1, t2)``: every tensor operand
    broadcasts; numbers take part in the promotion."""
    if _base_name(call.target) in ("clamp", "clip"):
        bounds = [b for b in (call.arg(1, "min", None), call.arg(2, "max", None)) if b is not None]
        if not bounds or len({isinstance(b, TensorInfo) for b in bounds}) > 1:
            raise NotImplementedError("clamp without bounds or with a tensor and a number")
    out = binary_out(call, positional=3)
    if _base_name(call.target) == "addcdiv" and not out.dtype.is_floating_point:
        raise NotImplementedError("integer addcdiv")
    return out


# --------------------------------------------------------------------- counters


def _base_name(target: Any) -> str:
    """``Tensor.__radd__`` -> ``add``, ``aten.mul_.Tensor`` -> ``mul``, ``operator.iadd`` -> ``add``."""
    if isinstance(target, Method):
        name = target.name
        if name.startswith("__"):
            name = name.strip("_")
            return name[1:] if name[0] in "ri" and name[1:] in _DUNDER_BASES else name
        return name.rstrip("_")
    if isinstance(target, torch._ops.OpOverload):
        target = target.overloadpacket
    if target in INPLACE_OPERATORS:
        return target.__name__[1:]
    return getattr(target, "__name__", "").rstrip("_")


_DUNDER_BASES = frozenset({"add", "sub", "mul", "truediv", "floordiv", "pow", "mod"})


def _per_element(call: OpCall, mults: int = 0, adds: int = 0, other_ops: int = 0) -> Counts:
    n = call.y.numel
    return Counts(mults=mults * n, adds=adds * n, other_ops=other_ops * n)


@counter(*ADD, op="add")
def count_add(call: OpCall) -> Counts:
    """add / sub / rsub ``(a, b, *, alpha=1)``: 1 add per output element, and
    1 mult more when ``alpha != 1`` (aten's Scalar overloads take alpha at 2)."""
    return _per_element(call, mults=int(call.arg(2, "alpha", 1) != 1), adds=1)


@counter(*MUL, op="mul")
def count_mul(call: OpCall) -> Counts:
    """mul ``(a, b)``: 1 mult per output element (RULES' elementwise scale)."""
    return _per_element(call, mults=1)


@counter(*DIV, op="div")
def count_div(call: OpCall) -> Counts:
    """div ``(a, b, *, rounding_mode=None)``: 1 mult per output element (a
    division is booked as a multiply), + 1 other op when rounding."""
    rounding = call.kwargs.get("rounding_mode") is not None
    return _per_element(call, mults=1, other_ops=int(rounding))


@counter(*FLOOR_DIV, op="floor_divide")
def count_floor_divide(call: OpCall) -> Counts:
    """floor_divide / ``//``: 1 mult (the division) + 1 other op (the floor)."""
    return _per_element(call, mults=1, other_ops=1)


@counter(*REMAINDER, op="remainder")
def count_remainder(call: OpCall) -> Counts:
    """remainder / fmod / ``%``: ``a - round(a / b) * b``: 2 mults (the division
    and the product), 1 add and 1 other op (the rounding)."""
    return _per_element(call, mults=2, adds=1, other_ops=1)


def _pow_operands(call: OpCall) -> tuple[Any, Any]:
    """(base, exponent); ``Tensor.__rpow__(x, base)`` computes ``base ** x``."""
    if isinstance(call.target, Method) and call.target.name == "__rpow__":
        return call.args[1], call.args[0]
    base = call.args[0] if call.args else call.kwargs.get("input", call.kwargs.get("self"))
    return base, call.arg(1, "exponent")


def pow_cost(exponent: Any) -> tuple[int, int]:
    """(mults, other ops) of x ** exponent, per element."""
    if isinstance(exponent, float) and exponent.is_integer() and abs(exponent) < 2**31:
        exponent = int(exponent)
    if isinstance(exponent, bool) or not isinstance(exponent, (int, float)):
        return 0, 1
    if isinstance(exponent, float):
        return 0, 1  # sqrt, rsqrt or exp(y log x): one transcendental
    n = abs(exponent)
    mults = n.bit_length() - 1 + bin(n).count("1") - 1 if n >= 2 else 0
    return mults + (exponent < 0), 0


@counter(*POW, op="pow")
def count_pow(call: OpCall) -> Counts:
    """pow ``(base, exponent)``: square-and-multiply mults for an integer
    exponent (x ** 2 = 1 mult), 1 other op otherwise (a tensor exponent too)."""
    mults, other = pow_cost(_pow_operands(call)[1])
    return _per_element(call, mults=mults, other_ops=other)


@counter(*TRANSCENDENTAL, *BITWISE, *INVERT, *LOGICAL_NOT, *BITWISE_BINARY, *LOGICAL_BINARY, op="")
def count_one_other(call: OpCall) -> Counts:
    """exp / log / sqrt / sin / erf ... (transcendentals), neg / abs / sign /
    floor / round ... and not / and / or / xor, bitwise or logical (bitwise
    ops): 1 other op per output element."""
    return _per_element(call, other_ops=1)


@counter(*RECIPROCAL, *SQUARE, op="")
def count_one_mult(call: OpCall) -> Counts:
    """reciprocal (a division) and square (x * x): 1 mult per element."""
    return _per_element(call, mults=1)


@counter(*CLAMP, op="clamp")
def count_clamp(call: OpCall) -> Counts:
    """clamp / clip ``(x, min=None, max=None)``: 1 mult per element, booked
    like relu (a clip against bounds)."""
    return _per_element(call, mults=1)


@counter(*MINMAX, op="")
def count_minmax(call: OpCall) -> Counts:
    """minimum / maximum ``(a, b)``: 1 comparison per element, booked as an add."""
    return _per_element(call, adds=1)


@counter(*COMPARE, op="")
def count_compare(call: OpCall) -> Counts:
    """eq / ne / lt / le / gt / ge: 1 comparison per element, booked as an add
    (a subtraction and a sign test, as max pooling's comparisons)."""
    return _per_element(call, adds=1)


@counter(*ADDC, op="")
def count_addc(call: OpCall) -> Counts:
    """addcmul / addcdiv ``(input, t1, t2, *, value=1)``: 1 mult + 1 add per
    element, + 1 mult when ``value != 1``."""
    return _per_element(call, mults=1 + int(call.kwargs.get("value", 1) != 1), adds=1)


@hookimpl
def micronet_register_counters():
    return collect(sys.modules[__name__])
