"""Built-in step ``quantize``: fake quantization of weights and activations.

What it does to the model it is handed (a ``torch.fx.GraphModule``):

1. **Layers**: every ``nn.Conv1d/2d/3d`` and ``nn.Linear`` (subclasses
   included) the graph calls, and every layer of a class a plugin declared
   as a :class:`~micronet.steps.WeightedLayer`, whose name matches a glob of
   ``layers`` (default ``["*"]``; an empty list selects nothing) and none of
   ``ignore``. Transposed convolutions, functional convolutions and layers
   the forward never calls are left alone. A glob of ``layers``, ``ignore``
   or ``overrides`` that matches no such layer, and a selection left empty,
   are warned and noted (``warnings``).
2. **Bits per layer**: ``weight_bits`` (1 to 16) for weights, biases included,
   ``activation_bits`` (2 to 16, or 32 = activations stay float) for the
   layer's input. ``overrides`` maps a layer-name glob to bits, the last
   matching glob winning: an integer ``b`` sets the weights to ``b`` bits and,
   when activations are quantized and ``b >= 2``, the input too (so
   ``overrides = {"conv1" = 16, "fc" = 16}`` keeps the first conv and the
   classifier at 16 bits); a table ``{weight_bits = 4, activation_bits = 8}``
   sets either one.
3. **Weights**, per output channel, symmetric (see
   :mod:`micronet.plugins.fakequant`; 1 bit is ``sign(w) * mean|w|``). The
   weight keeps its float dtype and holds the dequantized values, so the
   model stays an ordinary float model whose weights lie exactly on the grid
   (at most ``2^b`` distinct values per output channel). The bias is rounded
   to a per-tensor grid of the same width, because the rules charge every
   parameter of a layer at the layer's bits (as the reference counter does).
   A declared weighted layer is treated the same way through its named
   weight: that one per output channel, each of its other parameters per
   tensor.
   The layer's widths are declared with :func:`micronet.bits.set_bits`
   (weight and accumulator), and so is the storage of the grid's scales
   (:func:`micronet.bits.declare_storage`: one float32 per output channel for
   the weight, one for the bias), which the score charges. 16 bits is a
   16-bit integer grid, like every other width.
4. **Activations**: the graph is rewritten so that a quantized layer's input
   goes through an :class:`~micronet.plugins.fakequant.ActivationQuant`
   module, a sibling of the layer named ``<layer>_input_quant`` (one per
   producer and width: a tensor feeding two layers at the same bits is
   quantized once); the layer declares that input width and the quantizer's
   float32 scale. Only the inputs
   of quantized layers are quantized: every other op (BatchNorm, ReLU,
   additions, pooling) still reads float values and is charged at 32 bits.
   Running the step again replaces earlier quantizers rather than stacking.
5. **Calibration**: with the weights already on their grid, the model runs
   the recipe's ``calibration_batches`` (``[data]``; default 8) through
   ``micronet.training.data.batches``: the recipe's dataset, or standard-normal
   batches when the recipe has no ``[data]`` table (the step notes which).
   The observer (``minmax``, ``percentile``, ``mse``) sets each quantizer's
   range.
6. **QAT** (``qat = true``): the calibrated model trains for ``qat_epochs`` at
   ``qat_lr`` with ``micronet.training.train.fit`` while each weight is re-quantized
   in every forward (a ``torch.nn.utils.parametrize`` parametrization,
   straight-through gradient; activation ranges stay frozen). Afterwards the
   weights are baked onto their grid and the parametrizations removed.
7. **BatchNorm** (``batchnorm = true``; default false, which leaves every
   BatchNorm in float as before). Chosen: every ``nn.BatchNorm1d/2d/3d``
   (any ``_BatchNorm``, affine) the graph calls that either reads a quantized
   layer's output directly (the conv -> BN pair whose scale the rules fold
   into the conv) or whose own name matches a ``layers`` glob (so
   ``layers = ["dense3*"]`` takes a pre-activation DenseNet block's BNs
   too); a BN matched by ``ignore`` stays float. Its bits: an ``overrides``
   glob naming the BN, else the weight bits of the layer it follows, else
   ``weight_bits``. What the bits apply to: the BN's two stored parameter
   tensors, ``weight`` (gamma) and ``bias`` (beta), each on a *per-tensor*
   symmetric grid of that width (at most ``2^b`` values each), with one
   float32 scale each declared (``weight_scales``, ``bias_scales``), and
   the width declared with ``set_bits(bn, weight=b)`` (its input and
   additions are left undeclared, so its ops are priced as before).
   ``running_mean`` / ``running_var`` stay float: they are buffers, not
   parameters (the rules charge none), and at inference they fold with
   gamma into the preceding layer's per-channel scale and the BN's bias
   (``beta - gamma * mean / sqrt(var + eps)``); a deployment that folds
   them rounds that folded bias to the same ``b`` bits. The rules make the
   BN's scale free (folded) and charge its bias at the BN's declared
   width, so at ``b`` bits a BN of ``C`` channels costs ``C * b / 32 + 2``
   (the two scales) instead of ``C``. The step notes each quantized BN
   (``batchnorm``: its bits, the layer it follows, the quantized and the
   float tensors).
8. **Pruned weights** (a ``<name>_mask`` buffer, :mod:`micronet.masks`)
   stay pruned: the mask applies before rounding, and 0 is on every grid of
   2 bits or more. Binary weights have no zero: a 1-bit layer loses its
   masks and its zeros (under the rules a sparse 1-bit weight never pays:
   its bitmask alone costs as much as the dense weight).

How the rules price the result (RULES.md section 1, rulebook ``micronet-2019``):
a quantized layer's parameters cost ``b/32`` each; its multiplies cost
``max(weight bits, input bits)/32``; its additions (bias adds included) the
accumulator's ``accumulator_bits/32`` (default 32). The freebie is lost as
soon as anything is below 16 bits; a step at 16 bits only keeps it. Weights
that round to zero are real zeros: the audit measures them, and the rules
let fixed zeros shrink the dot products. Binary weights (1 bit) with b-bit
inputs cost ``max(1, b)/32`` a multiply; the rules' 1/32 for a sign bit
times +-1 needs 1-bit activations, which this step does not make.

Conventions where the rules are silent (named choices):

- ``ActivationQuant`` is *free*: it stands for the conversion of the layer's
  input to the integer format the layer computes in, a format exactly
  representable in fp32 (free by the rules); the reference counter charges
  nothing for it. Its scale and zero point (two values per quantizer) are
  not charged either.
- The per-channel weight scales are not charged: per-channel symmetric
  quantization commutes with a per-channel factor, so they fold into the
  following BatchNorm's scale, which the rules make free. Layers with no
  BatchNorm after them (a classifier) get their ``cout`` scales for free
  too, a small undercharge the reference counter shares.
- The accumulator is not simulated: ``accumulator_bits < 32`` is a claim
  about the hardware. The step notes (``accumulator_may_overflow``) the layers
  whose worst-case dot product needs more bits than that (``wb + ab +
  ceil(log2 L)``).
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, Callable, Iterable, Iterator, Mapping

import torch
from torch import fx, nn
from torch.nn.utils import parametrize

from micronet.training import data
from micronet.bits import declare_storage, set_bits
from micronet.counters._common import aten_ops, first_tensor, lenient
from micronet.manager import hookimpl
from micronet.records import TensorInfo
from micronet.registry import OpCall, collect, free, shape_rule
from micronet.selection import Selection, StepWarnings, glob_matches, kinds_text, select_modules, \
    weighted_candidates
from micronet.steps import CompressionStep, StepContext, StepOption, WeightedLayer, at_least, check_globs, \
    model_device
from micronet.plugins.fakequant import OBSERVERS, ActivationQuant, WeightQuant
from micronet.training.train import TrainConfig, fit

__all__ = ["QuantConfig", "LayerPlan", "plan_layers", "plan_batchnorms", "quantize_model", "attach_weight_quant",
           "attach_batchnorm_quant",
           "bake_weights", "QUANTIZE", "FLOAT_BITS"]

#: ``activation_bits`` meaning "leave activations in float".
FLOAT_BITS = 32
QUANTIZABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


# ------------------------------------------------------------- configuration


@dataclass(frozen=True)
class QuantConfig:
    """The step's options, as Python values (see the module docstring)."""

    weight_bits: int = 8
    activation_bits: int = 8
    accumulator_bits: int = 32
    observer: str = "minmax"
    percentile: float = 99.99
    overrides: Mapping[str, Any] = field(default_factory=dict)
    layers: tuple[str, ...] = ("*",)
    ignore: tuple[str, ...] = ()
    batchnorm: bool = False

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> "QuantConfig":
        names = cls.__dataclass_fields__
        values = {k: v for k, v in options.items() if k in names}
        values["layers"] = tuple(values.get("layers", cls.layers))
        values["ignore"] = tuple(values.get("ignore", cls.ignore))
        return cls(**values)


@dataclass(frozen=True)
class LayerPlan:
    """One layer to quantize: its module path, bit widths (``input_bits ==
    FLOAT_BITS``: the input stays float) and the name of its weight."""

    name: str
    weight_bits: int
    input_bits: int
    weight: str = "weight"
    #: for a BatchNorm plan: the quantized layer whose output it reads (None: chosen by glob)
    follows: str | None = None


def _override(value: Any, weight_bits: int, input_bits: int) -> tuple[int, int]:
    if isinstance(value, Mapping):
        return value.get("weight_bits", weight_bits), value.get("activation_bits", input_bits)
    quantized_input = input_bits != FLOAT_BITS and value >= 2
    return value, value if quantized_input else input_bits


def plan_layers(gm: fx.GraphModule, config: QuantConfig, weighted: tuple[WeightedLayer, ...] = (),
                warner: StepWarnings | None = None) -> dict[str, LayerPlan]:
    """Layer name -> plan, for every quantizable layer the graph calls (see
    the module docstring); globs that match nothing are warned through ``warner``."""
    warner = warner or StepWarnings("quantize")
    chosen = _selection(gm, config, weighted)
    # with batchnorm = true a glob naming a BatchNorm selects (or ignores, or sets the bits of) that BN
    norms = _batchnorm_names(gm) if config.batchnorm else ()
    covered = tuple(f"{key} glob {glob!r} matches no " for key, globs in (("layers", config.layers),
                                                                          ("ignore", config.ignore))
                    for glob in globs if any(fnmatchcase(n, glob) for n in norms))
    for message in chosen.unmatched:
        if not message.startswith(covered):
            warner.warn(message)
    for pattern, names in glob_matches(chosen.modules, config.overrides).items():
        if not names and not any(fnmatchcase(n, pattern) for n in norms):
            warner.warn(f"overrides glob {pattern!r} matches no selected layer")
    plans = {}
    for name, candidate in chosen.modules.items():
        bits = config.weight_bits, config.activation_bits
        for pattern, value in config.overrides.items():
            if fnmatchcase(name, pattern):
                bits = _override(value, *bits)
        plans[name] = LayerPlan(name, *bits, weight=candidate.weight)
    return plans


def _selection(gm: fx.GraphModule, config: QuantConfig, weighted: tuple[WeightedLayer, ...]) -> Selection:
    """The quantizable layers the graph calls (in call order) chosen by the
    ``layers`` / ``ignore`` globs."""
    modules = dict(gm.named_modules())
    called = dict.fromkeys(n.target for n in gm.graph.nodes if n.op == "call_module")
    candidates = weighted_candidates(((name, modules[name]) for name in called), weighted, QUANTIZABLE)
    what = kinds_text("Conv/Linear", weighted) + " layer the graph calls"
    if not config.layers:
        return Selection({}, (f"layers is empty: no {what} is selected",), ())
    return select_modules(candidates, config.layers, config.ignore, 0, lambda candidate: 0, what)


def _batchnorm_names(gm: fx.GraphModule) -> list[str]:
    """The affine BatchNorms the graph calls, by name."""
    modules = dict(gm.named_modules())
    return [n.target for n in gm.graph.nodes if n.op == "call_module"
            and isinstance(modules.get(n.target), nn.modules.batchnorm._BatchNorm)
            and (modules[n.target].weight is not None or modules[n.target].bias is not None)]


def plan_batchnorms(gm: fx.GraphModule, config: QuantConfig,
                    plans: Mapping[str, LayerPlan]) -> dict[str, LayerPlan]:
    """BatchNorm name -> plan (``input_bits == FLOAT_BITS``; ``follows``: the
    quantized layer it reads) for ``batchnorm = true``: the affine BatchNorms
    the graph calls that read a quantized layer's output or whose name
    matches a ``layers`` glob, none of ``ignore`` (module docstring, item 7)."""
    if not config.batchnorm:
        return {}
    modules = dict(gm.named_modules())
    chosen: dict[str, LayerPlan] = {}
    for node in gm.graph.nodes:
        module = modules.get(node.target) if node.op == "call_module" else None
        if not isinstance(module, nn.modules.batchnorm._BatchNorm) or node.target in chosen:
            continue
        if module.weight is None and module.bias is None:
            continue  # affine=False: nothing stored to quantize
        name = node.target
        if any(fnmatchcase(name, pattern) for pattern in config.ignore):
            continue
        source = node.args[0] if node.args else None
        follows = source.target if isinstance(source, fx.Node) and source.op == "call_module" \
            and source.target in plans else None
        if follows is None and not any(fnmatchcase(name, pattern) for pattern in config.layers):
            continue
        bits = plans[follows].weight_bits if follows else config.weight_bits
        for pattern, value in config.overrides.items():
            if fnmatchcase(name, pattern):
                bits = value.get("weight_bits", bits) if isinstance(value, Mapping) else value
        chosen[name] = LayerPlan(name, bits, FLOAT_BITS, follows=follows)
    return chosen


def attach_batchnorm_quant(gm: nn.Module, plans: Mapping[str, LayerPlan]) -> None:
    """Put each planned BatchNorm's ``weight`` and ``bias`` on a per-tensor
    grid of its bits (parametrized, so QAT trains through them), declare
    its width and the grids' float32 scales; running statistics stay float."""
    modules = dict(gm.named_modules())
    for plan in plans.values():
        module = modules[plan.name]
        for name in ("weight", "bias"):
            if module._parameters.get(name) is None or parametrize.is_parametrized(module, name):
                continue
            mask = _mask(module, name, plan.weight_bits)
            parametrize.register_parametrization(module, name, WeightQuant(plan.weight_bits, False, mask))
            declare_storage(module, f"{name}_scales", elements=1, bits=FLOAT_BITS)
        set_bits(module, weight=plan.weight_bits)


def batchnorm_notes(plans: Mapping[str, LayerPlan]) -> dict[str, dict[str, Any]]:
    """What the bits of each quantized BatchNorm apply to (the step's ``batchnorm`` note)."""
    return {p.name: {"bits": p.weight_bits, "follows": p.follows, "quantized": ["weight", "bias"],
                     "grid": "per-tensor", "float": ["running_mean", "running_var"]}
            for p in plans.values()}


# ------------------------------------------------------------------- weights


def attach_weight_quant(gm: nn.Module, plans: Mapping[str, LayerPlan], accumulator_bits: int) -> None:
    """Parametrize each planned layer's weight (per channel) and its other
    parameters, the bias (per tensor), with their fake quantizers and set
    its bit-width attributes."""
    modules = dict(gm.named_modules())
    for plan in plans.values():
        module = modules[plan.name]
        quantize_parameters(module, plan.weight, plan.weight_bits,
                            lambda name, module=module, bits=plan.weight_bits: _mask(module, name, bits))
        quantized_input = plan.input_bits != FLOAT_BITS
        if quantized_input:
            declare_storage(module, "input_scale", elements=1, bits=FLOAT_BITS)
        set_bits(module, weight=plan.weight_bits, accumulator=accumulator_bits,
                 input=plan.input_bits if quantized_input else None)


def quantize_parameters(module: nn.Module, weight: str, bits: int,
                        mask_of: Callable[[str], torch.Tensor | None]) -> None:
    """Put each parameter of ``module`` not on a grid yet on a fake-quant grid
    of ``bits``: ``weight`` per output channel, the others (the bias) per
    tensor, each keeping the zeros of ``mask_of(name)``; declare the grids'
    float32 scales (one per output channel for the weight, one per other
    tensor) as storage the score charges."""
    for name in list(module._parameters):
        param = module._parameters[name]
        if param is None or parametrize.is_parametrized(module, name):
            continue
        per_channel = name == weight
        parametrize.register_parametrization(module, name, WeightQuant(bits, per_channel, mask_of(name)))
        scales = param.shape[0] if per_channel and param.dim() else 1
        declare_storage(module, f"{name}_scales", elements=scales, bits=FLOAT_BITS)


def _mask(module: nn.Module, name: str, bits: int) -> torch.Tensor | None:
    """The pruning mask of ``module.<name>`` (the ``<name>_mask`` bool buffer
    of micronet.masks), dropped at 1 bit: binary values have no zero."""
    key = f"{name}_mask"
    mask = module._buffers.get(key)
    if mask is None or mask.dtype != torch.bool:
        return None
    if bits == 1:
        del module._buffers[key]
        return None
    return mask


def bake_weights(gm: nn.Module) -> None:
    """Store every parametrized parameter's quantized value and remove the
    parametrizations (the modules get their own classes back)."""
    with torch.no_grad():
        for module in list(gm.modules()):
            if parametrize.is_parametrized(module):
                for name in list(module.parametrizations):
                    parametrize.remove_parametrizations(module, name, leave_parametrized=True)


# --------------------------------------------------------------- activations


def insert_activation_quant(gm: fx.GraphModule, plans: Mapping[str, LayerPlan],
                            config: QuantConfig) -> list[ActivationQuant]:
    """Route each planned layer's input through an ActivationQuant (one per
    producer and width); returns the new quantizers."""
    modules = dict(gm.named_modules())
    made: dict[tuple[fx.Node, int], fx.Node] = {}
    for node in list(gm.graph.nodes):
        plan = plans.get(node.target) if node.op == "call_module" else None
        if plan is None or plan.input_bits == FLOAT_BITS or not node.args:
            continue
        source = node.args[0]
        if not isinstance(source, fx.Node):
            continue
        if source.op == "call_module" and isinstance(modules.get(source.target), ActivationQuant):
            source = source.args[0]  # an earlier quantize step's: replaced, not stacked
        key = (source, plan.input_bits)
        if key not in made:
            path = _free_name(modules, f"{plan.name}_input_quant")
            quantizer = ActivationQuant(plan.input_bits, config.observer, config.percentile)
            gm.add_submodule(path, quantizer)
            modules[path] = quantizer
            with gm.graph.inserting_after(source):
                made[key] = gm.graph.call_module(path, (source,))
        node.replace_input_with(node.args[0], made[key])
    _drop_unused_quantizers(gm, modules)
    gm.recompile()
    return [modules[n.target] for n in made.values()]


def _free_name(modules: Mapping[str, nn.Module], path: str) -> str:
    candidate, number = path, 1
    while candidate in modules:
        number += 1
        candidate = f"{path}{number}"
    return candidate


def _drop_unused_quantizers(gm: fx.GraphModule, modules: Mapping[str, nn.Module]) -> None:
    for node in list(gm.graph.nodes):
        if (node.op == "call_module" and not node.users
                and isinstance(modules.get(node.target), ActivationQuant)):
            gm.graph.erase_node(node)
            gm.delete_submodule(node.target)


@torch.no_grad()
def calibrate(gm: nn.Module, quantizers: list[ActivationQuant], batches: Iterable[torch.Tensor]) -> int:
    """Run ``batches`` through ``gm`` (eval mode) with every quantizer
    observing, then freeze them; returns the number of batches run."""
    for quantizer in quantizers:
        quantizer.start_calibration()
    gm.eval()
    count = 0
    device = model_device(gm)
    for batch in batches:
        gm(batch.to(device))
        count += 1
    for quantizer in quantizers:
        quantizer.freeze()
    return count


# --------------------------------------------------------------------- model


def quantize_model(gm: fx.GraphModule, config: QuantConfig, calibration: Iterable[torch.Tensor],
                   *, train: Any = None, weighted: tuple[WeightedLayer, ...] = (),
                   warner: StepWarnings | None = None,
                   batchnorms: dict[str, LayerPlan] | None = None) -> dict[str, LayerPlan]:
    """Quantize ``gm`` in place (see the module docstring): plan (``weighted``:
    the plugins' weighted layers), weights on their grid (and, with
    ``config.batchnorm``, the chosen BatchNorms', whose plans are put in
    ``batchnorms`` when given), activation quantizers calibrated on
    ``calibration``, then ``train(gm)`` with the fake quantization in place
    when given, then the weights baked. Returns the layers' plans."""
    plans = plan_layers(gm, config, weighted, warner)
    bn_plans = plan_batchnorms(gm, config, plans)
    if batchnorms is not None:
        batchnorms.update(bn_plans)
    attach_weight_quant(gm, plans, config.accumulator_bits)
    attach_batchnorm_quant(gm, bn_plans)
    try:
        quantizers = insert_activation_quant(gm, plans, config)
        if quantizers:
            calibrate(gm, quantizers, calibration)
        if train is not None:
            train(gm)
    finally:
        bake_weights(gm)
    return plans


def overflow_risk(gm: nn.Module, plans: Mapping[str, LayerPlan], accumulator_bits: int) -> list[str]:
    """Layers whose worst-case dot product needs more than ``accumulator_bits``
    bits: ``weight bits + input bits + ceil(log2 L)`` (float inputs: none)."""
    modules = dict(gm.named_modules())
    risky = []
    for plan in plans.values():
        if plan.input_bits == FLOAT_BITS:
            continue
        weight = modules[plan.name]._parameters[plan.weight]
        length = weight[0].numel() if weight.dim() > 1 else 1  # [out, in*kernel]: in/groups * kernel terms
        if plan.weight_bits + plan.input_bits + math.ceil(math.log2(max(length, 1))) > accumulator_bits:
            risky.append(plan.name)
    return risky


# ---------------------------------------------------------------------- step


def _calibration_batches(context: StepContext) -> Iterator[torch.Tensor]:
    """Calibration inputs from ``micronet.training.data.batches`` (the recipe's
    data, its calibration split: its own for ``digits``, the train split
    otherwise; standard-normal batches without a ``[data]`` table), noted."""
    batches = data.batches(context.data, context.input_shape, split="calibration")
    source = "standard-normal batches (no [data] in the recipe)" if context.data is None \
        else f"batches of {context.data.get('dataset')}"
    context.note("calibration", f"{len(batches)} {source}")
    return (x for x, _ in batches)


def _trainer(options: Mapping[str, Any], context: StepContext) -> Callable[[nn.Module], None]:
    """``train(gm)``: ``micronet.training.train.fit`` with the QAT options."""

    def train(gm: nn.Module) -> None:
        with torch.no_grad():
            classes = gm.eval()(torch.zeros(context.input_shape, device=model_device(gm))).shape[-1]
        config = TrainConfig(epochs=options["qat_epochs"], lr=options["qat_lr"], device=context.device,
                             progress=context.progress)
        history = fit(gm, context.data, config, input_shape=context.input_shape, num_classes=classes,
                      log=context.log)
        context.note("qat", {"epochs": options["qat_epochs"], "lr": options["qat_lr"],
                             "loss": history["loss"], "accuracy": history["accuracy"]})
        context.note("engine", history["engine"])  # "ddp" under torchrun, else "local"
        context.note("world_size", history["world_size"])
        gm.eval()

    return train


def run_quantize(model: nn.Module, options: Mapping[str, Any], context: StepContext) -> nn.Module:
    """The ``quantize`` step: quantize the pipeline's copy in place and return it."""
    if not isinstance(model, fx.GraphModule):
        raise TypeError(f"quantize needs a torch.fx.GraphModule, got {type(model).__name__}")
    config = QuantConfig.from_options(options)
    home = model_device(model)
    model.to(context.device)
    train = _trainer(options, context) if options.get("qat") else None
    warner = StepWarnings("quantize")
    batchnorms: dict[str, LayerPlan] = {}
    plans = quantize_model(model, config, _calibration_batches(context), train=train,
                           weighted=context.weighted_layers, warner=warner, batchnorms=batchnorms)
    model.to(home).eval()
    context.note("quantized_layers", len(plans))
    if config.batchnorm:
        context.note("batchnorm", batchnorm_notes(batchnorms))
    warner.note(context)
    mixed = {p.name: [p.weight_bits, p.input_bits] for p in plans.values()
             if (p.weight_bits, p.input_bits) != (config.weight_bits, config.activation_bits)}
    if mixed:
        context.note("mixed_precision", mixed)
    risky = overflow_risk(model, plans, config.accumulator_bits)
    if risky:
        context.note("accumulator_may_overflow", risky)
        context.log(f"quantize: {len(risky)} layers may overflow a {config.accumulator_bits}-bit "
                    f"accumulator: {', '.join(risky[:5])}{' ...' if len(risky) > 5 else ''}")
    return model


# ------------------------------------------------------------ option checks


def _bits_check(low: int, high: int, also: tuple[int, ...] = ()):
    def check(value: Any) -> str | None:
        if not isinstance(value, int) or not (low <= value <= high or value in also):
            extra = "".join(f" or {v}" for v in also)
            return f"expected a whole number from {low} to {high}{extra}, got {value!r}"
        return None
    return check


_weight_bits = _bits_check(1, 16)
_activation_bits = _bits_check(2, 16, (FLOAT_BITS,))


def _check_overrides(value: Mapping[str, Any]) -> str | None:
    for pattern, bits in value.items():
        if isinstance(bits, Mapping):
            unknown = set(bits) - {"weight_bits", "activation_bits"}
            if unknown:
                return f"{pattern!r}: unknown keys {sorted(unknown)}; use weight_bits, activation_bits"
            problem = ((_weight_bits(bits["weight_bits"]) if "weight_bits" in bits else None)
                       or (_activation_bits(bits["activation_bits"]) if "activation_bits" in bits else None))
        elif isinstance(bits, bool):
            problem = f"expected bits, got {bits!r}"
        else:
            problem = _weight_bits(bits)
        if problem:
            return f"{pattern!r}: {problem}"
    return None


QUANTIZE = CompressionStep(
    name="quantize",
    description="fake quantization: per-channel symmetric weights, calibrated per-tensor activations",
    run=run_quantize,
    options=(
        StepOption("weight_bits", (int,), 8, "bits of weights and biases, 1 (binary) to 16",
                   check=_weight_bits),
        StepOption("activation_bits", (int,), 8, "bits of quantized layers' inputs, 2 to 16; 32 = float",
                   check=_activation_bits),
        StepOption("accumulator_bits", (int,), 32, "bits the dot products accumulate in, 8 to 32",
                   check=_bits_check(8, 32)),
        StepOption("observer", (str,), "minmax", "how activation ranges are calibrated",
                   choices=tuple(OBSERVERS)),
        StepOption("percentile", (float,), 99.99, "the percentile observer's percentile",
                   check=lambda p: None if 50 < p <= 100 else f"expected 50 < p <= 100, got {p}"),
        StepOption("overrides", (dict,), {}, "layer-name glob -> bits, or {weight_bits, activation_bits}",
                   check=_check_overrides),
        StepOption("layers", (list,), ["*"], "layer-name globs to quantize", check=check_globs),
        StepOption("ignore", (list,), [], "layer-name globs to leave in float", check=check_globs),
        StepOption("batchnorm", (bool,), False,
                   "also put the BatchNorms after quantized layers (or matched by layers) on a grid "
                   "of their bits: gamma and beta per tensor; running statistics stay float"),
        StepOption("qat", (bool,), False, "train with the fake quantization in place (micronet.training.train)"),
        StepOption("qat_epochs", (int,), 1, "epochs of quantization-aware training",
                   check=at_least(1)),
        StepOption("qat_lr", (float,), 1e-3, "learning rate of quantization-aware training",
                   check=at_least(0.0, strict=True)),
    ),
)


# ---------------------------------------------------------- counting rules

#: The activation quantizer is free (see the module docstring), in the aten
#: form a ``torch.export`` archive of the quantized model holds too.
activation_quant = free(ActivationQuant, *aten_ops(
    "fake_quantize_per_tensor_affine", "fake_quantize_per_tensor_affine_cachemask",
    "_fake_quantize_per_tensor_affine_cachemask_tensor_qparams"), op="fake_quant")


@shape_rule(ActivationQuant)
@lenient
def shape_activation_quant(call: OpCall) -> TensorInfo:
    """ActivationQuant returns a tensor of its input's shape and dtype."""
    return first_tensor(call)


@hookimpl
def micronet_register_counters():
    return collect(sys.modules[__name__])


@hookimpl
def micronet_register_steps():
    return [QUANTIZE]
