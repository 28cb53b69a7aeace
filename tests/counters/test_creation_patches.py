"""Tensor creation and checks (free), and sliding-window patches (unfold free, fold counted)."""
from __future__ import annotations

from functools import partial

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn

from micronet.counters import creation, patches
from micronet.records import Counts, TensorInfo
from micronet.registry import CounterRegistry, Method, OpCall, collect

from torch_oracle import check_registered, make, real

aten = torch.ops.aten
REGISTRY = CounterRegistry(collect(creation) + collect(patches))
check = partial(check_registered, REGISTRY, fill=torch.ones)


def test_constructors_and_checks_are_free():
    for target in (torch.zeros, torch.arange, torch.eye, aten.empty.memory_format, aten.full.default,
                   aten.arange.start_step, aten._assert_tensor_metadata.default, aten._assert_scalar.default,
                   aten.sym_constrain_range_for_size.default, Method("unfold"), aten.im2col.default, nn.Unfold,
                   torch.meshgrid, F.one_hot, Method("repeat_interleave")):
        entry = REGISTRY.counter(target)
        assert entry is not None and entry.free, target
    assert not REGISTRY.counter(nn.Fold).free


# ------------------------------------------------------------- creation shapes

@pytest.mark.parametrize("tensors,indexing", [
    ((TensorInfo((3,)), TensorInfo((4,))), "ij"), ((TensorInfo((3,)), TensorInfo((4,)), TensorInfo((2,))), "xy"),
    ((TensorInfo((3,)), TensorInfo(())), "ij"), ((TensorInfo((5,)),), "xy"),
])
def test_meshgrid_shapes_match_torch(tensors, indexing):
    check(make(torch.meshgrid, *tensors, indexing=indexing))


@settings(max_examples=40, deadline=None)
@given(shape=st.lists(st.integers(0, 3), max_size=3).map(tuple), repeats=st.integers(0, 3),
       dim=st.one_of(st.none(), st.integers(-3, 2)), method=st.booleans())
def test_repeat_interleave_shapes_match_torch(shape, repeats, dim, method):
    target = Method("repeat_interleave") if method else torch.repeat_interleave
    check(make(target, TensorInfo(shape), repeats, dim=dim), may_refuse=not shape)


def test_one_hot_shape_needs_its_class_count():
    x = TensorInfo((2, 5), torch.int64)
    check(make(F.one_hot, x, num_classes=7))
    with pytest.raises(NotImplementedError):  # the size depends on the data: meta execution
        REGISTRY.shape(F.one_hot).fn(make(F.one_hot, x))


# --------------------------------------------------------------- patch shapes

@settings(max_examples=60, deadline=None)
@given(shape=st.lists(st.integers(1, 6), min_size=1, max_size=3).map(tuple), data=st.data())
def test_tensor_unfold_shapes_match_torch(shape, data):
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    size, step = data.draw(st.integers(0, 7)), data.draw(st.integers(1, 3))
    check(make(Method("unfold"), TensorInfo(shape), dim, size, step))


windows = st.fixed_dictionaries({"kernel_size": st.sampled_from([1, 2, 3, (2, 3)]),
                                 "dilation": st.sampled_from([1, 2]), "padding": st.sampled_from([0, 1, (1, 0)]),
                                 "stride": st.sampled_from([1, 2, 3, (1, 2)])})


@settings(max_examples=60, deadline=None)
@given(n=st.sampled_from([(), (2,)]), c=st.integers(1, 3), h=st.integers(1, 9), w=st.integers(1, 9),
       kwargs=windows, module=st.booleans())
def test_im2col_shapes_match_torch(n, c, h, w, kwargs, module):
    x = TensorInfo(n + (c, h, w))
    call = make(nn.Unfold, x, module=nn.Unfold(**kwargs)) if module else make(F.unfold, x, **kwargs)
    check(call)


def _fold_call(n, c, size, kwargs, module):
    kernel = kwargs["kernel_size"] if isinstance(kwargs["kernel_size"], tuple) else (kwargs["kernel_size"],) * 2
    try:
        probe = F.unfold(torch.ones((1, 1) + size), **kwargs)  # how many windows fit
    except RuntimeError:
        assume(False)  # none fits: torch refuses the fold as well
    x = TensorInfo(n + (c * kernel[0] * kernel[1], probe.shape[-1]))
    if module:
        return make(nn.Fold, x, module=nn.Fold(size, **kwargs))
    return make(F.fold, x, size, **kwargs)


@settings(max_examples=80, deadline=None)
@given(n=st.sampled_from([(), (2,)]), c=st.integers(1, 3), size=st.tuples(st.integers(3, 9), st.integers(3, 9)),
       kwargs=windows, module=st.booleans())
def test_fold_shape_and_adds_equal_torch_on_ones(n, c, size, kwargs, module):
    """Folding a tensor of ones gives how many values land on each output
    position: ``r - 1`` adds where ``r`` land, the exact oracle of the count."""
    call = _fold_call(n, c, size, kwargs, module)
    check(call)
    landed = real(call.args, torch.ones)
    if call.kind == "module":
        reached = call.module(*landed)
    else:
        reached = F.fold(*landed, **call.kwargs)
    out = REGISTRY.shape(call.target).fn(call)
    counts = REGISTRY.counter(call.target).fn(OpCall(call.kind, call.target, call.args, call.kwargs, call.module,
                                                     out))
    assert counts == Counts(adds=int((reached - 1).clamp(min=0).sum()))


def test_fold_of_non_overlapping_patches_adds_nothing():
    x = TensorInfo((1, 3 * 2 * 2, 16))
    call = make(F.fold, x, (8, 8), kernel_size=2, stride=2)
    out = REGISTRY.shape(F.fold).fn(call)
    assert out == TensorInfo((1, 3, 8, 8))
    assert REGISTRY.counter(F.fold).fn(OpCall(call.kind, F.fold, call.args, call.kwargs, out=out)) == Counts()
