"""Measuring exact zeros and their block structure from real weights."""
import torch

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
    assert m.nonzero == 24 and m.block in ((1, 4), (1, 8))
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
    w[8:10, 4:8] = 0  # 8 zeros: a 2x4 patch is two 1x4 blocks and fits 2x2 too
    m = measure(w)
    assert m.nonzero == 64 * 64 - 8 and m.block == (1, 4)
    w[20, 33] = 0  # one stray zero breaks every block
    assert measure(w).block == (1,)


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
