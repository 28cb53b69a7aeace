"""The audit's cheaper per-node paths give what the general ones give.

``micronet.values`` flattens plain containers with a loop instead of torch's
pytree, and ``micronet.sparsity`` finds zeros by a chunked compare instead
of ``array.all()``: both checked here against hand-built values.
"""
from __future__ import annotations

from collections import OrderedDict, namedtuple

import numpy as np
import pytest
import torch
from torch.fx.immutable_collections import immutable_dict, immutable_list

from micronet.records import TensorInfo
from micronet.sparsity import COMPARE_CHUNK, COMPARE_MIN, count_nonzero, count_nonzero_all
from micronet.values import has_tensor, shapes, tensor_infos

A, B, C = TensorInfo((1, 2)), TensorInfo((3,)), TensorInfo((4, 5, 6), torch.int64)
Pair = namedtuple("Pair", "first second")


@pytest.mark.parametrize("value, expected", [
    ((immutable_list([A, B, C]), 1), (A, B, C)),  # torch.cat's arguments as fx hands them over
    ((A, [B, (C, 3)], {"k": A}), (A, B, C, A)),
    (immutable_dict(x=[A, immutable_list([B])], y=C), (A, B, C)),
    ((Pair(A, B), [C]), (A, B, C)),  # a namedtuple: pytree's way, same order
    ([OrderedDict(b=B, a=A), torch.Size([2, 3])], (B, A)),  # a Size is a size, not tensors
    ((1, "x", None), ()),
])
def test_tensor_infos_in_argument_order(value, expected):
    assert tensor_infos(value) == expected
    assert shapes(value) == tuple(info.shape for info in expected)
    assert has_tensor(value) == bool(expected)


def test_a_zero_anywhere_is_found():
    """One zero in the first, a middle or the last chunk of the compare, and
    -0.0, are counted; NaN is not a zero."""
    n = 3 * COMPARE_CHUNK + 5
    for where in (0, COMPARE_CHUNK - 1, COMPARE_CHUNK, 2 * COMPARE_CHUNK + 7, n - 1):
        weight = torch.ones(n)
        weight[where] = 0.0
        assert count_nonzero(weight) == n - 1
    weight = torch.full((n,), float("nan"))
    weight[5] = -0.0
    assert count_nonzero(weight) == n - 1
    assert count_nonzero(torch.full((n,), float("nan"))) == n


def test_every_dtype_and_size_counts_exactly():
    """Sizes on both sides of the compare's threshold, several dtypes, in a
    parallel scan: each tensor's nonzeros are numel minus the zeros put in."""
    tensors, expected = [], {}
    for size in (7, COMPARE_MIN - 1, COMPARE_MIN, COMPARE_CHUNK + 1, 3_000_000):
        for dtype in (torch.float32, torch.float16, torch.int8, torch.int64, torch.bool):
            t = torch.ones(size, dtype=dtype)
            zeros = np.arange(0, size, 997)
            t[torch.from_numpy(zeros)] = 0
            tensors.append(t)
            expected[id(t)] = size - len(zeros)
    assert count_nonzero_all(tensors, threads=2) == expected
    assert {id(t): count_nonzero(t) for t in tensors} == expected
