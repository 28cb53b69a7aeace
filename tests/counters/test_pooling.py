"""Pooling and reduction counters and shape rules."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from micronet.counters import pooling
from micronet.records import Counts, TensorInfo
from micronet.registry import CounterRegistry, Method, OpCall, collect

from torch_oracle import check, run

aten = torch.ops.aten
#: torch warns about deprecated forms (x.T on 3-d, implicit softmax dims) that the tests run on purpose
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

# ---------------------------------------------------------- closed forms


def test_global_average_pool_is_rules_globalavg():
    x = TensorInfo((1, 1280, 7, 7))
    expected = Counts(mults=1280, adds=(7 * 7 - 1) * 1280)  # RULES: C mults, (H*W - 1)*C adds
    calls = [
        run("module", nn.AdaptiveAvgPool2d, x, module=nn.AdaptiveAvgPool2d(1)),
        run("function", F.adaptive_avg_pool2d, x, (1, 1)),
        run("aten", aten._adaptive_avg_pool2d.default, x, [1, 1]),
    ]
    for call in calls:
        assert pooling.count_adaptive_avg(call) == expected
    means = [
        run("method", Method("mean"), x, (2, 3)),
        run("method", Method("mean"), x, [-1, -2], True),
        run("function", torch.mean, x, dim=(2, 3), keepdim=True),
        run("aten", aten.mean.dim, x, [2, 3], True),
    ]
    for call in means:
        assert pooling.count_mean(call) == expected


def test_avg_pool_counts_k_minus_one_adds_and_one_mult():
    x = TensorInfo((1, 16, 32, 32))
    e = 1 * 16 * 16 * 16  # 3x3 stride 2 pad 1 -> 16x16
    expected = Counts(mults=e, adds=(9 - 1) * e)
    for call in (
        run("module", nn.AvgPool2d, x, module=nn.AvgPool2d(3, 2, 1)),
        run("module", nn.AvgPool2d, x, module=nn.AvgPool2d(3, 2, 1, count_include_pad=False, divisor_override=4)),
        run("function", F.avg_pool2d, x, 3, 2, 1),
        run("function", F.avg_pool2d, x, kernel_size=(3, 3), stride=2, padding=1),
        run("aten", aten.avg_pool2d.default, x, [3, 3], [2, 2], [1, 1]),
    ):
        assert call.out == TensorInfo((1, 16, 16, 16))
        assert pooling.count_avg_pool(call) == expected
    x1 = TensorInfo((2, 4, 10))
    call = run("function", F.avg_pool1d, x1, 4)  # stride defaults to the kernel: 2*4*2 outputs
    assert pooling.count_avg_pool(call) == Counts(mults=2 * 4 * 2, adds=3 * 2 * 4 * 2)
    x3 = TensorInfo((1, 2, 4, 4, 4))
    call = run("module", nn.AvgPool3d, x3, module=nn.AvgPool3d(2))  # 1*2*2*2*2 outputs of 8
    assert pooling.count_avg_pool(call) == Counts(mults=16, adds=7 * 16)


def test_max_pool_counts_comparisons_as_adds_and_indices_free():
    x = TensorInfo((1, 64, 112, 112))
    e = 1 * 64 * 56 * 56
    for call in (
        run("module", nn.MaxPool2d, x, module=nn.MaxPool2d(3, 2, 1)),
        run("module", nn.MaxPool2d, x, module=nn.MaxPool2d(3, 2, 1, return_indices=True)),
        run("function", F.max_pool2d, x, 3, 2, 1),
        run("function", F.max_pool2d, x, 3, 2, 1, return_indices=True),
        run("function", torch.max_pool2d, x, [3, 3], [2, 2], [1, 1]),
        run("aten", aten.max_pool2d_with_indices.default, x, [3, 3], [2, 2], [1, 1]),
    ):
        assert pooling.count_max_pool(call) == Counts(adds=(9 - 1) * e)
    dilated = run("module", nn.MaxPool2d, x, module=nn.MaxPool2d(2, 2, 0, dilation=2))  # 55x55 windows of 4
    assert pooling.count_max_pool(dilated) == Counts(adds=3 * 64 * 55 * 55)


def test_lp_pool_counts():
    x = TensorInfo((1, 3, 8, 8))
    e = 3 * 4 * 4
    two = run("module", nn.LPPool2d, x, module=nn.LPPool2d(2, 2))
    # 4 squares, 3 adds, 1 root per output
    assert pooling.count_lp_pool(two) == Counts(mults=4 * e, adds=3 * e, other_ops=e)
    three = run("function", F.lp_pool2d, x, 3.0, 2)
    assert pooling.count_lp_pool(three) == Counts(adds=3 * e, other_ops=5 * e)


def test_reductions_closed_form():
    x = TensorInfo((2, 3, 4))
    assert pooling.count_sum(run("function", torch.sum, x)) == Counts(adds=23)
    assert pooling.count_sum(run("method", Method("sum"), x, 1)) == Counts(adds=2 * 4 * 2)
    assert pooling.count_sum(run("aten", aten.sum.dim_IntList, x, [0, 2])) == Counts(adds=3 * 7)
    assert pooling.count_mean(run("function", torch.mean, x)) == Counts(mults=1, adds=23)
    assert pooling.count_amax(run("function", torch.amax, x, (1, 2))) == Counts(adds=2 * 11)
    assert pooling.count_amax(run("method", Method("amin"), x)) == Counts(adds=23)
    assert pooling.count_max(run("function", torch.max, x)) == Counts(adds=23)
    values = run("function", torch.max, x, 1, True)
    assert values.out == (TensorInfo((2, 1, 4)), TensorInfo((2, 1, 4), torch.int64))
    assert pooling.count_max(values) == Counts(adds=2 * 4 * 2)
    assert pooling.count_max(run("method", Method("min"), x, dim=-1)) == Counts(adds=6 * 3)
    binary = run("function", torch.max, x, TensorInfo((3, 1)))
    assert pooling.count_max(binary) == Counts(adds=2 * 3 * 4)  # one comparison per element
    assert pooling.count_max(run("aten", aten.max.other, x, x)) == Counts(adds=24)


def test_max_dim_returns_a_named_tuple():
    call = OpCall("function", torch.max, (TensorInfo((2, 3)), 1))
    out = pooling.shape_max(call)
    assert out.values == TensorInfo((2,)) and out.indices == TensorInfo((2,), torch.int64)
    assert type(out) is type(torch.max(torch.zeros(2, 3), 1))


# ------------------------------------------------------ adaptive exactness


def torch_windows(size: int, out: int) -> list[int]:
    """Window lengths as torch runs them: adaptive max pool's argmax of an
    increasing input is each window's end - 1, of a decreasing one its start."""
    up = torch.arange(size, dtype=torch.float32).view(1, 1, size)
    _, ends = F.adaptive_max_pool1d(up, out, return_indices=True)
    _, starts = F.adaptive_max_pool1d(-up, out, return_indices=True)
    return (ends - starts + 1).flatten().tolist()


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 40), c=st.integers(1, 3), h=st.integers(1, 17), w=st.integers(1, 17),
       oh=st.integers(1, 17), ow=st.integers(1, 17))
def test_adaptive_avg_pool_counts_equal_brute_force_window_sums(n, c, h, w, oh, ow):
    x = TensorInfo((n, c, h, w))
    call = run("function", F.adaptive_avg_pool2d, x, (oh, ow))
    rows, cols = torch_windows(h, oh), torch_windows(w, ow)
    adds = sum(kh * kw - 1 for kh in rows for kw in cols) * n * c  # per output (k - 1) adds
    assert pooling.adaptive_windows(h, oh) == rows
    assert pooling.count_adaptive_avg(call) == Counts(mults=n * c * oh * ow, adds=adds)
    assert pooling.count_adaptive_max(run("module", nn.AdaptiveMaxPool2d, x, module=nn.AdaptiveMaxPool2d(
        (oh, ow)))) == Counts(adds=adds)


def test_adaptive_non_divisible_closed_form():
    # 7 -> 3: windows [0,3), [2,5), [4,7): 3 + 3 + 3; 5 -> 2: [0,3), [2,5): 3 + 3
    assert pooling.adaptive_windows(7, 3) == [3, 3, 3]
    assert pooling.adaptive_windows(5, 2) == [3, 3]
    call = run("module", nn.AdaptiveAvgPool2d, TensorInfo((1, 2, 7, 5)), module=nn.AdaptiveAvgPool2d((3, 2)))
    assert pooling.count_adaptive_avg(call) == Counts(mults=2 * 6, adds=2 * 6 * (9 - 1))


# ------------------------------------------------------------ registration


def test_targets_resolve_to_their_rules():
    registry = CounterRegistry(collect(pooling))
    expectations = [
        (pooling.MAX_POOL, pooling.count_max_pool, pooling.shape_pool),
        (pooling.AVG_POOL, pooling.count_avg_pool, pooling.shape_pool),
        (pooling.LP_POOL, pooling.count_lp_pool, pooling.shape_pool),
        (pooling.ADAPTIVE_AVG, pooling.count_adaptive_avg, pooling.shape_adaptive),
        (pooling.ADAPTIVE_MAX, pooling.count_adaptive_max, pooling.shape_adaptive),
    ]
    for table, count, shape in expectations:
        for targets in table.values():
            for target in targets:
                assert registry.counter(target).fn is count, target
                assert registry.shape(target).fn is shape, target
    for targets, count, shape in ((pooling.MEAN, pooling.count_mean, pooling.shape_mean),
                                  (pooling.SUM, pooling.count_sum, pooling.shape_sum),
                                  (pooling.AMAX, pooling.count_amax, pooling.shape_amax),
                                  (pooling.MAX, pooling.count_max, pooling.shape_max)):
        for target in targets:
            assert registry.counter(target).fn is count and registry.shape(target).fn is shape
    # overloads resolve through their packet
    assert registry.counter(aten.max_pool2d_with_indices.default).fn is pooling.count_max_pool
    assert registry.counter(aten.mean.dim).fn is pooling.count_mean
    assert registry.counter(nn.AdaptiveAvgPool2d).fn is pooling.count_adaptive_avg


# ---------------------------------------------------------- property tests

MAX_FORMS = {1: (nn.MaxPool1d, F.max_pool1d, torch.max_pool1d_with_indices, aten.max_pool1d.default),
             2: (nn.MaxPool2d, F.max_pool2d, torch.max_pool2d, aten.max_pool2d_with_indices.default),
             3: (nn.MaxPool3d, F.max_pool3d_with_indices, torch.max_pool3d, aten.max_pool3d_with_indices.default)}
AVG_FORMS = {1: (nn.AvgPool1d, F.avg_pool1d, aten.avg_pool1d.default),
             2: (nn.AvgPool2d, F.avg_pool2d, aten.avg_pool2d.default),
             3: (nn.AvgPool3d, F.avg_pool3d, aten.avg_pool3d.default)}


def window(n):
    return st.fixed_dictionaries(dict(
        size=st.lists(st.integers(1, 9), min_size=n, max_size=n),
        k=st.integers(1, 4), s=st.integers(1, 3), p=st.integers(0, 2), d=st.integers(1, 2),
        ceil=st.booleans(), batched=st.booleans(), indices=st.booleans()))


@settings(max_examples=50, deadline=None)
@given(n=st.sampled_from([1, 2, 3]), data=st.data())
def test_max_pool_shape_matches_torch(n, data):
    w = data.draw(window(n))
    form = data.draw(st.sampled_from(MAX_FORMS[n]))
    x = TensorInfo(((2,) if w["batched"] else ()) + (3,) + tuple(w["size"]))
    k, s, p, d, ceil = w["k"], w["s"], w["p"], w["d"], w["ceil"]
    if isinstance(form, type):
        call = OpCall("module", form, (x,), {}, module=form(k, s, p, d, return_indices=w["indices"], ceil_mode=ceil))
    elif form in (F.max_pool1d, F.max_pool2d):
        call = OpCall("function", form, (x, k, s, p, d, ceil, w["indices"]))
    else:
        kind = "aten" if isinstance(form, torch._ops.OpOverload) else "function"
        call = OpCall(kind, form, (x, [k] * n, [s] * n, [p] * n, [d] * n, ceil))
    check(pooling.shape_pool, call)


@settings(max_examples=50, deadline=None)
@given(n=st.sampled_from([1, 2, 3]), data=st.data())
def test_avg_pool_shape_matches_torch(n, data):
    w = data.draw(window(n))
    form = data.draw(st.sampled_from(AVG_FORMS[n]))
    x = TensorInfo(((2,) if w["batched"] else ()) + (3,) + tuple(w["size"]))
    k, s, p, ceil = w["k"], w["s"], w["p"], w["ceil"]
    if isinstance(form, type):
        call = OpCall("module", form, (x,), {}, module=form(k, s, p, ceil_mode=ceil, count_include_pad=w["indices"]))
    elif isinstance(form, torch._ops.OpOverload):
        call = OpCall("aten", form, (x, [k] * n, [s] * n, [p] * n, ceil))
    else:
        call = OpCall("function", form, (x, k, s, p, ceil))
    check(pooling.shape_pool, call)


@settings(max_examples=50, deadline=None)
@given(n=st.sampled_from([1, 2]), data=st.data())
def test_lp_pool_shape_matches_torch(n, data):
    w = data.draw(window(n))
    x = TensorInfo((2, 3) + tuple(w["size"]))
    module = (nn.LPPool1d if n == 1 else nn.LPPool2d)(2, w["k"], w["s"], ceil_mode=w["ceil"])
    check(pooling.shape_pool, OpCall("module", type(module), (x,), {}, module=module))
    function = F.lp_pool1d if n == 1 else F.lp_pool2d
    check(pooling.shape_pool, OpCall("function", function, (x, 3.0, w["k"], w["s"], w["ceil"])))


ADAPTIVE_FORMS = {
    1: (nn.AdaptiveAvgPool1d, F.adaptive_avg_pool1d, aten.adaptive_avg_pool1d.default, nn.AdaptiveMaxPool1d,
        F.adaptive_max_pool1d, torch.adaptive_max_pool1d, aten.adaptive_max_pool1d.default),
    2: (nn.AdaptiveAvgPool2d, F.adaptive_avg_pool2d, aten._adaptive_avg_pool2d.default, nn.AdaptiveMaxPool2d,
        F.adaptive_max_pool2d, F.adaptive_max_pool2d_with_indices, aten.adaptive_max_pool2d.default),
    3: (nn.AdaptiveAvgPool3d, F.adaptive_avg_pool3d, aten._adaptive_avg_pool3d.default, nn.AdaptiveMaxPool3d,
        F.adaptive_max_pool3d, aten.adaptive_max_pool3d.default),
}


@settings(max_examples=50, deadline=None)
@given(n=st.sampled_from([1, 2, 3]), data=st.data())
def test_adaptive_pool_shape_matches_torch(n, data):
    size = data.draw(st.lists(st.integers(1, 9), min_size=n, max_size=n))
    form = data.draw(st.sampled_from(ADAPTIVE_FORMS[n]))
    plain = isinstance(form, torch._ops.OpOverload) or form in (torch.adaptive_max_pool1d, F.adaptive_avg_pool1d)
    out = data.draw(st.lists(st.integers(1, 9) if plain else st.one_of(st.none(), st.integers(1, 9)),
                             min_size=n, max_size=n))
    batched = data.draw(st.booleans())
    x = TensorInfo(((2,) if batched else ()) + (3,) + tuple(size))
    indices = data.draw(st.booleans())
    output_size = out[0] if n == 1 and data.draw(st.booleans()) else tuple(out)
    if isinstance(form, type):
        module = form(output_size, return_indices=indices) if "Max" in form.__name__ else form(output_size)
        call = OpCall("module", form, (x,), {}, module=module)
    elif form in (F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d):
        call = OpCall("function", form, (x, output_size, indices))
    else:
        kind = "aten" if isinstance(form, torch._ops.OpOverload) else "function"
        call = OpCall(kind, form, (x, list(out) if kind == "aten" else output_size))
    check(pooling.shape_adaptive, call)


REDUCTIONS = [(torch.mean, pooling.shape_mean), (Method("mean"), pooling.shape_mean),
              (torch.sum, pooling.shape_sum), (Method("sum"), pooling.shape_sum),
              (torch.amax, pooling.shape_amax), (Method("amin"), pooling.shape_amax),
              (torch.max, pooling.shape_max), (Method("min"), pooling.shape_max)]


@settings(max_examples=50, deadline=None)
@given(shape=st.lists(st.integers(1, 4), min_size=0, max_size=4).map(tuple), data=st.data())
def test_reduction_shapes_match_torch(shape, data):
    target, rule = data.draw(st.sampled_from(REDUCTIONS))
    rank = max(len(shape), 1)
    dim_strategy = st.integers(-rank, rank - 1)
    if target not in (torch.max, Method("min")):
        dim_strategy = st.one_of(dim_strategy, st.lists(st.integers(-rank, rank - 1), min_size=1, max_size=3))
    dim = data.draw(dim_strategy)
    keepdim = data.draw(st.booleans())
    dtype = data.draw(st.sampled_from([torch.float32, torch.float64]))
    x = TensorInfo(shape, dtype)
    kind = "method" if isinstance(target, Method) else "function"
    check(rule, OpCall(kind, target, (x, dim, keepdim)))
    check(rule, OpCall(kind, target, (x,), {"dim": dim}))
    check(rule, OpCall(kind, target, (x,)))


@settings(max_examples=30, deadline=None)
@given(a=st.lists(st.integers(1, 3), max_size=3).map(tuple), b=st.lists(st.integers(1, 3), max_size=3).map(tuple))
def test_binary_max_broadcasts_like_torch(a, b):
    check(pooling.shape_max, OpCall("function", torch.max, (TensorInfo(a), TensorInfo(b))))
    check(pooling.shape_max, OpCall("method", Method("min"), (TensorInfo(a), TensorInfo(b, torch.float64))))


def test_sum_of_integers_is_int64_and_mean_of_integers_falls_back():
    x = TensorInfo((2, 3), torch.int32)
    assert pooling.shape_sum(OpCall("function", torch.sum, (x, 1))) == TensorInfo((2,), torch.int64)
    with pytest.raises(NotImplementedError):
        pooling.shape_mean(OpCall("function", torch.mean, (x,)))
    assert pooling.shape_mean(OpCall("function", torch.mean, (TensorInfo((2, 3)),), {"dtype": torch.float64})) \
        == TensorInfo((), torch.float64)


# ------------------------------------------------------------- running scans


def test_cumulative_scans_closed_form():
    x = TensorInfo((2, 3, 4, 5))
    # along dim 1: 2*4*5 lines of 3 -> 2 steps each
    for call in (run("function", torch.cumsum, x, 1), run("method", Method("cumsum"), x, dim=1),
                 run("aten", aten.cumsum.default, x, 1)):
        assert pooling.count_cumsum(call) == Counts(adds=2 * 4 * 5 * 2)
    assert pooling.count_cumprod(run("function", torch.cumprod, x, -1)) == Counts(mults=2 * 3 * 4 * 4)
    assert pooling.count_cumsum(run("function", torch.cumsum, TensorInfo(()), 0)) == Counts()  # 0-dim: a copy


@settings(max_examples=60, deadline=None)
@given(shape=st.lists(st.integers(0, 4), max_size=4).map(tuple), data=st.data())
def test_cumulative_scan_shapes_match_torch(shape, data):
    target = data.draw(st.sampled_from([torch.cumsum, Method("cumsum"), Method("cumsum_"), torch.cumprod,
                                        Method("cumprod"), aten.cumsum.default]))
    rank = max(len(shape), 1)
    dim = data.draw(st.integers(-rank - 1, rank))  # out of range too: torch raises, the rule refuses
    dtype = data.draw(st.sampled_from([torch.float32, torch.int32, torch.bool, torch.float64]))
    kwargs = data.draw(st.sampled_from([{}, {"dtype": torch.float64}, {"dtype": torch.int64}]))
    kind = "method" if isinstance(target, Method) else "aten" if isinstance(target, torch._ops.OpOverload) \
        else "function"
    # in place into another dtype: torch's own checks differ by kernel, so the rule may leave it to meta
    check(pooling.shape_cumulative, OpCall(kind, target, (TensorInfo(shape, dtype), dim), kwargs),
          may_refuse=target in (Method("cumsum_"), Method("cumprod_")), fill=torch.ones)


# ------------------------------------------------------ variance, all / any


def test_variance_and_std_closed_form():
    x = TensorInfo((2, 8, 5))
    k, e = 5, 2 * 8  # over the last dim: 16 outputs of 5 values
    var = Counts(mults=e * (k + 2), adds=e * (3 * k - 2))
    for call in (run("function", torch.var, x, -1), run("method", Method("var"), x, dim=2, keepdim=True),
                 run("aten", aten.var.correction, x, [2], correction=0),
                 run("function", torch.var_mean, x, 2)):
        assert pooling.count_var(call) == var
    std = run("function", torch.std, x, (1, 2))  # 2 outputs of 40 values
    assert pooling.count_std(std) == Counts(mults=2 * 42, adds=2 * 118, other_ops=2)
    every = run("function", torch.all, TensorInfo((3, 4), torch.bool), fill=torch.ones)
    assert pooling.count_all_any(every) == Counts(other_ops=11)


@settings(max_examples=60, deadline=None)
@given(shape=st.lists(st.integers(1, 4), min_size=0, max_size=3).map(tuple), data=st.data())
def test_variance_and_all_shapes_match_torch(shape, data):
    target = data.draw(st.sampled_from([torch.var, Method("std"), torch.var_mean, torch.std_mean,
                                        torch.all, Method("any")]))
    rank = max(len(shape), 1)
    dim = data.draw(st.one_of(st.none(), st.integers(-rank, rank - 1), st.lists(st.integers(-rank, rank - 1),
                                                                                 min_size=1, max_size=2)))
    keepdim = data.draw(st.booleans())
    kind = "method" if isinstance(target, Method) else "function"
    variance = target not in (torch.all, Method("any"))
    dtype = data.draw(st.sampled_from([torch.float32, torch.float64] if variance else [torch.bool, torch.float32]))
    if not variance and isinstance(dim, list):
        dim = dim[0]  # all / any take one dim
    args = (TensorInfo(shape, dtype),) if dim is None else (TensorInfo(shape, dtype), dim)
    check(pooling.shape_var if variance else pooling.shape_all_any,
          OpCall(kind, target, args, {"keepdim": keepdim} if dim is not None else {}), fill=torch.ones)
    if variance:  # the legacy (input, unbiased) form reduces every dim
        check(pooling.shape_var, OpCall(kind, target, (TensorInfo(shape, dtype), False)), fill=torch.ones)
