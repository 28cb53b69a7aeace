"""Built-in step ``prune``: structured channel pruning through Torch-Pruning.

Channels are removed, not masked: Torch-Pruning's dependency graph (built
from autograd on one example input) groups every layer coupled to a channel
(a conv's output, its BatchNorm, the next layers' inputs, the other inputs
of a residual sum, the slices of a ``torch.cat``) and the step deletes whole
groups, so the model shrinks in parameters and ops and still runs.

Options:

- ``ratio``: the fraction of channels removed in each group (``0.5``), or a
  mapping ``{layer glob = ratio}`` (``{"features.*" = 0.3}``; a glob naming a
  container covers its layers; layers no glob names are not pruned; the last
  matching glob wins). Each in [0, 1).
- ``importance``: ``magnitude`` (L2 norm of the group's weights), ``taylor``
  (|weight x gradient| over a few batches), ``hessian`` (Optimal Brain
  Damage: weight^2 x the diagonal of the Hessian, estimated by the mean
  squared per-sample gradient over the same batches), ``lamp``, ``bn-scale``
  (|gamma| of the group's BatchNorms), ``random``.
- ``global``: rank channels across the whole model (or across the layers of
  one glob of a mapping) instead of layer by layer.
- ``iterative_steps``: reach the ratio in that many pruning steps (a linear
  schedule); with ``taylor`` and ``hessian`` the gradients are recomputed
  before each.
- ``ignore``: globs over ``named_modules()`` names of layers to keep whole.
- ``round_to``: keep channel counts multiples of this (0: no rounding).

The layers producing the model's output (found by walking the graph back
from its output to the nearest conv / linear layers) are always kept whole,
so the output shape does not change; the step checks that, and that the
pruned model runs. A glob matching no layer is a :class:`PruneWarning` and a
note.

Layers Torch-Pruning has no pruner for (a plugin's declared
:class:`~micronet.steps.WeightedLayer`, any other module owning a matrix or
kernel) are found before it builds its graph and kept whole, with the
channels entering and leaving them (a :class:`PruneWarning`, and the note
``kept_whole.cannot_prune``): left to Torch-Pruning they hang
``get_all_groups`` or break the model (see :mod:`micronet.plugins.prunable`).
A model that computes with such a weight outside the layer's own call is
refused in one line naming it; a failure inside Torch-Pruning is one
CompressionError.

Taylor and Hessian importance need gradients of the cross-entropy loss on a
few batches (the model stays in eval mode, so BatchNorm statistics do not
move): Taylor the gradient of the loss summed over the batches, Hessian one
gradient per sample (one backward pass each), squared and averaged, which
is the empirical Fisher: the OBD estimate of the Hessian's diagonal. Each
channel then scores the mean over its group's layers of sum(w^2 x h) (the
loss increase OBD predicts for removing it, up to a factor 1/2). The
batches come from ``micronet.training.data.batches``: the recipe's ``[data]`` table
(``calibration_batches`` batches of ``batch_size`` from its calibration
split: the train split, or ``digits``' own; ``fake`` is that module's
synthetic problem) or, without a table, 4 batches
of 8 standard normal inputs with random labels: ranks from those only say
which channels the model is sensitive to on noise, so give a ``[data]``
table for meaningful ones. The note ``importance_data`` says which. Notes also
hold the importance, the parameters before and after (and after each
iterative step), the layers whose widths fell most, and the layers kept whole.

Not offered: Torch-Pruning 1.6.1's ``OBDCImportance`` (EigenDamage). Its
``_prepare_model`` raises a TypeError on any group without attention (it
iterates the None that ``_downstream_node_as_root_if_attention`` returns),
and with its hooks registered by hand its Fisher of a conv or linear layer
with a bias has one column more than the weight it multiplies (a
RuntimeError); it also skips every linear layer whose width equals its
``num_classes`` and clears all hooks of the layers it touched.
"""
from __future__ import annotations

import contextlib
import warnings
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.utils._pytree import tree_leaves

from micronet.errors import CompressionError
from micronet.manager import hookimpl
from micronet.selection import glob_matches
from micronet.training import data as training_data
from micronet.steps import CompressionStep, StepContext, StepOption, at_least, check_globs, model_device, \
    model_dtype

if TYPE_CHECKING:
    import torch_pruning as tp

__all__ = ["PRUNE", "PruneWarning", "prune", "output_layers", "micronet_register_steps"]


def _tp():
    """Torch-Pruning, imported when a prune step runs: it imports timm, about
    0.7 s that every other command (``micronet audit``) need not pay."""
    import torch_pruning

    return torch_pruning


#: Importance name -> (Torch-Pruning estimator factory, what the note says).
IMPORTANCES: dict[str, tuple[Callable[[], Any], str]] = {
    "magnitude": (lambda: _tp().importance.MagnitudeImportance(p=2), "MagnitudeImportance(p=2)"),
    "taylor": (lambda: _tp().importance.TaylorImportance(), "TaylorImportance()"),
    "hessian": (lambda: _tp().importance.HessianImportance(), "HessianImportance()"),
    "lamp": (lambda: _tp().importance.LAMPImportance(), "LAMPImportance()"),
    "bn-scale": (lambda: _tp().importance.BNScaleImportance(), "BNScaleImportance()"),
    "random": (lambda: _tp().importance.RandomImportance(), "RandomImportance()"),
}

#: Layers whose output channels a pruning group is rooted at (Torch-Pruning's defaults).
ROOT_TYPES: tuple[type, ...] = (nn.modules.conv._ConvNd, nn.Linear, nn.LSTM)

SYNTHETIC_BATCHES = 4
SYNTHETIC_BATCH_SIZE = 8
CHANGES_NOTED = 8  # how many layers the ``channels`` note lists


class PruneWarning(UserWarning):
    """A ``prune`` option that had no effect (a glob matching no layer)."""


# ------------------------------------------------------------------ options


def flatten_ratios(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{glob: ratio}`` with nested tables joined by dots: TOML reads the
    unquoted key ``layer1.0.conv1 = 0.3`` as ``{"layer1": {"0": {"conv1": 0.3}}}``."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten_ratios(value, name))
        else:
            flat[name] = value
    return flat


def _ratio_problem(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"expected a number in [0, 1), got {type(value).__name__} {value!r}"
    if not 0 <= value < 1:
        return f"expected a fraction of channels in [0, 1), got {value!r}"
    return None


def check_ratio(value: Any) -> str | None:
    """An error message for a ratio (or mapping of ratios) out of [0, 1)."""
    if not isinstance(value, Mapping):
        return _ratio_problem(value)
    ratios = flatten_ratios(value)
    if not ratios:
        return "an empty mapping prunes nothing; give {layer glob = ratio} pairs or one number"
    for glob, ratio in ratios.items():
        problem = _ratio_problem(ratio)
        if problem:
            return f"glob {glob!r}: {problem}"
    return None


# ------------------------------------------------------------------ layers


def _matching(model: nn.Module, globs: Iterable[str], what: str,
              context: StepContext) -> dict[str, list[nn.Module]]:
    """glob -> the modules whose ``named_modules()`` name it matches (the root
    excluded); a glob matching nothing is warned about and noted."""
    modules = {name: module for name, module in model.named_modules() if name}
    found = {glob: [modules[name] for name in names] for glob, names in glob_matches(modules, globs).items()}
    unmatched = [glob for glob, modules in found.items() if not modules]
    for glob in unmatched:
        warnings.warn(f"prune: {what} glob {glob!r} matches no layer; it has no effect",
                      PruneWarning, stacklevel=3)
    if unmatched:
        context.note(f"unmatched_{what}_globs", unmatched)
    return {glob: modules for glob, modules in found.items() if modules}


def output_layers(model: nn.Module) -> list[str]:
    """Names of the conv / linear layers nearest the model's output: walking
    the fx graph back from ``output`` through every other node (activations,
    pooling, BatchNorm, flatten, sums, concatenations) to the first such layer
    on each path. Keeping them whole keeps the output shape. A model fx cannot
    trace falls back to its last conv / linear module."""
    try:
        graph = model.graph if isinstance(model, fx.GraphModule) else fx.symbolic_trace(model).graph
    except Exception:  # untraceable: the module order is the best guess left
        roots = [name for name, m in model.named_modules() if isinstance(m, ROOT_TYPES)]
        return roots[-1:]
    modules = dict(model.named_modules())
    found: list[str] = []
    stack = [n for n in graph.nodes if n.op == "output"]
    seen = set()
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        if node.op == "call_module" and isinstance(modules.get(node.target), ROOT_TYPES):
            found.append(node.target)
            continue
        stack.extend(node.all_input_nodes)
    return sorted(found)


def _widths(model: nn.Module) -> dict[str, tuple[int, int]]:
    """name -> (input, output) channels of every conv and linear layer."""
    widths = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            widths[name] = (m.in_channels, m.out_channels)
        elif isinstance(m, nn.Linear):
            widths[name] = (m.in_features, m.out_features)
    return widths


def _changes(before: Mapping[str, tuple[int, int]], after: Mapping[str, tuple[int, int]]) -> dict[str, Any]:
    """The layers whose widths fell most: {name: {"in": [before, after], "out": [...]}}."""
    removed = {name: sum(b - a for b, a in zip(before[name], after[name]))
               for name in before if name in after and after[name] != before[name]}
    largest = sorted(removed, key=lambda name: (-removed[name], name))[:CHANGES_NOTED]
    return {name: {"in": [before[name][0], after[name][0]], "out": [before[name][1], after[name][1]]}
            for name in largest}


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------ running


def _example_input(model: nn.Module, shape: tuple[int, ...]) -> torch.Tensor:
    """A standard normal input of ``shape`` on the model's device, in its
    floating-point dtype."""
    return torch.randn(shape, device=model_device(model), dtype=model_dtype(model))


def _output_shapes(model: nn.Module, example: torch.Tensor) -> list[tuple[int, ...]]:
    with torch.no_grad():
        return [tuple(t.shape) for t in tree_leaves(model(example)) if isinstance(t, torch.Tensor)]


@contextlib.contextmanager
def _autograd(model: nn.Module) -> Iterator[None]:
    """Gradients on for every floating parameter (Torch-Pruning traces the
    dependency graph through autograd; Taylor needs ``.grad``); afterwards
    the flags are restored by name (pruning replaces the Parameter objects)
    and the gradients dropped."""
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    for p in model.parameters():
        if p.is_floating_point():
            p.requires_grad_(True)
    try:
        with torch.enable_grad():
            yield
    finally:
        model.zero_grad(set_to_none=True)
        for name, p in model.named_parameters():
            p.requires_grad_(flags.get(name, p.requires_grad))


def _pruner(model: nn.Module, example: torch.Tensor, options: Mapping[str, Any],
            ignored: list[nn.Module], ratio_dict: dict[tuple[nn.Module, ...], float],
            default_ratio: float, keep: Mapping[str, nn.Module]) -> tp.pruner.BasePruner:
    """Torch-Pruning's pruner, with the ``keep`` layers (``micronet.plugins.prunable``)
    one uncoupled node each whose groups are left alone."""
    from micronet.plugins.prunable import KeepWhole, Pruner, survey  # imports Torch-Pruning

    factory, _ = IMPORTANCES[options["importance"]]
    found = survey(model, example, keep)
    whole = KeepWhole(found.widths)
    try:
        return Pruner(
            model, example, importance=factory(), global_pruning=options["global"],
            pruning_ratio=default_ratio, pruning_ratio_dict=ratio_dict or None,
            iterative_steps=options["iterative_steps"], ignored_layers=ignored + list(keep.values()),
            round_to=options["round_to"] or None, keep=keep.values(),
            customized_pruners={type(module): whole for module in keep.values()} or None)
    except Exception as error:
        raise CompressionError(f"Torch-Pruning could not build the dependency graph of "
                               f"{type(model).__name__}: {type(error).__name__}: {error}",
                               hint="the model must run forward under autograd on a "
                                    "standard normal input of the recipe's shape") from error


def _step(pruner: tp.pruner.BasePruner) -> None:
    """One pruning step; Torch-Pruning's own failures become one CompressionError."""
    try:
        pruner.step()
    except Exception as error:
        raise CompressionError(f"Torch-Pruning failed while removing channels: {type(error).__name__}: {error}",
                               hint="list the layers around the failing one in `ignore`, "
                                    "or leave prune out of the recipe") from error


def _keep_whole(model: nn.Module, context: StepContext) -> dict[str, nn.Module]:
    """The layers Torch-Pruning cannot prune, warned about and noted (``kept_whole``)."""
    from micronet.plugins.prunable import unknown_weighted  # imports Torch-Pruning

    why = unknown_weighted(model, context.weighted_layers)
    if why:
        context.notes["kept_whole"]["cannot_prune"] = why
        listed = ", ".join(f"{name} ({reason})" for name, reason in list(why.items())[:CHANGES_NOTED])
        more = f" and {len(why) - CHANGES_NOTED} more" if len(why) > CHANGES_NOTED else ""
        warnings.warn(f"prune: {len(why)} layer(s) Torch-Pruning cannot prune are kept whole, with the "
                      f"channels entering and leaving them: {listed}{more}", PruneWarning, stacklevel=3)
    modules = dict(model.named_modules())
    return {name: modules[name] for name in why}


# ------------------------------------------------------------------ gradient data


def _calibration(model: nn.Module, context: StepContext, output: tuple[int, ...],
                 importance: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(inputs, labels) batches for a gradient importance (``taylor``,
    ``hessian``), on the model's device and dtype; the note
    ``importance_data`` says where they came from."""
    if len(output) != 2:
        raise CompressionError(f"{importance} importance takes a cross-entropy loss over an output of "
                               f"shape [N, classes], got {list(output)}",
                               hint="use importance = 'magnitude' for this model")
    data = context.data
    dataset = (data or {}).get("dataset")
    if data is not None:
        found = training_data.batches(data, context.input_shape, None, num_classes=output[1],
                                      split="calibration")
        source = ("synthetic: dataset 'fake' (micronet.training.data.batches)" if dataset == "fake" else
                  f"dataset {dataset!r} (micronet.training.data.batches, calibration split)")
    else:
        found = training_data.batches(None, context.input_shape, SYNTHETIC_BATCHES, num_classes=output[1],
                                      batch_size=SYNTHETIC_BATCH_SIZE)
        source = "synthetic (micronet.training.data.batches without a [data] table: standard normal inputs)"
    if not found:
        raise CompressionError(f"{importance} importance got no batches from {source}",
                               hint="set [data] calibration_batches >= 1")
    plural = "batch" if len(found) == 1 else "batches"
    context.note("importance_data", f"{source}: {len(found)} {plural} of {len(found[0][0])}")
    return [_to_model(model, x, y) for x, y in found]


def _to_model(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    device = model_device(model)
    return x.to(device, model_dtype(model)), y.to(device)


def _gradients(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Fresh ``.grad`` of the cross-entropy loss summed over ``batches``."""
    model.zero_grad(set_to_none=True)
    for inputs, labels in batches:
        F.cross_entropy(model(inputs), labels).backward()


def _squared_gradients(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """``.grad`` set to the mean over every sample of ``batches`` of the squared
    gradient of that sample's cross-entropy loss (the empirical Fisher, OBD's
    estimate of the Hessian's diagonal; one backward pass per sample).

    Torch-Pruning's ``HessianImportance`` reads ``.grad`` as that diagonal.
    Its own ``accumulate_grad`` is not used: in 1.6.1 it tests a parameter's
    *name* against a dict keyed by the parameter, so every call overwrites
    the sum and only the last sample counts."""
    params = [p for p in model.parameters() if p.requires_grad]
    total = [torch.zeros_like(p) for p in params]
    count = 0
    for inputs, labels in batches:
        losses = F.cross_entropy(model(inputs), labels, reduction="none")
        for index, loss in enumerate(losses):
            model.zero_grad(set_to_none=True)
            loss.backward(retain_graph=index < len(losses) - 1)
            for sum_, p in zip(total, params):
                if p.grad is not None:
                    sum_.add_(p.grad.detach().square())
        count += len(losses)
    for sum_, p in zip(total, params):
        p.grad = sum_ / max(count, 1)


# ------------------------------------------------------------------ the step


def _plan(model: nn.Module, options: Mapping[str, Any], context: StepContext):
    """(ignored modules, {module tuple: ratio}, default ratio), noting the layers kept whole."""
    modules = dict(model.named_modules())
    kept = output_layers(model)
    ignored = [modules[name] for name in kept]
    matched = _matching(model, options["ignore"], "ignore", context)
    for found in matched.values():
        ignored.extend(found)
    context.note("kept_whole", {"output_layers": kept,
                                "ignore": {glob: len(found) for glob, found in matched.items()}})
    ratio = options["ratio"]
    if not isinstance(ratio, Mapping):
        return ignored, {}, float(ratio)
    ratios = flatten_ratios(ratio)
    scopes = _matching(model, ratios, "ratio", context)
    return ignored, {tuple(mods): float(ratios[glob]) for glob, mods in scopes.items()}, 0.0


def prune(model: nn.Module, options: Mapping[str, Any], context: StepContext) -> nn.Module:
    """Remove channels from ``model`` in place (the pipeline's copy) and return it."""
    ignored, ratio_dict, default_ratio = _plan(model, options, context)
    keep = _keep_whole(model, context)
    example = _example_input(model, context.input_shape)
    shapes = _output_shapes(model, example)
    widths, params = _widths(model), [_params(model)]
    name = options["importance"]
    gradients = {"taylor": _gradients, "hessian": _squared_gradients}.get(name)
    with _autograd(model):
        pruner = _pruner(model, example, options, ignored, ratio_dict, default_ratio, keep)
        batches = _calibration(model, context, shapes[0], name) if gradients else []
        for _ in range(options["iterative_steps"]):
            if gradients:
                gradients(model, batches)
            _step(pruner)
            params.append(_params(model))
    _verify(model, example, shapes)
    context.note("importance", f"{name}: tp.importance.{IMPORTANCES[name][1]}")
    context.note("params", {"before": params[0], "after": params[-1]})
    if len(params) > 2:
        context.note("params_per_step", params)
    changes = _changes(widths, _widths(model))
    context.note("channels", changes)
    if not changes:
        warnings.warn("prune: no channel was removed (ratio too small for the layers' widths, "
                      "or every group kept whole)", PruneWarning, stacklevel=2)
    return model


def _verify(model: nn.Module, example: torch.Tensor, shapes: list[tuple[int, ...]]) -> None:
    """The pruned model runs and its outputs keep their shapes."""
    try:
        after = _output_shapes(model, example)
    except Exception as error:
        raise CompressionError(f"the pruned model no longer runs: {type(error).__name__}: {error}",
                               hint="a forward that hard-codes channel counts cannot be pruned; "
                                    "list those layers in `ignore`") from error
    if after != shapes:
        raise CompressionError(f"pruning changed the output shapes: expected {shapes}, got {after}",
                               hint="list the layers producing the output in `ignore`")


PRUNE = CompressionStep(
    name="prune",
    description="structured channel pruning with Torch-Pruning's dependency graph "
                "(channels removed, not masked)",
    run=prune,
    options=(
        StepOption("ratio", (float, dict), 0.5,
                   "fraction of channels removed, in [0, 1), or {layer glob = ratio}", check=check_ratio),
        StepOption("importance", (str,), "magnitude",
                   "how channels are ranked: magnitude (L2), taylor (|w x grad|), hessian (OBD: w^2 x "
                   "mean squared per-sample gradient), lamp, bn-scale, random; taylor and hessian use "
                   "[data]'s calibration batches (synthetic noise without [data]: give data for "
                   "meaningful ranks)", choices=tuple(IMPORTANCES)),
        StepOption("global", (bool,), False, "rank channels across layers instead of within each"),
        StepOption("iterative_steps", (int,), 1, "pruning steps to reach the ratio (>= 1)",
                   check=at_least(1)),
        StepOption("ignore", (list,), [], "globs of layer names kept whole", check=check_globs),
        StepOption("round_to", (int,), 0, "keep channel counts multiples of this (0: no rounding)",
                   check=at_least(0)),
    ),
)


@hookimpl
def micronet_register_steps():
    return [PRUNE]
