"""Walk a captured fx graph in topological order and record every node.

:class:`Walker` is a small ``torch.fx.Interpreter`` that overrides
``run_node``: the environment holds :class:`~micronet.records.TensorInfo`
(shape and dtype) instead of tensors, plain Python values for sizes. For each
call node it computes the output with the target's shape rule, or by running
the op on meta tensors when there is none (:mod:`micronet.metaexec`), then
hands an :class:`~micronet.registry.OpCall` to the registered counter. A node
without a counter is run on meta tensors under
:class:`~micronet.atencount.AtenCounter`, which counts the aten ops it
decomposes into; aten ops nobody counts leave the node *uncounted*, with
the reason. Nothing is silently zero.

Records are built by :class:`~micronet.recordbuilder.RecordBuilder`, the
same builder as the ``torch.export`` walk's (:mod:`micronet.walk_export`).

What the walker learns is also left on the nodes, under documented keys:
``node.meta["micronet.value"]`` (the TensorInfo or value) and
``node.meta["micronet.record"]`` (the LayerRecord).
"""
from __future__ import annotations

import re
from typing import Any, Iterable, Mapping, Sequence

import torch
from torch import fx, nn
from torch.fx.immutable_collections import immutable_dict, immutable_list

from .atencount import AtenCounter, merge_counts
from .capture import Capture
from .errors import CounterError, TraceError, UsageError
from .metaexec import execute
from .recordbuilder import (Outcome, RecordBuilder, Site, WalkSettings, module_classes, parameters_of,
                            run_counter, weight_name, weight_named)
from .records import UNCOUNTED, LayerRecord, TensorInfo
from .registry import CounterRegistry, Entry, Method, OpCall, default_op, target_name
from .sparsity import count_nonzero_all
from .values import has_tensor, meta_state, to_info, to_meta
from .walk_export import walk_exported

__all__ = ["Walker", "WalkSettings", "walk", "walk_exported", "AtenCounter", "merge_counts", "to_info",
           "to_meta", "META_VALUE", "META_RECORD"]

META_VALUE = "micronet.value"
META_RECORD = "micronet.record"

_UNKNOWN = object()
#: How a traced size prints inside a message the model formatted while being traced.
_PROXY = re.compile(r"Proxy\(\w+\)")


class Walker(fx.Interpreter):
    """Propagates shapes through an fx graph and records one LayerRecord per node."""

    def __init__(self, cap: Capture, registry: CounterRegistry, settings: WalkSettings,
                 nonzero: dict[int, int] | None = None):
        super().__init__(cap.root, garbage_collect_values=False, graph=cap.graph)
        self.extra_traceback = False  # our errors name the node in one line; fx would append lines
        self.cap = cap
        self.registry = registry
        self.settings = settings
        self.builder = RecordBuilder(settings, nonzero)
        self._seen_modules: set[int] = set()
        self._names: dict[Any, tuple[str, str]] = {}  # target -> (target_name, default_op), this walk's
        self._weights: dict[type, str] = {}  # module class -> its weight's name, this walk's
        self._meta_state: dict[int, dict[str, torch.Tensor]] = {}
        self.named_inputs: dict[str, TensorInfo] = {}  # placeholder target -> input, read before positional ones

    @property
    def records(self) -> list[LayerRecord]:
        return self.builder.records

    def run(self, *args: Any, initial_env: dict[fx.Node, Any] | None = None,
            enable_io_processing: bool = True) -> Any:
        """Walk every node once, in order; returns the output node's value.

        fx's loop, without what a shape walk does not use (a progress bar
        updated per node, the rewriting of errors: ours name the node in
        one line)."""
        self.env = initial_env if initial_env is not None else {}
        if enable_io_processing:
            args = self.graph.process_inputs(*args)
        self.args_iter = iter(args)
        env, run_node = self.env, self.run_node
        for node in self.graph.nodes:
            if node not in env:
                env[node] = run_node(node)
            if node.op == "output":
                value = env[node]
                return self.graph.process_outputs(value) if enable_io_processing else value
        return None

    # fx.Interpreter hook: everything goes through here
    def run_node(self, n: fx.Node) -> Any:
        args, kwargs = self.fetch_args_kwargs_from_env(n)
        if n.op == "placeholder":
            value = self.placeholder(n.target, args, kwargs)
        elif n.op == "output":
            return args[0]
        elif n.op == "get_attr":
            value = self._get_attr(n)
        elif n.op == "call_module":
            module = self.submodules[n.target]
            value = self._call(n, "module", type(module), args, kwargs, module)
        elif n.op == "call_method":
            value = self._call(n, "method", Method(n.target), args, kwargs, None)
        else:
            value = self._call(n, "function", n.target, args, kwargs, None)
        n.meta[META_VALUE] = value
        return value

    def placeholder(self, target: Any, args: tuple, kwargs: dict) -> Any:
        """A named input when one was given for this parameter, else fx's
        way: the next positional input, or the parameter's default."""
        if isinstance(target, str) and target in self.named_inputs:
            return self.named_inputs[target]
        return super().placeholder(target, args, kwargs)

    # ------------------------------------------------------------- nodes

    def _get_attr(self, n: fx.Node) -> Any:
        value = self.fetch_attr(n.target)
        if not isinstance(value, torch.Tensor):
            return value
        info = to_info(value)
        owned = self.builder.claim([value]) if isinstance(value, nn.Parameter) else []
        site = Site(n.name, n.target, n.target.rpartition(".")[0], "get_attr",
                    "parameter" if owned else "constant", "get_attr", self._edges(n))
        self._keep(n, site, Outcome.free(), out=info, owned=owned, weight=value)
        return info

    def _call(self, n: fx.Node, kind: str, target: Any, args: tuple, kwargs: dict,
              module: nn.Module | None) -> Any:
        if module is None and not has_tensor(args) and not has_tensor(kwargs):
            return self._python_value(n, kind, target, args, kwargs)
        entry = self.registry.counter(target)
        call = OpCall(kind, target, args, kwargs, module)
        out = self._shape(n, call)
        aten = None
        if out is _UNKNOWN:
            out, aten = execute(self, n, call, count_aten=entry is None)
        call = OpCall(kind, target, args, kwargs, module, out)
        self._record_call(n, call, entry, self._outcome(n, entry, call, aten))
        return out

    def _outcome(self, n: fx.Node, entry: Entry | None, call: OpCall, aten: AtenCounter | None) -> Outcome:
        if entry is not None and entry.free:
            return Outcome.free(entry.plugin)
        if entry is not None:
            return Outcome.counted(entry, run_counter(entry, call, lambda: self.where(n)))
        if aten is None:
            return Outcome(UNCOUNTED, reason="no counter")
        return aten.tally.outcome()

    def input_shape(self) -> str:
        """The inputs' shapes as ``1x3x224x224`` (several joined by ``, ``), for messages."""
        shapes = ["x".join(map(str, value.shape)) for node, value in self.env.items()
                  if node.op == "placeholder" and isinstance(value, TensorInfo)]
        return ", ".join(shapes) or "?"

    def _python_value(self, n, kind, target, args, kwargs) -> Any:
        """A call on sizes and constants only: evaluate it for real, it is free.
        fx hands over list and dict constants as immutable ones; a model's
        helper may change its argument (torchvision's swin3d window sizes), so
        the call gets plain copies."""
        args, kwargs = _plain(args), {k: _plain(v) for k, v in kwargs.items()}
        try:
            if kind == "method":
                value = getattr(args[0], target.name)(*args[1:], **kwargs)
            else:
                value = target(*args, **kwargs)
        except AssertionError as error:  # torch._assert: the model's own check of its input
            raise UsageError(f"the model rejects input shape {self.input_shape()}: "
                             f"{_PROXY.sub('another size', str(error)).strip() or 'a check in its forward failed'} "
                             f"(node {n.name})",
                             hint="pass the input size the model was built for (--input), "
                             "or build it for this one") from error
        except Exception as error:
            raise TraceError(f"node {n.name} ({target_name(target)}) failed on constant "
                             f"arguments: {error}") from error
        value = to_info(value)
        owner = self._owner(n)
        site = Site(n.name, self.record_name(n, owner), owner, kind, default_op(target), target_name(target),
                    self._edges(n))
        self._keep(n, site, Outcome.free(), out=value)
        return value

    def _shape(self, n: fx.Node, call: OpCall) -> Any:
        rule = self.registry.shape(call.target)
        if rule is None:
            return _UNKNOWN
        try:
            return rule.fn(call)
        except NotImplementedError:
            return _UNKNOWN
        except Exception as error:
            raise CounterError(f"shape rule of {target_name(call.target)} (plugin {rule.plugin}) failed at "
                               f"{self.where(n)}: {type(error).__name__}: {error}") from error

    def meta_state(self, module: nn.Module) -> dict[str, torch.Tensor]:
        """Empty meta copies of a module's parameters and buffers, made once."""
        state = self._meta_state.get(id(module))
        if state is None:
            state = self._meta_state[id(module)] = meta_state(module)
        return state

    # ------------------------------------------------------- recording

    def _owner(self, n: fx.Node) -> str:
        stack = n.meta.get("nn_module_stack")
        if stack:
            path = next(reversed(stack.values()))[0]
            return path if n.op != "call_module" else path.rpartition(".")[0]
        return n.target.rpartition(".")[0] if n.op == "call_module" else ""

    def record_name(self, n: fx.Node, owner: str | None = None) -> str:
        """The record name of a node: its module path, or ``owner.node``
        (``owner``: the node's :meth:`_owner`, when already known)."""
        if n.op == "call_module":
            return n.target
        if owner is None:
            owner = self._owner(n)
        return f"{owner}.{n.name}" if owner else n.name

    def where(self, n: fx.Node) -> str:
        """The node, for errors: ``node conv2d (features.conv2d)``."""
        return f"node {n.name} ({self.record_name(n)})"

    @staticmethod
    def _edges(n: fx.Node) -> tuple[str, ...]:
        return tuple(a.name for a in n.all_input_nodes if META_RECORD in a.meta)

    def _record_call(self, n: fx.Node, call: OpCall, entry: Entry | None, outcome: Outcome) -> None:
        module, owned = call.module, []
        if module is not None and id(module) not in self._seen_modules:  # a shared module's params count once
            self._seen_modules.add(id(module))
            owned = self.builder.claim(parameters_of(module))
        name, op = self._target_names(call.target)
        op = entry.op if entry is not None else op
        owner = self._owner(n)
        site = Site(n.name, self.record_name(n, owner), owner, call.kind, op, name,
                    self._edges(n), "fx" if entry is not None else "aten")
        n.meta[META_RECORD] = self.builder.add(
            site, outcome, inputs=call.args + tuple(call.kwargs.values()) if call.kwargs else call.args,
            out=call.out, module=module, owned=owned, weight=self._weight(module),
            classes=module_classes(type(module)) if module is not None else ())

    def _target_names(self, target: Any) -> tuple[str, str]:
        """``target_name`` and ``default_op`` of a target, worked out once per walk."""
        try:
            names = self._names.get(target)
        except TypeError:  # an unhashable target
            return target_name(target), default_op(target)
        if names is None:
            names = self._names[target] = (target_name(target), default_op(target))
        return names

    def _weight(self, module: nn.Module | None) -> torch.Tensor | None:
        """:func:`weight_of` the module, its class's weight name looked up once per walk."""
        if module is None:
            return None
        cls = type(module)
        name = self._weights.get(cls)
        if name is None:
            names = self.settings.weight_names
            name = self._weights[cls] = weight_name(cls, names)
        return weight_named(module, name)

    def _keep(self, n: fx.Node, site: Site, outcome: Outcome, **facts: Any) -> None:
        n.meta[META_RECORD] = self.builder.add(site, outcome, **facts)


def walk(cap: Capture, registry: CounterRegistry,
         input_info: TensorInfo | Sequence[TensorInfo] | Mapping[str, TensorInfo],
         settings: WalkSettings | None = None) -> list[LayerRecord]:
    """Records of every node of an fx capture, in topological order.

    ``input_info``: the one input, the inputs in placeholder order, or
    ``{parameter name: input}`` (a placeholder not named takes its default)."""
    nonzero = count_nonzero_all(_parameters(cap))  # all weights read up front, in parallel
    walker = Walker(cap, registry, settings or WalkSettings(), nonzero)
    if isinstance(input_info, Mapping):
        walker.named_inputs = dict(input_info)
        walker.run()
    elif isinstance(input_info, TensorInfo):
        walker.run(input_info)
    else:
        walker.run(*input_info)
    return walker.records


def _parameters(cap: Capture) -> Iterable[torch.Tensor]:
    """Every parameter of the captured model (a shared one repeated): a flat
    pass over the modules the capture listed, cheaper than ``parameters()``'s
    nested generators."""
    if not cap.modules:
        return cap.root.parameters()
    return [p for module in cap.modules.values() for p in module._parameters.values() if p is not None]


def _plain(value: Any) -> Any:
    """fx's immutable_list / immutable_dict (nested) as plain list / dict; anything else as it is."""
    if isinstance(value, immutable_list):
        return [_plain(v) for v in value]
    if isinstance(value, immutable_dict):
        return {k: _plain(v) for k, v in value.items()}
    if type(value) is tuple:
        return tuple(_plain(v) for v in value)
    return value
