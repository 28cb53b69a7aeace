"""Attention: ``F.scaled_dot_product_attention``, its aten kernels,
``flex_attention`` and ``nn.MultiheadAttention``.

Conventions (not in the rules; chosen here, one line each):

- scores ``Q K^T``: one dot product of ``E`` (head dim) terms per score;
- scaling by ``1/sqrt(E)`` (or the given ``scale``): one mult per score,
  whichever operand the kernel really scales;
- mask (``attn_mask`` or ``is_causal``): one add per score (the math kernel
  adds a ``-inf``/float bias); a causal mask does not shrink the count, the
  full score matrix is counted;
- softmax over the ``S`` keys of each row, as in the activation convention:
  ``S`` exps (``other_ops``), ``S - 1`` adds and ``S`` mults (the division);
  no max-subtraction;
- ``attention @ V``: one dot product of ``S`` terms per output element;
- dropout (``dropout_p``) is a training-time op and is not counted.

Counts holds a single ``dot_length``, and the two activation products have
different lengths (``E`` and ``S``), so both are booked in ``mults`` /
``adds`` (dense, ``sparse_weight=False``), the ``dense_mults`` /
``dense_adds`` totals exact; their ``L*S*E + L*S*Ev`` multiply-accumulates
per head go to ``extra_macs``, so ``macs`` matches thop, fvcore and
torchvision's published GFLOPS.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

import torch
from torch import nn
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from micronet.counters._common import broadcast_shapes, broadcasts_to, prod, tensor_arg
from micronet.manager import hookimpl
from micronet.records import Counts, TensorInfo
from micronet.registry import Lazy, OpCall, collect, counter, shape_rule
from micronet.values import to_meta

aten = torch.ops.aten

#: aten attention kernels: (mask position or None if keyword-only, mask name, is_causal position)
ATEN_SDPA = {
    aten.scaled_dot_product_attention: (3, "attn_mask", 5),
    aten._scaled_dot_product_attention_math: (3, "attn_mask", 5),
    aten._scaled_dot_product_flash_attention_for_cpu: (None, "attn_mask", 4),
    aten._scaled_dot_product_flash_attention: (None, "", 4),
    aten._scaled_dot_product_efficient_attention: (3, "attn_bias", 6),
    aten._scaled_dot_product_cudnn_attention: (3, "attn_bias", 6),
    aten._scaled_dot_product_fused_attention_overrideable: (3, "attn_bias", 5),
}


def attention_core(heads: int, rows: int, keys: int, dim: int, dim_v: int, masks: int) -> Counts:
    """Softmax attention of ``heads`` independent (batch x head) slices.

    # q: [heads, rows, dim]  k: [heads, keys, dim]  v: [heads, keys, dim_v]; P = heads*rows*keys scores
    # QK^T: P*dim mults, P*(dim-1) adds;  scale: P mults;  masks: masks*P adds
    # softmax: P exp (other_ops), heads*rows*(keys-1) adds, P mults (division)
    # attn @ V: heads*rows*dim_v*keys mults, heads*rows*dim_v*(keys-1) adds
    """
    scores = heads * rows * keys
    outputs = heads * rows * dim_v
    mults = scores * dim + scores + scores + outputs * keys
    adds = (scores * max(dim - 1, 0) + masks * scores + heads * rows * max(keys - 1, 0)
            + outputs * max(keys - 1, 0))
    # the two products are multiply-accumulates in every other tool's count
    return Counts(mults=mults, adds=adds, other_ops=scores, extra_macs=scores * dim + outputs * keys)


def sdpa_counts(q: TensorInfo, k: TensorInfo, v: TensorInfo, out: TensorInfo, masked: bool) -> Counts:
    """``softmax(q k^T * scale + mask) v`` over broadcast batch dims (see :func:`attention_core`).

    # q: [..., L, E]  k: [..., S, E]  v: [..., S, Ev]  out: [..., L, Ev]; B = prod(out.shape[:-2])
    """
    return attention_core(prod(out.shape[:-2]), q.shape[-2], k.shape[-2], q.shape[-1],
                          v.shape[-1], int(masked))


@counter(F.scaled_dot_product_attention)
def sdpa(call: OpCall) -> Counts:
    """``F.scaled_dot_product_attention``: scores, scale, mask, softmax and ``@ V`` (dense ops).

    Args ``(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
    scale=None, enable_gqa=False)``. Leaves out dropout; GQA's key/value
    repetition is a free copy. See the module docstring for each term.

    # q: [..., L, E]  k: [..., S, E]  v: [..., S, Ev]; B = batch*heads, P = B*L*S
    # mults = P*E + P + P + B*L*Ev*S;  adds = P*(E-1) + [P if mask or causal] + B*L*(S-1) + B*L*Ev*(S-1)
    # other_ops = P (exp)
    """
    q, k, v = (tensor_arg(call.arg(i, name), name) for i, name in enumerate(("query", "key", "value")))
    masked = call.arg(3, "attn_mask", None) is not None or bool(call.arg(5, "is_causal", False))
    return sdpa_counts(q, k, v, call.y, masked)


@counter(*ATEN_SDPA)
def sdpa_aten(call: OpCall) -> Counts:
    """aten attention kernels (``aten.scaled_dot_product_attention``, the flash /
    efficient / cudnn / math / CPU-flash variants): as :func:`sdpa`, on their
    first output. Each kernel's mask (``attn_mask`` or ``attn_bias``) and
    ``is_causal`` positions come from its schema (``ATEN_SDPA``); a
    ``.quantized`` (fp8) overload's three descale tensors shift ``is_causal``
    by 3, and its operands' dtypes give the bits."""
    packet = getattr(call.target, "overloadpacket", call.target)
    mask_index, mask_name, causal_index = ATEN_SDPA[packet]
    if getattr(call.target, "_overloadname", "") == "quantized":  # q/k/v_descale come before is_causal
        causal_index += 3
    q, k, v = (tensor_arg(call.arg(i, name), name) for i, name in enumerate(("query", "key", "value")))
    mask = None
    if mask_name:
        mask = call.kwargs.get(mask_name) if mask_index is None else call.arg(mask_index, mask_name, None)
    masked = isinstance(mask, TensorInfo) or bool(call.arg(causal_index, "is_causal", False))
    return sdpa_counts(q, k, v, call.y, masked)


#: aten attention kernels in the ``[batch, seq, heads, dim]`` layout (xformers / flash-attn
#: style, what ``_scaled_dot_product_*_attention`` call after a transpose)
ATEN_BSHD = (aten._flash_attention_forward, aten._efficient_attention_forward)


@counter(*ATEN_BSHD)
def bshd_attention(call: OpCall) -> Counts:
    """``aten._flash_attention_forward`` / ``aten._efficient_attention_forward``:
    as :func:`sdpa` (see :func:`attention_core`), in their ``[B, L, H, E]`` layout.

    Args ``(query, key, value, ...)``; flash: ``cum_seq_q`` (3), ``max_k``
    (6), ``is_causal`` (8); efficient: ``bias`` (3), ``cu_seqlens_q`` (4),
    ``max_seqlen_k`` (7), ``custom_mask_type`` (9, nonzero = causal). A mask
    (causal or bias) is one add per score. Variable-length batches
    (``cum_seq_q`` given, ``q: [total_q, H, E]``) are counted as if every
    query row saw ``max_k`` keys: an upper bound, the packed lengths being data.

    # q: [B, L, H, E]  k: [B, S, Hk, E]  v: [B, S, Hk, Ev]  out: [B, L, H, Ev]
    # = attention_core(B*H, L, S, E, Ev, masked);  varlen: B = 1, L = total_q, S = max_k
    """
    q, k, v = (tensor_arg(call.arg(i, name), name) for i, name in enumerate(("query", "key", "value")))
    out = call.y
    if q.ndim not in (3, 4) or out.ndim != q.ndim:
        raise NotImplementedError("attention operands are not [B, L, H, E] or [total, H, E]")
    flash = getattr(call.target, "overloadpacket", call.target) == aten._flash_attention_forward
    varlen = call.arg(3 if flash else 4, "cum_seq_q" if flash else "cu_seqlens_q", None) is not None
    keys = k.shape[-3]
    if varlen:
        max_k = call.arg(6 if flash else 7, "max_k" if flash else "max_seqlen_k", None)
        keys = int(max_k) if isinstance(max_k, int) else keys
    if flash:
        masked = bool(call.arg(8, "is_causal", False))
    else:
        masked = isinstance(call.arg(3, "bias", None), TensorInfo) or bool(call.arg(9, "custom_mask_type", 0))
    heads = prod(out.shape[:-3]) * out.shape[-2]
    return attention_core(heads, out.shape[-3], keys, q.shape[-1], v.shape[-1], int(masked))


# ------------------------------------------------------------ flex_attention

#: the Python entry point (one node: the fx capture keeps a Lazy-registered function
#: whole) and the higher-order op torch.export records (kept whole by the export
#: walk); Lazy: importing flex_attention costs ~0.8 s
FLEX_FUNCTION = Lazy("torch.nn.attention.flex_attention", "flex_attention")
FLEX_HOP = Lazy("torch._higher_order_ops.flex_attention", "flex_attention")

#: aten ops of a score_mod / mask_mod that move or make data: free
_MOD_FREE = frozenset({
    "_to_copy", "to", "view", "_unsafe_view", "reshape", "expand", "clone", "detach", "alias", "lift_fresh",
    "lift_fresh_copy", "unsqueeze", "squeeze", "select", "slice", "index", "index_select", "gather",
    "new_ones", "new_zeros", "new_full", "new_empty", "ones_like", "zeros_like", "full_like", "empty_like",
    "scalar_tensor", "full", "ones", "zeros", "empty", "copy", "copy_", "_assert_tensor_metadata",
})
_MOD_ADDS = frozenset({"add", "sub", "rsub", "neg"})
_MOD_MULTS = frozenset({"mul", "div"})


class _OpNames(TorchDispatchMode):
    """Collects the aten packet names a callable dispatches."""

    def __init__(self):
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


def mod_ops(fn, args: tuple, what: str) -> Counts:
    """Ops of one call of a flex ``score_mod`` / ``mask_mod`` on 0-d zero
    tensors (``args``): add/sub/neg one add, mul/div one mult, any other
    computing op (exp, tanh, comparisons, where, logical) one other op;
    views, casts, indexing and constants free. Units: ops per score element.
    NotImplementedError (the layer is then uncounted) if it cannot run so."""
    mode = _OpNames()
    try:
        with torch.no_grad(), mode:
            fn(*args)
    except Exception as error:  # a mod reading data we do not have: say so, count nothing
        raise NotImplementedError(f"flex_attention {what} could not be run on scalars: {error}") from error
    names = [n for n in mode.names if n not in _MOD_FREE]
    adds = sum(n in _MOD_ADDS for n in names)
    mults = sum(n in _MOD_MULTS for n in names)
    return Counts(mults=mults, adds=adds, other_ops=len(names) - adds - mults)


def _scalars(extra) -> tuple:
    """A mod's extra buffers (``*_other_buffers``) as CPU zeros, to run it on."""
    return tuple(to_meta(b, "cpu") if isinstance(b, TensorInfo) else b for b in (extra or ()))


def flex_counts(q: TensorInfo, k: TensorInfo, v: TensorInfo, score_mod, mask_mod,
                score_extra=(), mask_extra=()) -> Counts:
    """``flex_attention``: :func:`attention_core` plus the mods, per score.

    # q: [B, Hq, L, E]  k: [B, Hkv, S, E]  v: [B, Hkv, S, Ev]; P = B*Hq*L*S scores
    # = attention_core(B*Hq, L, S, E, Ev, masks=0)
    #   + P * ops(score_mod)                              (see :func:`mod_ops`)
    #   + P * ops(mask_mod) + P adds (the -inf select)    when mask_mod computes anything
    """
    if min(q.ndim, k.ndim, v.ndim) != 4 or q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise NotImplementedError("flex_attention operands are not [B, H, L, E] that fit")
    total = attention_core(q.shape[0] * q.shape[1], q.shape[2], k.shape[2], q.shape[3], v.shape[3], 0)
    scores = q.shape[0] * q.shape[1] * q.shape[2] * k.shape[2]
    index = torch.zeros((), dtype=torch.int32)
    if callable(score_mod):
        ops = mod_ops(score_mod, (torch.zeros(()), index, index, index, index) + _scalars(score_extra), "score_mod")
        total = total + Counts(mults=ops.mults * scores, adds=ops.adds * scores, other_ops=ops.other_ops * scores)
    if callable(mask_mod):
        ops = mod_ops(mask_mod, (index, index, index, index) + _scalars(mask_extra), "mask_mod")
        if ops != Counts():
            total = total + Counts(mults=ops.mults * scores, adds=(ops.adds + 1) * scores,
                                   other_ops=ops.other_ops * scores)
    return total


@counter(FLEX_FUNCTION)
def flex_attention(call: OpCall) -> Counts:
    """``torch.nn.attention.flex_attention.flex_attention``: attention with
    user score and mask modifications (see :func:`flex_counts`).

    Args ``(query, key, value, score_mod=None, block_mask=None, scale=None,
    enable_gqa=False, return_lse=False, kernel_options=None)``. The block
    mask's ``mask_mod`` is priced on every score: the full matrix is counted
    (as for a causal SDPA), though a fused kernel skips fully masked blocks;
    the blocks' bookkeeping is free. The returned log-sum-exp is part of the
    softmax.
    """
    q, k, v = (tensor_arg(call.arg(i, name), name) for i, name in enumerate(("query", "key", "value")))
    block_mask = call.arg(4, "block_mask", None)
    return flex_counts(q, k, v, call.arg(3, "score_mod", None), getattr(block_mask, "mask_mod", None))


@counter(FLEX_HOP)
def flex_attention_hop(call: OpCall) -> Counts:
    """``torch.ops.higher_order.flex_attention`` (what torch.export records):
    as :func:`flex_attention`. Args ``(query, key, value, score_mod,
    block_mask, scale, kernel_options, score_mod_other_buffers,
    mask_mod_other_buffers)``; ``block_mask`` is a tuple ending with the
    mask_mod graph. The export walk keeps the op whole and hands over the
    score_mod / mask_mod graphs themselves (its ``get_attr`` arguments); the
    ops that build ``block_mask`` from the mask_mod are free there, the
    mask_mod being priced here on every score. A mod handed over as None
    (not its graph) is not counted: the count is then a lower bound."""
    q, k, v = (tensor_arg(call.arg(i, name), name) for i, name in enumerate(("query", "key", "value")))
    block_mask = call.arg(4, "block_mask", ())
    mask_mod = block_mask[-1] if isinstance(block_mask, (tuple, list)) and block_mask else None
    return flex_counts(q, k, v, call.arg(3, "score_mod", None), mask_mod,
                       call.arg(7, "score_mod_other_buffers", ()), call.arg(8, "mask_mod_other_buffers", ()))


def sdpa_output(q, k, v, mask=None, enable_gqa: bool = False) -> TensorInfo:
    """``[..., L, E], [..., S, E], [..., S, Ev] -> [..., L, Ev]``, batch dims broadcast.

    With ``enable_gqa`` the query may have a multiple of the key's heads
    (dim -3); the output keeps the query's heads.
    """
    q, k, v = tensor_arg(q, "query"), tensor_arg(k, "key"), tensor_arg(v, "value")
    if (min(q.ndim, k.ndim, v.ndim) < 2 or q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]
            or len({q.dtype, k.dtype, v.dtype}) != 1):
        raise NotImplementedError("attention operands do not fit")
    qb, kb, vb = q.shape[:-2], k.shape[:-2], v.shape[:-2]
    heads = ()
    if enable_gqa and q.ndim >= 3 and k.ndim >= 3 and v.ndim >= 3 and q.shape[-3] != k.shape[-3]:
        if k.shape[-3] != v.shape[-3] or q.shape[-3] % k.shape[-3]:
            raise NotImplementedError("grouped-query heads do not divide")
        qb, kb, vb, heads = qb[:-1], kb[:-1], vb[:-1], (q.shape[-3],)
    try:
        batch = broadcast_shapes(qb, kb, vb) + heads
    except RuntimeError as error:
        raise NotImplementedError(str(error)) from error
    scores = batch + (q.shape[-2], k.shape[-2])
    if isinstance(mask, TensorInfo) and not broadcasts_to(mask.shape, scores):
        raise NotImplementedError("attn_mask does not broadcast to the scores")
    return TensorInfo(batch + (q.shape[-2], v.shape[-1]), q.dtype)


@shape_rule(F.scaled_dot_product_attention, aten.scaled_dot_product_attention)
def sdpa_shape(call: OpCall) -> TensorInfo:
    """Output of ``scaled_dot_product_attention``: see :func:`sdpa_output`."""
    if call.arg(3, "attn_mask", None) is not None and call.arg(5, "is_causal", False):
        raise NotImplementedError("attn_mask with is_causal")  # torch raises
    return sdpa_output(call.arg(0, "query"), call.arg(1, "key"), call.arg(2, "value"),
                       call.arg(3, "attn_mask", None), bool(call.kwargs.get(
                           "enable_gqa", call.args[7] if len(call.args) > 7 else False)))


# ------------------------------------------------------------ nn.MultiheadAttention


@dataclass(frozen=True, slots=True)
class MHACall:
    """One ``nn.MultiheadAttention`` call: batch ``n``, ``rows`` queries, ``keys`` keys."""

    n: int
    rows: int
    keys: int
    batched: bool
    query: TensorInfo


def mha_call(call: OpCall) -> MHACall:
    """Read ``(query, key, value)`` in the module's layout (``batch_first`` or not, or unbatched)."""
    m = call.module
    query, key, value = (tensor_arg(call.arg(i, name), name) for i, name in enumerate(("query", "key", "value")))
    batched = query.ndim == 3
    if (query.ndim not in (2, 3) or key.ndim != query.ndim or value.ndim != query.ndim
            or query.shape[-1] != m.embed_dim or key.shape[-1] != m.kdim or value.shape[-1] != m.vdim
            or key.shape[:-1] != value.shape[:-1]):
        raise NotImplementedError("multi-head attention operands do not fit")
    if not batched:
        return MHACall(1, query.shape[0], key.shape[0], False, query)
    b, t = (0, 1) if m.batch_first else (1, 0)
    if key.shape[b] != query.shape[b]:
        raise NotImplementedError("query and key batch sizes differ")
    return MHACall(query.shape[b], query.shape[t], key.shape[t], True, query)


def _src_len(m: nn.MultiheadAttention, keys: int) -> int:
    """Keys after ``add_bias_kv`` and ``add_zero_attn`` each append one (free concats)."""
    return keys + (m.bias_k is not None) + bool(m.add_zero_attn)


def _projections(m: nn.MultiheadAttention, a: MHACall) -> Counts:
    """The four weighted projections: lengths ``E`` (q, out), ``kdim`` (k), ``vdim`` (v)."""
    e = m.embed_dim
    q_out, kv = a.n * a.rows * e, a.n * a.keys * e  # outputs of q and out; of k and of v
    groups = [(q_out, e), (q_out, e), (kv, m.kdim), (kv, m.vdim)]
    weighted = sum(n for n, length in groups if length == e)
    extra = [(n, length) for n, length in groups if length != e]
    bias = (q_out + 2 * kv if m.in_proj_bias is not None else 0) + (q_out if m.out_proj.bias is not None else 0)
    return Counts(dot_products=weighted, dot_length=e, sparse_weight=True,
                  mults=sum(n * length for n, length in extra),
                  adds=bias + sum(n * (length - 1) for n, length in extra),
                  extra_macs=sum(n * length for n, length in extra))


@counter(nn.MultiheadAttention)
def multihead_attention(call: OpCall) -> Counts:
    """``nn.MultiheadAttention``: projections (weighted dot products) + per-head attention.

    Args ``(query, key, value, key_padding_mask=None, need_weights=True,
    attn_mask=None, average_attn_weights=True, is_causal=False)``; layout
    ``[N, L, E]`` with ``batch_first``, else ``[L, N, E]``; ``[L, E]`` unbatched.

    - q, k, v and out projections: weighted dot products of ``E`` terms
      (``sparse_weight``); a k / v projection with ``kdim`` / ``vdim != E``
      goes to dense ``mults`` / ``adds`` (one ``dot_length`` per Counts).
      Biases: one add per projected element.
    - attention per head as :func:`attention_core` (QK^T, scale, softmax,
      @V) in ``mults`` / ``adds`` / ``other_ops``, dense; ``S`` counts the
      ``bias_k`` and zero-attention keys; each given mask (``attn_mask``,
      ``key_padding_mask``) adds one add per score (two masks: merged, then added).
    - ``need_weights=True`` (the default) with ``average_attn_weights``: the
      mean over heads, ``(H - 1)`` adds and 1 mult per averaged weight.
    - dropout and head split/merge reshapes are not counted.

    # q: [N, L, E]  k: [N, S, kdim]  v: [N, S, vdim]; H heads of D = E/H; S' = S (+1 bias_kv) (+1 zero_attn)
    # dot_products = 2*N*L*E + 2*N*S*E (when kdim = vdim = E), dot_length = E
    # adds += 2*N*L*E + 2*N*S*E (biases); core(N*H, L, S', D, D, masks)
    # need_weights and average: adds += N*L*S'*(H-1), mults += N*L*S'
    """
    m, a = call.module, mha_call(call)
    keys = _src_len(m, a.keys)
    masks = (call.arg(5, "attn_mask", None) is not None) + (call.arg(3, "key_padding_mask", None) is not None)
    total = _projections(m, a) + attention_core(a.n * m.num_heads, a.rows, keys, m.head_dim, m.head_dim, masks)
    if call.arg(4, "need_weights", True) and call.arg(6, "average_attn_weights", True):
        averaged = a.n * a.rows * keys
        total = total + Counts(mults=averaged, adds=averaged * (m.num_heads - 1))
    return total


@shape_rule(nn.MultiheadAttention)
def multihead_attention_shape(call: OpCall) -> tuple:
    """``(attn_output, attn_weights)``: output in the query's layout; weights
    ``[N, L, S']`` averaged or ``[N, H, L, S']`` per head (no ``N`` unbatched),
    ``None`` when ``need_weights=False``."""
    m, a = call.module, mha_call(call)
    out = TensorInfo(a.query.shape[:-1] + (m.embed_dim,), a.query.dtype)
    if not call.arg(4, "need_weights", True):
        return out, None
    heads = () if call.arg(6, "average_attn_weights", True) else (m.num_heads,)
    batch = (a.n,) if a.batched else ()
    return out, TensorInfo(batch + heads + (a.rows, _src_len(m, a.keys)), a.query.dtype)


@hookimpl
def micronet_register_counters():
    return collect(sys.modules[__name__])
