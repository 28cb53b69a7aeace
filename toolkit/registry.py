"""Counters, shape rules and free ops: how they are declared and looked up.

A counters module declares its rules with the decorators below; the
decorators only tag the function (like pluggy's ``hookimpl``), nothing is
stored globally. The module's ``micronet_register_counters`` hook returns
``collect(module)``, and the plugin manager merges every plugin's
registrations into one :class:`CounterRegistry` per run, refusing duplicate
targets unless the later registration says ``replace=True``.

Targets are one of:

- an ``nn.Module`` subclass (matched along the module's MRO),
- a function (``torch.relu``, ``F.relu``, ``operator.add``),
- a :class:`Method` name (``Method("relu")`` for ``x.relu()``),
- an aten op (``torch.ops.aten.convolution`` packet or one overload),
- a :class:`Lazy` import path (``Lazy("torchvision.ops.stochastic_depth",
  "StochasticDepth")``) for a class or function of a library micronet does
  not import itself: the registry resolves it once that module is imported.
"""
from __future__ import annotations

import inspect
import sys
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import nn

from .errors import PluginError
from .records import Counts, TensorInfo

__all__ = [
    "Method",
    "Lazy",
    "OpCall",
    "Registration",
    "CounterRegistry",
    "counter",
    "shape_rule",
    "free",
    "collect",
    "target_name",
]

_TAG = "__micronet_registrations__"
_MISSING = object()


@dataclass(frozen=True, slots=True)
class Method:
    """A tensor method called as ``x.name(...)`` (an fx ``call_method`` node)."""

    name: str

    def __str__(self) -> str:
        return f"Tensor.{self.name}"


@dataclass(frozen=True, slots=True)
class Lazy:
    """A target named by where it is defined: ``getattr(module, name)``, taken
    only once ``module`` is imported (in ``sys.modules``).

    A counters module registers torchvision's, timm's or transformers' classes
    this way instead of importing the library (torchvision takes ~1.7 s to
    import): a model holding such a class has imported its module before it
    is audited, so the registry resolves the target at its first lookup after
    that, and counts exactly as if it had been given the object. Name the
    module that defines the target (its ``__module__``), or any module that
    is imported whenever the target exists: its package, for instance.
    """

    module: str
    name: str

    def __str__(self) -> str:
        return f"{self.module}.{self.name}"

    def resolve(self) -> Any:
        """The named object, or None while its module is not imported;
        PluginError when the imported module has no such attribute."""
        module = sys.modules.get(self.module)
        if module is None:
            return None
        try:
            return getattr(module, self.name)
        except AttributeError:
            raise PluginError(f"{self}: module {self.module!r} has no attribute {self.name!r}",
                              hint="fix the Lazy(...) target of the counters plugin") from None


@dataclass(frozen=True, slots=True)
class OpCall:
    """What a counter or shape rule sees of one call: never a tensor's data.

    ``args`` / ``kwargs`` are the call's arguments as traced, with every tensor
    replaced by its :class:`TensorInfo`; ``module`` is the called module for
    module calls (read its hyper-parameters, not its weights); ``out`` is the
    output (a TensorInfo, a tuple of them, or a Python value), ``None`` while
    a shape rule is computing it.
    """

    kind: str  # "module" | "function" | "method" | "aten"
    target: Any
    args: tuple
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    module: nn.Module | None = None
    out: Any = None

    def arg(self, index: int, name: str, default: Any = _MISSING) -> Any:
        """Argument by position or keyword, as the called function would bind it."""
        if name in self.kwargs:
            return self.kwargs[name]
        if index < len(self.args):
            return self.args[index]
        if default is _MISSING:
            raise TypeError(f"{target_name(self.target)}: missing argument {name!r}")
        return default

    @property
    def x(self) -> TensorInfo:
        """The first tensor argument (the input of a module call)."""
        for value in self.args:
            if isinstance(value, TensorInfo):
                return value
        for value in self.kwargs.values():
            if isinstance(value, TensorInfo):
                return value
        raise TypeError(f"{target_name(self.target)}: no tensor argument")

    @property
    def tensors(self) -> list[TensorInfo]:
        """Every tensor argument, positional first, nested lists flattened."""
        return list(_iter_tensors((self.args, tuple(self.kwargs.values()))))

    @property
    def y(self) -> TensorInfo:
        """The output tensor (the first one if the call returns several)."""
        for value in _iter_tensors((self.out,)):
            return value
        raise TypeError(f"{target_name(self.target)}: no tensor output")


def _iter_tensors(values: Iterable[Any]):
    # micronet.values.tensor_infos does this with torch's pytree; counters call this one on
    # every node, where the plain generator is about 5x faster (1.4 vs 8 us for a conv's args)
    for value in values:
        if isinstance(value, TensorInfo):
            yield value
        elif isinstance(value, (list, tuple)):
            yield from _iter_tensors(value)
        elif isinstance(value, dict):
            yield from _iter_tensors(value.values())


CounterFn = Callable[[OpCall], Counts]
ShapeFn = Callable[[OpCall], Any]


@dataclass(frozen=True, slots=True)
class Registration:
    """One declared rule: a counter, a shape rule, or a set of free ops.

    ``op`` is the op kind shown in reports (``"conv2d"``, ``"relu"``); when
    empty it is derived from the target. ``plugin`` is filled in by the
    manager with the name of the plugin that returned it.
    """

    kind: str  # "counter" | "shape" | "free"
    targets: tuple
    fn: Callable | None = None
    op: str = ""
    replace: bool = False
    plugin: str = ""


def _tag(kind: str, targets: tuple, op: str, replace: bool):
    if not targets:
        raise TypeError(f"@{kind} needs at least one target")

    def decorate(fn):
        registrations = list(getattr(fn, _TAG, ()))
        registrations.append(Registration(kind, tuple(targets), fn, op, replace))
        setattr(fn, _TAG, registrations)
        return fn

    return decorate


def counter(*targets: Any, op: str = "", replace: bool = False):
    """Declare ``fn(call: OpCall) -> Counts`` as the counter of ``targets``."""
    return _tag("counter", targets, op, replace)


def shape_rule(*targets: Any, replace: bool = False):
    """Declare ``fn(call: OpCall) -> output`` (TensorInfo or tuple) for ``targets``.

    A shape rule replaces running the op on meta tensors; without one the
    walker falls back to meta execution, which is exact but ~0.2 ms a node.
    """
    return _tag("shape", targets, "", replace)


def free(*targets: Any, op: str = "", replace: bool = False) -> Registration:
    """A registration making ``targets`` free: recorded, costing nothing."""
    return Registration("free", tuple(targets), None, op, replace)


def collect(module: ModuleType) -> list[Registration]:
    """Every registration declared in ``module``: tagged functions and
    module-level :class:`Registration` values (from :func:`free`)."""
    found: list[Registration] = []
    for value in vars(module).values():
        if isinstance(value, Registration):
            found.append(value)
        elif isinstance(value, (list, tuple)) and value and all(
            isinstance(v, Registration) for v in value
        ):
            found.extend(value)
        elif inspect.isfunction(value) and getattr(value, "__module__", None) == module.__name__:
            found.extend(getattr(value, _TAG, ()))
    return found


def target_name(target: Any) -> str:
    """A readable name for a target: ``nn.Conv2d``, ``F.relu``, ``Tensor.view``."""
    if isinstance(target, (Method, Lazy)):
        return str(target)
    if isinstance(target, type):
        module = target.__module__
        if module.startswith("torch.nn.modules"):
            module = "nn"
        return f"{module}.{target.__qualname__}"
    if isinstance(target, (torch._ops.OpOverload, torch._ops.OpOverloadPacket)):
        return str(target)
    module = getattr(target, "__module__", None) or ""
    name = getattr(target, "__qualname__", None) or getattr(target, "__name__", None) or repr(target)
    name = name.removeprefix("_VariableFunctionsClass.")  # torch's C functions
    if module in ("torch.nn.functional",):
        module = "F"
    elif module in ("_operator", "operator"):
        module = "operator"
    elif module.startswith("torch._C") or module == "torch.functional":
        module = "torch"
    return f"{module}.{name}" if module else name


def default_op(target: Any) -> str:
    """Op kind derived from a target when a registration names none."""
    if isinstance(target, Method):
        return target.name.rstrip("_")
    if isinstance(target, type):
        return target.__name__.lower()
    if isinstance(target, torch._ops.OpOverload):
        return target.overloadpacket.__name__
    if isinstance(target, torch._ops.OpOverloadPacket):
        return target.__name__
    name = getattr(target, "__name__", repr(target))
    return name.strip("_").rstrip("_") or name


def _key(target: Any) -> Any:
    if isinstance(target, torch._ops.OpOverload):
        return target  # an overload can override its packet
    return target


def _by_mro(table: dict, cls: type) -> Entry | None:
    """The entry of ``cls`` or of the nearest registered base whose ``forward``
    it still runs. A subclass that writes its own ``forward`` (timm's
    ``Conv2dSame`` pads first, ``BatchNormAct2d`` adds an activation) computes
    something else than its base: it gets no entry, so it is traced through
    and its insides are counted, unless that subclass is registered itself.
    torch's own subclasses (``torch.ao.nn`` quantized and QAT modules) compute
    their base's function at other precisions: they keep the base's entry."""
    for klass in cls.__mro__:
        if klass in table:
            return table[klass]
        if "forward" in vars(klass) and not klass.__module__.startswith("torch."):
            return None
    return None


@dataclass(frozen=True, slots=True)
class Entry:
    """A looked-up rule: the function (None for free ops), its op kind, its plugin."""

    fn: Callable | None
    op: str
    plugin: str
    free: bool = False


class CounterRegistry:
    """Merged counters, shape rules and free ops of every plugin of one run.

    Built by the plugin manager from ``micronet_register_counters`` results.
    A target registered twice is an error naming both plugins, unless the
    later registration says ``replace=True``. :class:`Lazy` targets whose
    module is not imported yet wait; the first lookup after their module is
    imported merges every registration again in its order, as if the targets
    had been objects from the start (a duplicate is then reported).
    """

    def __init__(self, registrations: Iterable[Registration] = ()):
        self._registrations: list[Registration] = []
        self._pending: set[str] = set()  # modules of Lazy targets not imported yet
        self._counters: dict[Any, Entry] = {}
        self._shapes: dict[Any, Entry] = {}
        self._module_cache: dict[tuple[str, type], Entry | None] = {}
        for registration in registrations:
            self.add(registration)

    def add(self, registration: Registration) -> None:
        """Merge one registration; raises PluginError on an unannounced duplicate."""
        self._registrations.append(registration)
        self._merge(registration)
        self._module_cache.clear()

    def _merge(self, registration: Registration) -> None:
        table = self._shapes if registration.kind == "shape" else self._counters
        targets = []
        for target in registration.targets:
            if isinstance(target, Lazy):
                resolved = target.resolve()
                if resolved is None:
                    self._pending.add(target.module)
                    continue
                target = resolved
            targets.append(target)
        for target in dict.fromkeys(targets):  # F.prelu is torch.prelu: once is enough
            key = _key(target)
            previous = table.get(key)
            if previous is not None and not registration.replace:
                raise PluginError(
                    f"{target_name(target)} has two {registration.kind} rules: plugin "
                    f"{previous.plugin!r} and plugin {registration.plugin!r}",
                    hint="pass replace=True in the later registration to override",
                )
            table[key] = Entry(
                registration.fn,
                registration.op or default_op(target),
                registration.plugin,
                free=registration.kind == "free",
            )

    def _resolve_pending(self) -> None:
        """Merge everything again once a pending Lazy target's module is imported."""
        for module in self._pending:
            if module in sys.modules:
                break
        else:
            return
        registrations = self._registrations
        self._registrations, self._pending = [], set()
        self._counters, self._shapes = {}, {}
        for registration in registrations:
            self.add(registration)

    def counter(self, target: Any) -> Entry | None:
        """The counter (or free entry) of a target; a module class by its MRO,
        up to the first class that defines its own ``forward`` (see :func:`_by_mro`)."""
        return self._lookup(self._counters, "counter", target)

    def shape(self, target: Any) -> Entry | None:
        """The shape rule of a target, module classes by MRO."""
        return self._lookup(self._shapes, "shape", target)

    def knows_module(self, cls: type) -> bool:
        """Whether a module class has a counter (it is then traced as a leaf)."""
        return self._lookup(self._counters, "counter", cls) is not None

    def _lookup(self, table: dict, which: str, target: Any) -> Entry | None:
        if self._pending:
            self._resolve_pending()
            table = self._shapes if which == "shape" else self._counters
        if isinstance(target, type):
            cache_key = (which, target)
            if cache_key not in self._module_cache:
                self._module_cache[cache_key] = _by_mro(table, target)
            return self._module_cache[cache_key]
        try:
            entry = table.get(target)
        except TypeError:  # unhashable target
            return None
        if entry is None and isinstance(target, torch._ops.OpOverload):
            entry = table.get(target.overloadpacket)
        if entry is None and isinstance(target, Lazy):
            resolved = target.resolve()
            entry = None if resolved is None else self._lookup(table, which, resolved)
        return entry

    def __len__(self) -> int:
        return len(self._counters) + len(self._shapes)
