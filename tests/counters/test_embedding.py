"""Embedding counters: lookups cost nothing, bags cost their reduction."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from micronet.counters import embedding
from micronet.records import Counts, TensorInfo
from micronet.registry import CounterRegistry, OpCall, collect

aten = torch.ops.aten
LONG = torch.int64


def info(*shape, dtype=torch.float32) -> TensorInfo:
    return TensorInfo(tuple(shape), dtype)


def test_embedding_lookup_is_free_and_shaped_like_the_table():
    m = nn.Embedding(1000, 64, device="meta", dtype=torch.float16)
    call = OpCall("module", nn.Embedding, (info(2, 7, dtype=LONG),), module=m)
    out = embedding.embedding_module_shape(call)
    assert out == info(2, 7, 64, dtype=torch.float16)  # the table's dtype, not the indices'
    assert embedding.embedding(replace(call, out=out)) == Counts()
    fcall = OpCall("function", F.embedding, (info(5, dtype=LONG), info(10, 3)))
    assert embedding.embedding_function_shape(fcall) == info(5, 3)
    acall = OpCall("aten", aten.embedding.default, (info(10, 3), info(4, 2, dtype=LONG)))
    assert embedding.embedding_aten_shape(acall) == info(4, 2, 3)
    assert tuple(F.embedding(torch.zeros(4, 2, dtype=LONG), torch.randn(10, 3)).shape) == (4, 2, 3)
    with pytest.raises(NotImplementedError):  # float indices: torch raises
        embedding.embedding_function_shape(OpCall("function", F.embedding, (info(5), info(10, 3))))


def test_embedding_bag_modes_on_2d_input():
    # 4 bags of 6 rows of D = 8: 4*(6-1) extra rows of 8 values
    for mode, expected in [("sum", Counts(adds=4 * 5 * 8)),
                           ("mean", Counts(adds=4 * 5 * 8, mults=4 * 8)),
                           ("max", Counts(other_ops=4 * 5 * 8))]:
        m = nn.EmbeddingBag(100, 8, mode=mode, device="meta")
        call = OpCall("module", nn.EmbeddingBag, (info(4, 6, dtype=LONG),), module=m)
        out = embedding.embedding_bag_module_shape(call)
        assert out == info(4, 8)
        assert embedding.embedding_bag_module(replace(call, out=out)) == expected, mode


def test_embedding_bag_offsets_and_per_sample_weights():
    m = nn.EmbeddingBag(100, 8, mode="sum", include_last_offset=True)
    indices, offsets, weights = torch.tensor([1, 2, 3, 4, 5, 6, 7]), torch.tensor([0, 2, 5, 7]), torch.rand(7)
    call = OpCall("module", nn.EmbeddingBag, (info(7, dtype=LONG), info(4, dtype=LONG), info(7)), module=m)
    out = embedding.embedding_bag_module_shape(call)
    assert out.shape == tuple(m(indices, offsets, weights).shape) == (3, 8)  # last offset closes bag 3
    counts = embedding.embedding_bag_module(replace(call, out=out))
    assert counts == Counts(adds=(7 - 3) * 8, mults=7 * 8)  # 7 weighted rows into 3 bags
    fcall = OpCall("function", F.embedding_bag, (info(7, dtype=LONG), info(100, 8), info(3, dtype=LONG)),
                   {"mode": "mean"})
    assert embedding.embedding_bag_function_shape(fcall) == info(3, 8)
    assert embedding.embedding_bag_function(replace(fcall, out=info(3, 8))) == Counts(adds=4 * 8, mults=3 * 8)
    acall = OpCall("aten", aten._embedding_bag.default,
                   (info(100, 8), info(7, dtype=LONG), info(3, dtype=LONG), False, 2),
                   out=(info(3, 8), info(0), info(3), info(3)))
    assert embedding.embedding_bag_aten(acall) == Counts(other_ops=4 * 8)  # mode 2 = max


def test_every_form_resolves_in_a_registry():
    registry = CounterRegistry(collect(embedding))
    for target in (nn.Embedding, F.embedding, aten.embedding.default, nn.EmbeddingBag, F.embedding_bag):
        assert registry.counter(target) is not None and registry.shape(target) is not None, target
    assert registry.counter(aten.embedding_bag.padding_idx) is not None
