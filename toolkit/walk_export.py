"""Walk a ``torch.export`` capture: aten nodes grouped into layers.

When torch.fx cannot trace a model, :mod:`micronet.capture` exports it; the
aten nodes of the exported graph carry the module stack they came from
(``node.meta["nn_module_stack"]``). Each group of nodes from the same
innermost module becomes one layer, named by its module path. A leaf
module whose class has a counter of its own (a plugin's too) is priced by
it, as the fx walk prices it; any other group's aten ops are counted one by
one (:class:`~micronet.atencount.AtenTally`, the fx walk's fallback). Either
way the record is built by the same
:class:`~micronet.recordbuilder.RecordBuilder` as the fx walk's. A
``model.pt2`` read back keeps no module classes (its submodules are plain
containers), so its layers are priced by their aten ops. A higher-order op
with a counter (``flex_attention``) is priced whole, its subgraphs handed to
the counter; the nodes that only build an argument its counter already
prices (the block mask) are free.
"""
from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import fx, nn

from .atencount import AtenTally
from .capture import Capture, fetch_attr
from .recordbuilder import Outcome, RecordBuilder, Site, WalkSettings, run_counter, weight_of
from .records import UNCOUNTED, LayerRecord, TensorInfo
from .registry import CounterRegistry, OpCall
from .sparsity import count_nonzero_all
from .values import to_info

__all__ = ["walk_exported"]


def walk_exported(cap: Capture, registry: CounterRegistry, settings: WalkSettings,
                  model: nn.Module) -> list[LayerRecord]:
    """Records of a torch.export capture: its aten nodes grouped by the
    innermost module they came from, so layers keep their module names."""
    groups, classes = _groups(cap.graph)
    params = _state_placeholders(cap)
    modules = dict(model.named_modules())
    first_of = {n: nodes[0].name for nodes in groups.values() for n in nodes}
    priced = _priced_by_whole_ops(cap.graph, registry)
    bounds = SizeBounds(cap.graph, registry)
    builder = RecordBuilder(settings, count_nonzero_all(model.parameters()))  # all weights read up front
    for path, nodes in groups.items():
        edges = tuple(dict.fromkeys(first_of[a] for n in nodes for a in n.all_input_nodes
                                    if a in first_of and first_of[a] != nodes[0].name))
        module = modules.get(path)
        outcome = _module_outcome(registry, module, nodes, params, path)
        if outcome is None:
            outcome = _aten_outcome(registry, cap, nodes, priced, bounds, path)
        _add_layer(builder, path, nodes, classes[path], module, edges, outcome, bounds)
    return builder.records


def _aten_outcome(registry: CounterRegistry, cap: Capture, nodes: list[fx.Node], priced: frozenset[fx.Node],
                  bounds: "SizeBounds", path: str) -> Outcome:
    """A group priced by its aten ops, data-dependent sizes at their upper
    bounds; uncounted, with the reason, when a size has none."""
    tally = AtenTally(registry)
    try:
        for n, root in _inline_subgraphs((n for n in nodes if n not in priced and not _size_only(n)),
                                         cap.root, registry):
            args, kwargs = fx.node.map_arg((n.args, n.kwargs), lambda a: bounds.bound(_value(a, root)))
            tally.add(n.target, tuple(args), dict(kwargs), bounds.bound(n.meta.get("val")),
                      f"node {n.name} ({path or '(model)'})")
    except _Unbounded as error:
        return Outcome(UNCOUNTED, reason=str(error))
    return tally.outcome()


class _Unbounded(Exception):
    """A data-dependent size with no upper bound."""


class SizeBounds:
    """Upper bounds of an export's data-dependent sizes (unbacked symbols such
    as the ``u0`` boxes ``nms`` keeps): a value's shape with each such size
    at its bound, so the ops after it are counted for the most elements they
    can see, as the fx walk prices them (``nms`` keeps at most its ``n``
    boxes: its shape rule). A symbol's bound is the ``n`` of the ``nms`` that
    made it, else torch's own value range when finite. Sizes are monotone in
    their symbols (``Min(k, u0)``, products, sums), so substituting bounds
    gives a bound. A size with no finite bound raises :class:`_Unbounded`:
    the layer is then uncounted, with that reason.

    Where a symbol comes from an op with a shape rule (``nms``: all its
    ``n`` boxes kept), the rule's size, on the op's bounded inputs, is its
    bound: any op a plugin gives a shape rule is bounded alike."""

    def __init__(self, graph: fx.Graph, registry: CounterRegistry):
        self.known: dict[Any, int] = {}
        self.shape_env = None
        for n in graph.nodes:
            val = n.meta.get("val")
            if self.shape_env is None and isinstance(val, torch.Tensor):
                mode = getattr(val, "fake_mode", None)
                self.shape_env = getattr(mode, "shape_env", None)
            if n.op == "call_function" and isinstance(val, torch.Tensor) and self._new_symbols(val):
                self._learn(n, val, registry)

    def _new_symbols(self, val: torch.Tensor) -> bool:
        return any(isinstance(d, torch.SymInt) and d.node.expr.is_Symbol and d.node.expr not in self.known
                   for d in val.shape)

    def _learn(self, n: fx.Node, val: torch.Tensor, registry: CounterRegistry) -> None:
        """The bounds of the symbols ``n`` makes, from its target's shape rule."""
        rule = registry.shape(n.target)
        if rule is None or rule.fn is None:
            return
        try:
            args = self.bound(tuple(a.meta.get("val") if isinstance(a, fx.Node) else a for a in n.args))
            kwargs = self.bound({k: a.meta.get("val") if isinstance(a, fx.Node) else a for k, a in n.kwargs.items()})
            out = rule.fn(OpCall("aten", n.target, args, kwargs))
        except Exception:  # unbounded inputs, or a rule that cannot say: the symbols stay unknown
            return
        if not isinstance(out, TensorInfo) or len(out.shape) != len(val.shape):
            return
        for size, bound in zip(val.shape, out.shape):
            if isinstance(size, torch.SymInt) and size.node.expr.is_Symbol and isinstance(bound, int):
                self.known.setdefault(size.node.expr, bound)

    def size(self, value: Any) -> Any:
        """An int for a SymInt (its bound); anything else as it is."""
        if not isinstance(value, torch.SymInt):
            return value
        expr = value.node.expr
        if expr.is_number:
            return int(expr)
        import sympy

        bounded = expr.xreplace({s: sympy.Integer(self.known[s]) for s in expr.free_symbols if s in self.known})
        if bounded.is_number:
            return int(bounded)
        if self.shape_env is not None:
            from torch.utils._sympy.value_ranges import bound_sympy

            upper = bound_sympy(bounded, self.shape_env.var_to_range).upper
            if getattr(upper, "is_number", False) and upper.is_finite:
                return int(upper)
        raise _Unbounded(f"a data-dependent size ({expr}) has no upper bound: give the op that makes it "
                         "a shape rule (as nms has one), or check its size (torch._check)")

    def bound(self, value: Any) -> Any:
        """``value`` with its tensors as TensorInfo at bounded sizes."""
        if isinstance(value, torch.Tensor):
            if all(isinstance(d, int) for d in value.shape):
                return to_info(value)
            return TensorInfo(tuple(self.size(d) for d in value.shape), value.dtype)
        if isinstance(value, torch.SymInt):
            return self.size(value)
        if isinstance(value, (list, tuple)):
            return type(value)(self.bound(v) for v in value)
        if isinstance(value, dict):
            return {k: self.bound(v) for k, v in value.items()}
        return value


def _module_outcome(registry: CounterRegistry, module: nn.Module | None, nodes: list[fx.Node],
                    params: frozenset[str], path: str) -> Outcome | None:
    """A leaf module with a counter of its own is priced by it, as the fx walk
    prices it (so an archive re-scores as its model did, a plugin's counter
    included); None when the group is left to its aten ops."""
    if module is None or next(module.children(), None) is not None:
        return None
    entry = registry.counter(type(module))
    if entry is None:
        return None
    if entry.free:
        return Outcome.free(entry.plugin)
    inside = set(nodes)
    feeds = [a for n in nodes for a in n.all_input_nodes
             if a not in inside and a.op != "get_attr" and a.name not in params]
    args = tuple(to_info(a.meta.get("val")) for a in dict.fromkeys(feeds))
    call = OpCall("module", type(module), args, {}, module, to_info(nodes[-1].meta.get("val")))
    return Outcome.counted(entry, run_counter(entry, call, f"node {nodes[0].name} ({path})"))


def _size_only(n: fx.Node) -> bool:
    """Whether a node computes on sizes alone (``operator.ge`` of a SymInt and
    an int, ``sym_size``, ``sym_max``: what export records for a shape check
    or for the length of a data-dependent output such as ``nms``'s): free,
    as the fx walk prices a call on sizes and constants, never handed to a
    tensor op's counter (``count_compare`` would refuse a SymBool)."""
    if isinstance(n.meta.get("val"), torch.Tensor) or isinstance(n.target, torch._ops.HigherOrderOperator):
        return False
    if not isinstance(n.meta.get("val"), (torch.SymInt, torch.SymBool, torch.SymFloat, int, float, bool)):
        return False
    return not any(isinstance(a.meta.get("val"), torch.Tensor) for a in n.all_input_nodes)


def _state_placeholders(cap: Capture) -> frozenset[str]:
    """Placeholder names that stand for parameters, buffers and constants (not inputs)."""
    signature = cap.signature
    if signature is None:
        return frozenset()
    return frozenset(signature.inputs_to_parameters) | frozenset(signature.inputs_to_buffers) \
        | frozenset(signature.inputs_to_lifted_tensor_constants)


def _groups(graph: fx.Graph) -> tuple[dict[str, list[fx.Node]], dict[str, str]]:
    """Call nodes by innermost module path, and each path's class as export recorded it."""
    groups: dict[str, list[fx.Node]] = {}
    classes: dict[str, str] = {}
    for n in graph.nodes:
        if n.op != "call_function":
            continue
        stack = n.meta.get("nn_module_stack") or {}
        path, cls = next(reversed(stack.values())) if stack else ("", "")
        groups.setdefault(path, []).append(n)
        classes.setdefault(path, cls if isinstance(cls, str) else f"{cls.__module__}.{cls.__qualname__}")
    return groups, classes


def _add_layer(builder: RecordBuilder, path: str, nodes: list[fx.Node], qualname: str,
               module: nn.Module | None, edges: tuple[str, ...], outcome: Outcome,
               bounds: SizeBounds) -> None:
    """One group's record. A leaf owns its parameters; any other module those
    it uses itself (relative position tables, class tokens), not its children's."""
    leaf = module is not None and next(module.children(), None) is None
    owned = module.parameters() if leaf else (module._parameters.values() if module is not None else ())
    layer = module if leaf else None
    first, last = nodes[0], nodes[-1]
    in_val = first.args[0].meta.get("val") if first.args and isinstance(first.args[0], fx.Node) else None
    site = Site(first.name, path or "(model)", path.rpartition(".")[0] if leaf else path, "aten",
                qualname.rpartition(".")[2].lower() or "graph", qualname or "aten", edges, "export")
    def info(value: Any) -> Any:
        try:
            return bounds.bound(value)
        except _Unbounded:
            return None

    builder.add(site, outcome, inputs=(info(in_val),), out=info(last.meta.get("val")),
                module=layer, owned=builder.claim(owned), weight=weight_of(layer, builder.settings.weight_names),
                classes=_export_classes(qualname) if leaf else ())


def _inline_subgraphs(nodes: Iterable[fx.Node], root: nn.Module,
                      registry: CounterRegistry) -> Iterable[tuple[fx.Node, nn.Module]]:
    """The nodes, each with the module its ``get_attr`` arguments read, and
    each higher-order op that wraps a subgraph (export's
    ``wrap_with_set_grad_enabled``, ``wrap_with_autocast``: code run under
    ``torch.no_grad`` or autocast) replaced by the subgraph's own ops. A
    higher-order op with a counter of its own (``flex_attention``: its
    subgraphs are the score and mask functions, priced per score) is kept whole."""
    for n in nodes:
        subgraphs = [a for a in n.args if isinstance(a, fx.Node) and a.op == "get_attr"] \
            if isinstance(n.target, torch._ops.HigherOrderOperator) else []
        modules = [getattr(root, a.target, None) for a in subgraphs]
        if (not modules or not all(isinstance(m, fx.GraphModule) for m in modules)
                or registry.counter(n.target) is not None):
            yield n, root
            continue
        for module in modules:
            yield from _inline_subgraphs((s for s in module.graph.nodes if s.op == "call_function"),
                                         module, registry)


def _value(arg: fx.Node, root: nn.Module) -> Any:
    """What a counter gets for a node argument: its traced value, or for a
    ``get_attr`` the object itself (a higher-order op's subgraph, a GraphModule)."""
    if arg.op == "get_attr":
        try:
            return fetch_attr(root, arg.target)
        except AttributeError:
            return None
    return arg.meta.get("val")



#: higher-order ops kept whole -> argument positions whose producers their
#: counter already prices: flex_attention's ``block_mask`` (its counter prices
#: the ``mask_mod`` on every score, so building the block tables from it, the
#: vmapped mask evaluation, the sums, ``argsort`` and ``index_put_`` of
#: ``create_block_mask``, would count the mask twice)
_PRICED_ARGUMENTS = {"flex_attention": (4,)}


def _priced_by_whole_ops(graph: fx.Graph, registry: CounterRegistry) -> frozenset[fx.Node]:
    """Nodes whose only purpose is an argument a kept-whole op's counter prices
    (see ``_PRICED_ARGUMENTS``): every user of such a node is one of them or
    that argument (nodes used by nothing, shape checks, are theirs when every
    input is). They are free: recorded in their layer, costing nothing."""
    owned: set[fx.Node] = set()
    for n in graph.nodes:
        name = getattr(n.target, "__name__", "")
        if n.op != "call_function" or not isinstance(n.target, torch._ops.HigherOrderOperator) \
                or name not in _PRICED_ARGUMENTS or registry.counter(n.target) is None:
            continue
        positions = _PRICED_ARGUMENTS[name]
        others = {a for i, arg in enumerate(n.args) if i not in positions for a in _nodes(arg)}
        seeds = {a for i in positions if i < len(n.args) for a in _nodes(n.args[i])} - others
        owned |= _exclusive_producers(graph, n, seeds)
    return frozenset(owned)


def _nodes(arg: Any) -> list[fx.Node]:
    found: list[fx.Node] = []
    fx.node.map_arg(arg, found.append)
    return found


def _exclusive_producers(graph: fx.Graph, op: fx.Node, seeds: set[fx.Node]) -> set[fx.Node]:
    """The call nodes feeding ``op`` only through ``seeds``, with the dead ends
    hanging off them (shape checks, an ``expand`` nothing reads). Walked
    backwards: a node's users come after it."""
    dead: set[fx.Node] = set()  # call nodes whose result reaches nothing
    owned: set[fx.Node] = set()
    for n in reversed(list(graph.nodes)):
        if n.op != "call_function" or n is op:
            continue
        if all(u in dead for u in n.users):
            dead.add(n)
            continue
        live = [u for u in n.users if u not in dead]
        if all(u in owned or (u is op and n in seeds) for u in live):
            owned.add(n)
    for n in graph.nodes:  # dead ends whose inputs are all owned
        if n in dead and n.all_input_nodes and all(a in owned for a in n.all_input_nodes):
            owned.add(n)
    return owned


def _export_classes(qualname: str) -> tuple[str, ...]:
    """The recorded class name, plus its public torch.nn spelling (export keeps
    only the class's own name, not its bases)."""
    module, _, cls = qualname.rpartition(".")
    public = (f"torch.nn.{cls}",) if module.startswith("torch.nn.modules.") else ()
    return (qualname, *public)
