"""The one record builder of both walks (torch.fx and torch.export).

Every :class:`~micronet.records.LayerRecord` is built here, whichever walk
saw the layer: its parameters (each counted once, by the first layer that
uses it), their nonzeros (read once per tensor), the weight's sparsity
block, the three bit widths (overrides, then what the module declared, then
dtypes: :class:`~micronet.precision.Precision`), storage a compression
declared, and which counter produced the numbers, from which plugin
(``rule`` / ``plugin``). ``--strict`` refuses an uncounted layer here, with
one message for both walks.

Every counter call goes through :func:`run_counter`, which names the node,
the rule and its plugin when a counter fails or returns something else
than :class:`~micronet.records.Counts`.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Sequence

import torch
from torch import nn

from .bits import bits_of, declared_storage_bits
from .errors import CounterError
from .precision import Precision
from .records import COUNTED, FREE, UNCOUNTED, ZERO, Counts, LayerRecord, TensorInfo
from .registry import Entry, OpCall
from .sparsity import count_nonzero, measure
from .values import shapes, tensor_infos

__all__ = ["WalkSettings", "Outcome", "Site", "RecordBuilder", "rule_of", "run_counter", "weight_of", "weight_named",
           "parameters_of", "module_classes", "attributes", "FREE_RULE"]

#: The ``rule`` of a record that costs nothing by a registered free op (or is a
#: size computed from constants, a parameter read).
FREE_RULE = "free"


@dataclass
class WalkSettings:
    """Per-run choices of the walk (never global)."""

    precision: Precision = field(default_factory=Precision)
    strict: bool = False
    #: The weight's name in a plugin's weighted layer classes (``WeightedLayer``), by
    #: class; any other module's weight is its ``weight``.
    weight_names: Mapping[type, str] = field(default_factory=dict)


class Outcome(NamedTuple):
    """How a layer was counted: status, counts, why not (``reason``), and the
    counter that produced the counts (``rule``: ``module:function``, several
    joined by ``", "`` for the aten fallback; :data:`FREE_RULE`; ``""`` when
    nothing counted it) with the plugin that registered it."""

    status: str
    counts: Counts = ZERO
    reason: str = ""
    rule: str = ""
    plugin: str = ""

    @classmethod
    def free(cls, plugin: str = "") -> "Outcome":
        """A free layer (a free op registered by ``plugin``, or none)."""
        return cls(FREE, rule=FREE_RULE, plugin=plugin)

    @classmethod
    def counted(cls, entry: Entry, counts: Counts) -> "Outcome":
        """What ``entry``'s counter returned."""
        return cls(COUNTED, counts, rule=rule_of(entry), plugin=entry.plugin)


def rule_of(entry: Entry) -> str:
    """``module:function`` of a counter (``micronet.counters.conv:conv_module``),
    :data:`FREE_RULE` for a free op."""
    if entry.free or entry.fn is None:
        return FREE_RULE
    try:
        return _rule_name(entry.fn)
    except TypeError:  # an unhashable callable: named every time
        return _rule_name.__wrapped__(entry.fn)


@functools.lru_cache(maxsize=None)
def _rule_name(fn: Callable) -> str:
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__qualname__
    return f"{getattr(fn, '__module__', None) or '?'}:{name}"


def run_counter(entry: Entry, call: OpCall, where: str | Callable[[], str]) -> Counts:
    """``entry``'s counter on ``call``; a failure names ``where`` (the node;
    or a function saying it, called only then), the rule and its plugin,
    chained to the cause."""
    try:
        counts = entry.fn(call)
    except Exception as error:
        raise CounterError(f"counter {entry.op!r} ({rule_of(entry)}, plugin {entry.plugin}) failed at "
                           f"{_said(where)}: {type(error).__name__}: {error}", hint=_FIX_COUNTER) from error
    if not isinstance(counts, Counts):
        raise CounterError(f"counter {entry.op!r} ({rule_of(entry)}, plugin {entry.plugin}) returned "
                           f"{type(counts).__name__} at {_said(where)}, expected Counts", hint=_FIX_COUNTER)
    return counts


def _said(where: str | Callable[[], str]) -> str:
    return where if isinstance(where, str) else where()


_FIX_COUNTER = ("the plugin's counter is at fault: tell its author, or leave the plugin out "
                "(MICRONET_DISABLE_PLUGINS)")


class Site(NamedTuple):
    """Where a record comes from: its graph node, its name (the module path,
    or ``path.node`` for functions), the owning module, the call kind, the
    op kind and target shown in reports, the records it reads (``edges``:
    their node names), and how it was seen (``via``: ``"fx"``, ``"aten"``
    for the fx walk's fallback, ``"export"``)."""

    node: str
    name: str
    module_path: str
    call_kind: str
    op: str
    target: str
    edges: tuple[str, ...] = ()
    via: str = "fx"


class RecordBuilder:
    """Builds the LayerRecords of one walk, attributing each parameter once."""

    def __init__(self, settings: WalkSettings, nonzero: dict[int, int] | None = None):
        self.settings = settings
        self.records: list[LayerRecord] = []
        self._claimed: set[int] = set()
        # tensor id -> nonzero count (prefilled by a parallel scan): each weight read once
        self._nonzero: dict[int, int] = dict(nonzero or {})

    def claim(self, tensors: Iterable[torch.Tensor | None]) -> list[torch.Tensor]:
        """The tensors no earlier record owns, now owned (a shared weight counts once)."""
        fresh = [t for t in tensors if t is not None and id(t) not in self._claimed]
        self._claimed.update(id(t) for t in fresh)
        return fresh

    def nonzero(self, tensor: torch.Tensor) -> int:
        """Nonzero elements of ``tensor``, counted once per tensor."""
        key = id(tensor)
        if key not in self._nonzero:
            self._nonzero[key] = count_nonzero(tensor)
        return self._nonzero[key]

    def add(self, site: Site, outcome: Outcome, *, inputs: Any = (), out: Any = None,
            module: nn.Module | None = None, owned: Iterable[torch.Tensor] = (),
            weight: torch.Tensor | None = None, classes: tuple[str, ...] = ()) -> LayerRecord:
        """Build, check (``--strict``) and keep the record of one layer.

        ``inputs`` / ``out`` are the call's values (TensorInfo, nested);
        ``module`` the layer's module (bits, declared storage and
        hyper-parameters are read from it); ``owned`` the parameters it is
        charged for (already claimed); ``weight`` its sparsifiable weight."""
        if outcome.status == UNCOUNTED and self.settings.strict:
            raise CounterError(f"node {site.node} ({site.name}, {site.target}) is not counted: {outcome.reason}",
                               hint="register a counter for it (see docs/writing-plugins.md) "
                               "or run without --strict")
        owned, infos = list(owned), tensor_infos(inputs)
        params = nonzero = 0
        for p in owned:  # most records own nothing (only a layer's first call owns its parameters)
            params += p.numel()
            nonzero += self.nonzero(p)
        weight_params, weight_nonzero, block = self._sparsity(weight, outcome.counts)
        weight_bits, input_bits, accumulator_bits = self._bits(site.name, module, infos, weight, owned)
        record = LayerRecord(
            name=site.name, node=site.node, op=site.op, status=outcome.status, target=site.target,
            module_path=site.module_path, input_shapes=tuple(i.shape for i in infos), output_shapes=shapes(out),
            counts=outcome.counts, params=params, nonzero_params=nonzero, weight_params=weight_params,
            weight_nonzero=weight_nonzero, weight_block=block,
            owns_weight=None if weight is None else _owns(owned, weight), weight_bits=weight_bits, input_bits=input_bits,
            accumulator_bits=accumulator_bits, declared_storage_bits=declared_storage_bits(module),
            attrs=attributes(module), reason=outcome.reason, via=site.via, call_kind=site.call_kind,
            module_classes=classes, inputs=site.edges, rule=outcome.rule, plugin=outcome.plugin,
        )
        self.records.append(record)
        return record

    def _sparsity(self, weight: torch.Tensor | None, counts: Counts) -> tuple[int, int, tuple[int, ...]]:
        """The sparsifiable weight's elements, nonzeros and block shape, when
        the counter said its dot products run over it (else none)."""
        if not (isinstance(weight, torch.Tensor) and weight.dim() >= 2 and counts.sparse_weight):
            return 0, 0, ()
        found = measure(weight, self.nonzero(weight))
        return found.numel, found.nonzero, found.block

    def _bits(self, name: str, module: nn.Module | None, inputs: tuple[TensorInfo, ...],
              weight: torch.Tensor | None, owned: list[torch.Tensor]) -> tuple[int, int, int]:
        """Weight, input and accumulator bits: overrides, then what the module
        declared, then dtypes (the weight's, else the first owned parameter's)."""
        precision, declared = self.settings.precision, bits_of(module)
        dtype = weight.dtype if isinstance(weight, torch.Tensor) else owned[0].dtype if owned else None
        return (precision.weight_bits(name, declared, dtype),
                precision.input_bits(name, declared, inputs[0].dtype if inputs else None),
                precision.acc_bits(declared))


def weight_of(module: nn.Module | None, names: Mapping[type, str] | None = None) -> torch.Tensor | None:
    """A module's weight (parameter, buffer or property), if it is a tensor: the
    one ``names`` declares for its class (or a base), else its ``weight``."""
    if module is None:
        return None
    return weight_named(module, weight_name(type(module), names))


def weight_name(cls: type, names: Mapping[type, str] | None) -> str:
    """The weight's name ``names`` declares for module class ``cls`` (or a base), else ``weight``."""
    return next((names[c] for c in cls.__mro__ if c in names), "weight") if names else "weight"


def weight_named(module: nn.Module, name: str) -> torch.Tensor | None:
    """The module's tensor ``name`` (parameter, buffer or property), or None."""
    weight = module._parameters.get(name)  # fast path; buffers and properties below
    if weight is None:
        weight = getattr(module, name, None)
    return weight if isinstance(weight, torch.Tensor) else None


def parameters_of(module: nn.Module) -> list[torch.Tensor]:
    """A module's parameters (its children's too), cheaply for leaves."""
    if not module._modules:
        return [p for p in module._parameters.values() if p is not None]
    return list(module.parameters())


@functools.lru_cache(maxsize=None)
def module_classes(cls: type) -> tuple[str, ...]:
    """Names of ``cls`` and its bases below nn.Module: ``torch.nn.Conv2d`` style
    (public ``torch.nn`` path) and the defining module's path."""
    names = []
    for klass in cls.__mro__:
        if klass is nn.Module or klass is object:
            break
        names.append(f"{klass.__module__}.{klass.__qualname__}")
        if klass.__module__.startswith("torch.nn.modules."):
            names.append(f"torch.nn.{klass.__qualname__}")
    return tuple(names)


_ATTRS = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
          "in_features", "out_features", "num_features", "eps", "output_size", "embed_dim",
          "num_heads", "normalized_shape", "num_groups", "num_embeddings", "embedding_dim",
          "scale_factor", "mode", "p", "inplace", "ceil_mode")


def attributes(module: nn.Module | None) -> dict[str, Any]:
    """Hyper-parameters of a module a rulebook may need (plain values only)."""
    if module is None:
        return {}
    # hyper-parameters are plain instance attributes: read __dict__, not nn.Module.__getattr__
    fields = vars(module)
    attrs = {k: fields[k] for k in _ATTRS
             if k in fields and isinstance(fields[k], (int, float, str, bool, tuple, type(None)))}
    bias = module._parameters.get("bias", fields.get("bias"))
    attrs["bias"] = bias is not None
    return attrs


def _owns(owned: Sequence[torch.Tensor], weight: torch.Tensor) -> bool:
    """Whether the record's ``owned`` parameters hold its ``weight``: the
    tensor itself, or (a parametrized weight is computed afresh at each
    access, its stored original among ``owned``) at least as many elements.
    False for a tied projection that owns only its bias."""
    return any(p is weight for p in owned) or sum(p.numel() for p in owned) >= weight.numel()
