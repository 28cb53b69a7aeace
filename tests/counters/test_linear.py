"""Linear and bilinear counters and shape rules: closed forms, PyTorch and thop agreement."""
from __future__ import annotations

from dataclasses import replace

import pytest
import thop
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st
from torch import nn

from micronet.counters import linear
from micronet.records import TensorInfo
from micronet.registry import CounterRegistry, OpCall, collect

aten = torch.ops.aten


def info(*shape, dtype=torch.float32) -> TensorInfo:
    return TensorInfo(tuple(shape), dtype)


def module_call(m: nn.Module, *args, out=None, **kwargs) -> OpCall:
    return OpCall("module", type(m), args, kwargs, module=m, out=out)


def test_linear_module_classifier():
    m = nn.Linear(640, 100, device="meta")  # WRN-28-10's classifier
    call = module_call(m, info(1, 640))
    out = linear.linear_module_shape(call)
    assert out == info(1, 100)
    counts = linear.linear_module(replace(call, out=out))
    assert (counts.dot_products, counts.dot_length, counts.sparse_weight) == (1 * 100, 640, True)
    assert counts.adds == 100  # bias
    assert counts.dense_mults == 640 * 100
    assert counts.dense_adds == (640 - 1) * 100 + 100


def test_linear_leading_dims_counted_and_unbatched_input():
    m = nn.Linear(32, 8, bias=False, device="meta")
    call = module_call(m, info(2, 5, 32))
    out = linear.linear_module_shape(call)
    assert out == info(2, 5, 8)
    counts = linear.linear_module(replace(call, out=out))
    assert (counts.dot_products, counts.dot_length, counts.adds) == (2 * 5 * 8, 32, 0)
    assert linear.linear_module_shape(module_call(m, info(32))) == info(8)
    with pytest.raises(NotImplementedError):
        linear.linear_module_shape(module_call(m, info(2, 31)))


def test_functional_and_aten_linear():
    call = OpCall("function", F.linear, (info(4, 16), info(10, 16)), {"bias": info(10)})
    out = linear.linear_function_shape(call)
    assert out == info(4, 10)
    counts = linear.linear_function(replace(call, out=out))
    assert (counts.dot_products, counts.dot_length, counts.adds) == (4 * 10, 16, 4 * 10)
    call = OpCall("aten", aten.linear.default, (info(3, 7, 16), info(10, 16)))
    out = linear.linear_function_shape(call)
    assert out == info(3, 7, 10)
    counts = linear.linear_function(replace(call, out=out))
    assert (counts.dot_products, counts.dot_length, counts.adds) == (3 * 7 * 10, 16, 0)
    # a 1-D weight gives one dot product per row
    call = OpCall("function", F.linear, (info(4, 16), info(16)))
    assert linear.linear_function_shape(call) == info(4)


def test_aten_addmm_bias_and_scaling():
    call = OpCall("aten", aten.addmm.default, (info(10), info(4, 16), info(16, 10)))
    out = linear.addmm_aten_shape(call)
    assert out == info(4, 10)
    counts = linear.addmm_aten(replace(call, out=out))
    assert (counts.dot_products, counts.dot_length, counts.sparse_weight) == (4 * 10, 16, True)
    assert (counts.adds, counts.mults) == (4 * 10, 0)
    scaled = replace(call, kwargs={"beta": 0.5, "alpha": 2.0}, out=out)
    assert linear.addmm_aten(scaled).mults == 4 * 10 + 4 * 10  # alpha, beta
    assert linear.addmm_aten(replace(call, kwargs={"beta": 0}, out=out)).adds == 0
    with pytest.raises(NotImplementedError):
        linear.addmm_aten_shape(OpCall("aten", aten.addmm.default, (info(3), info(4, 16), info(16, 10))))


def test_bilinear_module_and_function():
    m = nn.Bilinear(3, 5, 4, device="meta")
    call = module_call(m, info(2, 3), info(2, 5))
    out = linear.bilinear_module_shape(call)
    assert out == info(2, 4)
    counts = linear.bilinear_module(replace(call, out=out))
    # W_o x2: 2*4*3 dot products of 5; x1 . (W_o x2): 2*4*3 mults, 2*4*(3-1) adds; bias 2*4
    assert (counts.dot_products, counts.dot_length) == (2 * 4 * 3, 5)
    assert (counts.mults, counts.adds) == (2 * 4 * 3, 2 * 4 * 2 + 2 * 4)
    fcall = OpCall("function", F.bilinear, (info(2, 3), info(2, 5), info(4, 3, 5)))
    assert linear.bilinear_function_shape(fcall) == out
    x1, x2 = torch.randn(2, 3), torch.randn(2, 5)
    assert tuple(F.bilinear(x1, x2, torch.randn(4, 3, 5)).shape) == out.shape


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(1, 4), max_size=3), st.integers(1, 9), st.integers(1, 9), st.booleans())
def test_linear_shape_and_macs_match_pytorch(lead, fin, fout, bias):
    m = nn.Linear(fin, fout, bias=bias, device="meta")
    x = torch.empty(tuple(lead) + (fin,), device="meta")
    call = module_call(m, info(*x.shape))
    out = linear.linear_module_shape(call)
    assert out.shape == tuple(m(x).shape)
    counts = linear.linear_module(replace(call, out=out))
    rows = torch.Size(lead).numel()
    assert counts.macs == rows * fout * fin  # every output element: fin products
    assert counts.adds == (rows * fout if bias else 0)
    fcall = OpCall("function", F.linear, (info(*x.shape), info(fout, fin)))
    assert linear.linear_function_shape(fcall) == out


@pytest.mark.parametrize("shape,fin,fout", [((1, 512), 512, 1000), ((4, 7, 64), 64, 32)])
def test_linear_macs_equal_thop(shape, fin, fout):
    m = nn.Linear(fin, fout, bias=False)
    x = torch.randn(shape)
    thop_macs, _ = thop.profile(m, inputs=(x,), verbose=False)
    call = module_call(m, info(*shape))
    counts = linear.linear_module(replace(call, out=linear.linear_module_shape(call)))
    assert counts.macs == int(thop_macs)


def test_every_form_resolves_in_a_registry():
    registry = CounterRegistry(collect(linear))
    for target in (nn.Linear, F.linear, torch._C._nn.linear, aten.linear.default, aten.addmm.default,
                   nn.Bilinear, F.bilinear, aten.bilinear.default):
        assert registry.counter(target) is not None, target
        assert registry.shape(target) is not None, target
    assert registry.counter(nn.LazyLinear).fn is linear.linear_module  # subclass, by MRO
