"""Capture a model as a graph: torch.fx first, torch.export as the fallback.

The fx tracer keeps module calls whose class has a counter (and, as torch.fx
does by default, every ``torch.nn`` module) as single ``call_module`` nodes,
so layer names match ``named_modules()``. Tracing never runs arithmetic, so
it works on models built on the meta device. When fx cannot trace (data-
dependent control flow, unsupported Python), ``torch.export`` captures the
aten graph, whose nodes carry the module stack they came from.
"""
from __future__ import annotations

import copy
import inspect
import io
import logging
import re
import sys
from contextlib import contextmanager, redirect_stderr
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Callable, Collection, Iterator

import torch
from torch import fx, nn

from .errors import TraceError, UsageError, first_line
from .inputs import forward_parameters
from .registry import CounterRegistry, Lazy

__all__ = ["Capture", "capture", "trace_fx", "export_graph", "is_aten_graph"]


@dataclass
class Capture:
    """A captured graph with the module it calls into.

    ``via`` is ``"fx"`` (a symbolic trace: call_module / call_function /
    call_method nodes) or ``"export"`` (aten nodes with ``node.meta["val"]``
    and ``nn_module_stack``). ``fx_error`` keeps why fx failed, if it did.
    """

    graph: fx.Graph
    root: nn.Module
    via: str
    fx_error: str = ""
    modules: dict[str, nn.Module] = field(default_factory=dict)
    signature: Any = None  # an export's graph signature: which placeholders are parameters
    note: str = ""  # what the result must say about how it was counted (a detector's bounds)

    def graph_module(self, class_name: str = "GraphModule") -> tuple[fx.GraphModule, dict[str, str]]:
        """The graph as a runnable GraphModule (built on demand: it costs codegen),
        and the module paths renamed on the way (``{old: new}``).

        fx writes ``getattr(self, "NAME")`` for a name that is not an
        identifier, which breaks on a quote, a backslash or a line break
        (``add_module`` accepts them): such targets are renamed (each bad
        character to ``_``), in this GraphModule only; the root is untouched."""
        graph = copy.deepcopy(self.graph)
        targets = {n.target for n in graph.nodes if n.op in ("call_module", "get_attr")}
        renamed = _safe_targets(targets)
        if not renamed:
            return fx.GraphModule(self.root, graph, class_name), {}
        holder = nn.Module()
        for target in targets:
            _place(holder, renamed.get(target, target), fetch_attr(self.root, target))
        for node in graph.nodes:
            if node.op in ("call_module", "get_attr"):
                node.target = renamed.get(node.target, node.target)
        return fx.GraphModule(holder, graph, class_name), renamed


#: Characters fx's code generator cannot put in ``getattr(self, "NAME")``.
_UNSAFE_NAME = re.compile(r'["\\\x00-\x1f\x7f\u2028\u2029]')


def _safe_targets(targets: set[str]) -> dict[str, str]:
    """``{target: renamed}`` for the targets fx cannot write, kept unique."""
    renamed, taken = {}, set(targets)
    for target in sorted(targets):
        safe = ".".join(_UNSAFE_NAME.sub("_", part) for part in target.split("."))
        if safe == target:
            continue
        while safe in taken:
            safe += "_"
        taken.add(safe)
        renamed[target] = safe
    return renamed


def fetch_attr(root: nn.Module, target: str) -> Any:
    """``root``'s attribute at the dotted path ``target`` (a get_attr node's target)."""
    value = root
    for part in target.split("."):
        value = getattr(value, part)
    return value


def _place(holder: nn.Module, target: str, value: Any) -> None:
    *path, field_name = target.split(".")
    for part in path:
        if not hasattr(holder, part):
            holder.add_module(part, nn.Module())
        holder = getattr(holder, part)
    if isinstance(value, torch.Tensor) and not isinstance(value, nn.Parameter):
        holder.register_buffer(field_name, value)
    else:
        setattr(holder, field_name, value)


#: Attributes the tracer sets on the traced module for arguments fx cannot store
#: (a flex_attention score_mod, a BlockMask), read through ``get_attr`` nodes.
CONSTANT_PREFIX = "_micronet_constant"


def held_constants(root: nn.Module) -> frozenset[str]:
    """The names of the constants :class:`MicronetTracer` attributes ``root``
    holds now (a GraphModule made from a trace keeps those its code reads)."""
    return frozenset(n for n in vars(root) if n.startswith(CONSTANT_PREFIX))


def forget_constants(root: nn.Module, keep: frozenset[str] = frozenset()) -> None:
    """Remove the attributes :class:`MicronetTracer` set on ``root`` (after
    the walk that reads them) except those in ``keep`` (what ``root`` held
    before: :func:`held_constants`), so that tracing leaves a model as it was."""
    for name in held_constants(root) - keep:
        delattr(root, name)


class MicronetTracer(fx.Tracer):
    """fx tracer that keeps every module with a registered counter as a leaf.

    Model libraries that mark functions and modules as not traceable are
    honoured: timm's ``register_notrace_function`` / ``register_notrace_module``
    (dynamic "same" padding, window partitions) become single nodes, priced by
    running them on meta tensors, as timm's own feature extractor treats them.
    Without a ``registry``, the installed plugins' counters (what
    ``pickle`` needs to load a GraphModule it traced: torch rebuilds the
    tracer class without arguments).
    """

    def __init__(self, registry: CounterRegistry | None = None):
        functions, self._library_leaves = _library_notrace()
        if registry is None:  # a GraphModule being unpickled rebuilds its tracer without arguments
            from .manager import default_registries

            registry = default_registries().counters
        counted, homes = _counted_functions(registry)
        super().__init__(autowrap_functions=functions + counted)
        # fx wraps an autowrapped function where a forward's globals name it (``from m import f``)
        # and in the modules it searches (``m.f(...)``), for the trace only (its patcher undoes it)
        self._autowrap_search.extend(m for m in homes if m not in self._autowrap_search)
        self.registry = registry

    def create_arg(self, a: Any) -> Any:
        """fx's, and an argument fx cannot put in a graph (a ``score_mod``
        function, a ``BlockMask`` handed to a kept-whole function) as a
        constant of the root, read by a ``get_attr`` node, as fx keeps tensor
        constants (``_tensor_constant0``): the walk hands it to the counter."""
        try:
            return super().create_arg(a)
        except NotImplementedError:
            if isinstance(a, (nn.Module, torch.Tensor)) or not (
                    inspect.isfunction(a) or type(a).__module__.startswith("torch.")):
                raise
        held = vars(self.root)
        # a GraphModule traced again already holds its constants: the same name, not a new one
        name = next((k for k, v in held.items() if k.startswith(CONSTANT_PREFIX) and v is a), None)
        if name is None:
            index = len(self._constants)
            while f"{CONSTANT_PREFIX}{index}" in held:
                index += 1
            name = f"{CONSTANT_PREFIX}{index}"
            setattr(self.root, name, a)
        self._constants.append(a)
        return self.create_node("get_attr", name, (), {})

    def trace(self, root: Any, concrete_args: dict[str, Any] | None = None) -> fx.Graph:
        """fx's trace. The autowrapped nodes lose fx's ``is_wrapped`` mark: with it a
        GraphModule's code calls ``fx.wrap("torch.nn....flex_attention")`` on a dotted
        name its globals lack, and every later trace in the process fails (KeyError);
        this tracer wraps them again itself."""
        self._constants: list[Any] = []
        graph = super().trace(root, concrete_args)
        for node in graph.nodes:
            node.meta.pop("is_wrapped", None)
        return graph

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if self.registry.knows_module(type(m)) or type(m) in self._library_leaves:
            return True
        return super().is_leaf_module(m, module_qualified_name)


def _counted_functions(registry: CounterRegistry) -> tuple[tuple[Callable, ...], tuple[ModuleType, ...]]:
    """Python functions a counter (not a free entry) is registered for by
    :class:`~micronet.registry.Lazy` name (``flex_attention``: fx would trace
    into it and fail), and the modules
    that name them. A Lazy target whose module is not imported is left alone
    (no model calls it); none is imported here. Functions with a counter given
    as objects (``F.relu``) reach the graph whole already, through
    ``__torch_function__``."""
    functions: dict[int, Callable] = {}
    homes: dict[str, ModuleType] = {}
    for registration in getattr(registry, "_registrations", ()):  # CounterRegistry has no public listing
        if registration.kind == "shape":
            continue
        for target in registration.targets:
            if not isinstance(target, Lazy):
                continue
            try:
                value = target.resolve()
            except Exception:  # a plugin's broken Lazy: its lookup reports it, tracing goes on
                continue
            entry = registry.counter(value) if inspect.isfunction(value) else None
            if entry is not None and not entry.free:  # a free one is traced through as before
                functions[id(value)] = value
                homes[target.module] = sys.modules[target.module]
    return tuple(functions.values()), tuple(homes.values())


def _library_notrace() -> tuple[tuple[Any, ...], frozenset[type]]:
    """Functions and module classes a loaded model library declares untraceable.

    Only libraries already imported (the model came from them) are asked;
    none is imported here.
    """
    timm_fx = sys.modules.get("timm.layers._fx")
    if timm_fx is None:
        return (), frozenset()
    try:
        functions = tuple(f for f in timm_fx.get_notrace_functions() if callable(f))
        modules = frozenset(timm_fx.get_notrace_modules())
    except Exception:  # another timm version: trace as usual, export is the fallback
        return (), frozenset()
    return functions, modules


def trace_fx(model: nn.Module, registry: CounterRegistry, given: Collection[str] | None = None) -> Capture:
    """Symbolically trace ``model``; raises whatever torch.fx raises.

    A GraphModule is traced again too: its graph names the submodules it had
    when it was made, and a compression step may have replaced one since (a
    conv swapped for ``Sequential(conv, conv)`` must be counted as two convs).
    Only when fx cannot trace it again is its own graph used. ``given`` names
    the forward parameters that are inputs (placeholders); the others are
    bound to their defaults (None: the first parameter alone is an input)."""
    tracer = MicronetTracer(registry)
    try:
        graph = tracer.trace(model, concrete_args=_defaults_after_input(model, given))
    except Exception:
        if not isinstance(model, fx.GraphModule):
            raise
        graph = model.graph
    return Capture(graph, model, "fx", modules=dict(model.named_modules()))


def is_aten_graph(model: nn.Module) -> bool:
    """Whether ``model`` is a GraphModule of aten ops (``ExportedProgram.module()``,
    e.g. a ``.pt2`` archive being compressed): it is captured with torch.export
    again, so it counts as ``micronet audit`` counts the archive."""
    if not isinstance(model, fx.GraphModule):
        return False
    return any(n.op == "call_function" and isinstance(n.target, torch._ops.OpOverload)
               for n in model.graph.nodes)


def _defaults_after_input(model: nn.Module, given: Collection[str] | None = None) -> dict[str, Any] | None:
    """The forward's optional arguments that are not inputs, bound to their
    defaults: an audit calling ``forward(x)`` alone must see ``mask=None``
    stay None while tracing (as a proxy, ``mask is not None`` would be true
    and the wrong branch traced). ``given``: the parameters that are inputs
    (None: the first one)."""
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    params = forward_parameters(model)
    inputs = set(given) if given is not None else {p.name for p in params[:1]}
    defaults = {p.name: p.default for p in params
                if p.kind in kinds and p.default is not inspect.Parameter.empty and p.name not in inputs}
    return defaults or None


def _check_inputs(model: nn.Module, given: Collection[str] | None) -> None:
    """A forward that needs a tensor the audit does not pass is a usage error
    (``given``: the parameters that get an input; None: one tensor)."""
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD,
             inspect.Parameter.KEYWORD_ONLY)
    needed = [p.name for p in forward_parameters(model)
              if p.kind in kinds and p.default is inspect.Parameter.empty]
    if given is None and len(needed) > 1:
        raise UsageError(f"{type(model).__name__}.forward needs {len(needed)} inputs "
                         f"({', '.join(needed)}); an audit calls it with one tensor",
                         hint="pass one input per parameter (--input NAME=SHAPE, or inputs= in the API), "
                         "or wrap the model in a module whose forward takes one input and builds the others")
    missing = [name for name in needed if given is not None and name not in given]
    if missing:
        raise UsageError(f"{type(model).__name__}.forward needs {len(needed)} inputs "
                         f"({', '.join(needed)}); missing {', '.join(missing)}",
                         hint="pass one input per parameter (--input NAME=SHAPE, or inputs= in the API)")


def export_graph(model: nn.Module, example: tuple[torch.Tensor, ...],
                 example_kwargs: dict[str, torch.Tensor] | None = None) -> Capture:
    """Capture ``model`` with ``torch.export`` (aten graph, strict=False),
    called as ``model(*example, **example_kwargs)``.

    The module's forward hooks are set aside meanwhile, as a symbolic trace
    never runs them: an export runs the forward, and a caller's hook (one
    collecting activations) must not see the audit's fake tensors. The
    export runs under ``torch.no_grad()``: an audit prices inference, and
    some ops refuse to be exported for training where they have no
    backward (``flex_attention`` on CPU with parameters that require grad)."""
    with _quiet_failure(), _hooks_set_aside(model), torch.no_grad():
        exported = torch.export.export(model, tuple(example), example_kwargs or None, strict=False)
    return capture_exported(exported)


_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_forward_hooks_with_kwargs",
          "_forward_pre_hooks_with_kwargs", "_forward_hooks_always_called")


@contextmanager
def _hooks_set_aside(model: nn.Module) -> Iterator[None]:
    saved = [(m, name, getattr(m, name)) for m in model.modules() for name in _HOOKS
             if getattr(m, name, None)]
    for module, name, hooks in saved:
        setattr(module, name, type(hooks)())
    try:
        yield
    finally:
        for module, name, hooks in saved:
            setattr(module, name, hooks)


@contextmanager
def _quiet_failure() -> Iterator[None]:
    """Keep what torch.export prints when it fails (its partial FX graph, its
    symbolic-shape warnings) off the terminal: our one-line error says why, and
    ``--debug`` shows the traceback. What a successful export prints is kept."""
    shapes_log = logging.getLogger("torch.fx.experimental.symbolic_shapes")
    level = shapes_log.level
    shapes_log.setLevel(logging.ERROR)
    printed = io.StringIO()
    try:
        with redirect_stderr(printed):
            yield
    finally:
        shapes_log.setLevel(level)
    sys.stderr.write(printed.getvalue())  # reached only when the export succeeded


def capture_exported(exported: Any) -> Capture:
    """Wrap an ``ExportedProgram`` as a Capture (its graph is already aten)."""
    gm = exported.graph_module
    return Capture(gm.graph, gm, "export", modules=dict(gm.named_modules()),
                   signature=exported.graph_signature)


def capture(model: nn.Module, registry: CounterRegistry,
            example: tuple[torch.Tensor, ...] | Callable[[], tuple[torch.Tensor, ...]],
            example_kwargs: dict[str, torch.Tensor] | Callable[[], dict[str, torch.Tensor]] | None = None,
            given: Collection[str] | None = None) -> Capture:
    """fx when it can, torch.export when fx fails; one TraceError when both fail.

    ``example`` (positional) and ``example_kwargs`` (keyword) are the inputs
    torch.export runs with, or functions making them (called only when
    needed). ``given`` names the forward parameters that are inputs (None:
    the first one alone, one tensor)."""
    _check_inputs(model, given)

    def export() -> Capture:
        kwargs = example_kwargs() if callable(example_kwargs) else example_kwargs
        return export_graph(model, example() if callable(example) else example, kwargs)

    if is_aten_graph(model):
        return export()
    from .detection_plan import is_detector

    if is_detector(model):  # a list of images in, a data-dependent number of boxes out: its bounded graph
        from .detection import capture_detector

        first = example() if callable(example) else example  # a batch, or a list of images
        if not first:  # given by name (images=...)
            first = tuple((example_kwargs() if callable(example_kwargs) else example_kwargs or {}).values())
        return capture_detector(model, registry, first[0])
    try:
        return trace_fx(model, registry, given)
    except Exception as fx_error:  # fx raises many types: TraceError, TypeError, ...
        fx_reason = f"{type(fx_error).__name__}: {first_line(fx_error, 300)}"
        try:
            result = export()
        except Exception as export_error:
            raise TraceError(
                f"cannot capture {type(model).__name__}: torch.fx failed ({fx_reason}) and "
                f"torch.export failed ({type(export_error).__name__}: {first_line(export_error, 300)})",
                hint="make the forward traceable (no data-dependent Python control flow), "
                "or register a counter for the offending module so it becomes a leaf",
            ) from export_error
        result.fx_error = fx_reason
        return result
