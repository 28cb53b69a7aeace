"""Mask-building ops of ``transformers`` models that torch.export keeps as aten calls.

Hugging Face models build their attention masks with ``&`` / ``|`` on bool
tensors (``aten.__and__``, the dunder packets, distinct from
``aten.bitwise_and``), find packed sequences with ``torch.diff``, pool with
``argmax`` and select with scalar ``where``:

==========================  ======================  ====================================
op                          cost                    why
==========================  ======================  ====================================
aten.__and__ / __or__ /     1 other per output      RULES: bitwise ops count 1
__xor__ (and ``__i*__``)    element
aten.diff ``(x, n, dim)``   (L - k) subtractions    one add per difference; ``n``
                            per line for k = 1..n   passes over a line of L elements
                                                    (after ``prepend`` / ``append``)
aten.argmax / argmin        (k - 1) adds per        a comparison is booked as an add, as
                            output, k the reduced   torch.max's (CLIP's text pooling
                            length                  picks the end token with argmax)
aten.where with a scalar    free                    a selection by a mask, free as
(ScalarOther / ScalarSelf                           ``where.self`` in
/ Scalar overloads)                                 ``micronet.counters.indexing`` (T5's
                                                    position buckets)
==========================  ======================  ====================================

Shapes come from meta execution (no shape rules: these run once per model).
"""
from __future__ import annotations

import sys

import torch

from micronet.manager import hookimpl
from micronet.records import Counts, TensorInfo
from micronet.registry import OpCall, collect, counter, free

aten = torch.ops.aten

#: the aten dunder packets of & | ^ (export writes ``mask_a & mask_b`` as these)
DUNDER_BITWISE = tuple(getattr(aten, f"__{prefix}{name}__") for name in ("and", "or", "xor")
                       for prefix in ("", "i") if hasattr(aten, f"__{prefix}{name}__"))


@counter(*DUNDER_BITWISE, op="")
def count_dunder_bitwise(call: OpCall) -> Counts:
    """``a & b`` / ``|`` / ``^`` as aten dunders: 1 other op per output element."""
    return Counts(other_ops=call.y.numel)


@counter(aten.diff, op="diff")
def count_diff(call: OpCall) -> Counts:
    """``diff(x, n=1, dim=-1, prepend, append)``: adds, (L - k) per line for
    pass k = 1..n, L the line length with ``prepend`` / ``append``."""
    y = call.y
    n = int(call.arg(1, "n", 1))
    if not isinstance(y, TensorInfo) or not y.ndim or n <= 0:
        return Counts()
    dim = int(call.arg(2, "dim", -1)) % y.ndim
    out_len = y.shape[dim]
    lines = y.numel // out_len if out_len else 0
    length = out_len + n
    return Counts(adds=lines * sum(length - k for k in range(1, n + 1)))


@counter(aten.argmax, aten.argmin, op="argmax")
def count_argmax(call: OpCall) -> Counts:
    """``argmax(x, dim=None, keepdim=False)``: (k - 1) comparisons (adds) per
    output, k the length along ``dim`` (every element when ``dim`` is None)."""
    x = call.x
    dim = call.arg(1, "dim", None)
    if dim is None or not x.ndim:
        return Counts(adds=max(x.numel - 1, 0))
    k = x.shape[int(dim) % x.ndim]
    return Counts(adds=(x.numel // k) * (k - 1) if k else 0)


#: where with a scalar operand: a selection by a mask, free like ``where.self``
scalar_where = free(aten.where.ScalarOther, aten.where.ScalarSelf, aten.where.Scalar, op="where")


@hookimpl
def micronet_register_counters():
    return collect(sys.modules[__name__])
