"""Measuring exact zeros and their block structure from real weights."""
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from micronet.sparsity import measure


def test_dense_and_meta_weights_are_dense():
    assert measure(torch.ones(4, 4)).block == ()
    meta = measure(torch.empty(8, 8, device="meta"))
    assert (meta.numel, meta.nonzero, meta.block) == (64, 64, ())


def test_unstructured_zeros():
    w = torch.ones(4, 8)
    w[0, 1] = 0
    w[3, 5] = 0
    m = measure(w)
    assert (m.numel, m.nonzero, m.block) == (32, 30, (1,))


def test_one_by_four_blocks_are_found():
    w = torch.ones(4, 8)
    w[1, 4:8] = 0
    w[2, 0:4] = 0
    m = measure(w)
    # rows 1 and 2 are each half zero: 1x4 tiles fit, 1x8 (a whole row) and 2x2 do not
    assert (m.nonzero, m.block) == (24, (1, 4))
    w[3, 0:2] = 0  # now only 1x2 blocks fit
    assert measure(w).block == (1, 2)


def test_whole_filters_pruned_give_one_bit_per_filter():
    w = torch.ones(6, 3, 3, 3)
    w[2] = 0
    w[4] = 0
    m = measure(w)
    assert m.nonzero == 4 * 27 and m.block == (1, 27)


def test_an_all_zero_weight_is_one_block():
    m = measure(torch.zeros(10, 3, 3, 3))
    assert (m.nonzero, m.block) == (0, (10, 27))


def test_few_zeros_are_checked_by_position():
    w = torch.ones(64, 64)
    w[8:12, 4:12] = 0  # 32 zeros: a 4x8 patch made of two aligned 4x4 blocks, no aligned 1x8
    m = measure(w)
    assert m.nonzero == 64 * 64 - 32 and m.block == (4, 4)
    w[20, 33] = 0  # one stray zero breaks every block
    assert measure(w).block == (1,)


def test_zeros_too_few_for_any_block_to_pay_are_unstructured():
    # 8 zeros in a 1x8 block of 4096 elements: the cheapest mask (4096 / 8 bits
    # = 16 words) costs more than the zeros save even at 64 bits (8 x 2 words),
    # so the block search is skipped and storage stays dense
    from micronet.precision import MAX_BITS

    w = torch.ones(64, 64)
    w[3, 8:16] = 0
    assert 8 * 8 * MAX_BITS <= w.numel()
    assert measure(w).block == (1,)
    w[5, 8:16] = 0  # 16 zeros: 16 * 16 * 64 > 4096, the blocks are searched
    assert measure(w).block == (1, 8)


def _sparse(shape, fraction, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=g).to(dtype)
    w[torch.rand(shape, generator=g) < fraction] = 0
    return w


def test_parallel_scan_equals_torch_count_nonzero():
    from micronet.sparsity import PARALLEL_MIN_TENSOR, SCAN_CHUNK, count_nonzero_all

    tensors = [
        _sparse((3 * SCAN_CHUNK + 17,), 0.3, 0),             # cut into pieces, zeros in each
        _sparse((SCAN_CHUNK // 1024, 1024), 0.0, 1),         # no zero: the fast path
        _sparse((PARALLEL_MIN_TENSOR // 2,), 0.5, 2),        # small: read on the calling thread
        _sparse((2 * PARALLEL_MIN_TENSOR,), 0.9, 3, torch.float16),
        _sparse((4096, 1024), 0.2, 4).t(),                   # not contiguous
        torch.zeros(5, dtype=torch.bool),
        torch.empty(1 << 20, device="meta"),                 # no data: all counted nonzero
    ]
    tensors[1][-1, -1] = 0  # a single zero in the last piece
    tensors.append(tensors[0])  # a shared tensor is counted once
    expected = {id(t): (t.numel() if t.is_meta else int(torch.count_nonzero(t))) for t in tensors}
    for threads in (1, 2, 3):
        assert count_nonzero_all(tensors, threads) == expected


def _storage_words(numel, nonzero, block, bits):
    """The rules' charge in 32-bit words: the cheaper of dense and bitmask-sparse."""
    from micronet.sparsity import block_elements

    dense = numel * bits / 32
    if nonzero == numel:
        return dense
    return min(dense, nonzero * bits / 32 + numel / block_elements(block) / 32)


@given(rows=st.sampled_from([4, 8, 16, 32]), cols=st.sampled_from([4, 8, 16, 32, 64]),
       zeros=st.integers(1, 40), tiled=st.booleans(), seed=st.integers(0, 2**16),
       bits=st.sampled_from([1, 4, 8, 16, 32, 64]))
@settings(max_examples=200, deadline=None)
def test_skipping_the_block_search_never_changes_the_charge(rows, cols, zeros, tiled, seed, bits):
    from micronet.sparsity import _block_shape

    g = torch.Generator().manual_seed(seed)
    w = torch.ones(rows, cols)
    if tiled:  # zeros in whole 1x4 tiles, where a block mask can pay
        tiles = w.view(rows, cols // 4, 4)
        picked = torch.randperm(rows * cols // 4, generator=g)[:min(zeros, rows * cols // 4 - 1)]
        tiles.view(-1, 4)[picked] = 0
    else:
        w.view(-1)[torch.randperm(rows * cols, generator=g)[:min(zeros, rows * cols - 1)]] = 0
    numel, nonzero = w.numel(), int(torch.count_nonzero(w))
    searched = _block_shape(w, numel - nonzero)
    assert _storage_words(numel, nonzero, measure(w).block, bits) == \
        _storage_words(numel, nonzero, searched, bits)
