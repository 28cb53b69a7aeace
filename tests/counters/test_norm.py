"""Normalisation counters: folded BatchNorm, run-time LayerNorm / GroupNorm / InstanceNorm / RMSNorm."""
from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from micronet.counters import norm
from micronet.records import Counts, TensorInfo
from micronet.registry import CounterRegistry, OpCall, collect

aten = torch.ops.aten


def info(*shape, dtype=torch.float32) -> TensorInfo:
    return TensorInfo(tuple(shape), dtype)


def module_call(m: nn.Module, x: TensorInfo) -> OpCall:
    return OpCall("module", type(m), (x,), {}, module=m, out=x)


def runtime(groups: int, n: int, weight: bool = True, bias: bool = True) -> Counts:
    """The module docstring's table, written out per group."""
    adds = (n - 1) + (n + n - 1) + 1 + n + (n if bias else 0)   # mean, var, eps, centre, bias
    mults = 1 + (n + 1) + n + (n if weight else 0)              # mean, var, rstd, weight
    return Counts(mults=groups * mults, adds=groups * adds, other_ops=groups)


class Op:
    """A number that counts the arithmetic done with it (to check the table's sums)."""

    tally = {"mults": 0, "adds": 0, "other_ops": 0}

    def __init__(self, value: float):
        self.value = value

    def _do(self, kind, value):
        Op.tally[kind] += 1
        return Op(value)

    def __add__(self, other): return self._do("adds", self.value + _v(other))
    def __sub__(self, other): return self._do("adds", self.value - _v(other))
    def __mul__(self, other): return self._do("mults", self.value * _v(other))
    def __truediv__(self, other): return self._do("mults", self.value / _v(other))
    def rsqrt(self): return self._do("other_ops", 1 / math.sqrt(self.value))


def _v(x):
    return x.value if isinstance(x, Op) else x


def two_pass_norm(xs: list[Op], weight: bool, bias: bool) -> list[Op]:
    """A plain two-pass normalisation of one group, recomputing ``x - mean`` when normalising."""
    total = xs[0]
    for x in xs[1:]:
        total = total + x
    mean = total / len(xs)
    centred = [x - mean for x in xs]  # n adds
    squares = [c * c for c in centred]  # n mults
    acc = squares[0]
    for s in squares[1:]:
        acc = acc + s
    rstd = (acc / len(xs) + 1e-5).rsqrt()
    ys = [(x - mean) * rstd for x in xs]
    ys = [y * 2.0 for y in ys] if weight else ys
    return [y + 1.0 for y in ys] if bias else ys


@pytest.mark.parametrize("n,weight,bias", [(1, True, True), (7, True, True), (12, False, False), (5, True, False)])
def test_runtime_table_matches_a_counted_two_pass_kernel(n, weight, bias):
    Op.tally = {"mults": 0, "adds": 0, "other_ops": 0}
    two_pass_norm([Op(float(i)) for i in range(n)], weight, bias)
    counts = norm.runtime_norm_counts(1, n, weight, bias)
    assert (counts.mults, counts.adds, counts.other_ops) == (Op.tally["mults"], Op.tally["adds"], Op.tally["other_ops"])


# ------------------------------------------------------------------ BatchNorm


def test_batchnorm2d_eval_folds_the_scale():
    m = nn.BatchNorm2d(64, device="meta").eval()
    counts = norm.batch_norm_module(module_call(m, info(1, 64, 56, 56)))
    assert counts == Counts(adds=1 * 64 * 56 * 56, folded_params=64)  # one bias add per element
    plain = norm.batch_norm_module(module_call(nn.BatchNorm1d(8, affine=False, device="meta"), info(4, 8)))
    assert plain == Counts(adds=4 * 8)  # no weight to fold, the running-stat shift is still an add


def test_batchnorm_without_running_stats_is_runtime():
    m = nn.BatchNorm2d(3, track_running_stats=False, device="meta")
    counts = norm.batch_norm_module(module_call(m, info(2, 3, 4, 4)))
    assert counts == runtime(3, 2 * 4 * 4)  # one group per channel over N*H*W


def test_functional_and_aten_batch_norm():
    x, c = info(2, 8, 5, 5), info(8)
    eval_call = OpCall("function", F.batch_norm, (x, c, c, c, c), {"training": False}, out=x)
    assert norm.batch_norm_function(eval_call) == Counts(adds=2 * 8 * 5 * 5, folded_params=8)
    train_call = OpCall("function", F.batch_norm, (x, c, c), {"training": True}, out=x)
    assert norm.batch_norm_function(train_call) == runtime(8, 2 * 5 * 5, weight=False, bias=False)
    legit = OpCall("aten", aten._native_batch_norm_legit_no_training.default, (x, c, c, c, c, 0.1, 1e-5),
                   out=(x, info(0), info(0)))
    assert norm.batch_norm_no_training_aten(legit) == Counts(adds=2 * 8 * 5 * 5, folded_params=8)
    bn = OpCall("aten", aten.batch_norm.default, (x, c, c, c, c, False, 0.1, 1e-5, True), out=x)
    assert norm.batch_norm_aten(bn) == Counts(adds=2 * 8 * 5 * 5, folded_params=8)
    no_stats = OpCall("aten", aten._native_batch_norm_legit.no_stats, (x, c, c, True, 0.1, 1e-5),
                      out=(x, c, c))
    assert norm.batch_norm_aten(no_stats) == runtime(8, 2 * 5 * 5)
    assert norm.batch_norm_aten_shape(replace(bn, out=None)) == x


def test_batch_norm_shape_rules():
    m = nn.BatchNorm2d(8, device="meta").eval()
    assert norm.batch_norm_module_shape(module_call(m, info(2, 8, 3, 3))) == info(2, 8, 3, 3)
    for bad in (info(2, 8, 3), info(2, 7, 3, 3)):  # wrong rank, wrong channels
        with pytest.raises(NotImplementedError):
            norm.batch_norm_module_shape(module_call(m, bad))
        with pytest.raises(ValueError if bad.ndim == 3 else RuntimeError):
            nn.BatchNorm2d(8).eval()(torch.zeros(bad.shape))
    with pytest.raises(NotImplementedError):  # training mode, one value per channel: torch raises
        norm.batch_norm_module_shape(module_call(nn.BatchNorm1d(8, device="meta").train(), info(1, 8)))


# ------------------------------------------------------------------ LayerNorm and friends


def test_layernorm_vit_token():
    m = nn.LayerNorm(768, device="meta")
    counts = norm.layer_norm_module(module_call(m, info(1, 197, 768)))
    # 197 groups of 768: adds 4n - 1 + n (bias), mults 2n + 2 + n (weight), one rsqrt each
    assert counts == Counts(mults=197 * (2 * 768 + 2 + 768), adds=197 * (4 * 768 - 1 + 768), other_ops=197)
    no_bias = norm.layer_norm_module(module_call(nn.LayerNorm(768, bias=False, device="meta"), info(197, 768)))
    assert no_bias == runtime(197, 768, bias=False)
    plain = norm.layer_norm_module(module_call(nn.LayerNorm([4, 5], elementwise_affine=False), info(3, 4, 5)))
    assert plain == runtime(3, 4 * 5, weight=False, bias=False)


def test_layer_norm_functional_and_aten():
    x = info(2, 6, 10)
    call = OpCall("function", F.layer_norm, (x, (10,)), {"weight": info(10), "bias": info(10)}, out=x)
    assert norm.layer_norm_function(call) == runtime(2 * 6, 10)
    native = OpCall("aten", aten.native_layer_norm.default, (x, [6, 10], None, None, 1e-5),
                    out=(x, info(2, 1, 1), info(2, 1, 1)))
    assert norm.layer_norm_function(native) == runtime(2, 6 * 10, weight=False, bias=False)
    assert norm.layer_norm_function_shape(replace(call, out=None)) == x
    with pytest.raises(NotImplementedError):
        norm.layer_norm_function_shape(OpCall("function", F.layer_norm, (x, (6,))))


def test_groupnorm():
    m = nn.GroupNorm(4, 16, device="meta")
    counts = norm.group_norm_module(module_call(m, info(2, 16, 5, 5)))
    assert counts == runtime(2 * 4, 16 // 4 * 5 * 5)  # N*G groups of C/G*H*W
    call = OpCall("function", F.group_norm, (info(2, 16, 5, 5), 8), out=info(2, 16, 5, 5))
    assert norm.group_norm_function(call) == runtime(2 * 8, 2 * 5 * 5, weight=False, bias=False)
    native = OpCall("aten", aten.native_group_norm.default, (info(2, 16, 25), None, None, 2, 16, 25, 4, 1e-5),
                    out=(info(2, 16, 25), info(2, 4), info(2, 4)))
    assert norm.native_group_norm_aten(native) == runtime(2 * 4, 4 * 25, weight=False, bias=False)
    with pytest.raises(NotImplementedError):  # 16 channels in 3 groups
        norm.group_norm_function_shape(OpCall("function", F.group_norm, (info(2, 16, 5, 5), 3)))


def test_instancenorm():
    m = nn.InstanceNorm2d(3, device="meta")
    assert norm.instance_norm_module(module_call(m, info(2, 3, 8, 8))) == runtime(2 * 3, 8 * 8, False, False)
    assert norm.instance_norm_module(module_call(m, info(3, 8, 8))) == runtime(3, 8 * 8, False, False)
    affine = nn.InstanceNorm1d(4, affine=True, device="meta")
    assert norm.instance_norm_module(module_call(affine, info(2, 4, 9))) == runtime(2 * 4, 9)
    tracked = nn.InstanceNorm2d(3, affine=True, track_running_stats=True, device="meta")
    assert norm.instance_norm_module(module_call(tracked, info(2, 3, 8, 8))) == Counts(adds=2 * 3 * 8 * 8,
                                                                                       folded_params=3)
    call = OpCall("function", F.instance_norm, (info(2, 3, 8),), out=info(2, 3, 8))
    assert norm.instance_norm_function(call) == runtime(2 * 3, 8, False, False)
    assert norm.instance_norm_module_shape(module_call(m, info(3, 8, 8))) == info(3, 8, 8)
    with pytest.raises(NotImplementedError):
        norm.instance_norm_module_shape(module_call(m, info(8, 8)))


def test_rmsnorm():
    m = nn.RMSNorm(64, device="meta")
    # per group: n squares, n-1 adds, 1 mult (mean), 1 add (eps), rsqrt, n mults, n weight mults
    assert norm.rms_norm_module(module_call(m, info(3, 64))) == Counts(
        mults=3 * (64 + 1 + 64 + 64), adds=3 * (64 - 1 + 1), other_ops=3)
    call = OpCall("function", F.rms_norm, (info(3, 64), [64]), out=info(3, 64))
    assert norm.rms_norm_function(call) == Counts(mults=3 * (2 * 64 + 1), adds=3 * 64, other_ops=3)


@pytest.mark.parametrize("make,shape", [
    (lambda: nn.LayerNorm([5, 6]), (2, 5, 6)),
    (lambda: nn.GroupNorm(2, 6), (3, 6, 4)),
    (lambda: nn.InstanceNorm3d(2), (2, 2, 3, 3, 3)),
    (lambda: nn.BatchNorm1d(5), (4, 5, 7)),
    (lambda: nn.RMSNorm([6]), (2, 6)),
])
def test_module_shapes_match_pytorch(make, shape):
    m = make().eval()
    registry = CounterRegistry(collect(norm))
    x = torch.randn(shape)
    rule = registry.shape(type(m)).fn(module_call(m, info(*shape)))
    assert rule == TensorInfo(tuple(m(x).shape), m(x).dtype)


def test_every_form_resolves_in_a_registry():
    registry = CounterRegistry(collect(norm))
    with_shapes = [nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, F.batch_norm, aten.batch_norm.default,
                   nn.LayerNorm, F.layer_norm, aten.layer_norm.default, nn.GroupNorm, F.group_norm,
                   aten.group_norm.default, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.RMSNorm,
                   F.rms_norm]
    counters_only = [aten.native_batch_norm.default, aten._native_batch_norm_legit_no_training.default,
                     aten._native_batch_norm_legit.no_stats, aten.native_layer_norm.default,
                     aten.native_group_norm.default, F.instance_norm, aten.instance_norm.default]
    for target in with_shapes + counters_only:
        assert registry.counter(target) is not None, target
    for target in with_shapes:
        assert registry.shape(target) is not None, target
    assert registry.shape(aten.native_layer_norm.default) is None  # multi-output: meta execution

    class FrozenBN(nn.BatchNorm2d):
        pass

    assert registry.counter(FrozenBN).fn is norm.batch_norm_module  # subclasses by MRO


# ------------------------------------------------------------ vector norms


def test_vector_norm_over_last_dim():
    from micronet.counters.norm import vector_norm, vector_norm_shape

    x = TensorInfo((2, 3, 8))
    call = OpCall("function", torch.linalg.vector_norm, (x, 2, -1))
    out = vector_norm_shape(call)
    assert out.shape == tuple(torch.linalg.vector_norm(torch.ones(2, 3, 8), 2, -1).shape)
    counts = vector_norm(OpCall("function", torch.linalg.vector_norm, (x, 2, -1), out=out))
    # 6 vectors of 8: 8 squares, 7 adds, 1 sqrt each
    assert (counts.mults, counts.adds, counts.other_ops) == (6 * 8, 6 * 7, 6)


def test_normalize_counts_norm_clamp_and_division():
    from micronet.counters.norm import normalize

    x = TensorInfo((4, 16))
    counts = normalize(OpCall("function", F.normalize, (x,), {"dim": -1}, out=x))
    # 4 vectors of 16: 16 squares + 16 divisions, 15 adds, sqrt + clamp
    assert (counts.mults, counts.adds, counts.other_ops) == (4 * 32, 4 * 15, 4 * 2)
