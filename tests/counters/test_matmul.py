"""Activation products: matmul broadcasting, mm/bmm/mv/dot, baddbmm/addmm, einsum."""
from __future__ import annotations

import operator
from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings, strategies as st

from micronet.counters import matmul
from micronet.records import TensorInfo
from micronet.registry import CounterRegistry, Method, OpCall, collect

aten = torch.ops.aten


def info(*shape, dtype=torch.float32) -> TensorInfo:
    return TensorInfo(tuple(shape), dtype)


def meta(shape) -> torch.Tensor:
    return torch.empty(shape, device="meta")


def counted(counter, shape_rule, call: OpCall):
    """(output, counts) through the shape rule then the counter."""
    out = shape_rule(call)
    return out, counter(replace(call, out=out))


@pytest.mark.parametrize("a,b,out,k", [
    ((7,), (7,), (), 7),                      # dot product: one output
    ((7,), (7, 5), (5,), 7),                  # 1-D x 2-D: prepended 1 removed
    ((3, 7), (7,), (3,), 7),                  # 2-D x 1-D: appended 1 removed
    ((4, 3, 7), (7, 5), (4, 3, 5), 7),        # batched x 2-D
    ((2, 1, 3, 7), (4, 7, 5), (2, 4, 3, 5), 7),  # batch dims broadcast
    ((7,), (2, 7, 5), (2, 5), 7),             # 1-D x batched
])
def test_matmul_broadcasting(a, b, out, k):
    call = OpCall("function", torch.matmul, (info(*a), info(*b)))
    shape, counts = counted(matmul.matmul, matmul.matmul_shape, call)
    assert shape == info(*out)
    assert tuple(torch.matmul(meta(a), meta(b)).shape) == out
    n_out = torch.Size(out).numel()
    assert (counts.dot_products, counts.dot_length, counts.sparse_weight) == (n_out, k, False)
    assert counts.dense_adds == n_out * (k - 1)


def test_matmul_forms_agree():
    a, b = info(2, 3, 4), info(2, 4, 5)
    # 2*3*5 outputs of 4 terms
    for call in (OpCall("function", operator.matmul, (a, b)), OpCall("method", Method("matmul"), (a, b)),
                 OpCall("function", torch.bmm, (a, b)), OpCall("method", Method("bmm"), (a,), {"mat2": b}),
                 OpCall("aten", aten.bmm.default, (a, b)), OpCall("aten", aten.matmul.default, (a, b))):
        registry = CounterRegistry(collect(matmul))
        out = registry.shape(call.target).fn(call)
        assert out == info(2, 3, 5)
        counts = registry.counter(call.target).fn(replace(call, out=out))
        assert (counts.dot_products, counts.dot_length) == (2 * 3 * 5, 4)


def test_fixed_rank_products_refuse_other_ranks():
    with pytest.raises(NotImplementedError):
        matmul.mm_shape(OpCall("function", torch.mm, (info(2, 3, 4), info(4, 5))))
    with pytest.raises(NotImplementedError):
        matmul.bmm_shape(OpCall("function", torch.bmm, (info(2, 3, 4), info(1, 4, 5))))  # no broadcast
    with pytest.raises(NotImplementedError):
        matmul.matmul_shape(OpCall("function", torch.matmul, (info(3, 4), info(5, 6))))
    with pytest.raises(NotImplementedError):
        matmul.matmul_shape(OpCall("function", torch.matmul, (info(3, 4), info(4, 6, dtype=torch.float16))))
    with pytest.raises(NotImplementedError):
        matmul.mm_shape(OpCall("aten", aten.mm.dtype, (info(3, 4), info(4, 6), torch.float32)))
    out, counts = counted(matmul.matmul, matmul.mv_shape, OpCall("function", torch.mv, (info(3, 4), info(4))))
    assert (out, counts.dot_products, counts.dot_length) == (info(3), 3, 4)
    out, counts = counted(matmul.matmul, matmul.dot_shape, OpCall("method", Method("dot"), (info(6), info(6))))
    assert (out, counts.dot_products, counts.dot_length) == (info(), 1, 6)


def test_baddbmm_and_addmm():
    call = OpCall("function", torch.baddbmm, (info(1, 3, 5), info(2, 3, 4), info(2, 4, 5)))
    out, counts = counted(matmul.add_matmul, matmul.baddbmm_shape, call)
    assert out == info(2, 3, 5)
    assert (counts.dot_products, counts.dot_length) == (2 * 3 * 5, 4)
    assert (counts.adds, counts.mults) == (2 * 3 * 5, 0)  # the added term, alpha = beta = 1
    scaled = matmul.add_matmul(replace(call, kwargs={"alpha": 0.5, "beta": 2.0}, out=out))
    assert (scaled.adds, scaled.mults) == (2 * 3 * 5, 2 * 3 * 5 + 2 * 3 * 5)
    dropped = matmul.add_matmul(replace(call, kwargs={"beta": 0}, out=out))
    assert (dropped.adds, dropped.mults) == (0, 0)
    call = OpCall("function", torch.addmm, (info(5), info(3, 4), info(4, 5)))
    out, counts = counted(matmul.add_matmul, matmul.addmm_shape, call)
    assert out == info(3, 5)
    assert (counts.dot_products, counts.dot_length, counts.adds) == (3 * 5, 4, 3 * 5)
    with pytest.raises(NotImplementedError):  # self does not broadcast to [2, 3, 5]
        matmul.baddbmm_shape(OpCall("function", torch.baddbmm, (info(4, 5), info(2, 3, 4), info(2, 4, 5))))


# ------------------------------------------------------------------ einsum


def einsum_call(*args, **kwargs) -> OpCall:
    return OpCall("function", torch.einsum, args, kwargs)


def run_einsum(call: OpCall):
    return counted(matmul.einsum, matmul.einsum_shape, call)


def test_einsum_batched_matmul():
    out, counts = run_einsum(einsum_call("bij,bjk->bik", info(2, 3, 4), info(2, 4, 5)))
    assert out == info(2, 3, 5)
    assert (counts.dot_products, counts.dot_length, counts.mults) == (2 * 3 * 5, 4, 0)


def test_einsum_attention_scores_with_spaces_and_list_operands():
    call = einsum_call("b h q d, b h k d -> b h q k", [info(2, 4, 6, 8), info(2, 4, 7, 8)])
    out, counts = run_einsum(call)
    assert out == info(2, 4, 6, 7)
    assert (counts.dot_products, counts.dot_length) == (2 * 4 * 6 * 7, 8)


def test_einsum_without_contraction_is_mults():
    out, counts = run_einsum(einsum_call("i,j->ij", info(3), info(4)))
    assert (out, counts.mults, counts.dot_products, counts.adds) == (info(3, 4), 3 * 4, 0, 0)
    out, counts = run_einsum(einsum_call("ij,ij->ij", info(3, 4), info(3, 4)))
    assert (out, counts.mults, counts.adds) == (info(3, 4), 3 * 4, 0)


def test_einsum_one_operand_sums_and_permutes():
    out, counts = run_einsum(einsum_call("ij->i", info(3, 4)))
    assert (out, counts.adds, counts.dense_mults) == (info(3), 3 * (4 - 1), 0)
    out, counts = run_einsum(einsum_call("ii", info(5, 5)))  # trace
    assert (out, counts.adds) == (info(), 5 - 1)
    out, counts = run_einsum(einsum_call("ijk->kji", info(2, 3, 4)))  # a permutation is free
    assert (out, counts.adds, counts.dense_mults) == (info(4, 3, 2), 0, 0)


def test_einsum_three_operands_contract_left_to_right():
    out, counts = run_einsum(einsum_call("ij,jk,kl->il", info(2, 3), info(3, 4), info(4, 5)))
    assert out == info(2, 5)
    # (ij,jk -> ik): 2*4 outputs of 3 terms; (ik,kl -> il): 2*5 outputs of 4 terms
    assert counts.mults == 2 * 4 * 3 + 2 * 5 * 4
    assert counts.adds == 2 * 4 * (3 - 1) + 2 * 5 * (4 - 1)
    assert counts.dot_products == 0
    assert counts.macs == counts.extra_macs == 2 * 4 * 3 + 2 * 5 * 4  # still multiply-accumulates


def test_einsum_summed_label_of_one_operand_joins_the_dot_product():
    out, counts = run_einsum(einsum_call("ij,jk->k", info(2, 3), info(3, 4)))
    assert (out, counts.dot_products, counts.dot_length) == (info(4), 4, 2 * 3)


def test_einsum_sublist_form_and_ellipsis():
    a, b = info(2, 3), info(3, 4)
    out, counts = run_einsum(einsum_call(a, [0, 1], b, [1, 2], [0, 2]))
    assert (out, counts.dot_products, counts.dot_length) == (info(2, 4), 2 * 4, 3)
    out, counts = run_einsum(einsum_call("...ij,jk", info(5, 2, 3), info(3, 4)))
    assert (out, counts.dot_products, counts.dot_length) == (info(5, 2, 4), 5 * 2 * 4, 3)
    out, counts = run_einsum(einsum_call("...ij,...jk->ik", info(5, 2, 3), info(5, 3, 4)))
    assert (out, counts.dot_products, counts.dot_length) == (info(2, 4), 2 * 4, 5 * 3)  # ... summed


EQUATIONS = [
    ("aB,bA", [(2, 3), (3, 2)]),
    ("i,i->i", [(3,), (1,)]),
    ("bij,bjk", [(2, 3, 4), (1, 4, 5)]),
    ("...ij,...jk", [(2, 1, 3, 4), (5, 4, 6)]),
    ("i...,i...->...", [(3, 2), (3, 1)]),
    ("ii->i", [(4, 4)]),
    ("ij,jk,kl", [(2, 3), (3, 4), (4, 5)]),
    ("bn,anm,bm->ba", [(2, 3), (4, 3, 5), (2, 5)]),
]


@pytest.mark.parametrize("equation,shapes", EQUATIONS)
def test_einsum_shape_matches_pytorch(equation, shapes):
    expected = tuple(torch.einsum(equation, *(meta(s) for s in shapes)).shape)
    assert matmul.einsum_shape(einsum_call(equation, *(info(*s) for s in shapes))).shape == expected
    aten_call = OpCall("aten", aten.einsum.default, (equation, [info(*s) for s in shapes]))
    assert matmul.einsum_shape(aten_call).shape == expected


@pytest.mark.parametrize("equation,shapes", [
    ("ij,jk->ik", [(2, 3), (4, 5)]),     # sizes of j differ
    ("ij,jk->iq", [(2, 3), (3, 5)]),     # q not in the inputs
    ("ij->ii", [(2, 3)]),                 # repeated output label
    ("ij", [(2, 3, 4)]),                  # rank mismatch
    ("ii", [(2, 3)]),                     # diagonal of a non-square
])
def test_einsum_refuses_what_torch_refuses(equation, shapes):
    with pytest.raises(RuntimeError):
        torch.einsum(equation, *(meta(s) for s in shapes))
    with pytest.raises(NotImplementedError):
        matmul.einsum_shape(einsum_call(equation, *(info(*s) for s in shapes)))


# ------------------------------------------------------------------ properties


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(1, 3), max_size=2), st.lists(st.integers(1, 3), max_size=2),
       st.integers(1, 4), st.integers(1, 4), st.integers(1, 4), st.booleans(), st.booleans())
def test_matmul_shape_matches_pytorch(batch_a, batch_b, n, k, p, vec_a, vec_b):
    a = (k,) if vec_a else tuple(batch_a) + (n, k)
    b = (k,) if vec_b else tuple(batch_b) + (k, p)
    call = OpCall("function", torch.matmul, (info(*a), info(*b)))
    try:
        expected = tuple(torch.matmul(meta(a), meta(b)).shape)
    except RuntimeError:
        with pytest.raises(NotImplementedError):
            matmul.matmul_shape(call)
        return
    out, counts = counted(matmul.matmul, matmul.matmul_shape, call)
    assert out.shape == expected
    assert counts.macs == torch.Size(expected).numel() * k


def test_every_form_resolves_in_a_registry():
    registry = CounterRegistry(collect(matmul))
    targets = [torch.matmul, operator.matmul, Method("matmul"), aten.matmul.default, torch.mm, Method("mm"),
               aten.mm.default, torch.bmm, aten.bmm.default, torch.baddbmm, aten.baddbmm.default,
               torch.addmm, torch.mv, torch.dot, torch.einsum, aten.einsum.default]
    for target in targets:
        assert registry.counter(target) is not None, target
        assert registry.shape(target) is not None, target
    assert registry.counter(aten.addmm.default) is None  # a linear layer's: counters.linear
