"""Counting a layer by its aten ops: the fx walk's fallback and the export walk.

A node without a counter of its own runs on meta tensors under
:class:`AtenCounter`, which hands each aten op it dispatches to the
registry's aten counter; a ``torch.export`` layer is a group of aten nodes
counted the same way. Both tally through :class:`AtenTally`: the counts of
every op merged (:func:`merge_counts`), the ops nobody counts (the layer is
then *uncounted*, naming them), and the rules and plugins that counted.
"""
from __future__ import annotations

from typing import Any, Iterable

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from .recordbuilder import Outcome, rule_of, run_counter
from .records import COUNTED, UNCOUNTED, Counts
from .registry import CounterRegistry, OpCall
from .values import to_info

__all__ = ["AtenTally", "AtenCounter", "merge_counts", "op_name"]


def merge_counts(parts: Iterable[Counts]) -> Counts:
    """Sum counts; dot products of a different length than the largest group
    (by MACs) are folded into dense mults and adds."""
    parts = [p for p in parts if p != Counts()]
    if not parts:
        return Counts()
    by_length: dict[int, int] = {}
    for part in parts:
        if part.dot_products:
            by_length[part.dot_length] = by_length.get(part.dot_length, 0) + part.macs
    main = max(by_length, key=by_length.get) if by_length else 0
    dot_products = mults = adds = other = folded = extra = 0
    sparse = False
    for part in parts:
        if part.dot_products and part.dot_length == main:
            dot_products += part.dot_products
            sparse = sparse or part.sparse_weight
            mults, adds = mults + part.mults, adds + part.adds
            extra += part.extra_macs
        else:
            mults += part.dense_mults
            adds += part.dense_adds
            extra += part.macs  # folded into mults and adds, still multiply-accumulates
        other += part.other_ops
        folded += part.folded_params
    return Counts(dot_products, main if dot_products else 0, sparse, mults, adds, other, folded, extra)


def op_name(target: Any) -> str:
    """``aten.convolution`` for an aten op (any overload), else the target's name."""
    if isinstance(target, torch._ops.OpOverload):
        return str(target.overloadpacket)
    if isinstance(target, torch._ops.OpOverloadPacket):
        return str(target)
    return str(getattr(target, "__name__", target))


class AtenTally:
    """The aten ops of one layer, each counted by the registry's counter."""

    def __init__(self, registry: CounterRegistry):
        self.registry = registry
        self.parts: list[Counts] = []
        self.missing: dict[str, int] = {}  # op name -> calls nobody counts
        self._rules: dict[str, None] = {}  # ordered sets: who counted, who made ops free
        self._plugins: dict[str, None] = {}
        self._free_plugins: dict[str, None] = {}

    def add(self, target: Any, args: tuple, kwargs: dict, out: Any, where: str) -> None:
        """Count one op (``args`` / ``out`` hold tensors or TensorInfo);
        ``where`` names the node for errors."""
        entry = self.registry.counter(target)
        if entry is None:
            name = op_name(target)
            self.missing[name] = self.missing.get(name, 0) + 1
        elif entry.free:
            self._free_plugins[entry.plugin] = None
        else:
            call = OpCall("aten", target, to_info(tuple(args)), to_info(dict(kwargs)), out=to_info(out))
            self.parts.append(run_counter(entry, call, f"{where}, aten op {op_name(target)}"))
            self._rules[rule_of(entry)] = None
            self._plugins[entry.plugin] = None

    @property
    def counts(self) -> Counts:
        return merge_counts(self.parts)

    def outcome(self) -> Outcome:
        """Uncounted when an op has no counter, free when only free ops ran."""
        rule, plugin = ", ".join(self._rules), ", ".join(self._plugins)
        if self.missing:
            return Outcome(UNCOUNTED, self.counts, "no counter for " + ", ".join(sorted(self.missing)),
                           rule, plugin)
        if not self.parts:
            return Outcome.free(", ".join(self._free_plugins))
        return Outcome(COUNTED, self.counts, "", rule, plugin)


class AtenCounter(TorchDispatchMode):
    """Counts the aten ops run under it into an :class:`AtenTally`.

    Used for nodes without a counter of their own: the node runs on meta
    tensors and each aten op it dispatches is counted; ``where`` names the
    node in a counter's error."""

    def __init__(self, registry: CounterRegistry, where: str = "the aten fallback"):
        super().__init__()
        self.tally = AtenTally(registry)
        self.where = where

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.tally.add(func, args, kwargs, out, self.where)
        return out

    @property
    def counts(self) -> Counts:
        return self.tally.counts
