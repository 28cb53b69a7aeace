"""Embedding tables: ``nn.Embedding`` / ``F.embedding`` / ``aten.embedding``
and ``nn.EmbeddingBag`` / ``F.embedding_bag`` / ``aten.embedding_bag``.

Convention: a lookup is a read from storage, 0 operations (the table is
counted as parameters, not ops). ``max_norm`` renormalises the looked-up
rows in place; that is not counted. A bag reduces the rows it gathers:

- ``sum``: ``D`` adds per row beyond the first of each bag;
  ``per_sample_weights`` add one mult per gathered element;
- ``mean``: as ``sum`` plus ``D`` mults (the division) per bag;
- ``max``: ``D`` comparisons (``other_ops``) per row beyond the first.

With 1-D input and ``offsets`` the bag sizes are data: the count assumes no
empty bag (``rows - bags`` extra rows in all).
"""
from __future__ import annotations

import sys

import torch
from torch import nn
import torch.nn.functional as F

from micronet.counters._common import tensor_arg
from micronet.manager import hookimpl
from micronet.records import Counts, TensorInfo
from micronet.registry import OpCall, collect, counter, shape_rule

aten = torch.ops.aten

ATEN_EMBEDDING = (aten.embedding, torch.embedding)  # (weight, indices, ...)
ATEN_EMBEDDING_BAG = (aten.embedding_bag, aten._embedding_bag, aten._embedding_bag_forward_only)
_ATEN_MODES = {0: "sum", 1: "mean", 2: "max"}
_INDEX_DTYPES = (torch.int64, torch.int32)


@counter(nn.Embedding, F.embedding, *ATEN_EMBEDDING)
def embedding(call: OpCall) -> Counts:
    """Embedding lookup: 0 operations (a gather from the parameter table).

    Args: module ``(input,)``; ``F.embedding(input, weight, padding_idx=None,
    max_norm=None, ...)``; ``aten.embedding(weight, indices, ...)``.

    # indices: [*]  weight: [V, D]  y: [*, D] -> Counts() (no mults, adds or other ops)
    """
    return Counts()


def lookup_output(indices, weight: TensorInfo) -> TensorInfo:
    """``[*] -> [*, D]`` in the table's dtype."""
    indices = tensor_arg(indices, "indices")
    if indices.dtype not in _INDEX_DTYPES or weight.ndim != 2:
        raise NotImplementedError("embedding needs integer indices and a 2-D table")
    return TensorInfo(indices.shape + (weight.shape[1],), weight.dtype)


def _module_weight(m: nn.Module) -> TensorInfo:
    return TensorInfo(tuple(m.weight.shape), m.weight.dtype)


@shape_rule(nn.Embedding)
def embedding_module_shape(call: OpCall) -> TensorInfo:
    """``nn.Embedding``: ``[*] -> [*, embedding_dim]``."""
    return lookup_output(call.arg(0, "input"), _module_weight(call.module))


@shape_rule(F.embedding)
def embedding_function_shape(call: OpCall) -> TensorInfo:
    """``F.embedding(input, weight, ...)``: ``[*] -> [*, D]``."""
    return lookup_output(call.arg(0, "input"), tensor_arg(call.arg(1, "weight"), "weight"))


@shape_rule(*ATEN_EMBEDDING)
def embedding_aten_shape(call: OpCall) -> TensorInfo:
    """``aten.embedding(weight, indices, ...)``: ``[*] -> [*, D]``."""
    return lookup_output(call.arg(1, "indices"), tensor_arg(call.arg(0, "weight"), "weight"))


def bag_counts(rows: int, bags: int, dim: int, mode: str, weighted: bool) -> Counts:
    """Reduce ``rows`` gathered rows of ``dim`` values into ``bags`` bags.

    # extra = max(rows - bags, 0) rows beyond each bag's first
    # sum: adds = extra*D (+ mults = rows*D with per_sample_weights)
    # mean: adds = extra*D, mults = bags*D;  max: other_ops = extra*D
    """
    extra = max(rows - bags, 0) * dim
    if mode == "max":
        return Counts(other_ops=extra)
    mults = (rows * dim if weighted else 0) + (bags * dim if mode == "mean" else 0)
    return Counts(mults=mults, adds=extra)


def bag_layout(indices: TensorInfo, offsets, include_last_offset: bool) -> tuple[int, int]:
    """``(rows, bags)``: ``[B, k]`` input is B bags of k; 1-D input is cut by ``offsets``."""
    if indices.ndim == 2 and offsets is None:
        return indices.numel, indices.shape[0]
    if indices.ndim == 1 and isinstance(offsets, TensorInfo) and offsets.ndim == 1:
        return indices.numel, offsets.numel - (1 if include_last_offset else 0)
    raise NotImplementedError("embedding_bag takes [B, k] input, or 1-D input with 1-D offsets")


@counter(nn.EmbeddingBag)
def embedding_bag_module(call: OpCall) -> Counts:
    """``nn.EmbeddingBag(input, offsets=None, per_sample_weights=None)``: the bag reduction.

    # input: [B, k] (or [I] with offsets: [B (+1)]); weight: [V, D]; y: [B, D]; see bag_counts
    """
    m = call.module
    rows, bags = bag_layout(call.x, call.arg(1, "offsets", None), m.include_last_offset)
    weighted = call.arg(2, "per_sample_weights", None) is not None
    return bag_counts(rows, bags, m.embedding_dim, m.mode, weighted)


@counter(F.embedding_bag)
def embedding_bag_function(call: OpCall) -> Counts:
    """``F.embedding_bag(input, weight, offsets=None, max_norm=None, norm_type=2,
    scale_grad_by_freq=False, mode='mean', sparse=False, per_sample_weights=None,
    include_last_offset=False, padding_idx=None)``: see :func:`bag_counts`."""
    weight = tensor_arg(call.arg(1, "weight"), "weight")
    rows, bags = bag_layout(call.x, call.arg(2, "offsets", None), bool(call.arg(9, "include_last_offset", False)))
    weighted = call.arg(8, "per_sample_weights", None) is not None
    return bag_counts(rows, bags, weight.shape[1], call.arg(6, "mode", "mean"), weighted)


@counter(*ATEN_EMBEDDING_BAG)
def embedding_bag_aten(call: OpCall) -> Counts:
    """``aten.embedding_bag(weight, indices, offsets, scale_grad_by_freq=False, mode=0,
    sparse=False, per_sample_weights=None, include_last_offset=False, ...)``, mode
    0/1/2 = sum/mean/max; counted on the first output as :func:`bag_counts`."""
    weight = tensor_arg(call.arg(0, "weight"), "weight")
    indices = tensor_arg(call.arg(1, "indices"), "indices")
    rows, bags = bag_layout(indices, call.arg(2, "offsets"), bool(call.arg(7, "include_last_offset", False)))
    weighted = call.arg(6, "per_sample_weights", None) is not None
    return bag_counts(rows, bags, weight.shape[1], _ATEN_MODES[call.arg(4, "mode", 0)], weighted)


def bag_output(indices, offsets, weight: TensorInfo, include_last_offset: bool) -> TensorInfo:
    """``[B, D]`` in the table's dtype."""
    indices = tensor_arg(indices, "input")
    if indices.dtype not in _INDEX_DTYPES or weight.ndim != 2:
        raise NotImplementedError("embedding_bag needs integer indices and a 2-D table")
    if isinstance(offsets, TensorInfo) and offsets.dtype not in _INDEX_DTYPES:
        raise NotImplementedError("offsets must be integers")
    _, bags = bag_layout(indices, offsets, include_last_offset)
    if bags < 0:
        raise NotImplementedError("include_last_offset needs at least one offset")
    return TensorInfo((bags, weight.shape[1]), weight.dtype)


@shape_rule(nn.EmbeddingBag)
def embedding_bag_module_shape(call: OpCall) -> TensorInfo:
    """``nn.EmbeddingBag``: ``[B, embedding_dim]``."""
    m = call.module
    return bag_output(call.arg(0, "input"), call.arg(1, "offsets", None), _module_weight(m),
                      m.include_last_offset)


@shape_rule(F.embedding_bag)
def embedding_bag_function_shape(call: OpCall) -> TensorInfo:
    """``F.embedding_bag``: ``[B, D]``."""
    return bag_output(call.arg(0, "input"), call.arg(2, "offsets", None),
                      tensor_arg(call.arg(1, "weight"), "weight"),
                      bool(call.arg(9, "include_last_offset", False)))


@hookimpl
def micronet_register_counters():
    return collect(sys.modules[__name__])
