"""Layers Torch-Pruning cannot prune, found before it builds its graph.

Torch-Pruning knows the torch layers it has pruners for (convolutions,
linear, norms, embeddings, attention, LSTM). Any other module's parameters
it treats as loose tensors, and the functional ops inside that module
(``F.conv2d``, ``F.linear``, ``@``) as *elementwise* ops that pass channel
indices straight through. For a layer that mixes channels that is wrong: the
group of a neighbouring conv runs through the layer with indices of the
wrong width, and ``get_all_groups`` either loops for good (a residual stream
around a plugin's linear layer: over ten minutes, whatever ``ignore`` says)
or a pruning function raises an ``IndexError``.

So before pruning, :func:`unknown_weighted` names every layer of a type
Torch-Pruning does not know that a plugin declared as a
:class:`~micronet.steps.WeightedLayer`, or that owns a weight of two or
more non-trivial dimensions and has no weighted submodules. Each such class gets a :class:`KeepWhole` pruner:
Torch-Pruning then sees the layer as one node whose input and output
channels are not coupled, and :class:`Pruner` leaves alone every group that
reaches it, so the layer is kept whole with the channels entering and
leaving it. One forward pass under autograd checks what this cannot cover:
a kept-whole layer whose weight the model uses without calling the layer
(a traced graph that inlined it), or a loose weight fed straight into a
convolution or matrix product (through reshaping ops only); :func:`survey`
then refuses the step in one line naming the parameter. Loose parameters
that only scale or shift activations (a position embedding, a layer scale)
stay Torch-Pruning's to handle, as before.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import torch
import torch_pruning as tp
from torch import nn
from torch.utils._pytree import tree_leaves

from micronet.errors import CompressionError
from micronet.selection import registered_for
from micronet.steps import WeightedLayer

__all__ = ["KeepWhole", "Pruner", "Survey", "survey", "unknown_weighted"]

#: autograd nodes (names without ``Backward<N>``) that mix channels.
MIXING = frozenset({"Convolution", "ConvolutionBackwardOverrideable", "Mm", "Addmm", "Bmm", "Baddbmm",
                    "Addbmm", "Mv", "Addmv", "Dot", "Vdot", "MkldnnConvolution", "SlowConv2D",
                    "ThnnConv2D", "CudnnConvolution", "ConvDepthwise2D"})
#: autograd nodes a weight may pass through on its way to a mixing op.
RESHAPING = frozenset({"T", "Transpose", "Permute", "View", "UnsafeView", "Reshape", "ReshapeAlias",
                       "Expand", "Unsqueeze", "Squeeze", "SqueezeDim", "Clone", "ToCopy", "Alias",
                       "Index", "Select", "Slice", "Flip", "Contiguous"})


def _kind(grad_fn: Any) -> str:
    """``MmBackward0`` -> ``Mm``."""
    return grad_fn.name().split("Backward")[0]


def _known(module: nn.Module) -> bool:
    """Whether Torch-Pruning has a pruner for ``module``'s type."""
    return tp.ops.module2type(module) != tp.ops.OPTYPE.ELEMENTWISE


def _weighted_leaf(module: nn.Module) -> bool:
    """Whether ``module`` owns a parameter with two or more dimensions of
    size > 1 (a matrix or a kernel) and none of its submodules owns any."""
    return (any(sum(size > 1 for size in p.shape) >= 2 for p in module.parameters(recurse=False))
            and all(next(child.parameters(), None) is None for child in module.children()))


def unknown_weighted(model: nn.Module, declared: Iterable[WeightedLayer]) -> dict[str, str]:
    """name -> why, for every submodule Torch-Pruning cannot prune: declared
    weighted layers and leaf modules owning a matrix or kernel, of types it
    does not know."""
    declared = tuple(declared)
    found = {}
    for name, module in model.named_modules():
        if not name or _known(module):
            continue
        if registered_for(module, declared) is not None:
            found[name] = f"{type(module).__name__} (a weighted layer a plugin declared)"
        elif _weighted_leaf(module):
            found[name] = f"{type(module).__name__} (a weighted module Torch-Pruning has no pruner for)"
    return found


@dataclass
class Survey:
    """What one forward pass under autograd showed: for each kept-whole layer
    its (input, output) channels (dim 1), and the problems that make the
    step refuse."""

    widths: dict[int, tuple[int | None, int | None]] = field(default_factory=dict)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (what, hint)


def _width(value: Any) -> int | None:
    tensor = next((t for t in tree_leaves(value) if isinstance(t, torch.Tensor)), None)
    return tensor.shape[1] if tensor is not None and tensor.dim() >= 2 else None


def survey(model: nn.Module, example: torch.Tensor, keep: Mapping[str, nn.Module]) -> Survey:
    """Run ``model`` once under autograd with hooks on the ``keep`` layers;
    raise a CompressionError naming the first parameter Torch-Pruning would
    mis-read (see the module docstring)."""
    found = Survey()

    def record(module, inputs, output):
        found.widths[id(module)] = (_width(inputs), _width(output))

    hooks = [module.register_forward_hook(record) for module in keep.values()]
    try:
        with torch.enable_grad():
            outputs = [t for t in tree_leaves(model(example)) if isinstance(t, torch.Tensor) and t.grad_fn]
    finally:
        for hook in hooks:
            hook.remove()
    _check(model, outputs, keep, found)
    if found.problems:
        what, hint = found.problems[0]
        raise CompressionError(f"prune cannot work on this model: {what}", hint=f"{hint}, or leave prune out")
    return found


def _check(model: nn.Module, outputs: list[torch.Tensor], keep: Mapping[str, nn.Module], found: Survey) -> None:
    """Problems: a kept-whole layer's parameter used without the layer being
    called; a loose parameter reaching a mixing op through reshaping ops."""
    owners = {id(p): (name, module) for name, module in model.named_modules()
              for p in module.parameters(recurse=False)}
    names = {id(p): name for name, p in model.named_parameters()}
    kept = {id(module) for module in keep.values()}
    parents = _parents(outputs)
    for node in parents:
        variable = getattr(node, "variable", None)
        if not isinstance(variable, nn.Parameter) or id(variable) not in owners:
            continue
        owner_name, owner = owners[id(variable)]
        if id(owner) in kept and id(owner) not in found.widths:
            found.problems.append((
                f"layer {owner_name!r} ({type(owner).__name__}) is not called as a module: the model "
                f"computes with its parameter {names[id(variable)]!r} directly",
                "register a counter for its class, so that the traced model calls it as one layer"))
        elif id(owner) not in kept and not _known(owner) and _reaches_mixing(node, parents):
            found.problems.append((
                f"parameter {names[id(variable)]!r} of {type(owner).__name__} feeds a convolution or "
                f"matrix product outside any layer Torch-Pruning knows",
                f"declare {type(owner).__name__} as a weighted layer (micronet_register_weighted_layers) "
                f"so that prune keeps it whole"))


def _parents(outputs: list[torch.Tensor]) -> dict[Any, list[Any]]:
    """Every autograd node reachable from ``outputs`` -> the nodes that consume it."""
    parents: dict[Any, list[Any]] = {}
    stack = [t.grad_fn for t in outputs]
    for root in stack:
        parents.setdefault(root, [])
    while stack:
        node = stack.pop()
        for child, _ in node.next_functions:
            if child is None:
                continue
            if child not in parents:
                parents[child] = []
                stack.append(child)
            parents[child].append(node)
    return parents


def _reaches_mixing(leaf: Any, parents: Mapping[Any, list[Any]]) -> bool:
    """Whether a mixing op consumes ``leaf``'s tensor, directly or through reshaping ops."""
    stack, seen = list(parents[leaf]), set()
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        kind = _kind(node)
        if kind in MIXING:
            return True
        if kind in RESHAPING:
            stack.extend(parents[node])
    return False


class KeepWhole(tp.pruner.BasePruningFunc):
    """Torch-Pruning's pruner for a layer it cannot prune: one node whose
    input and output channels are not coupled (``prune_in_channels`` is not
    ``prune_out_channels``), with the widths :func:`survey` measured. It
    never changes the layer; :class:`Pruner` drops the groups that reach it."""

    TARGET_MODULES = None

    def __init__(self, widths: Mapping[int, tuple[int | None, int | None]]):
        super().__init__()
        self.widths = widths

    def prune_out_channels(self, layer: nn.Module, idxs: Any) -> nn.Module:
        return layer

    def prune_in_channels(self, layer: nn.Module, idxs: Any) -> nn.Module:
        return layer

    def get_out_channels(self, layer: nn.Module) -> int | None:
        return self.widths.get(id(layer), (None, None))[1]

    def get_in_channels(self, layer: nn.Module) -> int | None:
        return self.widths.get(id(layer), (None, None))[0]


class Pruner(tp.pruner.BasePruner):
    """Torch-Pruning's BasePruner leaving alone every group that reaches one
    of the ``keep`` layers (they have no importance: the group is not ranked)."""

    def __init__(self, *args: Any, keep: Iterable[nn.Module] = (), **kwargs: Any):
        self._keep = {id(module) for module in keep}
        super().__init__(*args, **kwargs)

    def estimate_importance(self, group) -> torch.Tensor | None:
        if any(id(dep.target.module) in self._keep for dep, _ in group):
            return None
        return super().estimate_importance(group)
