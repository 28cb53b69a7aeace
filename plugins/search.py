"""Built-in step ``search``: per-layer bits, sparsity and channels chosen to a budget.

Each selected layer (by default the ``weight`` of every Conv*/Linear module
and of every declared :class:`~micronet.steps.WeightedLayer`; ``layers`` /
``ignore`` globs) gets one setting from the candidate lists: weight bits
(``weight_bits``), the bits of its input activations (``act_bits``; default
``[]``: not searched, the inputs stay as they are), unstructured sparsity
(``sparsity``) and, with ``structured = true``, a fraction of its output
channels zeroed (``channels``). Exactly one objective:

- ``target_score``: the MicroNet score of the result, under the run's
  rulebook, track and freebie, is at most ``target_score``, with the least
  predicted loss of top-1 (:func:`micronet.plugins.allocation.allocate`);
- ``max_accuracy_drop`` (percentage points of top-1): the lowest exact score
  whose predicted drop is at most the bound (the dual problem,
  :func:`micronet.plugins.allocation.allocate_drop`). After the settings are
  applied (and fine-tuned), the step measures top-1 on the ``[data]`` test
  split (:func:`micronet.training.data.evaluate`) against the step's input
  (the pipeline's measurement of it); when the measured drop exceeds the
  bound it backs off and searches again from the step's input, at most
  ``retries`` times, then fails in one line naming the best measured drop.
  Backing off halves the predicted-drop budget (down to the least
  reachable); once the try's predicted drop is already 0 (the calibration
  split saw no drop, though the layers' errors add up), only the settings
  of no predicted drop remain and the budget is on their predicted
  cross-entropy increase instead (the table's ``loss_increase``, added
  over layers the same way), halved at each further try. The test split
  thus steers the choice (as the bound is stated on it): keep a held-out
  set of your own if that matters.

Prediction and score: see :mod:`micronet.plugins.allocation` (the additive
model over the sensitivity table; the exact per-layer re-score of the step
input's records, no re-trace per candidate).

Sensitivity table: an earlier ``sensitivity`` step's (``context.earlier``),
when no step changed the model since, for every (layer, kind, level) it
has; the settings it lacks (or all, without one) are measured here on the
calibration split (:func:`micronet.plugins.sensitivity.measure`, one
evaluation per layer and setting; neutral levels are not measured), a
sweep on ``engine`` as in ``sensitivity`` (``local``, or Ray tasks on CPUs
at ``address`` / with ``num_cpus``: the same rows either way).

Candidates per layer: every combination of the lists, except that 1-bit
weights take no unstructured sparsity (a binary grid has no zero: the zeros
would be lost), the layers producing the model's output keep all their
channels (:func:`micronet.plugins.prune.output_layers`: zeroing one would
zero a class), and a layer the fx graph does not call as a module keeps its
input as it is (warned: the quantizer goes into the graph).

Applied for real, in this order: channels (the ``min(round(c * out), out -
1)`` lowest-L2-norm output channels, each zeroed and masked with
:func:`micronet.masks.set_mask` as a whole: weight row, ``bias`` entry and
the entries of the BatchNorm that alone reads the layer,
:func:`micronet.plugins.sensitivity.channel_group`, so the channel outputs
zero); unstructured zeros (the ``round(s * elements)`` smallest magnitudes,
as ``sparsify``; the channel zeros rank lowest); the weight on its
per-output-channel grid and the bias on a per-tensor grid at the layer's
bits, masks kept before rounding (:func:`micronet.plugins.quantize.quantize_parameters`).
The weight's mask is :func:`micronet.plugins.allocation.setting_mask`, the
one the plan priced: besides the channel and unstructured zeros it masks
the weights the grid rounds to zero (at 2 bits, half or more of a trained
layer), so the score predicted is the applied model's exactly (before
fine-tuning) and they stay zero through fine-tuning: the latent weights
learn through the straight-through gradient, and without the mask a
grid zero could grow past half a step, leave zero and raise the score
above the prediction (and the budget);
:func:`micronet.bits.set_bits` and the grid scales declared; the input
activations through an :class:`~micronet.plugins.fakequant.ActivationQuant`
inserted in the graph (:func:`micronet.plugins.quantize.insert_activation_quant`,
``minmax``), the input bits and its float32 scale declared as ``quantize``
does, calibrated on the calibration split with the weights already on their
grids (:func:`micronet.plugins.quantize.calibrate`). Zeroed channels stay in
the model (masked), priced as zeros of the layer's weight, so under
``micronet-2019`` a fraction of channels saves what the same fraction of
unstructured zeros saves (the audit may find the whole rows in blocks, a
cheaper bitmask, and score lower): the search takes channels where a layer
tolerates them better, or where they overlap its unstructured zeros. Removing them
with Torch-Pruning would keep the function (they output zero) and lower the
score further (the next layer's inputs go too), but the ``prune`` step's
public route picks channels by its own importance, not these, so it is not
done here; a later ``prune`` step may remove channels. With ``epochs > 0``
the model is trained with distillation from the step's input
(:func:`micronet.training.train.fit`, ``teacher=``) through the fake
quantizers, then the grids are baked in. The result is audited again under
the run's rulebook, track and freebie; with ``target_score`` the step fails
if that score exceeds it (by the rules' arithmetic it cannot: every zero
priced is masked, and fine-tuning can only add zeros, a weight that its
row's grid rounds to zero as it or the row's scale moves, which lowers the
score; so the predicted score is an upper bound after fine-tuning, and
exact without it for unstructured settings). An unreachable budget fails
with one line naming the nearest reachable score (every layer at its cheapest setting); an
unreachable bound, the least predicted drop.

Notes: ``objective`` (``target_score`` or ``max_accuracy_drop``),
``settings`` ``{layer: {weight_bits, act_bits, sparsity, channels,
predicted_drop}}`` (act_bits 32: the input as it was; channels: the
fraction zeroed; predicted_drop: the layer's term of the additive model,
top-1 points), ``predicted_drop`` (points, their sum), ``predicted_score``,
``score`` (the re-audit),
``rescored`` (the plan's score at the zeros reached), ``lambda``,
``nearest_score`` (target_score: all cheapest) or ``least_drop``
(max_accuracy_drop: all safest), ``sparsity_reached``, ``sensitivity`` (how
the table was obtained), ``sensitivity_from`` (the step reused),
``sensitivity_measured`` (rows measured here), ``baseline`` (calibration
top-1), ``accuracy_before`` / ``accuracy`` / ``measured_drop`` (test split,
when ``[data]`` names a dataset), ``attempts`` (max_accuracy_drop, per try:
``budget`` and ``predicted_drop`` in points, ``loss_budget`` and
``predicted_loss`` in nats once backing off on the loss,
``predicted_score``, ``measured_drop``), ``kept_whole``
(channels), ``rescores``, ``seconds``; ``engine`` (of the sensitivity
sweep), and when a sweep ran on Ray its ``address`` and ``num_cpus``; with
``epochs > 0``, ``loss`` per epoch and ``finetune_engine`` /
``finetune_world_size`` (``"ddp"`` over that many processes under
torchrun, else ``"local"`` and 1).
"""
from __future__ import annotations

import copy
import time
from dataclasses import replace
from typing import Any, Mapping

import torch
from torch import fx, nn

from micronet.bits import declare_storage, set_bits
from micronet.errors import CompressionError, UsageError
from micronet.manager import hookimpl
from micronet.masks import set_mask
from micronet.plugins.allocation import (FLOAT_BITS, Allocation, Plan, Setting, allocate, allocate_drop,
                                         make_plan, predicted_drops, setting_mask, total)
from micronet.plugins.quantize import LayerPlan, QuantConfig, bake_weights, calibrate, insert_activation_quant, \
    quantize_parameters
from micronet.plugins.sensitivity import (KINDS, SWEEP_OPTIONS, channel_group, channel_keep, check_bit_levels,
                                          check_sparsity_levels, check_sweep, load_batches, measure,
                                          select_targets, sweep_notes, sweep_options)
from micronet.selection import Candidate, StepWarnings
from micronet.steps import CompressionStep, StepContext, StepOption, at_least, check_globs
from micronet.training.data import evaluate, output_classes
from micronet.training.train import TrainConfig, fit

__all__ = ["SEARCH", "search", "Plan", "Setting", "Allocation", "predicted_drops", "allocate", "allocate_drop",
           "make_plan", "candidates", "apply"]


# ------------------------------------------------------------ candidates


def candidates(model: nn.Module, targets: Mapping[str, Candidate], options: Mapping[str, Any],
               warner: StepWarnings) -> tuple[dict[str, tuple[Setting, ...]], list[str]]:
    """Each layer's candidate settings (see the module docstring) and the
    layers whose channels are kept whole (they produce the output)."""
    acts = [int(a) for a in options["act_bits"]] or [FLOAT_BITS]
    channels = [float(c) for c in options["channels"]] if options["structured"] else [0.0]
    whole: list[str] = []
    if any(c > 0 for c in channels):
        from micronet.plugins.prune import output_layers  # Torch-Pruning only when channels are searched

        whole = [name for name in output_layers(model) if name in targets]
    graph_inputs = _graph_called(model)
    found = {}
    for name in targets:
        layer_acts = acts
        if any(a < FLOAT_BITS for a in acts) and name not in graph_inputs:
            warner.warn(f"{name} is not called as a module in the fx graph: its input activations stay as "
                        "they are")
            layer_acts = [FLOAT_BITS]
        layer_channels = [0.0] if name in whole else channels
        found[name] = tuple(dict.fromkeys(
            Setting(int(b), a, float(s), c) for b in options["weight_bits"] for a in layer_acts
            for s in options["sparsity"] for c in layer_channels if not (b == 1 and s > 0)))
    return found, whole


def _graph_called(model: nn.Module) -> set[str]:
    """Modules an fx graph calls with a node as first argument (where a quantizer can go)."""
    if not isinstance(model, fx.GraphModule):
        return set()
    return {n.target for n in model.graph.nodes if n.op == "call_module" and n.args and isinstance(n.args[0], fx.Node)}


# ------------------------------------------------------------ sensitivity


def _table(model: nn.Module, targets: Mapping[str, Candidate], choices: Mapping[str, tuple[Setting, ...]],
           options: Mapping[str, Any], context: StepContext) -> dict[str, Any]:
    """The sensitivity rows the candidates need: an earlier ``sensitivity``
    step's where it has them and no step changed the model since, the rest
    measured now on the calibration split (a sweep on the step's ``engine``)."""
    on_start = sweep_notes(options, context)
    needed = {(layer, kind, float(level)) for layer, settings in choices.items()
              for s in settings for kind, level in s.levels()}
    earlier = _earlier_sensitivity(context)
    rows = {}
    if earlier is not None:
        rows = {(r["layer"], r["kind"], float(r["level"])): r for r in earlier.notes.get("table") or []}
        rows = {key: row for key, row in rows.items() if key in needed}
    missing = needed - rows.keys()
    baseline = earlier.notes.get("baseline") if earlier is not None and rows else None
    if missing:
        order = {"bits": -1, "act_bits": -1, "sparsity": 1, "channels": 1}  # the harshest last, as sensitivity
        settings = sorted({(kind, level) for _, kind, level in missing},
                          key=lambda s: (KINDS.index(s[0]), order[s[0]] * s[1]))
        loaded = load_batches(model, {"batches": None}, context)
        skip = {(layer, kind, level) for layer in targets for kind, level in settings} - missing
        found = measure(model, targets, [(k, int(v) if k in ("bits", "act_bits") else v) for k, v in settings],
                        loaded, context.log, skip=skip, **sweep_options(options), progress=context.progress,
                        on_start=on_start)
        rows.update({(r["layer"], r["kind"], float(r["level"])): r for r in found["table"]})
        baseline = baseline or found["baseline"]
    if earlier is not None and len(missing) < len(needed):
        context.note("sensitivity_from", f"step {earlier.index}")
    context.note("sensitivity_measured", len(missing))
    how = "measured here on the calibration split" if earlier is None or len(missing) == len(needed) else \
        f"from step {earlier.index}" + (f", {len(missing)} settings measured here" if missing else "")
    context.note("sensitivity", how)
    return {"baseline": baseline, "table": list(rows.values())}


def _earlier_sensitivity(context: StepContext) -> Any:
    """The record of the last ``sensitivity`` step, if no step changed the model after it."""
    for record in reversed(context.earlier):
        if record.name == "sensitivity" and record.error is None:
            return record
        if record.changed:
            return None  # the model changed after any sensitivity step: measure again
    return None


# ---------------------------------------------------------------- apply


def apply(model: nn.Module, targets: Mapping[str, Candidate], choice: Mapping[str, Setting],
          calibration: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Put ``choice`` on ``model`` in place (see the module docstring):
    channels and zeros masked, parameters on their grids (fake-quant
    parametrizations), input quantizers inserted and calibrated on
    ``calibration``, the bits and scales declared."""
    for name, setting in choice.items():
        target, module = targets[name], targets[name].module
        weight = target.tensor.detach()
        kept = setting_mask(weight, setting)  # what the plan priced: channels, zeros and grid zeros
        if setting.channels > 0:
            keep = channel_keep(weight, setting.channels)
            for owner, param in channel_group(model, name, target):
                shape = owner._parameters[param].shape
                set_mask(owner, param, keep.reshape(-1, *([1] * (len(shape) - 1))).expand(shape))
        if not bool(kept.all()):  # the grid zeros too: fine-tuning cannot move them off zero
            set_mask(module, target.weight, kept)
        quantize_parameters(module, target.weight, setting.weight_bits,
                            lambda param, module=module: module._buffers.get(f"{param}_mask"))
        set_bits(module, weight=setting.weight_bits)
    plans = {name: LayerPlan(name, s.weight_bits, s.act_bits, weight=targets[name].weight)
             for name, s in choice.items() if s.act_bits < FLOAT_BITS}
    if plans:
        quantizers = insert_activation_quant(model, plans, QuantConfig())
        for name, plan in plans.items():
            set_bits(targets[name].module, input=plan.input_bits)
            declare_storage(targets[name].module, "input_scale", elements=1, bits=FLOAT_BITS)
        calibrate(model, quantizers, (x for x, _ in calibration))


def _zero_fraction(tensor: torch.Tensor) -> float:
    return 1.0 - int(torch.count_nonzero(tensor)) / tensor.numel()


def _finetune(model: nn.Module, teacher: nn.Module, options: Mapping[str, Any], context: StepContext) -> None:
    config = TrainConfig(epochs=options["epochs"], lr=options["lr"], device=context.device,
                         progress=context.progress, evaluate=False)
    found = fit(model, context.data, config, input_shape=context.input_shape,
                num_classes=output_classes(teacher, context.input_shape),
                teacher=teacher, log=context.log)
    context.note("loss", [round(loss, 6) for loss in found["loss"]])
    context.note("finetune_engine", found["engine"])  # "ddp" under torchrun, else "local"
    context.note("finetune_world_size", found["world_size"])
    model.eval()


def _realise(model: nn.Module, targets: Mapping[str, Candidate], allocation: Allocation,
             options: Mapping[str, Any], context: StepContext, calibration) -> tuple[nn.Module, dict[str, Candidate]]:
    """A copy of ``model`` with the allocation applied, fine-tuned and baked; its targets."""
    made = copy.deepcopy(model)
    mine = {name: replace(c, module=made.get_submodule(name)) for name, c in targets.items()}
    apply(made, mine, allocation.choice, calibration)
    if options["epochs"] > 0:
        _finetune(made, model, options, context)
    bake_weights(made)
    return made.eval(), mine


def _reaudit(model: nn.Module, context: StepContext) -> float:
    from micronet.audit import audit

    result = context.result
    return audit(model, context.input_shape, track=result.track.name, rulebook=result.rulebook.name,
                 freebie=result.options.freebie, registries=context.registries).score.total


def _top1(model: nn.Module, context: StepContext) -> float | None:
    """Top-1 (percent) on the ``[data]`` test split; None when it names no dataset."""
    if not context.data or "dataset" not in context.data:
        return None
    return evaluate(model, context.data, input_shape=context.input_shape,
                    num_classes=output_classes(model, context.input_shape), device=context.device)


# ----------------------------------------------------------------- step


def search(model: nn.Module, options: Mapping[str, Any], context: StepContext) -> nn.Module:
    """Choose, apply and verify per-layer settings (see the module docstring)."""
    started = time.perf_counter()
    warner = StepWarnings("search")
    targets = select_targets(model, options, warner, context)
    choices, whole = candidates(model, targets, options, warner)
    found = _table(model, targets, choices, options, context)
    plan = make_plan(context.result, targets, choices)
    drops = predicted_drops(found["table"], plan)
    calibration = load_batches(model, {"batches": None}, context) \
        if any(s.act_bits < FLOAT_BITS for settings in choices.values() for s in settings) else []
    objective = "target_score" if options["target_score"] is not None else "max_accuracy_drop"
    context.note("objective", objective)
    if whole:
        context.note("kept_whole", whole)
    before = context.result.accuracy if context.result.accuracy is not None else _top1(model, context)
    if objective == "target_score":
        allocation = allocate(plan, drops, options["target_score"])
        made, mine = _realise(model, targets, allocation, options, context, calibration)
        accuracy = _top1(made, context) if before is not None else None
    else:
        allocation, made, mine, accuracy = _within_drop(model, targets, plan, found, options, context,
                                                        calibration, before)
    reached = {name: _zero_fraction(t.tensor) for name, t in mine.items()}
    score = _reaudit(made, context)
    _notes(context, allocation, drops, found, plan, reached, score, objective, before,
           accuracy, time.perf_counter() - started)
    warner.note(context)
    if objective == "target_score" and score > options["target_score"]:
        raise CompressionError(f"the searched model scores {score:.6g} after the step, above target_score "
                               f"{options['target_score']:g} (predicted {allocation.score:.6g})")
    if objective == "max_accuracy_drop" and before is not None and before - accuracy > options["max_accuracy_drop"]:
        raise CompressionError(f"no try kept the measured top-1 drop within max_accuracy_drop "
                               f"{options['max_accuracy_drop']:g}: the best measured drop was "
                               f"{before - accuracy:.4g} points (score {score:.6g}), after "
                               f"{len(context.notes['attempts'])} tries",
                               hint="raise max_accuracy_drop, fine-tune longer (epochs), or add safer settings")
    return made


def _within_drop(model, targets, plan: Plan, found, options, context: StepContext, calibration, before):
    """The dual search with back-off (see the module docstring): the best
    try (the first within the bound, else the lowest measured drop), its
    allocation, model, targets and test top-1."""
    bound = budget = options["max_accuracy_drop"]
    drops, key, active = predicted_drops(found["table"], plan), "drop", plan
    attempts, best = [], None
    for _ in range(options["retries"] + 1):
        values = drops if key == "drop" else predicted_drops(found["table"], active, key)
        allocation = allocate_drop(active, values, budget)
        made, mine = _realise(model, targets, allocation, options, context, calibration)
        accuracy = _top1(made, context) if before is not None else None
        drop = None if accuracy is None else before - accuracy
        attempt = {"budget": round(budget, 4) if key == "drop" else 0.0,
                   "predicted_drop": round(total(drops, allocation.choice), 4)}
        if key != "drop":  # settings of no predicted drop, ranked by the cross-entropy increase (nats)
            attempt.update(loss_budget=round(budget, 6), predicted_loss=round(allocation.drop, 6))
        attempts.append({**attempt, "predicted_score": allocation.score,
                         "measured_drop": None if drop is None else round(drop, 4)})
        context.log(f"search: predicted {key} {allocation.drop:.3g} <= {budget:.3g}, score {allocation.score:.6g}"
                    + ("" if drop is None else f", measured drop {drop:.3g} points"))
        if best is None or (drop is not None and drop < best[0]):
            best = (drop, allocation, made, mine, accuracy)
        if drop is None or drop <= bound:
            break
        if key == "drop" and allocation.drop <= 0:  # the calibration split sees no drop: tighten the loss instead
            key, active = "loss_increase", replace(plan, choices={
                layer: tuple(s for s in settings if drops[layer][s] <= 0) for layer, settings in plan.choices.items()})
            allocation = replace(allocation, drop=total(predicted_drops(found["table"], active, key),
                                                        allocation.choice))
        least = sum(min(v.values()) for v in predicted_drops(found["table"], active, key).values())
        if allocation.drop <= least:
            break  # nothing safer left to try
        budget = max(allocation.drop / 2, least)
    context.note("attempts", attempts)
    return best[1], best[2], best[3], best[4]


def _notes(context: StepContext, allocation: Allocation, drops, found, plan: Plan, reached, score: float,
           objective: str, before: float | None, accuracy: float | None, seconds: float) -> None:
    context.note("settings", {layer: {**s.to_dict(), "predicted_drop": round(drops[layer][s], 4)}
                              for layer, s in allocation.choice.items()})
    context.note("predicted_drop", round(total(drops, allocation.choice), 4))
    context.note("predicted_score", allocation.score)
    context.note("score", score)
    context.note("rescored", plan.score(allocation.choice, reached))
    context.note("lambda", allocation.lam)
    context.note("nearest_score" if objective == "target_score" else "least_drop", allocation.bound)
    context.note("sparsity_reached", {name: round(f, 6) for name, f in reached.items()})
    context.note("baseline", found["baseline"])
    if before is not None and accuracy is not None:
        context.note("accuracy_before", round(before, 4))
        context.note("accuracy", round(accuracy, 4))
        context.note("measured_drop", round(before - accuracy, 4))
    context.note("rescores", allocation.rescores)
    context.note("seconds", round(seconds, 3))


# -------------------------------------------------------------- options


def _validate(options: Mapping[str, Any]) -> None:
    given = [name for name in ("target_score", "max_accuracy_drop") if options[name] is not None]
    if len(given) != 1:
        raise UsageError(f"search needs exactly one objective, target_score or max_accuracy_drop; got "
                         f"{' and '.join(given) or 'neither'}",
                         hint="target_score = 0.5 (a score budget) or max_accuracy_drop = 1.0 (points of top-1)")
    if not options["weight_bits"] or not options["sparsity"]:
        raise UsageError("weight_bits and sparsity each need at least one level",
                         hint="weight_bits = [8, 4, 2], sparsity = [0, 0.5, 0.9]")
    if all(b == 1 for b in options["weight_bits"]) and 0 not in options["sparsity"]:
        raise UsageError("1-bit weights keep no unstructured zeros (a binary grid has no 0), and sparsity has no 0",
                         hint="add 0 to sparsity, or weight bits of 2 or more")
    if options["structured"] and not options["channels"]:
        raise UsageError("structured = true needs at least one channels level", hint="channels = [0, 0.25, 0.5]")
    check_sweep(options)


def _check_target(value: float) -> str | None:
    return None if value > 0 else f"expected a score > 0, got {value!r}"


def _check_drop(value: float) -> str | None:
    return None if 0 <= value < 100 else f"expected percentage points of top-1, 0 <= drop < 100, got {value!r}"


def _check_act_bits(value: list) -> str | None:
    ok = all(isinstance(b, int) and not isinstance(b, bool) and (2 <= b <= 16 or b == FLOAT_BITS) for b in value)
    return None if ok else f"expected a list of integers from 2 to 16, or 32 (as they are), such as [32, 16, 8], " \
                           f"got {value!r}"


SEARCH = CompressionStep(
    name="search",
    description="per-layer weight bits, input bits, sparsity and channels chosen by a Lagrangian allocation "
                "over measured sensitivities to reach target_score exactly by the rules (or the lowest score "
                "within max_accuracy_drop), applied (and fine-tuned)",
    run=search,
    needs_data=True,
    options=(
        StepOption("target_score", (float,), None, "the score to reach or beat under the run's rulebook "
                   "and track (or give max_accuracy_drop)", check=_check_target),
        StepOption("max_accuracy_drop", (float,), None, "the most top-1 (percentage points, test split) "
                   "to lose, at the lowest score (or give target_score)", check=_check_drop),
        StepOption("weight_bits", (list,), [8, 6, 4, 2], "weight bits each layer may take (1 to 16)",
                   check=check_bit_levels),
        StepOption("act_bits", (list,), [], "bits each layer's input activations may take (2 to 16, or 32: as "
                   "they are); [] = not searched", check=_check_act_bits),
        StepOption("sparsity", (list,), [0, 0.5, 0.75, 0.9], "unstructured sparsities each layer may take, "
                   "0 <= s < 1", check=check_sparsity_levels),
        StepOption("structured", (bool,), False, "also choose a fraction of each layer's output channels to "
                   "zero (from channels)"),
        StepOption("channels", (list,), [0, 0.25, 0.5], "with structured = true: fractions of output channels "
                   "each layer may zero, 0 <= c < 1", check=check_sparsity_levels),
        StepOption("layers", (list,), [], "module name globs to search (default: every Conv*/Linear and "
                   "declared weighted layer)", check=check_globs),
        StepOption("ignore", (list,), [], "module name globs to leave alone", check=check_globs),
        StepOption("epochs", (int,), 0, "epochs of distillation from the step's input model (0: none)",
                   check=at_least(0)),
        StepOption("lr", (float,), 0.01, "learning rate of the fine-tuning", check=at_least(0.0, strict=True)),
        StepOption("retries", (int,), 3, "max_accuracy_drop: searches again with a halved predicted budget "
                   "at most this many times when the measured drop exceeds the bound", check=at_least(0)),
        *SWEEP_OPTIONS,
    ),
    validate=_validate,
)


@hookimpl
def micronet_register_steps():
    return [SEARCH]
