"""Attention counters: SDPA (function and aten kernels) and nn.MultiheadAttention."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from micronet.counters import attention
from micronet.records import TensorInfo
from micronet.registry import CounterRegistry, OpCall, collect

aten = torch.ops.aten


def info(*shape, dtype=torch.float32) -> TensorInfo:
    return TensorInfo(tuple(shape), dtype)


def meta(shape) -> torch.Tensor:
    return torch.empty(shape, device="meta")


def as_info(value):
    if isinstance(value, torch.Tensor):
        return TensorInfo(tuple(value.shape), value.dtype)
    return value


# q: [2, 4, 6, 8]  k: [2, 4, 10, 8]  v: [2, 4, 10, 5]: B = 2*4 slices, L = 6, S = 10, E = 8, Ev = 5
Q, K, V = info(2, 4, 6, 8), info(2, 4, 10, 8), info(2, 4, 10, 5)
P = 2 * 4 * 6 * 10  # scores
MULTS = P * 8 + P + P + 2 * 4 * 6 * 5 * 10  # QK^T, scale, softmax division, attn @ V
ADDS = P * (8 - 1) + 2 * 4 * 6 * (10 - 1) + 2 * 4 * 6 * 5 * (10 - 1)  # QK^T, softmax sums, attn @ V


def test_sdpa_closed_form():
    call = OpCall("function", F.scaled_dot_product_attention, (Q, K, V))
    out = attention.sdpa_shape(call)
    assert out == info(2, 4, 6, 5)
    counts = attention.sdpa(replace(call, out=out))
    assert (counts.mults, counts.adds, counts.other_ops) == (MULTS, ADDS, P)  # P exps
    assert (counts.dot_products, counts.sparse_weight) == (0, False)
    # QK^T and attn @ V are multiply-accumulates booked in mults and adds
    assert counts.macs == counts.extra_macs == P * 8 + 2 * 4 * 6 * 5 * 10


def test_sdpa_mask_and_causal_add_one_add_per_score():
    mask = info(6, 10)
    masked = attention.sdpa(OpCall("function", F.scaled_dot_product_attention, (Q, K, V, mask),
                                   out=info(2, 4, 6, 5)))
    assert masked.adds == ADDS + P
    causal = attention.sdpa(OpCall("function", F.scaled_dot_product_attention, (Q, K, V),
                                   {"is_causal": True, "scale": 0.1}, out=info(2, 4, 6, 5)))
    assert (causal.adds, causal.mults) == (ADDS + P, MULTS)  # full matrix, scale given: same mults


def test_sdpa_products_agree_with_torch_flop_counter():
    q, k, v = torch.randn(2, 4, 6, 8), torch.randn(2, 4, 10, 8), torch.randn(2, 4, 10, 5)
    with FlopCounterMode(display=False) as flops:
        F.scaled_dot_product_attention(q, k, v)
    counts = attention.sdpa(OpCall("function", F.scaled_dot_product_attention, (Q, K, V), out=info(2, 4, 6, 5)))
    # torch counts 2 flops per multiply-accumulate of the two products only
    assert flops.get_total_flops() // 2 == counts.mults - P - P  # minus scale and softmax divisions


def test_sdpa_aten_kernels():
    out = info(2, 4, 6, 8)
    call = OpCall("aten", aten._scaled_dot_product_flash_attention_for_cpu.default, (Q, K, K),
                  {"attn_mask": info(6, 10)}, out=(out, info(2, 4, 6)))
    assert attention.sdpa_aten(call).adds == P * 7 + P + 2 * 4 * 6 * 9 + 2 * 4 * 6 * 8 * 9
    call = OpCall("aten", aten._scaled_dot_product_efficient_attention.default, (Q, K, K, None, False, 0.0, True),
                  out=(out, info(0), info(), info()))
    assert attention.sdpa_aten(call).adds == P * 7 + P + 2 * 4 * 6 * 9 + 2 * 4 * 6 * 8 * 9  # causal
    call = OpCall("aten", aten.scaled_dot_product_attention.default, (Q, K, V), out=info(2, 4, 6, 5))
    assert attention.sdpa_aten(call).mults == MULTS
    assert attention.sdpa_shape(replace(call, out=None)) == info(2, 4, 6, 5)


@pytest.mark.parametrize("q,k,v,kwargs", [
    ((2, 3, 4, 8), (2, 3, 6, 8), (2, 3, 6, 5), {}),
    ((1, 3, 4, 8), (2, 3, 6, 8), (2, 3, 6, 5), {}),              # batch broadcast
    ((4, 8), (6, 8), (6, 5), {}),                                  # 2-D
    ((2, 6, 4, 8), (2, 3, 6, 8), (2, 3, 6, 5), {"enable_gqa": True}),
    ((2, 3, 4, 8), (2, 3, 6, 8), (2, 3, 6, 5), {"attn_mask": (2, 1, 4, 6)}),
])
def test_sdpa_shape_matches_pytorch(q, k, v, kwargs):
    tensors = {key: meta(value) if isinstance(value, tuple) else value for key, value in kwargs.items()}
    expected = tuple(F.scaled_dot_product_attention(meta(q), meta(k), meta(v), **tensors).shape)
    call = OpCall("function", F.scaled_dot_product_attention, (info(*q), info(*k), info(*v)),
                  {key: as_info(value) for key, value in tensors.items()})
    assert attention.sdpa_shape(call).shape == expected


def test_sdpa_shape_refuses_what_torch_refuses():
    for q, k, v in [((2, 4, 8), (2, 6, 7), (2, 6, 5)), ((2, 4, 8), (2, 6, 8), (2, 5, 5))]:
        with pytest.raises(RuntimeError):
            F.scaled_dot_product_attention(torch.zeros(q), torch.zeros(k), torch.zeros(v))
        with pytest.raises(NotImplementedError):
            attention.sdpa_shape(OpCall("function", F.scaled_dot_product_attention, (info(*q), info(*k), info(*v))))


# ------------------------------------------------------------------ MultiheadAttention

# E = 16, H = 4 heads of D = 4; N = 2, L = 5 queries, S = 7 keys
N, L, S, E, H, D = 2, 5, 7, 16, 4, 4
PROJ = 2 * N * L * E + 2 * N * S * E  # q and out: N*L*E outputs; k and v: N*S*E outputs
BIAS = N * L * E + 2 * N * S * E + N * L * E  # in_proj_bias + out_proj.bias
SCORES = N * H * L * S
CORE_MULTS = SCORES * D + SCORES + SCORES + N * H * L * D * S
CORE_ADDS = SCORES * (D - 1) + N * H * L * (S - 1) + N * H * L * D * (S - 1)


def mha_call(m, *args, **kwargs) -> OpCall:
    return OpCall("module", type(m), tuple(as_info(a) for a in args),
                  {key: as_info(value) for key, value in kwargs.items()}, module=m)


def test_mha_closed_form_default_need_weights():
    m = nn.MultiheadAttention(E, H, batch_first=True, device="meta")
    call = mha_call(m, info(N, L, E), info(N, S, E), info(N, S, E))
    out, weights = attention.multihead_attention_shape(call)
    assert (out, weights) == (info(N, L, E), info(N, L, S))
    counts = attention.multihead_attention(replace(call, out=(out, weights)))
    assert (counts.dot_products, counts.dot_length, counts.sparse_weight) == (PROJ, E, True)
    averaged = N * L * S  # mean over heads: (H - 1) adds and one division each
    assert counts.mults == CORE_MULTS + averaged
    assert counts.adds == BIAS + CORE_ADDS + averaged * (H - 1)
    assert counts.other_ops == SCORES


def test_mha_need_weights_false_and_masks():
    m = nn.MultiheadAttention(E, H, device="meta")  # [L, N, E] layout
    call = mha_call(m, info(L, N, E), info(S, N, E), info(S, N, E), need_weights=False,
                    key_padding_mask=info(N, S, dtype=torch.bool), attn_mask=info(L, S))
    out, weights = attention.multihead_attention_shape(call)
    assert (out, weights) == (info(L, N, E), None)
    counts = attention.multihead_attention(replace(call, out=(out, None)))
    assert counts.mults == CORE_MULTS
    assert counts.adds == BIAS + CORE_ADDS + 2 * SCORES  # two masks: merged, then added


def test_mha_kdim_vdim_go_to_dense_mults():
    m = nn.MultiheadAttention(E, H, kdim=6, vdim=10, bias=False, batch_first=True, device="meta")
    call = mha_call(m, info(N, L, E), info(N, S, 6), info(N, S, 10), need_weights=False)
    counts = attention.multihead_attention(replace(call, out=attention.multihead_attention_shape(call)))
    assert (counts.dot_products, counts.dot_length) == (2 * N * L * E, E)  # q and out projections
    assert counts.mults == N * S * E * 6 + N * S * E * 10 + CORE_MULTS
    assert counts.adds == N * S * E * 5 + N * S * E * 9 + CORE_ADDS  # no biases
    assert counts.macs == 2 * N * L * E * E + N * S * E * (6 + 10) + SCORES * D + N * H * L * D * S


def test_mha_agrees_with_torch_flop_counter():
    m = nn.MultiheadAttention(E, H, batch_first=True).eval()
    x, y = torch.randn(N, L, E), torch.randn(N, S, E)
    with torch.no_grad(), FlopCounterMode(display=False) as flops:
        m(x, y, y)  # need_weights=True: the bmm path torch's counter sees
    call = mha_call(m, x, y, y)
    counts = attention.multihead_attention(replace(call, out=attention.multihead_attention_shape(call)))
    # torch: projections + QK^T + attn @ V at 2 flops per MAC, as our macs count them
    assert flops.get_total_flops() // 2 == counts.macs
    assert counts.extra_macs == SCORES * D + N * H * L * D * S


@pytest.mark.parametrize("kwargs,call_kwargs,shapes", [
    ({"batch_first": True}, {}, ((2, 5, 16), (2, 7, 16), (2, 7, 16))),
    ({}, {"average_attn_weights": False}, ((5, 2, 16), (7, 2, 16), (7, 2, 16))),
    ({"add_bias_kv": True, "add_zero_attn": True}, {}, ((5, 2, 16), (7, 2, 16), (7, 2, 16))),
    ({"kdim": 6, "vdim": 3}, {"need_weights": False}, ((5, 2, 16), (7, 2, 6), (7, 2, 3))),
    ({}, {}, ((5, 16), (7, 16), (7, 16))),  # unbatched
    ({}, {"average_attn_weights": False}, ((5, 16), (7, 16), (7, 16))),
])
def test_mha_shape_matches_pytorch(kwargs, call_kwargs, shapes):
    m = nn.MultiheadAttention(16, 4, **kwargs).eval()
    tensors = [torch.randn(s) for s in shapes]
    with torch.no_grad():
        out, weights = m(*tensors, **call_kwargs)
    rule_out, rule_weights = attention.multihead_attention_shape(mha_call(m, *tensors, **call_kwargs))
    assert rule_out.shape == tuple(out.shape)
    assert (rule_weights is None) == (weights is None)
    if weights is not None:
        assert rule_weights.shape == tuple(weights.shape)
    if kwargs.get("add_bias_kv"):
        counts = attention.multihead_attention(replace(mha_call(m, *tensors), out=(rule_out, rule_weights)))
        assert counts.other_ops == 2 * 4 * 5 * (7 + 1 + 1)  # S' = S + bias_k + zero attention


def test_every_form_resolves_in_a_registry():
    registry = CounterRegistry(collect(attention))
    for target in (F.scaled_dot_product_attention, nn.MultiheadAttention, aten.scaled_dot_product_attention.default):
        assert registry.counter(target) is not None and registry.shape(target) is not None, target
    for packet in attention.ATEN_SDPA:
        assert registry.counter(packet.default).fn in (attention.sdpa_aten,), packet


# ------------------------------------------------ [B, L, H, E] kernels (flash-attn / xformers layout)

QB, KB, VB = info(2, 6, 4, 8), info(2, 10, 4, 8), info(2, 10, 4, 5)  # the Q, K, V above, heads at dim 2
OUTB = info(2, 6, 4, 5)


def test_flash_attention_forward_counts_as_sdpa():
    outs = (OUTB, info(2, 4, 6), info(2), info(), info(0))
    call = OpCall("aten", aten._flash_attention_forward.default, (QB, KB, VB, None, None, 6, 10, 0.0, False, False),
                  out=outs)
    counts = attention.bshd_attention(call)
    assert (counts.mults, counts.adds, counts.other_ops) == (MULTS, ADDS, P)
    assert counts.macs == P * 8 + 2 * 4 * 6 * 5 * 10
    causal = attention.bshd_attention(replace(call, args=(QB, KB, VB, None, None, 6, 10, 0.0, True, False)))
    assert (causal.mults, causal.adds) == (MULTS, ADDS + P)


def test_flash_attention_varlen_counts_every_row_against_max_k():
    # two sequences packed: 6 query rows in all, keys padded to max_k = 10: an upper bound
    q, k, v = info(6, 4, 8), info(12, 4, 8), info(12, 4, 5)
    call = OpCall("aten", aten._flash_attention_forward.default,
                  (q, k, v, info(3, dtype=torch.int32), info(3, dtype=torch.int32), 4, 10, 0.0, False, False),
                  out=(info(6, 4, 5), info(4, 6), info(2), info(), info(0)))
    counts = attention.bshd_attention(call)
    scores = 4 * 6 * 10
    assert counts.other_ops == scores
    assert counts.mults == scores * 8 + 2 * scores + 4 * 6 * 5 * 10


def test_efficient_attention_forward_bias_and_causal_mask():
    outs = (OUTB, info(2, 4, 0), info(), info(), 6, 10)
    call = OpCall("aten", aten._efficient_attention_forward.default,
                  (QB, KB, VB, None, None, None, None, None, 0.0, 0), out=outs)
    assert attention.bshd_attention(call).adds == ADDS
    biased = replace(call, args=(QB, KB, VB, info(2, 4, 6, 10), None, None, None, None, 0.0, 0))
    assert attention.bshd_attention(biased).adds == ADDS + P
    causal = replace(call, args=(QB, KB, VB, None, None, None, None, None, 0.0, 1))
    assert attention.bshd_attention(causal).adds == ADDS + P


def test_bshd_kernels_agree_with_their_meta_outputs_and_resolve():
    q, k, v = (torch.empty(s.shape, device="meta", dtype=torch.float16) for s in (QB, KB, VB))
    out = aten._flash_attention_forward(q, k, v, None, None, 6, 10, 0.0, False, False)[0]
    assert tuple(out.shape) == (2, 6, 4, 8)  # v's dim is the query's on this kernel's meta; counts use v's
    registry = CounterRegistry(collect(attention))
    for packet in attention.ATEN_BSHD:
        assert registry.counter(packet.default).fn is attention.bshd_attention


class FusedQKV(nn.Module):
    """One projection to q, k, v split by tensor_split, then SDPA (what torch.export keeps whole)."""

    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(8, 24, bias=False)

    def forward(self, x):
        q, k, v = self.qkv(x).tensor_split(3, dim=-1)
        return F.scaled_dot_product_attention(q, k, v)


def test_export_path_tensor_split_is_free_and_attention_counted(tmp_path):
    import micronet

    path = tmp_path / "fused.pt2"
    torch.export.save(torch.export.export(FusedQKV(), (torch.randn(1, 5, 8),)), str(path))
    r = micronet.audit(str(path), (1, 5, 8), trust=True, freebie=False)
    assert not r.uncounted
    # projection: 5 x 24 dot products of 8 terms; attention: B = 1, L = S = 5, E = Ev = 8
    p = 5 * 5
    assert r.totals["mults"] == 5 * 24 * 8 + (p * 8 + p + p + 5 * 8 * 5)
    assert r.totals["adds"] == 5 * 24 * 7 + (p * 7 + 5 * 4 + 5 * 8 * 4)


# ------------------------------------------------------------ flex_attention


def _relative_bias(score, b, h, q_idx, kv_idx):
    return score + (q_idx - kv_idx)  # one add, one sub per score


def _causal(b, h, q_idx, kv_idx):
    return q_idx >= kv_idx  # one comparison per score


def _flex_call(**kwargs) -> OpCall:
    from torch.nn.attention.flex_attention import flex_attention

    return OpCall("function", flex_attention, (Q, K, V), kwargs, out=info(2, 4, 6, 5))


def test_flex_attention_without_mods_is_sdpa():
    counts = attention.flex_attention(_flex_call())
    assert (counts.mults, counts.adds, counts.other_ops) == (MULTS, ADDS, P)


def test_flex_attention_matmuls_agree_with_torch_flop_counter_on_sdpa():
    # torch 2.14.1's FlopCounterMode cannot run flex_attention eagerly on CPU (no implementation
    # for the higher-order op under its mode): compare with its SDPA figure at equal shapes
    q, k, v = torch.randn(2, 4, 6, 8), torch.randn(2, 4, 10, 8), torch.randn(2, 4, 10, 5)
    with FlopCounterMode(display=False) as flops:
        F.scaled_dot_product_attention(q, k, v)
    assert flops.get_total_flops() == 2 * (P * 8 + 2 * 4 * 6 * 5 * 10)  # the closed form, checked first
    counts = attention.flex_attention(_flex_call(score_mod=_relative_bias))
    assert 2 * counts.macs == flops.get_total_flops()


def test_flex_attention_score_and_mask_mods_are_priced_per_score():
    from torch.nn.attention.flex_attention import create_block_mask

    block_mask = create_block_mask(_causal, 2, 4, 6, 10, device="cpu")
    counts = attention.flex_attention(_flex_call(score_mod=_relative_bias, block_mask=block_mask))
    # score_mod: 2 adds per score; mask_mod: 1 comparison (other op) per score, its -inf select 1 add
    assert (counts.mults, counts.adds, counts.other_ops) == (MULTS, ADDS + 3 * P, P + P)


def test_flex_attention_hop_prices_the_exported_graphs():
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    block_mask = create_block_mask(_causal, 2, 4, 6, 10, device="cpu")

    class Flex(nn.Module):
        def forward(self, q, k, v):
            return flex_attention(q, k, v, score_mod=_relative_bias, block_mask=block_mask)

    ep = torch.export.export(Flex(), (torch.randn(2, 4, 6, 8), torch.randn(2, 4, 10, 8), torch.randn(2, 4, 10, 5)))
    node = next(n for n in ep.graph.nodes if n.target is torch.ops.higher_order.flex_attention)
    root = ep.graph_module

    def value(a):
        if a.op == "get_attr":
            return getattr(root, a.target)  # the score_mod / mask_mod graph
        return as_info(a.meta.get("val"))

    args = torch.fx.node.map_arg(node.args, value)
    call = OpCall("aten", node.target, tuple(args), out=info(2, 4, 6, 5))
    counts = attention.flex_attention_hop(call)
    assert (counts.mults, counts.adds, counts.other_ops) == (MULTS, ADDS + 3 * P, P + P)
    registry = CounterRegistry(collect(attention))
    assert registry.counter(torch.ops.higher_order.flex_attention).fn is attention.flex_attention_hop
    assert registry.counter(flex_attention).fn is attention.flex_attention


def test_quantized_flash_kernel_reads_is_causal_after_the_descales():
    f8 = torch.float8_e4m3fn
    q, k, v = info(2, 4, 6, 8, dtype=f8), info(2, 4, 10, 8, dtype=f8), info(2, 4, 10, 8, dtype=f8)
    scale = info(1)
    outs = (info(2, 4, 6, 8), info(2, 4, 6), info(0), info(0), 6, 10, info(2), info(), info(0))
    plain = OpCall("aten", aten._scaled_dot_product_flash_attention.quantized, (q, k, v, scale, scale, scale, 0.0, False),
                   out=outs)
    full_adds = P * 7 + 2 * 4 * 6 * 9 + 2 * 4 * 6 * 8 * 9
    assert attention.sdpa_aten(plain).adds == full_adds  # the descales are not a mask
    causal = replace(plain, args=(q, k, v, scale, scale, scale, 0.0, True))
    assert attention.sdpa_aten(causal).adds == full_adds + P
