"""Resampling counters and shape rules: F.interpolate, nn.Upsample*, aten upsample ops."""
from __future__ import annotations

from functools import partial

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from micronet.counters import interpolate
from micronet.records import Counts, TensorInfo
from micronet.registry import CounterRegistry, OpCall, collect

import torch_oracle

aten = torch.ops.aten
#: torch warns about deprecated forms (x.T on 3-d, implicit softmax dims) that the tests run on purpose
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
REGISTRY = CounterRegistry(collect(interpolate))
#: torch runs on zeros; a rule refuses where it raises any of these
check = partial(torch_oracle.check, fill=torch.zeros,
                errors=(RuntimeError, ValueError, TypeError, NotImplementedError, AssertionError))
run = partial(torch_oracle.run, fill=torch.zeros)


def counts(call: OpCall) -> Counts:
    return REGISTRY.counter(call.target).fn(call)


# ------------------------------------------------------------ closed forms


def test_nearest_is_free_in_every_form():
    x = TensorInfo((1, 64, 14, 14))
    for call in (run("module", nn.Upsample, x, module=nn.Upsample(scale_factor=2)),
                 run("function", F.interpolate, x, scale_factor=2.0),
                 run("function", F.interpolate, x, size=(28, 28), mode="nearest-exact")):
        assert call.out == TensorInfo((1, 64, 28, 28))
        assert counts(call) == Counts()
    for target in (nn.UpsamplingNearest2d, aten.upsample_nearest2d.vec, aten.upsample_nearest2d.default,
                   aten._upsample_nearest_exact1d.vec, aten.upsample_nearest3d):
        entry = REGISTRY.counter(target)
        assert entry.free and entry.fn is None, target


def test_bilinear_costs_four_mults_three_adds_per_output():
    x = TensorInfo((1, 256, 14, 14))
    e = 1 * 256 * 28 * 28
    for call in (run("function", F.interpolate, x, scale_factor=2, mode="bilinear", align_corners=False),
                 run("function", F.interpolate, x, None, 2.0, "bilinear", True),
                 run("module", nn.Upsample, x, module=nn.Upsample(size=28, mode="bilinear")),
                 run("module", nn.UpsamplingBilinear2d, x, module=nn.UpsamplingBilinear2d(scale_factor=2)),
                 run("function", F.upsample_bilinear, x, scale_factor=2),
                 run("aten", aten.upsample_bilinear2d.vec, x, None, False, [2.0, 2.0]),
                 run("aten", aten.upsample_bilinear2d.default, x, [28, 28], True)):
        assert call.out == TensorInfo((1, 256, 28, 28))
        assert counts(call) == Counts(mults=4 * e, adds=3 * e)


def test_linear_trilinear_bicubic_taps():
    line = run("function", F.interpolate, TensorInfo((1, 4, 10)), size=15, mode="linear")
    assert counts(line) == Counts(mults=2 * 60, adds=60)  # 1*4*15 outputs of 2 taps
    assert counts(run("aten", aten.upsample_linear1d.vec, TensorInfo((1, 4, 10)), [15], False, None)) == counts(line)
    cube = run("function", F.interpolate, TensorInfo((1, 2, 3, 4, 5)), scale_factor=2, mode="trilinear")
    e = 1 * 2 * 6 * 8 * 10
    assert counts(cube) == Counts(mults=8 * e, adds=7 * e)
    assert counts(run("aten", aten.upsample_trilinear3d.default, TensorInfo((1, 2, 3, 4, 5)), [6, 8, 10],
                      False)) == Counts(mults=8 * e, adds=7 * e)
    cubic = run("function", F.interpolate, TensorInfo((2, 3, 5, 5)), size=(7, 9), mode="bicubic")
    e = 2 * 3 * 7 * 9
    assert counts(cubic) == Counts(mults=16 * e, adds=15 * e)
    assert counts(run("aten", aten.upsample_bicubic2d.vec, TensorInfo((2, 3, 5, 5)), [7, 9], True, None)) \
        == Counts(mults=16 * e, adds=15 * e)


def test_area_is_adaptive_average_pooling():
    call = run("function", F.interpolate, TensorInfo((1, 3, 7, 5)), size=(3, 2), mode="area")
    # windows 7 -> 3: 3, 3, 3 and 5 -> 2: 3, 3: every output averages 9 inputs
    assert counts(call) == Counts(mults=3 * 6, adds=3 * 6 * (9 - 1))


def test_antialiased_downsampling_counts_the_clipped_filter_windows():
    x = TensorInfo((1, 3, 8, 8))
    call = run("function", F.interpolate, x, size=(4, 4), mode="bilinear", antialias=True)
    # ratio 2, support 2: centres 1, 3, 5, 7 read [0, 3), [1, 5), [3, 7), [5, 8): 3 + 4 + 4 + 3 = 14 per dim
    assert interpolate._aa_window_sum(8, 4, 2, False, None) == 14
    assert counts(call) == Counts(mults=3 * 14 * 14, adds=3 * (14 * 14 - 16))
    aten_call = run("aten", aten._upsample_bilinear2d_aa.vec, x, [4, 4], False, None)
    assert counts(aten_call) == counts(call)
    # upsampling with antialias keeps the two taps of bilinear, clipped at the borders
    up = run("function", F.interpolate, TensorInfo((1, 1, 4, 4)), scale_factor=2.0, mode="bilinear", antialias=True)
    assert interpolate._aa_window_sum(4, 8, 2, False, 2.0) == 1 + 2 * 6 + 1
    assert counts(up) == Counts(mults=14 * 14, adds=14 * 14 - 64)


def test_registration():
    for target in interpolate.INTERPOLATE + (nn.UpsamplingBilinear2d,):
        assert REGISTRY.counter(target).fn is interpolate.count_interpolate
        assert REGISTRY.shape(target).fn is interpolate.shape_interpolate
    for target in interpolate.INTERP_ATEN:
        assert REGISTRY.counter(target).fn is interpolate.count_aten_upsample
    for target in interpolate.ATEN_MODES:
        assert REGISTRY.shape(target).fn is interpolate.shape_aten_upsample
    assert REGISTRY.shape(nn.UpsamplingNearest2d).fn is interpolate.shape_interpolate


# ---------------------------------------------------------- property tests

MODES = {3: ["nearest", "nearest-exact", "linear", "area"], 4: ["nearest", "bilinear", "bicubic", "area"],
         5: ["nearest", "trilinear", "nearest-exact"]}
scales = st.sampled_from([0.5, 0.7, 1.0, 1.5, 1.7, 2, 2.0, 2.3, 3.0, 1 / 3])


@settings(max_examples=50, deadline=None)
@given(rank=st.sampled_from([3, 4, 5]), data=st.data())
def test_interpolate_shape_matches_torch(rank, data):
    spatial = data.draw(st.lists(st.integers(1, 9), min_size=rank - 2, max_size=rank - 2))
    x = TensorInfo((2, 3) + tuple(spatial))
    mode = data.draw(st.sampled_from(MODES[rank]))
    by_size = data.draw(st.booleans())
    if by_size:
        size = data.draw(st.one_of(st.integers(1, 12), st.lists(st.integers(1, 12), min_size=rank - 2,
                                                                 max_size=rank - 2).map(tuple)))
        scale, recompute = None, None
    else:
        size = None
        scale = data.draw(st.one_of(scales, st.lists(scales, min_size=rank - 2, max_size=rank - 2).map(tuple)))
        recompute = data.draw(st.sampled_from([None, True, False]))
    align = data.draw(st.sampled_from([None, True, False])) if mode not in ("nearest", "area", "nearest-exact") \
        else None
    form = data.draw(st.sampled_from(["function", "module"]))
    if form == "module":
        module = nn.Upsample(size, scale, mode, align, recompute)
        call = OpCall("module", nn.Upsample, (x,), {}, module=module)
    else:
        call = OpCall("function", F.interpolate, (x,), dict(size=size, scale_factor=scale, mode=mode,
                                                              align_corners=align, recompute_scale_factor=recompute))
    check(interpolate.shape_interpolate, call)


ATEN_FORMS = {1: [aten.upsample_nearest1d.vec, aten.upsample_linear1d.vec, aten._upsample_nearest_exact1d.vec],
              2: [aten.upsample_nearest2d.vec, aten.upsample_bilinear2d.vec, aten.upsample_bicubic2d.vec,
                  aten._upsample_bilinear2d_aa.vec],
              3: [aten.upsample_nearest3d.vec, aten.upsample_trilinear3d.vec]}


@settings(max_examples=50, deadline=None)
@given(dims=st.sampled_from([1, 2, 3]), data=st.data())
def test_aten_upsample_shape_matches_torch(dims, data):
    spatial = data.draw(st.lists(st.integers(1, 9), min_size=dims, max_size=dims))
    x = TensorInfo((1, 2) + tuple(spatial))
    op = data.draw(st.sampled_from(ATEN_FORMS[dims]))
    interpolating = "nearest" not in op.overloadpacket.__name__
    if data.draw(st.booleans()):
        size, factors = data.draw(st.lists(st.integers(1, 12), min_size=dims, max_size=dims)), None
    else:
        size, factors = None, data.draw(st.lists(scales.map(float), min_size=dims, max_size=dims))
    args = (x, size, False, factors) if interpolating else (x, size, factors)
    call = OpCall("aten", op, args)
    check(interpolate.shape_aten_upsample, call)
    if size is not None:  # the .default overload takes the output size explicitly
        default = getattr(op.overloadpacket, "default")
        call = OpCall("aten", default, (x, size, True) if interpolating else (x, size))
        check(interpolate.shape_aten_upsample, call)


def test_invalid_forms_are_left_to_meta():
    x = TensorInfo((1, 2, 4, 4))
    for kwargs in (dict(size=3, scale_factor=2.0), dict(), dict(size=3, mode="linear"),
                   dict(size=3, mode="nearest", align_corners=True), dict(scale_factor=0.1)):
        with pytest.raises(NotImplementedError):
            interpolate.shape_interpolate(OpCall("function", F.interpolate, (x,), kwargs))
