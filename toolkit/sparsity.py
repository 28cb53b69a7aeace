"""Sparsity measured from real weights: exact zeros and the blocks they form.

The rules charge a sparse tensor its nonzero values plus a bitmask of one
bit per element, or one bit per block when the zeros come in blocks. The
block shape is measured: the largest candidate block such that every block
is either all zero or has no zero. A weight on the meta device has no data
and counts as dense.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch

from .precision import MAX_BITS

__all__ = ["WeightSparsity", "measure", "count_nonzero", "count_nonzero_all", "CANDIDATE_BLOCKS"]

#: Elements per piece of work in a parallel scan: large enough that a thread's
#: hand-over of the GIL is rare next to the memory read, small enough to share
#: one big weight (VGG's 103M-element classifier) between threads.
SCAN_CHUNK = 1 << 21
#: Tensors smaller than this are read on the calling thread (a task costs more).
PARALLEL_MIN_TENSOR = 1 << 16
#: Below this many elements in all, threads cost more than they save.
PARALLEL_MIN_ELEMENTS = 1 << 21
#: Memory bandwidth, not cores, bounds the scan: more threads stop helping.
MAX_SCAN_THREADS = 8

#: Block shapes tried, over the last two dims of the weight viewed as
#: [out, in*kernel] (1 x k blocks run along the input), largest first.
CANDIDATE_BLOCKS: tuple[tuple[int, int], ...] = (
    (16, 1), (1, 16), (8, 1), (1, 8), (4, 4), (4, 1), (1, 4), (2, 2), (2, 1), (1, 2),
)


@dataclass(frozen=True, slots=True)
class WeightSparsity:
    """Elements, nonzeros and block shape (``()`` dense, ``(1,)`` unstructured)."""

    numel: int
    nonzero: int
    block: tuple[int, ...]


def count_nonzero(tensor: torch.Tensor) -> int:
    """Exact nonzero elements (all of them for a meta tensor, which has no data).

    Most weights have no zero at all: NumPy's ``all`` answers that about 3x
    faster than ``torch.count_nonzero`` (it is memory-bound); only tensors
    with zeros are counted.
    """
    if tensor.is_meta:
        return tensor.numel()
    array = _numpy_view(tensor)
    if array is not None:
        return _piece_nonzero(array)
    if tensor.dtype in _BYTE_ZERO_MASKS:
        return _byte_nonzero(tensor, _BYTE_ZERO_MASKS[tensor.dtype])
    with torch.no_grad():
        return int(torch.count_nonzero(tensor.detach()))


def _byte_nonzero(tensor: torch.Tensor, mask: int) -> int:
    """Nonzero elements of a one-byte dtype torch cannot count (float8, the
    sub-byte integer shells, packed float4): an element is zero when its
    byte ``& mask`` is 0 (the mask drops the sign bit of a float's +-0).
    The bytes are read in pieces, never upcast all at once. A mask of 0: the
    dtype has no zero (float8_e8m0fnu holds powers of two only)."""
    if not mask:
        return tensor.numel()
    with torch.no_grad():
        flat = tensor.detach().contiguous().view(torch.uint8).reshape(-1)
        return sum(int(torch.count_nonzero(flat[i:i + SCAN_CHUNK] & mask))
                   for i in range(0, flat.numel(), SCAN_CHUNK))


def _byte_zero_masks() -> dict[torch.dtype, int]:
    """``dtype -> mask`` for :func:`_byte_nonzero`, over the dtypes this torch has."""
    masks = {}
    for name, mask in (("float8_e4m3fn", 0x7F), ("float8_e5m2", 0x7F),  # +-0: 0x00 and 0x80
                       ("float8_e4m3fnuz", 0xFF), ("float8_e5m2fnuz", 0xFF),  # 0x80 is NaN, not -0
                       ("float8_e8m0fnu", 0),  # powers of two only: no zero
                       ("float4_e2m1fn_x2", 0x77)):  # two values a byte, each +-0 with or without sign
        if hasattr(torch, name):
            masks[getattr(torch, name)] = mask
    for bits in range(1, 8):  # torch.uint1..uint7, int1..int7: one value a byte, low bits
        for name in (f"uint{bits}", f"int{bits}"):
            if hasattr(torch, name):
                masks[getattr(torch, name)] = (1 << bits) - 1
    return masks


_BYTE_ZERO_MASKS = _byte_zero_masks()


def count_nonzero_all(tensors: Iterable[torch.Tensor], threads: int | None = None) -> dict[int, int]:
    """Exact nonzero counts of many tensors, ``id(tensor) -> count``, read in parallel.

    The same counts as :func:`count_nonzero`, each tensor read once. Large CPU
    tensors are cut into pieces scanned on ``threads`` worker threads (default:
    torch's intra-op thread count, at most 8): NumPy and torch release the GIL
    while they read, and reading every weight is what an audit of a large model
    spends its time on. Shared tensors are counted once.
    """
    unique = {id(t): t for t in tensors}
    counts: dict[int, int] = {}
    pieces: list[tuple[int, np.ndarray]] = []
    for key, tensor in unique.items():
        array = _numpy_view(tensor)
        if array is None:
            counts[key] = count_nonzero(tensor)
        elif array.size < PARALLEL_MIN_TENSOR:  # most tensors: one NumPy call, no more
            counts[key] = _piece_nonzero(array)
        else:
            counts[key] = 0
            flat = array.reshape(-1)
            pieces += [(key, flat[i:i + SCAN_CHUNK]) for i in range(0, flat.size, SCAN_CHUNK)]
    if not pieces:
        return counts
    threads = min(threads or torch.get_num_threads(), os.cpu_count() or 1, MAX_SCAN_THREADS)
    total = sum(piece.size for _, piece in pieces)
    if threads <= 1 or total < PARALLEL_MIN_ELEMENTS:
        shares = [pieces]
    else:
        shares = _split_evenly(pieces, threads, total)
    # one share per thread, the calling thread taking the first: few hand-overs of the GIL
    if len(shares) == 1:
        found = [_share_nonzero(pieces)]
    else:
        with ThreadPoolExecutor(len(shares) - 1, thread_name_prefix="micronet-scan") as pool:
            futures = [pool.submit(_share_nonzero, share) for share in shares[1:]]
            found = [_share_nonzero(shares[0])] + [f.result() for f in futures]
    for share, share_counts in zip(shares, found):
        for (key, _), n in zip(share, share_counts):
            counts[key] += n
    return counts


def _split_evenly(pieces: list, parts: int, total: int) -> list[list]:
    """Consecutive runs of ``pieces`` holding about ``total / parts`` elements each."""
    shares: list[list] = [[]]
    target, filled = total / parts, 0
    for piece in pieces:
        if filled >= target * len(shares) and len(shares) < parts:
            shares.append([])
        shares[-1].append(piece)
        filled += piece[1].size
    return shares


def _share_nonzero(share: list) -> list[int]:
    return [_piece_nonzero(piece) for _, piece in share]


def _numpy_view(tensor: torch.Tensor) -> np.ndarray | None:
    """A zero-copy NumPy view of a CPU tensor's data (None when there is none)."""
    if not tensor.is_cpu or tensor.dtype not in _NUMPY_DTYPES or not tensor.is_contiguous():
        return None  # meta tensors are not on the CPU
    return tensor.detach().numpy()


def _piece_nonzero(piece: np.ndarray) -> int:
    """Nonzeros of a NumPy array (a whole tensor or a piece of one)."""
    if _no_zero(piece):  # the common case, one memory-bound pass
        return piece.size
    return int(torch.count_nonzero(torch.from_numpy(piece)))


#: Elements compared at a time by :func:`_no_zero`: its bools stay in the L2 cache.
COMPARE_CHUNK = 1 << 17
#: Below this many elements ``array.all()`` costs less than setting up the chunks.
COMPARE_MIN = 1 << 14


def _no_zero(array: np.ndarray) -> bool:
    """Whether ``array`` (contiguous) holds no zero (``-0.0`` is one, NaN is not).

    ``array == 0`` chunk by chunk into one small bool buffer, each chunk's
    ``any()`` read from the cache: NumPy's vectorised compare makes this
    about twice as fast as ``array.all()``, which converts every element
    to a bool on the way; both read the data once."""
    if array.size < COMPARE_MIN:
        return bool(array.all())
    flat = array.reshape(-1)
    found = np.empty(min(COMPARE_CHUNK, flat.size), dtype=bool)
    for start in range(0, flat.size, COMPARE_CHUNK):
        chunk = flat[start:start + COMPARE_CHUNK]
        hits = found[:chunk.size]
        np.equal(chunk, 0, out=hits)
        if hits.any():
            return False
    return True


_NUMPY_DTYPES = frozenset({torch.float32, torch.float64, torch.float16, torch.int8, torch.uint8,
                           torch.int16, torch.int32, torch.int64, torch.bool})


def measure(weight: torch.Tensor, nonzero: int | None = None) -> WeightSparsity:
    """Find the block shape of ``weight``'s zeros (``nonzero`` if already counted)."""
    numel = weight.numel()
    if weight.is_meta or numel == 0:
        return WeightSparsity(numel, numel, ())
    if nonzero is None:
        nonzero = count_nonzero(weight)
    if nonzero == numel:
        return WeightSparsity(numel, nonzero, ())
    zeros = numel - nonzero
    if zeros * zeros * MAX_BITS <= numel:
        # Too few zeros for any block to matter: a block holds at most ``zeros``
        # elements, so the mask costs at least numel / (32 * zeros) words, more
        # than the zeros save at any bit width. Dense storage wins; no search.
        return WeightSparsity(numel, nonzero, (1,))
    return WeightSparsity(numel, nonzero, _block_shape(weight, zeros))


def _block_shape(weight: torch.Tensor, zeros: int) -> tuple[int, ...]:
    # Rows are output channels (whole filters); kernel positions run along columns.
    rows = weight.shape[0] if weight.dim() > 1 else 1
    cols = weight.numel() // max(rows, 1)
    if zeros == rows * cols:
        return (rows, cols)  # all zero: one block, one bit
    candidates = [(1, cols)] if cols > 1 else []  # whole filters pruned: one bit per output channel
    # zeros filling whole blocks come in multiples of the block size
    candidates += [b for b in CANDIDATE_BLOCKS if b[0] * b[1] > 1]
    candidates = [(br, bc) for br, bc in candidates
                  if not rows % br and not cols % bc and not zeros % (br * bc)]
    if not candidates:
        return (1,)
    with torch.no_grad():
        nonzero = _nonzero_mask(weight.detach()).reshape(rows, cols)
        # few zeros (a fresh or barely pruned weight): check their positions only
        test = _zeros_fill_blocks(~nonzero) if zeros * 8 < rows * cols else _aligned(nonzero)
        return next((block for block in candidates if test(*block)), (1,))


def _aligned(nonzero: torch.Tensor):
    """Test of blocks over a dense mask: every tile all zero or all nonzero."""
    rows, cols = nonzero.shape

    def test(br: int, bc: int) -> bool:
        tiles = nonzero.reshape(rows // br, br, cols // bc, bc)
        return bool(torch.equal(tiles.any(dim=3).any(dim=1), tiles.all(dim=3).all(dim=1)))

    return test


def _nonzero_mask(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor != 0`` as a bool tensor, also for the one-byte dtypes torch
    cannot compare (see :func:`_byte_nonzero`)."""
    mask = _BYTE_ZERO_MASKS.get(tensor.dtype)
    if mask is None:
        return tensor != 0
    if not mask:
        return torch.ones(tensor.shape, dtype=torch.bool)
    return (tensor.contiguous().view(torch.uint8) & mask) != 0


def _zeros_fill_blocks(zero: torch.Tensor):
    """Test of blocks from the zeros' positions (``zero``: a bool matrix):
    every block holding a zero holds br*bc of them (cost grows with the
    zeros, not the weight)."""
    rows, cols = zero.shape
    where = torch.nonzero(zero)
    r, c = where[:, 0], where[:, 1]

    def test(br: int, bc: int) -> bool:
        block = (r // br) * (cols // bc) + c // bc
        counts = torch.unique(block, return_counts=True)[1]  # over the zeros only, not all blocks
        return bool((counts == br * bc).all())

    return test


def block_elements(block: tuple[int, ...]) -> int:
    """Elements per block (1 for unstructured)."""
    n = 1
    for size in block:
        n *= size
    return n
