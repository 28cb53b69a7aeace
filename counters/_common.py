"""Small helpers shared by the counter families (no registrations here):
shapes, target builders, argument checks, and torch's type promotion."""
from __future__ import annotations

import functools
import math
from typing import Any, Iterable, Sequence

import torch

from micronet.records import TensorInfo
from micronet.registry import Method, OpCall

aten = torch.ops.aten


# ---------------------------------------------------------------------- shapes


def ntuple(value, n: int) -> tuple[int, ...]:
    """``3`` -> ``(3, 3)``; a sequence is returned as a tuple unchanged."""
    if isinstance(value, (list, tuple)):
        if len(value) == 1 and n > 1:
            return tuple(value) * n
        return tuple(value)
    return (value,) * n


def prod(values: Iterable[int]) -> int:
    """Product of integers (1 for an empty sequence)."""
    return math.prod(values)


def broadcast_shapes(*shapes: Sequence[int]) -> tuple[int, ...]:
    """NumPy broadcasting of shapes (raises on mismatch, like torch).

    ``torch.broadcast_shapes`` with its messages, for int shapes: torch's
    imports ``torch.fx.experimental.symbolic_shapes`` and sympy on its first
    call, half a second of every ``micronet audit``."""
    sizes = [tuple(torch.Size(s)) for s in shapes]  # TypeError on a non-int size, as torch
    if not sizes:
        return ()
    common = [1] * max(len(size) for size in sizes)
    for arg_idx, shape in enumerate(sizes):
        for idx in range(-1, -1 - len(shape), -1):
            if shape[idx] == common[idx]:
                continue
            if common[idx] == 1:
                if shape[idx] < 0:
                    raise ValueError("Attempting to broadcast a dimension with negative length!")
                common[idx] = shape[idx]
            if shape[idx] != 1 and common[idx] != shape[idx]:
                raise RuntimeError(f"Attempting to broadcast a dimension of length {shape[idx]} at {idx}! "
                                   f"Mismatching argument at index {arg_idx} had {torch.Size(shape)}; but "
                                   f"expected shape should be broadcastable to {common}")
    return tuple(common)


def broadcasts_to(shape: Sequence[int], target: Sequence[int]) -> bool:
    """Whether ``shape`` broadcasts to exactly ``target`` (as an in-place-like add needs)."""
    try:
        return broadcast_shapes(shape, target) == tuple(target)
    except RuntimeError:
        return False


def like(x: TensorInfo, shape: Sequence[int] | None = None, dtype: torch.dtype | None = None) -> TensorInfo:
    """A TensorInfo with ``x``'s dtype (or ``dtype``) and ``shape`` (or x's)."""
    return TensorInfo(tuple(x.shape if shape is None else shape), dtype or x.dtype)


def pooled_size(size: int, kernel: int, stride: int, padding: int, dilation: int = 1,
                ceil_mode: bool = False) -> int:
    """Output length of a convolution or pooling window along one dimension."""
    span = dilation * (kernel - 1) + 1
    numerator = size + 2 * padding - span
    if ceil_mode:
        out = -(-numerator // stride) + 1
        # the last window must start inside the input or left padding (torch's rule)
        if (out - 1) * stride >= size + padding:
            out -= 1
        return out
    return numerator // stride + 1


# --------------------------------------------------------------------- targets


def distinct(*targets: Any) -> tuple:
    """Targets in order without repeats or ``None`` (``F.prelu is torch.prelu`` in recent torch)."""
    return tuple(dict.fromkeys(t for t in targets if t is not None))


def methods(*names: str) -> tuple:
    """``Method(name)`` for each name (``x.name(...)``)."""
    return tuple(Method(name) for name in names)


def aten_ops(*names: str) -> tuple:
    """The aten packets (``"view"``) or overloads (``"split.Tensor"``) named,
    without repeats. A name torch does not have is refused, naming it: a
    typo would otherwise register nothing, silently."""
    return distinct(*(_aten_op(name) for name in names))


def _aten_op(name: str) -> Any:
    packet, _, overload = name.partition(".")
    try:
        op = getattr(aten, packet)
        return getattr(op, overload) if overload else op
    except AttributeError:
        raise ValueError(f"aten_ops: torch {torch.__version__} has no aten operator {name!r}") from None


def packet(target: Any) -> Any:
    """An aten overload's packet (``aten.view.default`` -> ``aten.view``); other targets unchanged."""
    return target.overloadpacket if isinstance(target, torch._ops.OpOverload) else target


def bare_name(target: Any) -> str:
    """``view`` for ``Method("view")``, ``aten.view.default`` and ``torch.view``; ``""`` if nameless."""
    target = packet(target)
    return target.name if isinstance(target, Method) else getattr(target, "__name__", "")


# ------------------------------------------------------------------- arguments


def unsupported(why: str) -> NotImplementedError:
    """The error a shape rule raises to leave a call to meta execution."""
    return NotImplementedError(f"{why}: left to meta execution")


def is_int(value: Any) -> bool:
    """Whether ``value`` is a Python int and not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def ints(values: Any, what: str) -> tuple[int, ...]:
    """``values`` as a tuple of ints, or :func:`unsupported` naming ``what``."""
    if not isinstance(values, (list, tuple)) or not all(is_int(v) for v in values):
        raise unsupported(f"{what} {values!r}")
    return tuple(values)


def wrap_dim(dim: Any, ndim: int) -> int:
    """torch's dim wrapping (a 0-dim tensor accepts dims -1 and 0)."""
    rank = max(ndim, 1)
    if not is_int(dim) or not -rank <= dim < rank:
        raise unsupported(f"dim {dim!r} for {ndim} dims")
    return dim % rank


def tensor_arg(value: Any, what: str) -> TensorInfo:
    """``value`` if it describes a tensor, else NotImplementedError naming ``what``."""
    if not isinstance(value, TensorInfo):
        raise NotImplementedError(f"{what} must be a tensor, got {value!r}")
    return value


def first_tensor(call: OpCall) -> TensorInfo:
    """A call's first argument (its input), which must describe a tensor."""
    x = call.args[0] if call.args else call.x
    if not isinstance(x, TensorInfo):
        raise unsupported("first argument is not a tensor")
    return x


def lenient(rule):
    """Let a shape rule's argument-parsing failures (an argument form it does
    not expect: TypeError, IndexError, ...) fall back to meta execution, as
    the contract's NotImplementedError does, instead of failing the walk."""

    @functools.wraps(rule)
    def wrapper(call: OpCall):
        try:
            return rule(call)
        except (TypeError, IndexError, KeyError, AttributeError, OverflowError, ZeroDivisionError) as error:
            raise NotImplementedError(f"{rule.__name__}: {type(error).__name__}: {error}") from error

    return wrapper


# ----------------------------------------------------------------- dtype rules


def _category(dtype: torch.dtype) -> int:
    if dtype == torch.bool:
        return 0
    if dtype.is_complex:
        return 3
    if dtype.is_floating_point:
        return 2
    return 1


def _promote_pair(a: torch.dtype | None, b: torch.dtype | None) -> torch.dtype | None:
    if a is None or a is b:  # most operands share a dtype: no call into torch
        return b
    if b is None:
        return a
    return torch.promote_types(a, b)


_TO_COMPLEX = {torch.float16: torch.complex32, torch.float32: torch.complex64,
               torch.float64: torch.complex128}


def _combine(higher: torch.dtype | None, lower: torch.dtype | None) -> torch.dtype | None:
    """c10's ``combine_categories``: a higher-priority group wins unless the
    lower one is of a higher category."""
    if higher is None:
        return lower
    if lower is None or _category(higher) >= _category(lower) and higher != torch.bool:
        return higher
    if _category(lower) == 3 and _category(higher) == 2:
        if higher not in _TO_COMPLEX:
            raise NotImplementedError(f"complex promotion of {higher}")
        return _TO_COMPLEX[higher]
    if _category(lower) == 3:
        return lower
    return torch.promote_types(higher, lower)


def _scalar_dtype(value: Any) -> torch.dtype | None:
    if isinstance(value, bool):
        return torch.bool
    if isinstance(value, int):
        return torch.int64
    if isinstance(value, float):
        return torch.get_default_dtype()
    if isinstance(value, complex):
        return _TO_COMPLEX[torch.get_default_dtype()]
    return None


def promote(*operands: Any) -> torch.dtype:
    """Result dtype of an elementwise op, torch's ``result_type`` exactly.

    Dimensioned tensors take priority over 0-dim tensors, which take priority
    over Python scalars; a lower-priority group only matters when it is of a
    higher category (bool < int < float < complex). A float scalar stands for
    the default dtype."""
    dim = zero = scalar = None
    for value in operands:
        if isinstance(value, TensorInfo):
            if value.ndim:
                dim = _promote_pair(dim, value.dtype)
            else:
                zero = _promote_pair(zero, value.dtype)
        else:
            scalar = _promote_pair(scalar, _scalar_dtype(value))
    result = _combine(dim, _combine(zero, scalar))
    if result is None:
        raise NotImplementedError("no tensor or number operand")
    return result
