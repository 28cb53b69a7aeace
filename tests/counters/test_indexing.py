"""Indexing, padding, selections (free) and value permutations (counted)."""
from __future__ import annotations

import operator
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from micronet.counters import free, indexing
from micronet.records import Counts, TensorInfo
from micronet.registry import CounterRegistry, Method, OpCall, collect

from torch_oracle import check_free_groups, check_registered, make

aten = torch.ops.aten
#: torch warns about deprecated forms that the tests run on purpose
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
REGISTRY = CounterRegistry(collect(indexing))

#: the registered shape rule gives torch's output on zeros (valid indices), or refuses where torch raises
check = partial(check_registered, REGISTRY, fill=torch.zeros)


# ------------------------------------------------------------ registration


INDEXING_GROUPS = [indexing.GETITEM, indexing.NARROW, indexing.SELECT, indexing.SLICE]


def test_indexing_targets_are_free_and_have_shape_rules():
    check_free_groups(REGISTRY, INDEXING_GROUPS)
    # the common ones the walker meets
    for target in (operator.getitem, aten.select.int, aten.slice.Tensor):
        assert REGISTRY.counter(target).free, target
        assert REGISTRY.shape(target) is not None, target


# ------------------------------------------------------------------ indexing


def test_getitem_of_tuples_picks_the_element():
    pieces = free.shape_chunk(make(torch.chunk, TensorInfo((4, 6)), 2, 1))
    assert pieces == (TensorInfo((4, 3)), TensorInfo((4, 3)))
    assert indexing.shape_getitem(make(operator.getitem, pieces, 1)) == TensorInfo((4, 3))
    assert indexing.shape_getitem(make(operator.getitem, pieces, slice(0, 1))) == (TensorInfo((4, 3)),)
    assert indexing.shape_getitem(make(operator.getitem, torch.Size((2, 3, 4)), 2)) == 4


index_item = st.one_of(
    st.integers(-5, 4), st.none(), st.just(Ellipsis), st.booleans(),
    st.builds(slice, st.one_of(st.none(), st.integers(-6, 6)), st.one_of(st.none(), st.integers(-6, 6)),
              st.one_of(st.none(), st.integers(1, 3))),
)


@settings(max_examples=50, deadline=None)
@given(shape=st.lists(st.integers(1, 4), max_size=4).map(tuple),
       index=st.one_of(index_item, st.lists(index_item, max_size=5).map(tuple)))
def test_tensor_getitem_with_ints_slices_none_ellipsis(shape, index):
    x = TensorInfo(shape)
    items = index if isinstance(index, tuple) else (index,)
    bools = [i for i in items if isinstance(i, bool)]
    ints = [i for i in items if isinstance(i, int) and not isinstance(i, bool)]
    # several ellipses, several bools or bools with ints (advanced indexing): left to meta execution
    several = sum(i is Ellipsis for i in items) > 1 or len(bools) > 1 or bools and ints
    check(make(operator.getitem, x, index), may_refuse=several)
    check(make(Method("__getitem__"), x, index), may_refuse=several)


def test_getitem_closed_forms():
    x = TensorInfo((2, 3, 4, 5))
    index = (Ellipsis, None, slice(1, None))
    assert indexing.shape_getitem(make(operator.getitem, x, index)) == TensorInfo((2, 3, 4, 1, 4))
    assert indexing.shape_getitem(make(operator.getitem, x, (0, slice(None, None, 2)))) == TensorInfo((2, 4, 5))
    assert indexing.shape_getitem(make(operator.getitem, x, (slice(None), -1))) == TensorInfo((2, 4, 5))
    for advanced in (TensorInfo((2,), torch.int64), [0, 1], (slice(None), [0, 1])):
        with pytest.raises(NotImplementedError):  # advanced indexing runs on meta tensors
            indexing.shape_getitem(make(operator.getitem, x, advanced))


@settings(max_examples=50, deadline=None)
@given(shape=st.lists(st.integers(0, 5), min_size=0, max_size=3).map(tuple), data=st.data())
def test_narrow_select_slice(shape, data):
    x = TensorInfo(shape)
    rank = max(len(shape), 1)
    dim = data.draw(st.integers(-rank, rank - 1))
    start, length = data.draw(st.integers(-6, 6)), data.draw(st.integers(-1, 6))
    check(make(torch.narrow, x, dim, start, length))
    check(make(Method("narrow"), x, dim, start, length))
    index = data.draw(st.integers(-6, 5))
    check(make(torch.select, x, dim, index))
    check(make(aten.select.int, x, dim, index))
    end, step = data.draw(st.one_of(st.none(), st.integers(-6, 9), st.just(2**63 - 1))), data.draw(st.integers(1, 3))
    check(make(aten.slice.Tensor, x, dim, data.draw(st.one_of(st.none(), st.integers(-6, 6))), end, step))


# ------------------------------------------------------ padding, selections


@settings(max_examples=50, deadline=None)
@given(shape=st.lists(st.integers(0, 4), min_size=1, max_size=5).map(tuple), data=st.data())
def test_padding_in_every_mode(shape, data):
    x = TensorInfo(shape)
    pairs = data.draw(st.integers(1, 3))
    pad = tuple(data.draw(st.lists(st.integers(-2, 4), min_size=2 * pairs, max_size=2 * pairs)))
    mode = data.draw(st.sampled_from(["constant", "reflect", "replicate", "circular"]))
    # negative widths and empty dims in the other modes are left to meta execution
    corner = mode != "constant" and (min(pad) < 0 or 0 in shape)
    check(make(F.pad, x, pad, mode), may_refuse=corner)
    check(make(F.pad, x, pad=pad, mode=mode, value=None if mode != "constant" else 1.0), may_refuse=corner)
    if mode == "constant":
        check(make(aten.constant_pad_nd.default, x, list(pad), 0.0))
    kind = {"constant": "Constant", "reflect": "Reflection", "replicate": "Replication", "circular": "Circular"}[mode]
    module_type = getattr(nn, f"{kind}Pad{pairs}d")
    module = module_type(pad, 0.5) if kind == "Constant" else module_type(pad)
    check(make(module_type, x, module=module), may_refuse=corner)
    if mode in ("reflect", "replicate"):
        op = getattr(aten, f"{'reflection' if mode == 'reflect' else 'replication'}_pad{pairs}d").default
        check(make(op, x, list(pad)), may_refuse=corner)


@settings(max_examples=50, deadline=None)
@given(shape=st.lists(st.integers(1, 4), max_size=4).map(tuple), data=st.data())
def test_roll_flip_index_select_gather(shape, data):
    x = TensorInfo(shape)
    rank = max(len(shape), 1)
    dims = data.draw(st.lists(st.integers(-rank, rank - 1), max_size=3))
    check(make(torch.flip, x, dims))
    check(make(Method("flip"), x, dims))
    check(make(torch.fliplr, x))
    check(make(torch.flipud, x))
    shifts = [data.draw(st.integers(-5, 5)) for _ in dims] or data.draw(st.integers(-5, 5))
    check(make(torch.roll, x, shifts, dims or None))
    check(make(aten.roll.default, x, shifts if isinstance(shifts, list) else [shifts], dims))
    dim = data.draw(st.integers(-rank, rank - 1))
    index = TensorInfo(data.draw(st.sampled_from([(), (0,), (3,), (2, 2)])), torch.int64)
    check(make(torch.index_select, x, dim, index), may_refuse=not shape)  # 0-d input: meta decides
    check(make(Method("index_select"), x, dim, index), may_refuse=not shape)
    index_shape = tuple(data.draw(st.integers(0, s)) for s in shape) if shape else ()
    check(make(torch.gather, x, dim, TensorInfo(index_shape, torch.int64)))
    check(make(torch.gather, x, dim, TensorInfo((0,), torch.int64)), may_refuse=True)  # empty index: meta decides


@settings(max_examples=50, deadline=None)
@given(base=st.lists(st.integers(1, 3), max_size=3).map(tuple), data=st.data())
def test_where_and_masked_fill(base, data):
    def broadcastable():
        return st.lists(st.sampled_from([1, None]), min_size=len(base), max_size=len(base)).map(
            lambda ones: tuple(s if o is None else 1 for o, s in zip(ones, base)))

    x = TensorInfo(base, data.draw(st.sampled_from([torch.float32, torch.float16, torch.int64])))
    mask = TensorInfo(data.draw(broadcastable()), torch.bool)
    other = data.draw(st.one_of(st.builds(TensorInfo, broadcastable(), st.sampled_from([torch.float64, torch.int32])),
                                st.sampled_from([0.0, 1])))
    check(make(torch.where, mask, x, other))
    check(make(Method("where"), x, mask, other))
    check(make(aten.where.self, mask, x, TensorInfo((), torch.float32)))
    check(make(Method("masked_fill"), x, mask, 0.5))
    check(make(Method("masked_fill_"), x, mask, 1))
    check(make(aten.masked_fill.Scalar, mask, mask, True))


def test_padding_selection_and_movement_are_free():
    for group in (indexing.PAD, tuple(indexing.PAD_ATEN_MODES), indexing.ROLL_FLIP, indexing.INDEX_SELECT,
                  indexing.GATHER, indexing.WHERE, indexing.MASKED_FILL):
        for target in group:
            assert REGISTRY.counter(target).free and REGISTRY.shape(target) is not None, target
    for target in indexing.ADVANCED_INDEX:  # left to meta execution, free when met under dispatch
        assert REGISTRY.counter(target).free
    padded = make(nn.ZeroPad2d, TensorInfo((1, 3, 5, 5)), module=nn.ZeroPad2d((1, 2, 0, 3)))
    assert indexing.shape_pad(padded) == TensorInfo((1, 3, 8, 8))  # 5+0+3 rows, 5+1+2 columns


# ------------------------------------------------------ value permutations


def test_value_permutations_cost_one_mult_per_element():
    x = TensorInfo((1, 116, 28, 28))
    e = 1 * 116 * 28 * 28
    for call in (make(nn.ChannelShuffle, x, module=nn.ChannelShuffle(2)), make(F.channel_shuffle, x, 2),
                 make(aten.channel_shuffle.default, x, 4), make(aten.native_channel_shuffle.default, x, 2)):
        out = indexing.shape_channel_shuffle(call)
        assert out == x
        counted = REGISTRY.counter(call.target).fn(OpCall(call.kind, call.target, call.args, {}, call.module, out))
        assert counted == Counts(mults=e)
    y = TensorInfo((1, 64, 8, 8))
    shuffled = make(nn.PixelShuffle, y, module=nn.PixelShuffle(2))
    out = indexing.shape_pixel_shuffle(shuffled)
    assert out == TensorInfo((1, 16, 16, 16))
    assert indexing.count_shuffle(OpCall("module", nn.PixelShuffle, (y,), {}, shuffled.module, out)) == Counts(
        mults=1 * 16 * 16 * 16)
    assert REGISTRY.counter(nn.PixelUnshuffle).fn is indexing.count_shuffle


@settings(max_examples=30, deadline=None)
@given(shape=st.lists(st.integers(1, 6), min_size=2, max_size=5).map(tuple), r=st.integers(1, 3))
def test_shuffles_match_torch(shape, r):
    x = TensorInfo(shape)
    check(make(nn.ChannelShuffle, x, module=nn.ChannelShuffle(r)))
    check(make(F.channel_shuffle, x, r))
    check(make(nn.PixelShuffle, x, module=nn.PixelShuffle(r)))
    check(make(F.pixel_shuffle, x, r))
    check(make(nn.PixelUnshuffle, x, module=nn.PixelUnshuffle(r)))
    check(make(F.pixel_unshuffle, x, r))
