"""Nested values along graph edges, walked with ``torch.utils._pytree``.

A node's arguments and outputs nest tensors in tuples, lists, dicts,
namedtuples and torch's own containers (fx's immutable lists, return
types). The walker swaps each tensor for its :class:`TensorInfo` (shape and
dtype, never data) and back for an empty tensor when an op must run; these
helpers do it with torch's pytree, so every container torch knows is
handled alike. A ``torch.Size`` is a leaf: it is a size, not a container.
A value that is no tuple, list or dict is a leaf and skips pytree (the
walk's hot path: most values are one tensor).
"""
from __future__ import annotations

from typing import Any, Iterable

import torch
from torch.fx.immutable_collections import immutable_dict, immutable_list
from torch.utils import _pytree as pytree

from .records import TensorInfo

__all__ = ["to_info", "to_meta", "tensor_infos", "has_tensor", "shapes"]


def _is_size(value: Any) -> bool:
    return isinstance(value, torch.Size)


def _nested(value: Any) -> bool:
    """Whether ``value`` may hold tensors inside (a container pytree walks)."""
    return isinstance(value, (tuple, list, dict)) and not isinstance(value, torch.Size)


def _info(tensor: torch.Tensor) -> TensorInfo:
    return TensorInfo(tuple(tensor.shape), tensor.dtype)


def to_info(value: Any) -> Any:
    """``value`` with every tensor replaced by its TensorInfo."""
    if not _nested(value):
        return _info(value) if isinstance(value, torch.Tensor) else value
    return pytree.tree_map_only(torch.Tensor, _info, value, is_leaf=_is_size)


def to_meta(value: Any, device: str = "meta") -> Any:
    """``value`` with every TensorInfo replaced by an empty tensor on
    ``device`` (zeros when the device is real)."""
    def tensor(info: TensorInfo) -> torch.Tensor:
        if device == "meta":
            return torch.empty(info.shape, dtype=info.dtype, device="meta")
        return torch.zeros(info.shape, dtype=info.dtype, device=device)

    if not _nested(value):
        return tensor(value) if isinstance(value, TensorInfo) else value
    return pytree.tree_map_only(TensorInfo, tensor, value, is_leaf=_is_size)


#: Containers whose leaves are their items in order, as pytree flattens them:
#: fx hands a call's arguments over in these (``torch.cat``'s list of tensors).
_PLAIN_SEQUENCES = frozenset({tuple, list, immutable_list})
_PLAIN_DICTS = frozenset({dict, immutable_dict})


def meta_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Empty meta copies of a module's parameters and buffers, by name (for
    ``torch.func.functional_call`` without touching its weights)."""
    return {k: torch.empty_like(v, device="meta")
            for k, v in {**dict(module.named_parameters()), **dict(module.named_buffers())}.items()}


def _leaves(value: Any) -> Iterable[Any]:
    """The leaves of ``value``: plain containers by a loop, others by pytree."""
    if not _nested(value):
        return (value,)
    kind = type(value)
    items = value.values() if kind is dict else value if kind is tuple or kind is list else None
    if items is not None and not any(map(_nested, items)):
        return items  # a plain tuple, list or dict of leaves (most call arguments)
    leaves: list[Any] = []
    if _plain_leaves(value, leaves):
        return leaves
    return pytree.tree_iter(value, is_leaf=_is_size)


def _plain_leaves(value: Any, leaves: list[Any]) -> bool:
    """Append the leaves of ``value`` to ``leaves`` in pytree's order, when it
    nests only plain tuples, lists and dicts (fx's immutable ones too): the
    walk's arguments (``torch.cat``'s list of tensors), several times faster
    than pytree. False, leaves unfinished, at any other container."""
    kind = type(value)
    if kind in _PLAIN_SEQUENCES:
        items = value
    elif kind in _PLAIN_DICTS:
        items = value.values()
    elif _nested(value):
        return False  # a namedtuple, an OrderedDict, a return type: pytree knows it
    else:
        leaves.append(value)
        return True
    for item in items:
        if not _plain_leaves(item, leaves):
            return False
    return True


def tensor_infos(value: Any) -> tuple[TensorInfo, ...]:
    """Every TensorInfo in ``value``, in pytree (argument) order."""
    if type(value) is TensorInfo:  # most outputs
        return (value,)
    return tuple(leaf for leaf in _leaves(value) if isinstance(leaf, TensorInfo))


def has_tensor(value: Any) -> bool:
    """Whether ``value`` holds a TensorInfo anywhere (stops at the first)."""
    return any(isinstance(leaf, TensorInfo) for leaf in _leaves(value))


def shapes(value: Any) -> tuple[tuple[int, ...], ...]:
    """The shapes of every TensorInfo in ``value``, in order."""
    if type(value) is TensorInfo:  # most outputs
        return (value.shape,)
    return tuple(info.shape for info in tensor_infos(value))
