"""Convolution counters and shape rules: closed forms, every form, PyTorch and thop agreement."""
from __future__ import annotations

from dataclasses import replace

import pytest
import thop
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st
from torch import nn

from micronet.counters import conv
from micronet.records import TensorInfo
from micronet.registry import CounterRegistry, OpCall, collect

aten = torch.ops.aten


def info(*shape, dtype=torch.float32) -> TensorInfo:
    return TensorInfo(tuple(shape), dtype)


def module_call(m: nn.Module, *args, out=None, **kwargs) -> OpCall:
    return OpCall("module", type(m), args, kwargs, module=m, out=out)


def meta(shape) -> torch.Tensor:
    return torch.empty(shape, device="meta")


# ----------------------------------------------------------------- closed forms


def test_conv2d_module_3x3_with_bias():
    m = nn.Conv2d(64, 64, 3, padding=1, device="meta")
    call = module_call(m, info(1, 64, 56, 56), out=info(1, 64, 56, 56))
    counts = conv.conv_module(call)
    assert counts.dot_products == 1 * 64 * 56 * 56  # one per output element
    assert counts.dot_length == 3 * 3 * 64
    assert counts.sparse_weight
    assert counts.adds == 1 * 64 * 56 * 56  # bias: one add per output
    assert counts.dense_mults == 1 * 64 * 56 * 56 * 3 * 3 * 64
    assert counts.dense_adds == 1 * 64 * 56 * 56 * (3 * 3 * 64 - 1) + 1 * 64 * 56 * 56
    assert conv.conv_module_shape(replace(call, out=None)) == info(1, 64, 56, 56)


def test_depthwise_strided_conv_without_bias():
    m = nn.Conv2d(32, 32, 3, stride=2, padding=1, groups=32, bias=False, device="meta")
    call = module_call(m, info(2, 32, 16, 16))
    out = conv.conv_module_shape(call)
    assert out == info(2, 32, 8, 8)  # (16 + 2 - 3) // 2 + 1 = 8
    counts = conv.conv_module(replace(call, out=out))
    assert (counts.dot_products, counts.dot_length, counts.adds) == (2 * 32 * 8 * 8, 3 * 3 * 1, 0)


def test_conv1d_and_conv3d_modules():
    c1 = nn.Conv1d(4, 6, 5, dilation=2, device="meta")  # 20 - 2*4 = 12 outputs
    call = module_call(c1, info(3, 4, 20))
    assert conv.conv_module_shape(call) == info(3, 6, 12)
    counts = conv.conv_module(replace(call, out=info(3, 6, 12)))
    assert (counts.dot_products, counts.dot_length) == (3 * 6 * 12, 5 * 4)
    c3 = nn.Conv3d(2, 4, (1, 3, 3), stride=(1, 2, 2), groups=2, device="meta")
    call = module_call(c3, info(1, 2, 4, 9, 9))
    assert conv.conv_module_shape(call) == info(1, 4, 4, 4, 4)  # (9-3)//2+1 = 4
    counts = conv.conv_module(replace(call, out=info(1, 4, 4, 4, 4)))
    assert (counts.dot_products, counts.dot_length) == (1 * 4 * 4 * 4 * 4, 1 * 3 * 3 * (2 // 2))


def test_unbatched_input_and_padding_modes():
    m = nn.Conv2d(3, 8, 3, padding=2, padding_mode="reflect", device="meta")
    call = module_call(m, info(3, 10, 10))  # unbatched [C, H, W]
    assert conv.conv_module_shape(call) == info(8, 12, 12)  # 10 + 4 - 3 + 1
    counts = conv.conv_module(replace(call, out=info(8, 12, 12)))
    assert (counts.dot_products, counts.dot_length, counts.adds) == (8 * 12 * 12, 3 * 3 * 3, 8 * 12 * 12)
    same = nn.Conv2d(3, 8, 4, padding="same", dilation=2, padding_mode="circular", device="meta")
    assert conv.conv_module_shape(module_call(same, info(1, 3, 7, 9))) == info(1, 8, 7, 9)


def test_functional_and_torch_forms():
    x, w, b = info(1, 4, 10, 10), info(6, 2, 3, 3), info(6)
    call = OpCall("function", F.conv2d, (x, w, b), {"padding": "same", "dilation": 2, "groups": 2})
    out = conv.conv_function_shape(call)
    assert out == info(1, 6, 10, 10)
    counts = conv.conv_function(replace(call, out=out))
    assert (counts.dot_products, counts.dot_length, counts.adds) == (6 * 10 * 10, 2 * 3 * 3, 6 * 10 * 10)
    call = OpCall("function", torch.conv1d, (info(2, 3, 8), info(5, 3, 3)), {"stride": 2, "padding": 1})
    out = conv.conv_function_shape(call)
    assert out == info(2, 5, 4)  # (8 + 2 - 3) // 2 + 1
    counts = conv.conv_function(replace(call, out=out))
    assert (counts.dot_products, counts.dot_length, counts.adds) == (2 * 5 * 4, 3 * 3, 0)
    valid = OpCall("function", F.conv3d, (info(1, 1, 5, 5, 5), info(2, 1, 3, 3, 3)), {"padding": "valid"})
    assert conv.conv_function_shape(valid) == info(1, 2, 3, 3, 3)


def test_aten_forms():
    x, w, b = info(1, 3, 8, 8), info(4, 3, 3, 3), info(4)
    call = OpCall("aten", aten.convolution.default, (x, w, b, [1, 1], [1, 1], [1, 1], False, [0, 0], 1))
    out = conv.convolution_aten_shape(call)
    assert out == info(1, 4, 8, 8)
    counts = conv.convolution_aten(replace(call, out=out))
    assert (counts.dot_products, counts.dot_length, counts.adds) == (4 * 8 * 8, 3 * 3 * 3, 4 * 8 * 8)
    call = OpCall("aten", aten.conv2d.padding, (x, w, None, [1, 1], "same"))
    assert conv.conv_function_shape(call) == info(1, 4, 8, 8)
    call = OpCall("aten", aten.conv_transpose2d.input, (info(1, 3, 4, 4), info(3, 2, 2, 2), None, [2, 2]))
    assert conv.conv_transpose_function_shape(call) == info(1, 2, 8, 8)
    # transposed aten.convolution: weight [cin, cout/groups, k, k]
    call = OpCall("aten", aten.convolution.default,
                  (info(1, 4, 5, 5), info(4, 3, 3, 3), None, [2, 2], [1, 1], [1, 1], True, [1, 1], 1))
    assert conv.convolution_aten_shape(call) == info(1, 3, 10, 10)  # (5-1)*2 - 2 + 2 + 1 + 1


def test_transposed_conv_divisible_books_dot_products():
    m = nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1, device="meta")
    call = module_call(m, info(1, 16, 8, 8))
    out = conv.conv_module_shape(call)
    assert out == info(1, 8, 16, 16)  # (8-1)*2 - 2 + 3 + 1
    counts = conv.conv_module(replace(call, out=out))
    mults = 1 * 16 * 8 * 8 * 4 * 4 * 8  # N * cin * in_spatial * k*k * cout
    assert counts.dense_mults == mults
    # E = 8 * 16 * 16 outputs divide M: E dot products of M / E = 16 * 4 * 4 / (2 * 2) = 64 terms (cin * k*k / stride^2)
    assert (counts.dot_products, counts.dot_length) == (8 * 16 * 16, 64)
    assert 8 * 16 * 16 * 64 == mults
    assert counts.dense_adds == mults - 8 * 16 * 16 + 8 * 16 * 16  # sums + bias


def test_transposed_conv_not_divisible_books_partial_sums():
    m = nn.ConvTranspose2d(3, 5, 3, stride=2, padding=1, output_padding=1, bias=False, device="meta")
    call = module_call(m, info(1, 3, 4, 4))
    out = conv.conv_module_shape(call)
    assert out == info(1, 5, 8, 8)  # (4-1)*2 - 2 + 2 + 1 + 1
    counts = conv.conv_module(replace(call, out=out))
    mults = 1 * 3 * 4 * 4 * 3 * 3 * 5  # 2160, not a multiple of E = 320
    assert (counts.dot_products, counts.dot_length) == (4 * 4 * 5 * 3 * 3, 3)  # partial sums over cin
    assert counts.dense_mults == mults
    assert counts.dense_adds == mults - 5 * 8 * 8


def test_transposed_module_output_size_argument():
    m = nn.ConvTranspose1d(2, 2, 3, stride=3, device="meta")
    call = module_call(m, info(1, 2, 4), [1, 2, 12])  # min size (4-1)*3 + 3 = 12, max 14
    assert conv.conv_module_shape(call) == info(1, 2, 12)
    assert conv.conv_module_shape(module_call(m, info(1, 2, 4), output_size=[14])) == info(1, 2, 14)
    with pytest.raises(NotImplementedError):
        conv.conv_module_shape(module_call(m, info(1, 2, 4), output_size=[15]))


@pytest.mark.parametrize("call", [
    OpCall("function", F.conv2d, (info(1, 3, 8, 8), info(4, 2, 3, 3))),  # channels 3 != 2*1
    OpCall("function", F.conv2d, (info(1, 3, 8, 8), info(4, 3, 3, 3)), {"padding": "same", "stride": 2}),
    OpCall("function", F.conv2d, (info(1, 3, 2, 2), info(4, 3, 3, 3))),  # kernel larger than input
    OpCall("function", F.conv2d, (info(3, 8), info(4, 3, 3, 3))),  # rank 2 for a 2d conv
])
def test_shape_rule_refuses_what_torch_refuses(call):
    with pytest.raises(NotImplementedError):
        conv.conv_function_shape(call)
    with pytest.raises(Exception):
        F.conv2d(*(meta(a.shape) for a in call.args), **call.kwargs)


# ----------------------------------------------------------------- properties


@st.composite
def conv_cases(draw):
    nd = draw(st.integers(1, 3))
    groups = draw(st.integers(1, 3))
    cin, cout = groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 3))
    kernel = tuple(draw(st.integers(1, 4)) for _ in range(nd))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(nd))
    padding = tuple(draw(st.integers(0, 2)) for _ in range(nd))
    spatial = tuple(max(draw(st.integers(1, 9)), d * (k - 1) + 1 - 2 * p)
                    for k, d, p in zip(kernel, dilation, padding))
    batch = draw(st.integers(1, 2))
    return nd, groups, cin, cout, kernel, stride, dilation, padding, spatial, batch


@settings(max_examples=50, deadline=None)
@given(conv_cases(), st.booleans())
def test_conv_shape_and_macs_match_pytorch(case, bias):
    nd, groups, cin, cout, kernel, stride, dilation, padding, spatial, batch = case
    m = getattr(nn, f"Conv{nd}d")(cin, cout, kernel, stride, padding, dilation, groups, bias, device="meta")
    x = meta((batch, cin) + spatial)
    call = module_call(m, info(*x.shape))
    out = conv.conv_module_shape(call)
    expected = m(x)
    assert out.shape == tuple(expected.shape)
    counts = conv.conv_module(replace(call, out=out))
    # one dot product per output element, over the kernel volume times cin/g
    assert (counts.dot_products, counts.dot_length) == (expected.numel(), torch.Size(kernel).numel() * (cin // groups))
    assert counts.adds == (expected.numel() if bias else 0)
    fcall = OpCall("function", getattr(F, f"conv{nd}d"), (info(*x.shape), info(*m.weight.shape)),
                   {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups})
    assert conv.conv_function_shape(fcall) == out


@settings(max_examples=50, deadline=None)
@given(conv_cases(), st.integers(0, 2))
def test_transposed_conv_shape_and_mults_match_pytorch(case, extra):
    nd, groups, cin, cout, kernel, stride, dilation, padding, spatial, batch = case
    output_padding = tuple(min(extra, max(s, d) - 1) for s, d in zip(stride, dilation))
    m = getattr(nn, f"ConvTranspose{nd}d")(cin, cout, kernel, stride, padding, output_padding,
                                          groups, False, dilation)
    x = torch.zeros((batch, cin) + spatial)  # on CPU: meta accepts empty outputs that CPU refuses
    call = module_call(m, info(*x.shape))
    try:
        with torch.no_grad():
            expected = tuple(m(x).shape)
    except RuntimeError:
        expected = None
    if expected is None or 0 in expected:  # torch refuses, or accepts an empty output only sometimes
        with pytest.raises(NotImplementedError):
            conv.conv_module_shape(call)
        return
    out = conv.conv_module_shape(call)
    assert out.shape == expected
    counts = conv.conv_module(replace(call, out=out))
    outputs = torch.Size(expected).numel()  # E
    scatter = batch * cin * torch.Size(spatial).numel() * torch.Size(kernel).numel() * (cout // groups)  # M
    partial = scatter // (cin // groups)  # P: one partial sum per (input position, cout, kernel offset)
    assert counts.dense_mults == scatter
    if scatter % outputs == 0:  # E dot products of M / E terms: M - E adds
        assert (counts.dot_products, counts.dot_length, counts.dense_adds) == (outputs, scatter // outputs,
                                                                                scatter - outputs)
    else:  # P partial sums of cin/g terms, then each output sums its partials: M - min(P, E) adds
        assert (counts.dot_products, counts.dot_length, counts.dense_adds) == (partial, cin // groups,
                                                                                scatter - min(partial, outputs))
    fcall = OpCall("function", getattr(F, f"conv_transpose{nd}d"), (info(*x.shape), info(*m.weight.shape)),
                   {"stride": stride, "padding": padding, "output_padding": output_padding,
                    "groups": groups, "dilation": dilation})
    assert conv.conv_transpose_function_shape(fcall) == out


@pytest.mark.parametrize("kwargs", [
    dict(in_channels=3, out_channels=16, kernel_size=3, padding=1),
    dict(in_channels=16, out_channels=16, kernel_size=3, stride=2, groups=16),
    dict(in_channels=8, out_channels=4, kernel_size=(1, 5), dilation=2, groups=2),
])
def test_conv2d_macs_equal_thop(kwargs):
    m = nn.Conv2d(bias=False, **kwargs)
    x = torch.randn(2, kwargs["in_channels"], 12, 12)
    thop_macs, _ = thop.profile(m, inputs=(x,), verbose=False)
    call = module_call(m, info(*x.shape))
    counts = conv.conv_module(replace(call, out=conv.conv_module_shape(call)))
    assert counts.macs == int(thop_macs)


# ----------------------------------------------------------------- registration


def test_every_form_resolves_in_a_registry():
    registry = CounterRegistry(collect(conv))
    targets = [nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
               F.conv1d, F.conv2d, F.conv3d, torch.conv2d, F.conv_transpose1d, F.conv_transpose2d,
               F.conv_transpose3d, aten.convolution.default, aten._convolution.default,
               aten.conv2d.default, aten.conv2d.padding, aten.conv_transpose2d.input]
    for target in targets:
        assert registry.counter(target) is not None, target
        assert registry.shape(target) is not None, target

    class MyConv(nn.Conv2d):
        pass

    assert registry.counter(MyConv).fn is conv.conv_module
    assert registry.counter(F.conv_transpose2d).fn is conv.conv_transpose_function
