"""Walk a captured graph in topological order and record every node.

:class:`Walker` is a small ``torch.fx.Interpreter`` that overrides
``run_node``: the environment holds :class:`~micronet.records.TensorInfo`
(shape and dtype) instead of tensors, plain Python values for sizes. For each
call node it computes the output with the target's shape rule, or by running
the op on meta tensors when there is none, then hands an
:class:`~micronet.registry.OpCall` to the registered counter. A node without a
counter is run on meta tensors under :class:`AtenCounter`, which counts the
aten ops it decomposes into; aten ops nobody counts leave the node
*uncounted*, with the reason. Nothing is silently zero.

A layer's bit widths and the storage a compression added to it are read
from its module, where a plugin declared them (:mod:`micronet.bits`).

What the walker learns is also left on the nodes, under documented keys:
``node.meta["micronet.value"]`` (the TensorInfo or value) and
``node.meta["micronet.record"]`` (the LayerRecord).
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch
from torch import fx, nn
from torch.utils._python_dispatch import TorchDispatchMode

from .bits import bits_of, declared_storage_bits
from .capture import Capture
from .errors import CounterError, TraceError, UsageError
from .precision import Precision
from .records import COUNTED, FREE, UNCOUNTED, Counts, LayerRecord, TensorInfo
from .registry import CounterRegistry, Method, OpCall, default_op, target_name
from .sparsity import count_nonzero, count_nonzero_all, measure

__all__ = ["Walker", "walk", "AtenCounter", "merge_counts", "to_info", "to_meta"]

META_VALUE = "micronet.value"
META_RECORD = "micronet.record"


# ----------------------------------------------------------------- values


def to_info(value: Any) -> Any:
    """Tensors -> TensorInfo, recursively through tuples, lists and dicts."""
    if isinstance(value, torch.Tensor):
        return TensorInfo(tuple(value.shape), value.dtype)
    if isinstance(value, torch.Size):
        return value
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # namedtuple
        return type(value)(*(to_info(v) for v in value))
    if isinstance(value, (tuple, list)):
        return type(value)(to_info(v) for v in value)
    if isinstance(value, dict):
        return {k: to_info(v) for k, v in value.items()}
    return value


def to_meta(value: Any, device: str = "meta") -> Any:
    """TensorInfo -> empty tensor on ``device`` (zeros when real), recursively."""
    if isinstance(value, TensorInfo):
        if device == "meta":
            return torch.empty(value.shape, dtype=value.dtype, device="meta")
        return torch.zeros(value.shape, dtype=value.dtype, device=device)
    if isinstance(value, torch.Size):
        return value
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(to_meta(v, device) for v in value))
    if isinstance(value, (tuple, list)):
        return type(value)(to_meta(v, device) for v in value)
    if isinstance(value, dict):
        return {k: to_meta(v, device) for k, v in value.items()}
    return value


def _has_tensor(values: Iterable[Any]) -> bool:
    for value in values:
        if isinstance(value, TensorInfo):
            return True
        if isinstance(value, (tuple, list)) and _has_tensor(value):
            return True
        if isinstance(value, dict) and _has_tensor(value.values()):
            return True
    return False


def _shapes(values: Iterable[Any]) -> tuple[tuple[int, ...], ...]:
    out = []
    for value in values:
        if isinstance(value, TensorInfo):
            out.append(value.shape)
        elif isinstance(value, (tuple, list)) and not isinstance(value, torch.Size):
            out.extend(_shapes(value))
        elif isinstance(value, dict):
            out.extend(_shapes(value.values()))
    return tuple(out)


def _first_dtype(values: Iterable[Any]) -> torch.dtype | None:
    for value in values:
        if isinstance(value, TensorInfo):
            return value.dtype
        if isinstance(value, (tuple, list)) and not isinstance(value, torch.Size):
            dtype = _first_dtype(value)
            if dtype is not None:
                return dtype
    return None


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


# ------------------------------------------------------------ aten fallback


class AtenCounter(TorchDispatchMode):
    """Counts the aten ops run under it with the registry's aten counters.

    Used for nodes without a counter of their own: the node runs on meta
    tensors and each aten op it dispatches is counted; ops with no counter
    are collected in ``missing``.
    """

    def __init__(self, registry: CounterRegistry):
        super().__init__()
        self.registry = registry
        self.parts: list[Counts] = []
        self.missing: dict[str, int] = {}
        self.free_only = True

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        entry = self.registry.counter(func)
        if entry is None:
            name = str(func.overloadpacket.__name__)
            self.missing[name] = self.missing.get(name, 0) + 1
        elif not entry.free:
            call = OpCall("aten", func, to_info(args), to_info(kwargs), out=to_info(out))
            self.parts.append(entry.fn(call))
            self.free_only = False
        return out

    @property
    def counts(self) -> Counts:
        return merge_counts(self.parts)


# ----------------------------------------------------------------- walker


@dataclass
class WalkSettings:
    """Per-run choices of the walk (never global)."""

    precision: Precision = field(default_factory=Precision)
    strict: bool = False


class Walker(fx.Interpreter):
    """Propagates shapes through an fx graph and records one LayerRecord per node."""

    def __init__(self, cap: Capture, registry: CounterRegistry, settings: WalkSettings,
                 nonzero: dict[int, int] | None = None):
        super().__init__(cap.root, garbage_collect_values=False, graph=cap.graph)
        self.extra_traceback = False  # our errors name the node in one line; fx would append lines
        self.cap = cap
        self.registry = registry
        self.settings = settings
        self.records: list[LayerRecord] = []
        self._seen_modules: set[int] = set()
        self._seen_params: set[int] = set()
        self._meta_state: dict[int, dict[str, torch.Tensor]] = {}
        # tensor id -> nonzero count (prefilled by a parallel scan): each weight read once
        self._nonzero: dict[int, int] = dict(nonzero or {})

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

    # ------------------------------------------------------------- nodes

    def _get_attr(self, n: fx.Node) -> Any:
        value = self.fetch_attr(n.target)
        if not isinstance(value, torch.Tensor):
            return value
        info = to_info(value)
        params = 0
        if isinstance(value, nn.Parameter) and id(value) not in self._seen_params:
            self._seen_params.add(id(value))
            params = value.numel()
        owner = n.target.rpartition(".")[0]
        self._record(n, name=n.target, op="parameter" if params else "constant", status=FREE,
                     target="get_attr", call_kind="get_attr", module_path=owner, inputs=(), out=info,
                     params=params, param_dtype=value.dtype,
                     nonzero=self._count_nonzero(value) if params else 0)
        return info

    def _call(self, n: fx.Node, kind: str, target: Any, args: tuple, kwargs: dict,
              module: nn.Module | None) -> Any:
        if module is None and not _has_tensor(args) and not _has_tensor(kwargs.values()):
            return self._python_value(n, kind, target, args, kwargs)
        entry = self.registry.counter(target)
        call = OpCall(kind, target, args, kwargs, module)
        out = self._shape(n, call)
        aten = None
        if out is _UNKNOWN:
            out, aten = self._execute(n, call, count_aten=entry is None)
        call = OpCall(kind, target, args, kwargs, module, out)
        if entry is not None and entry.free:
            status, counts, op, reason, via = FREE, Counts(), entry.op, "", "fx"
        elif entry is not None:
            status, counts, op, reason, via = COUNTED, self._count(n, entry, call), entry.op, "", "fx"
        else:
            status, counts, reason = self._aten_status(aten)
            op, via = default_op(target), "aten"
        self._record_call(n, call, status, counts, op, reason, via)
        return out

    def _input_shape(self) -> str:
        """The first input's shape as ``1x3x224x224``, for messages."""
        for node, value in self.env.items():
            if node.op == "placeholder" and isinstance(value, TensorInfo):
                return "x".join(map(str, value.shape))
        return "?"

    def _python_value(self, n, kind, target, args, kwargs) -> Any:
        """A call on sizes and constants only: evaluate it for real, it is free."""
        try:
            if kind == "method":
                value = getattr(args[0], target.name)(*args[1:], **kwargs)
            else:
                value = target(*args, **kwargs)
        except AssertionError as error:  # torch._assert: the model's own check of its input
            raise UsageError(f"the model rejects input shape {self._input_shape()}: "
                             f"{_PROXY.sub('another size', str(error)).strip() or 'a check in its forward failed'} "
                             f"(node {n.name})",
                             hint="pass the input size the model was built for (--input), "
                             "or build it for this one") from error
        except Exception as error:
            raise TraceError(f"node {n.name} ({target_name(target)}) failed on constant "
                             f"arguments: {error}") from error
        value = to_info(value)
        self._record(n, name=self._name(n), op=default_op(target), status=FREE,
                     target=target_name(target), module_path=self._owner(n), inputs=(),
                     out=value, call_kind=kind)
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
            raise CounterError(f"shape rule of {target_name(call.target)} failed at node "
                               f"{n.name} ({self._name(n)}): {type(error).__name__}: {error}") from error

    def _count(self, n: fx.Node, entry, call: OpCall) -> Counts:
        try:
            counts = entry.fn(call)
        except Exception as error:
            raise CounterError(f"counter {entry.op!r} (plugin {entry.plugin}) failed at node "
                               f"{n.name} ({self._name(n)}): {type(error).__name__}: {error}") from error
        if not isinstance(counts, Counts):
            raise CounterError(f"counter {entry.op!r} (plugin {entry.plugin}) returned "
                               f"{type(counts).__name__}, expected Counts")
        return counts

    def _aten_status(self, aten: AtenCounter | None) -> tuple[str, Counts, str]:
        if aten is None:
            return UNCOUNTED, Counts(), "no counter"
        if aten.missing:
            names = ", ".join(f"aten.{k}" for k in sorted(aten.missing))
            return UNCOUNTED, aten.counts, f"no counter for {names}"
        return (FREE if aten.free_only else COUNTED), aten.counts, ""

    # --------------------------------------------------- meta execution

    def _execute(self, n: fx.Node, call: OpCall, count_aten: bool) -> tuple[Any, AtenCounter | None]:
        """Run the call on meta tensors (real zeros if meta fails and weights are real)."""
        errors = []
        for device in ("meta", "cpu"):
            if device == "cpu" and call.module is not None and _on_meta(call.module):
                break
            mode = AtenCounter(self.registry) if count_aten else None
            try:
                with torch.no_grad():
                    fn, args, kwargs = self._callable(call, device)
                    if mode is None:
                        out = fn(*args, **kwargs)
                    else:
                        with mode:
                            out = fn(*args, **kwargs)
                return to_info(out), mode
            except Exception as error:
                errors.append(f"{device}: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
        if any(_SHAPE_MISMATCH.search(e) for e in errors):
            given = ", ".join("x".join(map(str, s)) for s in _shapes(call.args)) or "no tensor"
            raise UsageError(f"the input {self._input_shape()} does not fit the model: node {n.name} "
                             f"({self._name(n)}, {target_name(call.target)}) cannot take {given} "
                             f"({errors[-1].partition(': ')[2]}); {first_layer_expects(self.cap.root)}",
                             hint="pass --input with the shape the model was built for")
        raise TraceError(f"cannot compute the output of node {n.name} ({self._name(n)}, "
                         f"{target_name(call.target)}): " + "; ".join(errors),
                         hint="register a shape rule for this op, or build the model with real weights")

    def _callable(self, call: OpCall, device: str) -> tuple[Callable, tuple, dict]:
        args, kwargs = to_meta(call.args, device), to_meta(dict(call.kwargs), device)
        if call.kind == "module":
            module = call.module
            if device == "meta" and not _on_meta(module):
                state = self._meta_state.get(id(module))
                if state is None:
                    state = {k: torch.empty_like(v, device="meta")
                             for k, v in {**dict(module.named_parameters()),
                                          **dict(module.named_buffers())}.items()}
                    self._meta_state[id(module)] = state
                return (lambda *a, **k: torch.func.functional_call(module, state, a, k)), args, kwargs
            return module, args, kwargs
        if call.kind == "method":
            return getattr(args[0], call.target.name), args[1:], kwargs
        return call.target, args, kwargs

    # ------------------------------------------------------- recording

    def _owner(self, n: fx.Node) -> str:
        stack = n.meta.get("nn_module_stack")
        if stack:
            path = next(reversed(stack.values()))[0]
            return path if n.op != "call_module" else path.rpartition(".")[0]
        return n.target.rpartition(".")[0] if n.op == "call_module" else ""

    def _name(self, n: fx.Node) -> str:
        if n.op == "call_module":
            return n.target
        owner = self._owner(n)
        return f"{owner}.{n.name}" if owner else n.name

    def _record_call(self, n, call: OpCall, status, counts, op, reason, via) -> None:
        module = call.module
        params = nonzero_params = weight_params = weight_nonzero = 0
        block: tuple[int, ...] = ()
        param_dtype = None
        if module is not None:
            if id(module) not in self._seen_modules:  # a shared module's params count once
                self._seen_modules.add(id(module))
                tensors = [p for p in _parameters(module) if id(p) not in self._seen_params]
                self._seen_params.update(id(p) for p in tensors)
                params = sum(p.numel() for p in tensors)
                nonzero_params = sum(self._count_nonzero(p) for p in tensors)
            weight = module._parameters.get("weight")  # fast path; buffers and properties below
            if weight is None:
                weight = getattr(module, "weight", None)
            if isinstance(weight, torch.Tensor):
                param_dtype = weight.dtype
                if weight.dim() >= 2 and counts.sparse_weight:
                    sparsity = measure(weight, self._count_nonzero(weight))
                    weight_params, weight_nonzero, block = sparsity.numel, sparsity.nonzero, sparsity.block
            elif params:
                param_dtype = next(module.parameters()).dtype
        self._record(n, name=self._name(n), op=op, status=status, target=target_name(call.target),
                     module_path=self._owner(n), inputs=call.args + tuple(call.kwargs.values()),
                     out=call.out, counts=counts, params=params, nonzero=nonzero_params,
                     weight_params=weight_params, weight_nonzero=weight_nonzero, block=block,
                     param_dtype=param_dtype, reason=reason, via=via, attrs=_attrs(module),
                     call_kind=call.kind, module=module,
                     module_classes=module_classes(type(module)) if module is not None else ())

    def _count_nonzero(self, tensor: torch.Tensor) -> int:
        key = id(tensor)
        if key not in self._nonzero:
            self._nonzero[key] = count_nonzero(tensor)
        return self._nonzero[key]

    def _record(self, n, *, name, op, status, target, module_path, inputs, out, counts=Counts(),
                params=0, nonzero=0, weight_params=0, weight_nonzero=0, block=(), param_dtype=None,
                reason="", via="fx", attrs=None, call_kind="", module_classes=(), module=None) -> None:
        precision, declared = self.settings.precision, bits_of(module)
        record = LayerRecord(
            name=name, node=n.name, op=op, status=status, target=target, module_path=module_path,
            input_shapes=_shapes(inputs), output_shapes=_shapes((out,)), counts=counts,
            params=params, nonzero_params=nonzero, weight_params=weight_params,
            weight_nonzero=weight_nonzero, weight_block=block,
            weight_bits=precision.weight_bits(name, declared, param_dtype),
            input_bits=precision.input_bits(name, declared, _first_dtype(inputs)),
            accumulator_bits=precision.acc_bits(declared),
            declared_storage_bits=declared_storage_bits(module),
            attrs=attrs or {}, reason=reason, via=via, call_kind=call_kind,
            module_classes=module_classes,
            inputs=tuple(a.name for a in n.all_input_nodes if META_RECORD in a.meta),
        )
        if status == UNCOUNTED and self.settings.strict:
            raise CounterError(f"node {n.name} ({name}, {target}) is not counted: {reason}",
                               hint="register a counter for it (see docs/writing-plugins.md) "
                               "or run without --strict")
        n.meta[META_RECORD] = record
        self.records.append(record)


_UNKNOWN = object()
#: How a traced size prints inside a message the model formatted while being traced.
_PROXY = re.compile(r"Proxy\(\w+\)")
#: What torch says when a tensor of the wrong shape reaches an op.
_SHAPE_MISMATCH = re.compile(r"shape|size|dimension|channels|same reduction dim|cannot be multiplied|"
                             r"expected input|out of range|index out of", re.IGNORECASE)


def first_layer_expects(root: nn.Module) -> str:
    """What the model's first layer with parameters takes, in words (for errors)."""
    for name, module in root.named_modules():
        if not module._parameters:
            continue
        label = f"its first layer {name or type(root).__name__} ({type(module).__name__})"
        if isinstance(module, nn.modules.conv._ConvNd):
            spatial = {1: "L", 2: "H, W", 3: "D, H, W"}.get(len(module.kernel_size), "...")
            return f"{label} expects [N, {module.in_channels}, {spatial}]"
        if isinstance(module, nn.Linear):
            return f"{label} expects [..., {module.in_features}]"
        if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
            return f"{label} expects token ids below {module.num_embeddings} (--input-dtype int64)"
        return f"{label} holds {', '.join(f'{k} {list(v.shape)}' for k, v in module._parameters.items() if v is not None)}"
    return "the model has no parameters"


def _on_meta(module: nn.Module) -> bool:
    for tensor in module.parameters():
        return tensor.is_meta
    for tensor in module.buffers():
        return tensor.is_meta
    return True  # nothing to move: meta execution needs no state


_ATTRS = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
          "in_features", "out_features", "num_features", "eps", "output_size", "embed_dim",
          "num_heads", "normalized_shape", "num_groups", "num_embeddings", "embedding_dim",
          "scale_factor", "mode", "p", "inplace", "ceil_mode")


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


def _attrs(module: nn.Module | None) -> dict[str, Any]:
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


def _parameters(module: nn.Module) -> list[torch.Tensor]:
    """A module's parameters (its children's too), cheaply for leaves."""
    if not module._modules:
        return [p for p in module._parameters.values() if p is not None]
    return list(module.parameters())


def walk(cap: Capture, registry: CounterRegistry, input_info: TensorInfo,
         settings: WalkSettings | None = None) -> list[LayerRecord]:
    """Records of every node of an fx capture, in topological order."""
    nonzero = count_nonzero_all(cap.root.parameters())  # all weights read up front, in parallel
    walker = Walker(cap, registry, settings or WalkSettings(), nonzero)
    walker.run(input_info)
    return walker.records


# ------------------------------------------------------ torch.export path


def walk_exported(cap: Capture, registry: CounterRegistry, settings: WalkSettings,
                  model: nn.Module) -> list[LayerRecord]:
    """Records of a torch.export capture: its aten nodes grouped by the
    innermost module they came from, so layers keep their module names."""
    groups: dict[str, list[fx.Node]] = {}
    classes: dict[str, str] = {}  # module path -> class qualname, as export recorded it
    for n in cap.graph.nodes:
        if n.op != "call_function":
            continue
        stack = n.meta.get("nn_module_stack") or {}
        path, cls = next(reversed(stack.values())) if stack else ("", "")
        groups.setdefault(path, []).append(n)
        classes.setdefault(path, cls if isinstance(cls, str) else f"{cls.__module__}.{cls.__qualname__}")
    modules = dict(model.named_modules())
    group_of = {n: path for path, nodes in groups.items() for n in nodes}
    nonzero = count_nonzero_all(model.parameters())
    records = []
    seen: set[int] = set()
    for path, nodes in groups.items():
        parts, missing, free_only = [], set(), True
        for n in _inline_subgraphs(nodes, cap.root):
            entry = registry.counter(n.target)
            if entry is None:
                missing.add(str(getattr(n.target, "__name__", n.target)))
                continue
            if entry.free:
                continue
            free_only = False
            args = torch.fx.node.map_arg(n.args, lambda a: to_info(a.meta.get("val")))
            kwargs = torch.fx.node.map_arg(n.kwargs, lambda a: to_info(a.meta.get("val")))
            call = OpCall("aten", n.target, tuple(args), dict(kwargs), out=to_info(n.meta.get("val")))
            parts.append(entry.fn(call))
        counts = merge_counts(parts)
        module = modules.get(path)
        leaf = module is not None and next(module.children(), None) is None
        # a leaf owns its parameters; any other module those it uses itself (relative
        # position tables, class tokens), not its children's
        owned = module.parameters() if leaf else (module._parameters.values() if module is not None else ())
        tensors = [p for p in owned if p is not None and id(p) not in seen]
        seen.update(id(p) for p in tensors)
        weight = getattr(module, "weight", None) if leaf else None
        sparse = measure(weight, nonzero.get(id(weight))) if isinstance(weight, torch.Tensor) \
            and weight.dim() >= 2 \
            and counts.sparse_weight else None
        status = UNCOUNTED if missing else (FREE if free_only else COUNTED)
        reason = ("no counter for " + ", ".join(sorted(missing))) if missing else ""
        first, last = nodes[0], nodes[-1]
        declared = bits_of(module if leaf else None)
        name = path or "(model)"
        in_val = first.args[0].meta.get("val") if first.args and isinstance(first.args[0], fx.Node) else None
        record = LayerRecord(
            name=name, node=first.name, op=classes[path].rpartition(".")[2].lower() or "graph",
            status=status, target=classes[path] or "aten",
            module_path=path.rpartition(".")[0] if leaf else path,
            input_shapes=_shapes((to_info(in_val),)), output_shapes=_shapes((to_info(last.meta.get("val")),)),
            counts=counts, params=sum(p.numel() for p in tensors),
            nonzero_params=sum(nonzero[id(p)] for p in tensors),  # all of model's, read up front
            weight_params=sparse.numel if sparse else 0, weight_nonzero=sparse.nonzero if sparse else 0,
            weight_block=sparse.block if sparse else (),
            weight_bits=settings.precision.weight_bits(name, declared, tensors[0].dtype if tensors else None),
            input_bits=settings.precision.input_bits(name, declared, getattr(in_val, "dtype", None)),
            accumulator_bits=settings.precision.acc_bits(declared),
            declared_storage_bits=declared_storage_bits(module if leaf else None),
            attrs=_attrs(module if leaf else None), reason=reason, via="export", call_kind="aten",
            module_classes=_export_classes(classes[path]) if leaf else (),
            inputs=tuple(dict.fromkeys(groups[group_of[a]][0].name for n in nodes for a in n.all_input_nodes
                                       if a in group_of and group_of[a] != path)),
        )
        if status == UNCOUNTED and settings.strict:
            raise CounterError(f"{name} is not counted: {reason}", hint="register a counter or drop --strict")
        records.append(record)
    return records


def _inline_subgraphs(nodes: Iterable[fx.Node], root: nn.Module) -> Iterable[fx.Node]:
    """The nodes, with each higher-order op that wraps a subgraph (export's
    ``wrap_with_set_grad_enabled``, ``wrap_with_autocast``: code run under
    ``torch.no_grad`` or autocast) replaced by the subgraph's own ops."""
    for n in nodes:
        subgraphs = [a for a in n.args if isinstance(a, fx.Node) and a.op == "get_attr"] \
            if isinstance(n.target, torch._ops.HigherOrderOperator) else []
        modules = [getattr(root, a.target, None) for a in subgraphs]
        if not modules or not all(isinstance(m, fx.GraphModule) for m in modules):
            yield n
            continue
        for module in modules:
            yield from _inline_subgraphs((s for s in module.graph.nodes if s.op == "call_function"), module)


def _export_classes(qualname: str) -> tuple[str, ...]:
    """The recorded class name, plus its public torch.nn spelling (export keeps
    only the class's own name, not its bases)."""
    module, _, cls = qualname.rpartition(".")
    public = (f"torch.nn.{cls}",) if module.startswith("torch.nn.modules.") else ()
    return (qualname, *public)
