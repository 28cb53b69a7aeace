"""Products of two activations: matmul, mm, bmm, mv, dot, baddbmm, addmm, einsum, _scaled_mm.

Forms: ``torch.matmul`` / ``a @ b`` (``operator.matmul``) / ``x.matmul(y)``
/ ``aten.matmul``; ``torch.mm``, ``torch.bmm``, ``torch.mv``, ``torch.dot``,
``torch.baddbmm``, ``torch.addmm`` with their method and aten forms (except
``aten.addmm``, which is a linear layer's bias-and-weight product and lives
in :mod:`micronet.counters.linear`); ``torch.einsum`` (equation or sublist
form) and ``aten.einsum``.

Convention: each output element is one dot product over the contracted
dimension (``dot_length`` terms: ``L`` mults and ``L - 1`` adds), as for a
linear layer, but nothing here is a stored weight: ``sparse_weight=False``,
the dot products stay dense. Broadcast batch dimensions are counted in full.
"""
from __future__ import annotations

import operator
import sys
from dataclasses import dataclass

import torch

from micronet.counters._common import broadcast_shapes, broadcasts_to, prod, tensor_arg
from micronet.manager import hookimpl
from micronet.records import Counts, TensorInfo
from micronet.registry import Method, OpCall, collect, counter, shape_rule

aten = torch.ops.aten

MATMUL = (torch.matmul, operator.matmul, Method("matmul"), aten.matmul)
MM = (torch.mm, Method("mm"), aten.mm)
BMM = (torch.bmm, Method("bmm"), aten.bmm)
MV = (torch.mv, Method("mv"), aten.mv)
DOT = (torch.dot, Method("dot"), aten.dot)
BADDBMM = (torch.baddbmm, Method("baddbmm"), aten.baddbmm)
ADDMM = (torch.addmm, Method("addmm"))
EINSUM = (torch.einsum, aten.einsum)

#: operand ranks each family accepts (None: any, with matmul's broadcasting)
_RANKS = {"mm": (2, 2), "bmm": (3, 3), "mv": (2, 1), "dot": (1, 1), "baddbmm": (3, 3), "addmm": (2, 2)}


def _default_overload(call: OpCall) -> None:
    """Shape rules handle aten's default overloads only (``.dtype`` ones change the dtype)."""
    if isinstance(call.target, torch._ops.OpOverload) and call.target._overloadname != "default":
        raise NotImplementedError(f"{call.target} is left to meta execution")


_FACTOR_NAMES = {0: (("input", "self"), ("other", "mat2", "vec", "tensor")),
                 1: (("mat1", "batch1"), ("mat2", "batch2"))}


def _pair(call: OpCall, first: int = 0) -> tuple[TensorInfo, TensorInfo]:
    """The two factors: positions ``first`` and ``first + 1``, under any of torch's names."""
    picked = []
    for index, keys in enumerate(_FACTOR_NAMES[first], start=first):
        value = next((call.kwargs[k] for k in keys if k in call.kwargs), None)
        picked.append(tensor_arg(value if value is not None else call.arg(index, keys[0]), keys[0]))
    return picked[0], picked[1]


def matmul_output(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[tuple[int, ...], int]:
    """``torch.matmul``'s output shape and contracted length.

    1-D x 1-D is a dot product (``[]``); a 1-D left operand gets a 1
    prepended and removed again, a 1-D right operand a 1 appended and
    removed; the batch dims (all but the last two) broadcast.
    """
    if not a or not b:
        raise NotImplementedError("matmul of a 0-d tensor")
    a2 = (1,) + tuple(a) if len(a) == 1 else tuple(a)
    b2 = tuple(b) + (1,) if len(b) == 1 else tuple(b)
    k = a2[-1]
    if b2[-2] != k:
        raise NotImplementedError(f"matmul of {list(a)} and {list(b)}: inner sizes differ")
    try:
        batch = broadcast_shapes(a2[:-2], b2[:-2])
    except RuntimeError as error:
        raise NotImplementedError(str(error)) from error
    rows = () if len(a) == 1 else (a2[-2],)
    cols = () if len(b) == 1 else (b2[-1],)
    return batch + rows + cols, k


def _product_output(a: TensorInfo, b: TensorInfo, family: str) -> tuple[int, ...]:
    ranks = _RANKS.get(family)
    if ranks is not None and (a.ndim, b.ndim) != ranks:
        raise NotImplementedError(f"{family} needs ranks {ranks}, got {(a.ndim, b.ndim)}")
    if family in ("bmm", "baddbmm") and a.shape[0] != b.shape[0]:
        raise NotImplementedError(f"{family} does not broadcast batch sizes")
    if a.dtype != b.dtype:
        raise NotImplementedError("operands of different dtypes")  # torch raises
    return matmul_output(a.shape, b.shape)[0]


def _added(call: OpCall, out: tuple[int, ...]) -> TensorInfo:
    """``beta * self + alpha * (a @ b)``: shape is that of the product, ``self`` broadcasts to it."""
    base = tensor_arg(call.arg(0, "input") if "self" not in call.kwargs else call.kwargs["self"], "input")
    if not broadcasts_to(base.shape, out):
        raise NotImplementedError(f"{list(base.shape)} does not broadcast to {list(out)}")
    return base


def product_counts(a: TensorInfo, out: TensorInfo) -> Counts:
    """One dense dot product of ``a.shape[-1]`` terms per output element."""
    return Counts(dot_products=out.numel, dot_length=a.shape[-1])


def _scaled_add(call: OpCall, e: int) -> Counts:
    """Extra ops of ``beta * self + alpha * product`` over ``e`` outputs."""
    beta, alpha = call.kwargs.get("beta", 1), call.kwargs.get("alpha", 1)
    mults = (e if alpha != 1 else 0) + (e if beta not in (0, 1) else 0)
    return Counts(mults=mults, adds=e if beta != 0 else 0)


@counter(*MATMUL, *MM, *BMM, *MV, *DOT)
def matmul(call: OpCall) -> Counts:
    """``a @ b`` and its fixed-rank siblings: dense dot products (MACs), no weight.

    Args ``(input, other)`` (``mat2`` / ``vec`` / ``tensor`` for mm, bmm, mv,
    dot; ``self`` in aten). Leaves out nothing: transposes and broadcasting
    copies are free.

    # a: [*batch_a, n, k]  b: [*batch_b, k, p]  y: [*broadcast(batch_a, batch_b), n, p]
    # dot_products = prod(y.shape), dot_length = k  (1-D operands: n or p dropped; dot: 1 output)
    """
    a, _ = _pair(call)
    return product_counts(a, call.y)


@counter(*BADDBMM, *ADDMM)
def add_matmul(call: OpCall) -> Counts:
    """``beta * input + alpha * (a @ b)`` (baddbmm, addmm): dot products plus the scaled add.

    Args ``(input, batch1, batch2, *, beta=1, alpha=1)`` (``mat1, mat2`` for
    addmm). ``beta == 0`` ignores ``input``; a factor of 1 costs nothing.

    # batch1: [B, n, k]  batch2: [B, k, p]  input: broadcast to [B, n, p]; E = B*n*p
    # dot_products = E, dot_length = k; adds = E if beta != 0
    # mults = E if alpha != 1, + E if beta not in (0, 1)
    """
    a, _ = _pair(call, first=1)
    return product_counts(a, call.y) + _scaled_add(call, call.y.numel)


def _product_shape(family: str):
    def rule(call: OpCall) -> TensorInfo:
        _default_overload(call)
        a, b = _pair(call)
        return TensorInfo(_product_output(a, b, family), a.dtype)

    rule.__name__ = f"{family}_shape"
    rule.__doc__ = f"Output of ``{family}(a, b)``: see :func:`matmul_output`."
    return rule


matmul_shape = shape_rule(*MATMUL)(_product_shape("matmul"))
mm_shape = shape_rule(*MM)(_product_shape("mm"))
bmm_shape = shape_rule(*BMM)(_product_shape("bmm"))
mv_shape = shape_rule(*MV)(_product_shape("mv"))
dot_shape = shape_rule(*DOT)(_product_shape("dot"))


@shape_rule(*BADDBMM)
def baddbmm_shape(call: OpCall) -> TensorInfo:
    """``baddbmm(input, batch1, batch2)``: ``[B, n, k] @ [B, k, p] -> [B, n, p]``."""
    _default_overload(call)
    a, b = _pair(call, first=1)
    out = _product_output(a, b, "baddbmm")
    _added(call, out)
    return TensorInfo(out, a.dtype)


@shape_rule(*ADDMM)
def addmm_shape(call: OpCall) -> TensorInfo:
    """``addmm(input, mat1, mat2)``: ``[n, k] @ [k, p] -> [n, p]``."""
    a, b = _pair(call, first=1)
    out = _product_output(a, b, "addmm")
    _added(call, out)
    return TensorInfo(out, a.dtype)


# ---------------------------------------------------------------- einsum


@dataclass(frozen=True, slots=True)
class EinsumPlan:
    """A parsed einsum: each operand's labels, every label's size, the output's labels.

    Letters are labels; the dims an ellipsis covers become labels
    ``("...", j)``, ``j`` counted from the right, so they broadcast like
    numpy's ellipsis.
    """

    operands: tuple[tuple, ...]
    sizes: dict
    output: tuple
    dtype: torch.dtype

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.sizes[label] for label in self.output)


def _letter(index) -> str:
    if index is Ellipsis:
        return "..."
    if not isinstance(index, int) or not 0 <= index < 52:
        raise NotImplementedError(f"einsum sublist index {index!r}")
    return chr(ord("A") + index) if index < 26 else chr(ord("a") + index - 26)


def einsum_operands(call: OpCall) -> tuple[str, list]:
    """``(equation, operands)`` from ``einsum(eq, *ops)``, ``einsum(eq, [ops])`` or the
    sublist form ``einsum(op0, sub0, op1, sub1, ..., [out_sub])``."""
    args = list(call.args)
    equation = call.kwargs.get("equation")
    if equation is None and args and isinstance(args[0], str):
        equation = args.pop(0)
    if equation is not None:
        operands = args or list(call.kwargs.get("tensors", ()))
        if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
            operands = list(operands[0])
        return equation, operands
    pairs, rest = args[: len(args) // 2 * 2], args[len(args) // 2 * 2:]
    terms = ["".join(_letter(i) for i in sub) for sub in pairs[1::2]]
    output = "->" + "".join(_letter(i) for i in rest[0]) if rest else ""
    return ",".join(terms) + output, list(pairs[0::2])


def _term_labels(term: str, shape: tuple[int, ...]) -> list:
    before, dots, after = term.partition("...")
    if not all(c.isalpha() and c.isascii() for c in before + after):
        raise NotImplementedError(f"einsum term {term!r}")
    n_ell = len(shape) - len(before) - len(after)
    if n_ell < 0 or (n_ell and not dots):
        raise NotImplementedError(f"einsum term {term!r} for a tensor of rank {len(shape)}")
    return list(before) + [("...", n_ell - i) for i in range(n_ell)] + list(after)


def _output_labels(rhs: str | None, lhs_terms: list[str], ell: list) -> list:
    if rhs is None:  # implicit: ellipsis dims, then labels seen once, in ASCII order
        letters = "".join(lhs_terms).replace("...", "")
        return ell + sorted(c for c in set(letters) if letters.count(c) == 1)
    before, dots, after = rhs.partition("...")
    letters = before + after
    if len(set(letters)) != len(letters) or not all(c in "".join(lhs_terms) for c in letters):
        raise NotImplementedError(f"einsum output {rhs!r}")
    return list(before) + (ell if dots else []) + list(after)


def parse_einsum(equation: str, operands: list) -> EinsumPlan:
    """Parse an einsum as torch does; NotImplementedError where torch would raise."""
    lhs, arrow, rhs = equation.replace(" ", "").partition("->")
    terms = lhs.split(",")
    tensors = [tensor_arg(op, "einsum operand") for op in operands]
    if len(terms) != len(tensors) or len({t.dtype for t in tensors}) != 1:
        raise NotImplementedError(f"einsum {equation!r} with {len(tensors)} operands")
    sizes: dict = {}
    labelled = []
    for term, tensor in zip(terms, tensors):
        labels = _term_labels(term, tensor.shape)
        own: dict = {}
        for label, size in zip(labels, tensor.shape):
            if own.setdefault(label, size) != size:
                raise NotImplementedError(f"einsum label {label!r} repeated with sizes that differ")
            known = sizes.get(label, 1)
            if size != known and 1 not in (size, known):
                raise NotImplementedError(f"einsum label {label!r}: sizes {known} and {size}")
            sizes[label] = size if known == 1 else known
        labelled.append(tuple(labels))
    n_ell = max((len(t.shape) - len(term.replace("...", "")) for term, t in zip(terms, tensors)
                 if "..." in term), default=0)
    ell = [("...", n_ell - i) for i in range(n_ell)]
    sizes.update({label: sizes.get(label, 1) for label in ell})
    output = _output_labels(rhs if arrow else None, terms, ell)
    return EinsumPlan(tuple(labelled), sizes, tuple(output), tensors[0].dtype)


def einsum_counts(plan: EinsumPlan) -> Counts:
    """Counts of an einsum, contracting left to right as torch does without opt_einsum.

    Each pairwise step keeps the labels a later operand or the output needs
    and sums out the rest: ``O`` kept-label outputs, each a dot product over
    ``L`` = the product of the summed-out label sizes (a label only one
    operand has is summed inside the same dot product).
    """
    size = lambda labels: prod(plan.sizes[label] for label in labels)  # noqa: E731
    out = set(plan.output)
    if len(plan.operands) == 1:  # a sum over the dropped labels (transpose, diagonal: free)
        summed = size(set(plan.operands[0]) - out)
        return Counts(adds=size(out) * max(summed - 1, 0))
    steps = []
    current = set(plan.operands[0])
    for i, labels in enumerate(plan.operands[1:], start=1):
        later = out.union(*plan.operands[i + 1:])
        both = current | set(labels)
        current = both & later
        steps.append((size(current), size(both - current), bool(both - current)))
    if len(steps) == 1:
        outputs, length, contracted = steps[0]
        if contracted:
            return Counts(dot_products=outputs, dot_length=length)
        return Counts(mults=outputs)  # outer or elementwise product
    return Counts(mults=sum(o * n for o, n, _ in steps),
                  adds=sum(o * max(n - 1, 0) for o, n, _ in steps),
                  extra_macs=sum(o * n for o, n, contracted in steps if contracted))


@counter(*EINSUM)
def einsum(call: OpCall) -> Counts:
    """``torch.einsum`` / ``aten.einsum``: dense products and sums, from the equation.

    Args ``(equation, *operands)``, ``(equation, [operands])`` or the sublist
    form. Two operands: ``dot_products`` = output elements, ``dot_length`` =
    product of the summed-out label sizes; with nothing summed, one mult per
    output element (= product of all label sizes). One operand: ``O * (L - 1)``
    adds. Three or more: pairwise left to right, every step's mults and adds
    in ``mults`` / ``adds`` (their lengths differ). Permutations are free.

    # 'bij,bjk->bik': a: [B, I, J]  b: [B, J, K] -> dot_products = B*I*K, dot_length = J
    # 'i,j->ij': mults = I*J;  'ij->i': adds = I*(J-1)
    """
    return einsum_counts(parse_einsum(*einsum_operands(call)))


@shape_rule(*EINSUM)
def einsum_shape(call: OpCall) -> TensorInfo:
    """Output of an einsum: output labels' sizes, ellipsis dims broadcast."""
    plan = parse_einsum(*einsum_operands(call))
    return TensorInfo(plan.shape, plan.dtype)


# ------------------------------------------------------------ scaled (fp8) products

SCALED_MM = (torch._scaled_mm, aten._scaled_mm)


@counter(*SCALED_MM)
def scaled_mm(call: OpCall) -> Counts:
    """``torch._scaled_mm`` (fp8 GEMM): ``(a @ b) * scale_a * scale_b (+ bias)``.

    Args ``(self, mat2, scale_a, scale_b, bias=None, scale_result=None,
    out_dtype=None, use_fast_accum=False)``. The product is dense dot
    products, as :func:`matmul`; its operands' dtypes set the bits (float8:
    8, see :func:`micronet.precision.dtype_bits`). Dequantisation: two
    per-tensor scales are multiplied once (1 mult) and applied once per
    output; row- or column-wise scales cost one mult per output each. A
    bias adds one add per output; ``scale_result`` one more mult per output.

    # a: [n, k]  b: [k, p]  y: [n, p]; E = n*p
    # dot_products = E, dot_length = k
    # mults = E + 1 (both scales scalars) or 2E;  + E with scale_result;  adds = E with bias
    """
    a = tensor_arg(call.arg(0, "self"), "self")
    e = call.y.numel
    scales = [call.arg(i, name, None) for i, name in ((2, "scale_a"), (3, "scale_b"))]
    scalar = all(isinstance(s, TensorInfo) and s.numel == 1 for s in scales)
    mults = (e + 1 if scalar else 2 * e) + (e if isinstance(call.arg(5, "scale_result", None), TensorInfo) else 0)
    adds = e if isinstance(call.arg(4, "bias", None), TensorInfo) else 0
    return product_counts(a, call.y) + Counts(mults=mults, adds=adds)


@hookimpl
def micronet_register_counters():
    return collect(sys.modules[__name__])
