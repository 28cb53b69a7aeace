"""Running one fx node on meta tensors, for an output no shape rule knows.

The fx walk asks a target's shape rule for its output first; without one,
the call runs here on empty meta tensors (a module with real weights runs
through ``torch.func.functional_call`` on meta copies of its state), and on
real zeros when meta execution fails and the weights are real. An input
that does not fit the model is said in one line, naming what the first
layer expects.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import fx, nn

from .atencount import AtenCounter
from .errors import CounterError, TraceError, UsageError
from .registry import OpCall, target_name
from .values import shapes, to_info, to_meta

if TYPE_CHECKING:
    from .walk import Walker

__all__ = ["execute", "first_layer_expects"]

#: What torch says when a tensor of the wrong shape reaches an op.
_SHAPE_MISMATCH = re.compile(r"shape|size|dimension|channels|same reduction dim|cannot be multiplied|"
                             r"expected input|out of range|index out of", re.IGNORECASE)


def execute(walker: "Walker", n: fx.Node, call: OpCall, count_aten: bool) -> tuple[Any, AtenCounter | None]:
    """The output (TensorInfo, nested) of ``call`` run on meta tensors, and
    its aten ops counted when ``count_aten``; real zeros if meta fails and
    the weights are real."""
    errors = []
    for device in ("meta", "cpu"):
        if device == "cpu" and call.module is not None and _on_meta(call.module):
            break
        aten = AtenCounter(walker.registry, walker.where(n)) if count_aten else None  # each try counts afresh
        try:
            return to_info(_run(walker, call, device, aten)), aten
        except CounterError:
            raise  # a counter failed: its own error, not a shape problem
        except Exception as error:
            errors.append(f"{device}: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
    raise _failure(walker, n, call, errors)


def _run(walker: "Walker", call: OpCall, device: str, aten: AtenCounter | None) -> Any:
    with torch.no_grad():
        fn, args, kwargs = _callable(walker, call, device)
        if aten is None:
            return fn(*args, **kwargs)
        with aten:
            return fn(*args, **kwargs)


def _failure(walker: "Walker", n: fx.Node, call: OpCall, errors: list[str]) -> Exception:
    name = walker.record_name(n)
    if any(_SHAPE_MISMATCH.search(e) for e in errors):
        given = ", ".join("x".join(map(str, s)) for s in shapes(call.args)) or "no tensor"
        return UsageError(f"the input {walker.input_shape()} does not fit the model: node {n.name} "
                          f"({name}, {target_name(call.target)}) cannot take {given} "
                          f"({errors[-1].partition(': ')[2]}); {first_layer_expects(walker.cap.root)}",
                          hint="pass --input with the shape the model was built for")
    return TraceError(f"cannot compute the output of node {n.name} ({name}, "
                      f"{target_name(call.target)}): " + "; ".join(errors),
                      hint="register a shape rule for this op, or build the model with real weights")


def _callable(walker: "Walker", call: OpCall, device: str) -> tuple[Callable, tuple, dict]:
    args, kwargs = to_meta(call.args, device), to_meta(dict(call.kwargs), device)
    if call.kind == "module":
        module = call.module
        if device == "meta" and not _on_meta(module):
            state = walker.meta_state(module)
            return (lambda *a, **k: torch.func.functional_call(module, state, a, k)), args, kwargs
        return module, args, kwargs
    if call.kind == "method":
        return getattr(args[0], call.target.name), args[1:], kwargs
    return call.target, args, kwargs


def _on_meta(module: nn.Module) -> bool:
    for tensor in module.parameters():
        return tensor.is_meta
    for tensor in module.buffers():
        return tensor.is_meta
    return True  # nothing to move: meta execution needs no state


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
        held = ", ".join(f"{k} {list(v.shape)}" for k, v in module._parameters.items() if v is not None)
        return f"{label} holds {held}"
    return "the model has no parameters"
