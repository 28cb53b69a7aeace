"""Sparsity measured from real weights: exact zeros and the blocks they form.

The rules charge a sparse tensor its nonzero values plus a bitmask of one
bit per element, or one bit per block when the zeros come in blocks. The
block shape is measured: the largest candidate block such that every block
is either all zero or has no zero. A weight on the meta device has no data
and counts as dense.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["WeightSparsity", "measure", "count_nonzero", "CANDIDATE_BLOCKS"]

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
    """Exact nonzero elements (all of them for a meta tensor, which has no data)."""
    if tensor.is_meta:
        return tensor.numel()
    with torch.no_grad():
        return int(torch.count_nonzero(tensor))


def measure(weight: torch.Tensor, nonzero: int | None = None) -> WeightSparsity:
    """Find the block shape of ``weight``'s zeros (``nonzero`` if already counted)."""
    numel = weight.numel()
    if weight.is_meta or numel == 0:
        return WeightSparsity(numel, numel, ())
    if nonzero is None:
        nonzero = count_nonzero(weight)
    if nonzero == numel:
        return WeightSparsity(numel, nonzero, ())
    return WeightSparsity(numel, nonzero, _block_shape(weight))


def _block_shape(weight: torch.Tensor) -> tuple[int, ...]:
    # Rows are output channels (whole filters); kernel positions run along columns.
    matrix = (weight.detach().reshape(weight.shape[0], -1) != 0) if weight.dim() > 1 else \
        (weight.detach().reshape(1, -1) != 0)
    rows, cols = matrix.shape
    if matrix.sum(dim=1).eq(0).logical_or(matrix.all(dim=1)).all() and cols > 1:
        return (1, cols)  # whole filters pruned: one bit per output channel
    for block in CANDIDATE_BLOCKS:
        br, bc = block
        if rows % br or cols % bc or br * bc == 1:
            continue
        tiles = matrix.reshape(rows // br, br, cols // bc, bc).sum(dim=(1, 3))
        if bool(((tiles == 0) | (tiles == br * bc)).all()):
            return block
    return (1,)


def block_elements(block: tuple[int, ...]) -> int:
    """Elements per block (1 for unstructured)."""
    n = 1
    for size in block:
        n *= size
    return n
