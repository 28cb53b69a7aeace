"""Activation counters and shape rules: per-element costs in every calling form."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from micronet.counters import activation
from micronet.records import Counts, TensorInfo
from micronet.registry import CounterRegistry, Method, OpCall, collect

from torch_oracle import execute

aten = torch.ops.aten
#: torch warns about deprecated forms (x.T on 3-d, implicit softmax dims) that the tests run on purpose
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
X = TensorInfo((1, 8, 4, 4))
E = 1 * 8 * 4 * 4  # 128 output elements


# ----------------------------------------------------------------- forms


def make(form, x: TensorInfo) -> OpCall:
    """OpCall of a form ``(kind, target, module, extra args, kwargs)`` on input x."""
    kind, target, module, extra, kwargs = form
    args = (x,) + tuple(extra)
    return OpCall(kind, target, args, kwargs, module=module)


def mod(m: nn.Module):
    return ("module", type(m), m, (), {})


def fn(target, *extra, **kwargs):
    return ("function", target, None, extra, kwargs)


def meth(name, *extra, **kwargs):
    return ("method", Method(name), None, extra, kwargs)


def at(op, *extra, **kwargs):
    return ("aten", op, None, extra, kwargs)


W = TensorInfo((1,))  # a PReLU weight


def test_prelu_weight_must_match_channels_and_dtype():
    x = TensorInfo((2, 3, 4))
    assert activation.shape_prelu(OpCall("function", F.prelu, (x, TensorInfo((3,))))) == x
    for weight in (TensorInfo((2,)), TensorInfo((3,), torch.float64)):
        with pytest.raises(NotImplementedError):
            activation.shape_prelu(OpCall("function", F.prelu, (x, weight)))
    with pytest.raises(RuntimeError):
        F.prelu(torch.zeros(2, 3, 4), torch.zeros(2))

#: activation -> (per-element (mults, adds, other_ops), the counter, forms)
TABLE = {
    "relu": ((1, 0, 0), activation.count_relu, [
        mod(nn.ReLU()), mod(nn.ReLU(inplace=True)), fn(F.relu), fn(F.relu, inplace=True), fn(F.relu_),
        fn(torch.relu), fn(torch.relu_), meth("relu"), meth("relu_"), at(aten.relu.default), at(aten.relu_.default)]),
    "relu6": ((1, 0, 0), activation.count_relu, [mod(nn.ReLU6()), fn(F.relu6), at(aten.relu6.default)]),
    "hardtanh": ((1, 0, 0), activation.count_relu, [
        mod(nn.Hardtanh(-2.0, 2.0)), fn(F.hardtanh, -1.0, 1.0), fn(F.hardtanh_),
        at(aten.hardtanh.default, -1.0, 1.0)]),
    "leaky_relu": ((1, 0, 0), activation.count_relu, [
        mod(nn.LeakyReLU(0.2)), fn(F.leaky_relu, 0.1), fn(F.leaky_relu_), at(aten.leaky_relu.default, 0.1)]),
    "prelu": ((1, 0, 0), activation.count_relu, [
        mod(nn.PReLU()), fn(F.prelu, W), meth("prelu", W), at(aten._prelu_kernel.default, W)]),
    "rrelu": ((1, 0, 0), activation.count_relu, [mod(nn.RReLU().eval()), fn(F.rrelu)]),
    "threshold": ((1, 0, 0), activation.count_relu, [
        mod(nn.Threshold(0.1, 20.0)), fn(F.threshold, 0.1, 20.0), fn(torch.threshold, 0.1, 0.0)]),
    "hardshrink": ((1, 0, 0), activation.count_relu, [mod(nn.Hardshrink()), fn(F.hardshrink), meth("hardshrink")]),
    "sigmoid": ((2, 1, 0), activation.count_sigmoid, [
        mod(nn.Sigmoid()), fn(torch.sigmoid), fn(F.sigmoid), fn(torch.sigmoid_), meth("sigmoid"),
        meth("sigmoid_"), at(aten.sigmoid.default)]),
    "silu": ((3, 1, 0), activation.count_silu, [
        mod(nn.SiLU()), mod(nn.SiLU(inplace=True)), fn(F.silu), fn(F.silu, inplace=True), at(aten.silu.default),
        at(aten.silu_.default)]),
    "hardsigmoid": ((2, 1, 0), activation.count_hardsigmoid, [
        mod(nn.Hardsigmoid()), fn(F.hardsigmoid), at(aten.hardsigmoid.default)]),
    "hardswish": ((3, 1, 0), activation.count_hardswish, [
        mod(nn.Hardswish()), fn(F.hardswish, inplace=True), at(aten.hardswish.default)]),
    "tanh": ((0, 0, 1), activation.count_tanh, [
        mod(nn.Tanh()), fn(torch.tanh), fn(F.tanh), meth("tanh"), meth("tanh_"), at(aten.tanh.default)]),
    "gelu": ((3, 1, 1), activation.count_gelu, [mod(nn.GELU()), fn(F.gelu), at(aten.gelu.default)]),
    "gelu_tanh": ((6, 2, 1), activation.count_gelu, [
        mod(nn.GELU("tanh")), fn(F.gelu, approximate="tanh"), at(aten.gelu.default, approximate="tanh")]),
    "softplus": ((1, 1, 2), activation.count_softplus, [
        mod(nn.Softplus()), fn(F.softplus), at(aten.softplus.default)]),
    "softplus_beta": ((3, 1, 2), activation.count_softplus, [
        mod(nn.Softplus(beta=2.0)), fn(F.softplus, beta=0.5), at(aten.softplus.default, 2.0, 20.0)]),
    "elu": ((1, 1, 1), activation.count_elu, [mod(nn.ELU()), fn(F.elu), fn(F.elu_), at(aten.elu.default)]),
    "elu_alpha": ((2, 1, 1), activation.count_elu, [mod(nn.ELU(0.5)), fn(F.elu, 0.5), at(aten.elu.default, 0.5)]),
    "selu": ((3, 1, 1), activation.count_elu, [
        mod(nn.SELU()), fn(F.selu), fn(torch.selu), at(aten.selu.default),
        at(aten.elu.default, activation.SELU_ALPHA, activation.SELU_SCALE)]),
    "celu": ((1, 1, 1), activation.count_elu, [mod(nn.CELU()), fn(F.celu), fn(torch.celu), at(aten.celu.default)]),
    "celu_alpha": ((3, 1, 1), activation.count_elu, [
        mod(nn.CELU(2.0)), fn(F.celu, 2.0), fn(torch.celu, 0.5), at(aten.celu.default, 2.0)]),
    "mish": ((2, 1, 3), activation.count_mish, [mod(nn.Mish()), fn(F.mish), at(aten.mish.default)]),
    "logsigmoid": ((2, 1, 1), activation.count_logsigmoid, [
        mod(nn.LogSigmoid()), fn(F.logsigmoid), at(aten.log_sigmoid.default)]),
    "softsign": ((1, 1, 1), activation.count_softsign, [mod(nn.Softsign()), fn(F.softsign)]),
    "tanhshrink": ((0, 1, 1), activation.count_tanhshrink, [mod(nn.Tanhshrink()), fn(F.tanhshrink)]),
    "softshrink": ((1, 1, 0), activation.count_softshrink, [
        mod(nn.Softshrink()), fn(F.softshrink, 0.3), at(aten.softshrink.default)]),
}
FORMS = [(name, form) for name, (_, _, forms) in TABLE.items() for form in forms]


@pytest.mark.parametrize("name,form", FORMS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(FORMS)])
def test_per_element_counts_in_every_form(name, form):
    (mults, adds, other), fn_, _ = TABLE[name]
    call = make(form, X)
    counts = fn_(OpCall(call.kind, call.target, call.args, call.kwargs, call.module, out=X))
    assert counts == Counts(mults=mults * E, adds=adds * E, other_ops=other * E)


@pytest.mark.parametrize("name,form", FORMS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(FORMS)])
def test_every_form_is_registered_to_its_counter_and_shape_rule(name, form):
    registry = CounterRegistry(collect(activation))
    _, fn_, _ = TABLE[name]
    call = make(form, X)
    assert registry.counter(call.target).fn is fn_
    expected = activation.shape_prelu if name == "prelu" else activation.shape_same
    assert registry.shape(call.target).fn is expected


def test_rules_fixed_by_the_reference_counter():
    # RULES.md: relu (1, 0), swish (3, 1), sigmoid (2, 1), nothing else
    x = TensorInfo((1, 64, 56, 56))
    e = 1 * 64 * 56 * 56
    relu = OpCall("module", nn.ReLU, (x,), {}, module=nn.ReLU(), out=x)
    silu = OpCall("module", nn.SiLU, (x,), {}, module=nn.SiLU(), out=x)
    sigmoid = OpCall("function", torch.sigmoid, (x,), {}, out=x)
    assert activation.count_relu(relu) == Counts(mults=e)
    assert activation.count_silu(silu) == Counts(mults=3 * e, adds=e)
    assert activation.count_sigmoid(sigmoid) == Counts(mults=2 * e, adds=e)


def test_method_targets_exist_on_tensor():
    registry_targets = [t for r in collect(activation) for t in r.targets]
    for target in registry_targets:
        if isinstance(target, Method):
            assert hasattr(torch.Tensor, target.name), target


# ------------------------------------------------------------------ softmax

#: (form, n): each softmax form on x = [2, 6, 3, 5] and the size n of the dimension it reduces
SOFTMAX_FORMS = [
    (mod(nn.Softmax(dim=1)), 6), (mod(nn.Softmax(dim=-1)), 5),
    (mod(nn.Softmax2d()), 6),  # dim -3 of a 4-d input
    (fn(F.softmax, 1), 6), (fn(F.softmax, dim=-1), 5), (fn(F.softmax, 1, 3, torch.float64), 6),
    (fn(F.softmax), 6),  # legacy implicit dim: 1 for a 4-d input
    (fn(torch.softmax, 2), 3), (fn(torch.softmax, 1, torch.float64), 6),
    (meth("softmax", 0), 2), (meth("softmax", -1, dtype=torch.float64), 5),
    (at(aten._softmax.default, 1, False), 6), (at(aten.softmax.int, 2), 3),
]


@pytest.mark.parametrize("form, n", SOFTMAX_FORMS)
def test_softmax_counts_per_row(form, n):
    x = TensorInfo((2, 6, 3, 5))
    call = make(form, x)
    out = execute(call)
    call = OpCall(call.kind, call.target, call.args, call.kwargs, call.module, out=out)
    e = 2 * 6 * 3 * 5  # 180 elements in 180 / n rows of n
    # per row: n exp, n - 1 adds, n divisions
    assert activation.count_softmax(call) == Counts(mults=e, adds=e // n * (n - 1), other_ops=e)


def test_softmax_dims_closed_form():
    x = TensorInfo((2, 10))
    out = TensorInfo((2, 10))
    call = OpCall("module", nn.Softmax, (x,), {}, module=nn.Softmax(dim=1), out=out)
    # 2 rows of 10: 20 exp, 2*9 adds, 20 divisions
    assert activation.count_softmax(call) == Counts(mults=20, adds=18, other_ops=20)
    log = OpCall("module", nn.LogSoftmax, (x,), {}, module=nn.LogSoftmax(dim=1), out=out)
    # 20 exp + 2 logs, 2*9 adds (sums) + 20 subtractions
    assert activation.count_log_softmax(log) == Counts(adds=18 + 20, other_ops=22)
    softmin = OpCall("function", F.softmin, (x, 1), {}, out=out)
    assert activation.count_softmin(softmin) == Counts(mults=20, adds=18, other_ops=40)
    # legacy implicit dim: 0 for 0-, 1- and 3-d inputs, else 1
    x3 = TensorInfo((4, 3, 2))
    implicit = OpCall("function", F.softmax, (x3,), {}, out=x3)
    assert activation._softmax_dim(implicit) == 0
    assert activation.count_softmax(implicit) == Counts(mults=24, adds=6 * 3, other_ops=24)


@pytest.mark.parametrize("form", [form for form, _ in SOFTMAX_FORMS] + [
    fn(F.log_softmax, 1), fn(F.softmin, 0), mod(nn.LogSoftmax(1)), at(aten._log_softmax.default, 0, False),
    meth("log_softmax", 1)])
def test_softmax_shape_rule_matches_torch(form):
    call = make(form, TensorInfo((2, 3, 4, 5)))
    assert activation.shape_softmax(call) == execute(call)


def test_softmax_half_to_float_and_registration():
    x = TensorInfo((2, 3), torch.float16)
    assert activation.shape_softmax(OpCall("aten", aten._softmax.default, (x, 1, True))).dtype == torch.float32
    assert activation.shape_softmax(OpCall("aten", aten._softmax.default, (x, 1, False))).dtype == torch.float16
    registry = CounterRegistry(collect(activation))
    for target in activation.SOFTMAX:
        assert registry.counter(target).fn is activation.count_softmax
    assert registry.counter(aten._log_softmax.default).fn is activation.count_log_softmax
    assert registry.counter(nn.Softmin).fn is activation.count_softmin


# ---------------------------------------------------------------------- glu


def test_glu_halves_dim_and_counts_per_output():
    x = TensorInfo((2, 8, 6))
    call = OpCall("module", nn.GLU, (x,), {}, module=nn.GLU(dim=1))
    out = activation.shape_glu(call)
    assert out == TensorInfo((2, 4, 6)) == execute(call)
    e = 2 * 4 * 6  # output elements: a * sigmoid(b)
    assert activation.count_glu(OpCall("module", nn.GLU, (x,), {}, module=nn.GLU(1), out=out)) == Counts(
        mults=3 * e, adds=e)
    with pytest.raises(NotImplementedError):
        activation.shape_glu(OpCall("function", F.glu, (TensorInfo((2, 3)),), {}))


# ---------------------------------------------------------- property tests

shapes = st.lists(st.integers(1, 5), min_size=0, max_size=4).map(tuple)
dtypes = st.sampled_from([torch.float32, torch.float64])


@settings(max_examples=50, deadline=None)
@given(shape=shapes, dtype=dtypes, index=st.integers(0, len(FORMS) - 1))
def test_same_shape_rule_matches_torch(shape, dtype, index):
    name, form = FORMS[index]
    x = TensorInfo(shape, dtype)
    call = make(form, x)
    if form[0] == "module":
        call.module.to(dtype)
    rule = activation.shape_prelu if name == "prelu" else activation.shape_same
    if name == "prelu" and not shape:  # torch broadcasts a 0-dim input to the weight's [1]
        with pytest.raises(NotImplementedError):
            rule(call)
        return
    try:
        expected = execute(call)
    except (RuntimeError, ValueError, IndexError):
        with pytest.raises(NotImplementedError):
            rule(call)
        return
    assert rule(call) == expected


@settings(max_examples=50, deadline=None)
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=4).map(tuple), data=st.data())
def test_softmax_and_glu_rules_match_torch(shape, data):
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    x = TensorInfo(shape)
    for target in (F.softmax, F.log_softmax, F.softmin, torch.softmax):
        call = OpCall("function", target, (x, dim), {})
        assert activation.shape_softmax(call) == execute(call)
    doubled = TensorInfo(tuple(2 * s if i == dim % len(shape) else s for i, s in enumerate(shape)))
    call = OpCall("function", F.glu, (doubled, dim), {})
    assert activation.shape_glu(call) == execute(call)


def test_integer_inputs_fall_back_to_meta():
    with pytest.raises(NotImplementedError):
        activation.shape_same(OpCall("function", torch.sigmoid, (TensorInfo((2,), torch.int64),), {}))
