"""Free ops: layout, joins and splits, size queries, identities, copies and casts."""
from __future__ import annotations

import builtins
from functools import partial

import pytest
import torch
import torch.nn.functional as F
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from micronet.counters import free
from micronet.records import TensorInfo
from micronet.registry import CounterRegistry, Method, OpCall, collect

from torch_oracle import check_free_groups, check_registered, execute, make

aten = torch.ops.aten
#: torch warns about deprecated forms (x.T on 3-d, implicit softmax dims) that the tests run on purpose
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
REGISTRY = CounterRegistry(collect(free))

#: the registered shape rule gives torch's output on zeros (valid indices), or refuses where torch raises
check = partial(check_registered, REGISTRY, fill=torch.zeros)


shapes = st.lists(st.integers(0, 4), max_size=4).map(tuple)
nonempty = st.lists(st.integers(1, 4), min_size=1, max_size=4).map(tuple)


# ------------------------------------------------------------ registration


FREE_GROUPS = [free.VIEW, free.RESHAPE, free.AS, free.FLATTEN, free.UNFLATTEN, free.PERMUTE, free.TRANSPOSE,
               free.MOVEDIM, free.T, free.SQUEEZE, free.UNSQUEEZE, free.EXPAND, free.REPEAT, free.TILE, free.CAT,
               free.STACK, free.CHUNK, free.SPLIT, free.UNBIND, free.SIZE, free.DIM, free.NUMEL, free.GETATTR,
               free.LEN, free.DROPOUT, free.NATIVE_DROPOUT, free.STOCHASTIC_DEPTH, free.IDENTITY, free.COPY,
               free.FILL, free.CAST, free.TO, free.LIKE, free.NEW]


def test_free_targets_are_free_and_have_shape_rules():
    check_free_groups(REGISTRY, FREE_GROUPS)
    # the common ones the walker meets
    for target in (Method("view"), aten.view.default, aten._unsafe_view.default, torch.flatten, nn.Flatten,
                   Method("permute"), aten.permute.default, aten.t.default, Method("contiguous"), torch.cat,
                   aten.cat.default, builtins.getattr, Method("size"), nn.Dropout, nn.Identity,
                   torchvision.ops.StochasticDepth, Method("float"), aten.clone.default, aten.expand.default,
                   aten.split.Tensor):
        assert REGISTRY.counter(target).free, target
        assert REGISTRY.shape(target) is not None, target


# ----------------------------------------------------------------- views


@settings(max_examples=50, deadline=None)
@given(shape=shapes, data=st.data())
def test_view_and_reshape_with_minus_one(shape, data):
    numel = 1
    for s in shape:
        numel *= s
    target_shape = list(data.draw(st.permutations(shape)))
    if target_shape and data.draw(st.booleans()):
        target_shape[data.draw(st.integers(0, len(target_shape) - 1))] = -1
    if data.draw(st.booleans()):
        target_shape.append(data.draw(st.sampled_from([1, 2, -1])))
    x = TensorInfo(shape)
    t = tuple(target_shape)
    check(make(Method("view"), x, *t) if t else make(Method("view"), x, ()))
    check(make(Method("reshape"), x, t))
    check(make(torch.reshape, x, t))
    check(make(aten.view.default, x, list(t)))
    check(make(aten._unsafe_view.default, x, list(t)))
    assert numel == TensorInfo(shape).numel


def test_view_closed_forms_and_dtype_views():
    x = TensorInfo((2, 3, 4))
    assert free.shape_view(make(Method("view"), x, -1)) == TensorInfo((24,))
    assert free.shape_view(make(Method("view"), x, 6, -1)) == TensorInfo((6, 4))
    assert free.shape_view(make(Method("view"), x, size=(4, 6))) == TensorInfo((4, 6))
    check(make(Method("view"), x, torch.float16))
    check(make(Method("view"), x, torch.int32))
    check(make(Method("view"), TensorInfo((2, 4), torch.float16), torch.float32))
    for bad in ((5, -1), (-1, -1), (0, -1), (7,)):
        with pytest.raises(NotImplementedError):
            free.shape_view(make(Method("view"), x, *bad))


@settings(max_examples=50, deadline=None)
@given(shape=shapes, start=st.integers(-5, 4), end=st.integers(-5, 4))
def test_flatten_with_start_and_end_dims(shape, start, end):
    x = TensorInfo(shape)
    check(make(torch.flatten, x, start, end))
    check(make(Method("flatten"), x, start_dim=start, end_dim=end))
    check(make(nn.Flatten, x, module=nn.Flatten(start, end)))
    if len(shape) >= 2:
        assert free.shape_flatten(make(nn.Flatten, x, module=nn.Flatten())) == execute(
            make(nn.Flatten, x, module=nn.Flatten()), fill=torch.zeros)


@settings(max_examples=50, deadline=None)
@given(shape=nonempty, data=st.data())
def test_unflatten(shape, data):
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    size = shape[dim]
    factor = data.draw(st.sampled_from([d for d in range(1, size + 1) if size % d == 0]))
    sizes = data.draw(st.sampled_from([(factor, size // factor), (factor, -1), (-1, factor), (size,),
                                       (size + 1, -1)]))
    x = TensorInfo(shape)
    check(make(torch.unflatten, x, dim, sizes))
    check(make(Method("unflatten"), x, dim, sizes))
    check(make(nn.Unflatten, x, module=nn.Unflatten(dim, sizes)))


@settings(max_examples=50, deadline=None)
@given(shape=shapes, data=st.data())
def test_permute_transpose_movedim_t(shape, data):
    x = TensorInfo(shape)
    rank = max(len(shape), 1)
    dims = data.draw(st.permutations(range(len(shape))))
    dims = [d - len(shape) if data.draw(st.booleans()) else d for d in dims]
    check(make(Method("permute"), x, *dims))
    check(make(torch.permute, x, dims))
    check(make(aten.permute.default, x, dims))
    a, b = data.draw(st.integers(-rank, rank)), data.draw(st.integers(-rank, rank - 1))
    check(make(torch.transpose, x, a, b))
    check(make(Method("transpose"), x, a, b))
    check(make(Method("swapaxes"), x, a, b))
    check(make(aten.transpose.int, x, a, b))
    check(make(torch.t, x))
    check(make(Method("t"), x))
    if shape:
        src = data.draw(st.lists(st.integers(-rank, rank - 1), min_size=1, max_size=len(shape)))
        dst = data.draw(st.lists(st.integers(-rank, rank - 1), min_size=len(src), max_size=len(src)))
        check(make(torch.movedim, x, src, dst))
        check(make(Method("movedim"), x, src[0], dst[0]))


@settings(max_examples=50, deadline=None)
@given(shape=st.lists(st.integers(0, 3), max_size=4).map(tuple), data=st.data())
def test_squeeze_and_unsqueeze(shape, data):
    x = TensorInfo(shape)
    rank = max(len(shape), 1)
    dim = data.draw(st.integers(-rank - 1, rank))
    check(make(torch.squeeze, x))
    check(make(torch.squeeze, x, dim))
    check(make(Method("squeeze"), x, dim=dim))
    dims = tuple(data.draw(st.lists(st.integers(-rank, rank - 1), max_size=3, unique=True)))
    check(make(torch.squeeze, x, dims))
    check(make(aten.squeeze.dims, x, list(dims)))
    check(make(torch.unsqueeze, x, dim))
    check(make(Method("unsqueeze"), x, dim))
    check(make(aten.unsqueeze.default, x, dim))


@settings(max_examples=50, deadline=None)
@given(shape=st.lists(st.integers(1, 3), max_size=3).map(tuple), data=st.data())
def test_expand_repeat_tile(shape, data):
    x = TensorInfo(shape)
    lead = tuple(data.draw(st.lists(st.integers(0, 3), max_size=2)))
    tail = tuple(data.draw(st.sampled_from([s, -1, 4, 1])) for s in shape)
    sizes = lead + tail
    check(make(Method("expand"), x, *sizes) if sizes else make(Method("expand"), x, ()))
    check(make(Method("expand"), x, sizes))
    check(make(aten.expand.default, x, list(sizes)))
    check(make(torch.broadcast_to, x, sizes))
    check(make(Method("expand_as"), x, TensorInfo(tuple(abs(s) for s in sizes))))
    repeats = tuple(data.draw(st.lists(st.integers(0, 3), min_size=0, max_size=len(shape) + 2)))
    check(make(Method("repeat"), x, repeats))
    if repeats:
        check(make(Method("repeat"), x, *repeats))
    check(make(torch.tile, x, repeats))


# ------------------------------------------------------------- joins, splits


@settings(max_examples=50, deadline=None)
@given(shape=nonempty, data=st.data())
def test_cat_and_stack(shape, data):
    rank = len(shape)
    dim = data.draw(st.integers(-rank, rank - 1))
    parts = []
    for _ in range(data.draw(st.integers(1, 3))):
        part = list(shape)
        part[dim] = data.draw(st.integers(0, 3))
        if data.draw(st.integers(0, 9)) == 0:
            part = [0]  # a legacy empty tensor, skipped by cat
        if data.draw(st.integers(0, 9)) == 0:
            part.append(2)  # a rank mismatch
        dtype = data.draw(st.sampled_from([torch.float32, torch.float64, torch.int64, torch.float16]))
        parts.append(TensorInfo(tuple(part), dtype))
    check(make(torch.cat, parts, dim))
    check(make(torch.cat, tuple(parts), dim=dim))
    check(make(torch.concat, parts, dim))
    check(make(torch.concatenate, parts, axis=dim))
    check(make(aten.cat.default, parts, dim))
    same = [TensorInfo(shape, p.dtype) for p in parts]
    stack_dim = data.draw(st.integers(-rank - 1, rank))
    check(make(torch.stack, same, stack_dim))
    check(make(aten.stack.default, same, dim=stack_dim))


@settings(max_examples=50, deadline=None)
@given(shape=st.lists(st.integers(0, 7), min_size=1, max_size=3).map(tuple), data=st.data())
def test_chunk_split_unbind(shape, data):
    x = TensorInfo(shape)
    rank = len(shape)
    dim = data.draw(st.integers(-rank, rank - 1))
    chunks = data.draw(st.integers(1, 8))
    check(make(torch.chunk, x, chunks, dim))
    check(make(Method("chunk"), x, chunks, dim=dim))
    check(make(aten.chunk.default, x, chunks, dim))
    split_size = data.draw(st.integers(0, 8))
    check(make(torch.split, x, split_size, dim))
    check(make(Method("split"), x, split_size, dim))
    check(make(aten.split.Tensor, x, split_size, dim))
    size = shape[dim]
    cut = data.draw(st.integers(0, size))
    sections = data.draw(st.sampled_from([[cut, size - cut], [size], [cut, size - cut + 1]]))
    check(make(torch.split, x, sections, dim))
    check(make(Method("split"), x, sections, dim=dim))
    check(make(aten.split_with_sizes.default, x, sections, dim))
    check(make(torch.unbind, x, dim))
    check(make(Method("unbind"), x, dim))


# ------------------------------------------------------------ size queries


@settings(max_examples=30, deadline=None)
@given(shape=shapes, dim=st.integers(-5, 4))
def test_size_queries(shape, dim):
    x = TensorInfo(shape, torch.float16)
    check(make(Method("size"), x))
    check(make(Method("size"), x, dim))
    check(make(aten.sym_size.int, x, dim))
    check(make(Method("dim"), x))
    check(make(Method("numel"), x))
    check(make(torch.numel, x))
    for name in ("shape", "dtype", "ndim", "T", "mT"):
        check(make(builtins.getattr, x, name))
    check(make(builtins.len, x))
    assert free.shape_size(make(Method("size"), x)) == torch.Size(shape)
    assert type(free.shape_getattr(make(builtins.getattr, x, "shape"))) is torch.Size
    with pytest.raises(NotImplementedError):
        free.shape_getattr(make(builtins.getattr, x, "device"))


def test_getattr_picks_a_field_of_a_tuple_of_outputs():
    values = torch.return_types.max((TensorInfo((2,)), TensorInfo((2,), torch.int64)))
    assert free.shape_getattr(make(builtins.getattr, values, "indices")) == TensorInfo((2,), torch.int64)


# ---------------------------------------------------------------- identities


@settings(max_examples=30, deadline=None)
@given(shape=shapes, p=st.sampled_from([0.0, 0.2, 0.5, 1.0, 1.5]))
def test_dropout_forms_are_identities(shape, p):
    x = TensorInfo(shape)
    for module in (nn.Dropout(min(p, 1.0)), nn.Dropout1d(min(p, 1.0)), nn.Dropout2d(min(p, 1.0)),
                   nn.Dropout3d(min(p, 1.0)), nn.AlphaDropout(min(p, 1.0)), nn.Identity(),
                   torchvision.ops.StochasticDepth(min(p, 1.0), "row")):
        check(make(type(module), x, module=module.eval()))
    for function in (F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout):
        check(make(function, x, p, False))
    check(make(torch.dropout, x, p, False))
    check(make(aten.dropout.default, x, p, False))
    check(make(torchvision.ops.stochastic_depth, x, p, "batch", False))
    check(make(torchvision.ops.stochastic_depth, x, 0.5, "bogus", False))
    out, mask = free.shape_native_dropout(make(aten.native_dropout.default, x, p, False))
    assert (out, mask) == (x, TensorInfo(shape, torch.bool))


def test_identity_returns_any_input():
    pair = (TensorInfo((2,)), TensorInfo((3,)))
    assert free.shape_identity(make(nn.Identity, pair, module=nn.Identity())) is pair


@settings(max_examples=30, deadline=None)
@given(shape=shapes, dtype=st.sampled_from([torch.float32, torch.float16, torch.int64, torch.bool]),
       other=st.sampled_from([torch.float64, torch.int32, torch.bfloat16]))
def test_casts_copies_and_constructors(shape, dtype, other):
    x = TensorInfo(shape, dtype)
    for name in free.CASTS:
        check(make(Method(name), x))
    for call in (make(Method("to"), x, other), make(Method("to"), x, "cpu"), make(Method("to"), x, "cpu", other),
                 make(Method("to"), x, dtype=other), make(Method("to"), x, TensorInfo((1,), other)),
                 make(Method("type"), x, other), make(Method("type_as"), x, TensorInfo((), other)),
                 make(aten._to_copy.default, x, dtype=other), make(aten._to_copy.default, x),
                 make(Method("clone"), x), make(torch.clone, x), make(Method("detach"), x),
                 make(Method("contiguous"), x), make(aten.clone.default, x), make(aten.alias.default, x),
                 make(torch.zeros_like, x), make(torch.ones_like, x, dtype=other),
                 make(torch.full_like, x, 1), make(torch.empty_like, x, dtype=other),
                 make(Method("new_zeros"), x, (2, 3)), make(Method("new_zeros"), x, 2, 3),
                 make(Method("new_ones"), x, [4], dtype=other), make(Method("new_full"), x, (2,), 1),
                 make(Method("new_empty"), x, (1, 2)), make(aten.new_zeros.default, x, [3])):
        check(call)
    with pytest.raises(NotImplementedError):  # x.type() returns a string
        free.shape_to(make(Method("type"), x))


def test_fill_and_zero_are_free_with_the_same_shape():
    registry = CounterRegistry(collect(free))
    x = TensorInfo((4, 5))
    for target in (Method("zero_"), Method("fill_"), torch.ops.aten.zero_.default):
        assert registry.counter(target).free, target
        assert registry.shape(target).fn(OpCall("method", target, (x, 0.0))) == x
