"""Built-in step ``search``: per-layer weight bits and sparsity chosen to meet a score budget.

Each selected layer (by default the ``weight`` of every Conv*/Linear module
and of every declared :class:`~micronet.steps.WeightedLayer`; ``layers`` /
``ignore`` globs) gets one setting ``(weight_bits, sparsity)`` from the
candidate lists, so that the MicroNet score of the result, under the run's
rulebook, track and freebie, is at most ``target_score``, with the least
predicted loss of top-1.

Predicted accuracy cost (an additive model): a layer's setting costs its
measured top-1 drop at those bits plus its drop at that sparsity, each
measured with that layer alone perturbed (:func:`micronet.plugins.sensitivity.measure`
on the calibration split; sparsity 0 costs nothing; negative drops, noise on
a small split, count as 0), and an allocation costs the sum over layers.
Interactions between layers, and between bits and zeros in one layer, are
ignored: the prediction is a ranking device, the accuracy after the step is
measured by the pipeline.

Score: exact, by the rules. Every candidate allocation is re-scored from the
step input's records with per-layer overrides
(:class:`~micronet.rules.ScoreOptions` ``layer_weight_bits`` /
``layer_sparsity`` / ``layer_storage_bits``, the last for the float32 grid
scales the layer then stores), no re-trace per candidate.

Allocation: a Lagrangian relaxation of the multiple-choice knapsack. For a
multiplier ``lambda`` each layer independently takes the setting minimising
``drop + lambda * score_cost`` (its score cost measured exactly, one layer
changed at a time); ``lambda`` is bisected to the smallest value whose
allocation's *exact* score is <= ``target_score``; then, while it stays
within the budget, the layer upgrade (to a setting of smaller drop) that
buys the most drop per unit of score is taken, greedily, which fills the
slack the convex hull leaves. Why not the others: HAQ learns the policy
with reinforcement learning (hundreds of evaluated episodes), HAWQ-v2
solves an integer linear program over Hessian-trace sensitivities (a
solver dependency, and the rules' bitmask-or-dense storage is a min, not
linear), NNCF's HAWQ-based precision initialiser and AIMET's AMP walk a
Pareto curve of one-layer-at-a-time choices; the Lagrangian needs only the
table and the exact re-scorer, costs milliseconds for thousands of
re-scores, and its answer is checked exactly against the budget.

Applied for real: the weight's ``round(sparsity * elements)`` smallest
magnitudes zeroed and masked (:func:`micronet.masks.set_mask`, as
``sparsify``), the weight on its per-output-channel symmetric grid and the
other parameters (the bias) on per-tensor grids at the layer's bits (the
:class:`~micronet.plugins.fakequant.WeightQuant` parametrization of
``quantize``, the mask kept before rounding), :func:`micronet.bits.set_bits`
and the grid scales declared as float32 storage. With ``epochs > 0`` the
model is trained with distillation from the step's input model
(:func:`micronet.training.train.fit`, ``teacher=``) through the fake
quantizers, then the grids are baked in. The produced model is audited again
under the run's rulebook, track and freebie and the step fails if that
score exceeds ``target_score`` (rounding to the grid only adds zeros, so it
is at most the predicted score). An unreachable budget fails with one line
naming the nearest reachable score (every layer at its cheapest setting).

Activation bits and channel pruning are not searched. No earlier
``sensitivity`` step's table is reachable from a step, so the table is
measured here (one evaluation per layer and setting).

Notes: ``settings`` ``{layer: {weight_bits, sparsity}}``, ``predicted_drop``
(points), ``predicted_score``, ``score`` (the re-audit), ``lambda``,
``nearest_score`` (all cheapest), ``sensitivity`` (how the table was
obtained), ``baseline`` (calibration top-1), ``rescores``, ``seconds``.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from micronet.bits import set_bits
from micronet.errors import CompressionError, UsageError
from micronet.manager import hookimpl
from micronet.masks import set_mask
from micronet.plugins.quantize import bake_weights, quantize_parameters
from micronet.plugins.sensitivity import (check_bit_levels, check_sparsity_levels, load_batches, measure,
                                          perturbed, select_targets)
from micronet.rules import ScoreOptions
from micronet.selection import Candidate, StepWarnings
from micronet.steps import CompressionStep, StepContext, StepOption, at_least, check_globs
from micronet.training.data import output_classes
from micronet.training.train import TrainConfig, fit

__all__ = ["SEARCH", "search", "Plan", "Allocation", "predicted_drops", "allocate"]

Setting = tuple[int, float]  # (weight bits, sparsity)
FLOAT_BITS = 32


# ------------------------------------------------------------ exact score


@dataclass(frozen=True)
class Plan:
    """What the search chooses among, and how a choice is scored exactly.

    ``layers``: the selected module names; ``settings``: the candidate
    ``(bits, sparsity)`` pairs; ``result``: the audit of the step's input;
    ``rows`` maps each layer to the indices of its records; ``scales`` to
    the float32 values its grids would store (one per output channel of the
    weight, one per other parameter)."""

    layers: tuple[str, ...]
    settings: tuple[Setting, ...]
    result: Any
    rows: Mapping[str, tuple[int, ...]]
    scales: Mapping[str, int]

    def options(self, choice: Mapping[str, Setting], sparsity: Mapping[str, float] | None = None) -> ScoreOptions:
        """The run's options with ``choice`` as per-layer overrides (``sparsity``
        replaces the chosen levels, e.g. by the zeros reached)."""
        n = len(self.result.records)
        bits: list[int | None] = [None] * n
        zeros: list[float | None] = [None] * n
        storage: list[float | None] = [None] * n
        for layer, (b, s) in choice.items():
            for i in self.rows[layer]:
                bits[i], zeros[i] = b, (sparsity or {}).get(layer, s)
                declared = self.result.records[i].declared_storage_bits
                storage[i] = declared + (self.scales[layer] * FLOAT_BITS if b < FLOAT_BITS else 0)
        return ScoreOptions(freebie=self.result.options.freebie, extra=self.result.options.extra,
                            layer_weight_bits=tuple(bits), layer_sparsity=tuple(zeros),
                            layer_storage_bits=tuple(storage))

    def score(self, choice: Mapping[str, Setting], sparsity: Mapping[str, float] | None = None) -> float:
        """The exact score of the step's input records under ``choice``."""
        return self.result.rescore(self.options(choice, sparsity)).score.total


def make_plan(result: Any, targets: Mapping[str, Candidate], settings: Sequence[Setting]) -> Plan:
    """The :class:`Plan` for ``targets`` (module name -> candidate) on ``result``'s records (a module call's record is named by its module path)."""
    rows = {name: tuple(i for i, r in enumerate(result.records) if r.name == name) for name in targets}
    scales = {name: sum(p.shape[0] if p is c.tensor and p.dim() else 1
                        for p in c.module.parameters(recurse=False)) for name, c in targets.items()}
    return Plan(tuple(targets), tuple(settings), result, rows, scales)


# ------------------------------------------------------------- allocation


@dataclass(frozen=True)
class Allocation:
    """A chosen setting per layer, its predicted drop (points), exact score and multiplier."""

    choice: Mapping[str, Setting]
    drop: float
    score: float
    lam: float
    rescores: int


def predicted_drops(table: Sequence[Mapping[str, Any]], layers: Sequence[str],
                    settings: Sequence[Setting]) -> dict[str, dict[Setting, float]]:
    """The additive model: drop(bits) + drop(sparsity) per layer and setting,
    negative drops as 0, sparsity 0 as 0."""
    measured = {(r["layer"], r["kind"], float(r["level"])): max(float(r["drop"]), 0.0) for r in table}
    return {layer: {(b, s): measured[(layer, "bits", float(b))]
                    + (measured[(layer, "sparsity", float(s))] if s > 0 else 0.0) for b, s in settings}
            for layer in layers}


def _costs(plan: Plan) -> dict[str, dict[Setting, float]]:
    """Each layer's score at each setting, the other layers at the first setting
    (exact; the rules add over layers, so differences are what matters)."""
    base = {layer: plan.settings[0] for layer in plan.layers}
    return {layer: {s: plan.score({**base, layer: s}) for s in plan.settings} for layer in plan.layers}


def _pick(drops, costs, lam: float) -> dict[str, Setting]:
    return {layer: min(options, key=lambda s: (options[s] + lam * costs[layer][s], costs[layer][s]))
            for layer, options in drops.items()}


def allocate(plan: Plan, drops: Mapping[str, Mapping[Setting, float]], target: float) -> Allocation:
    """The Lagrangian allocation (see the module docstring); CompressionError
    naming the nearest reachable score when even the cheapest settings exceed ``target``."""
    costs = _costs(plan)
    cheapest = {layer: min(plan.settings, key=lambda s: (costs[layer][s], drops[layer][s])) for layer in plan.layers}
    nearest = plan.score(cheapest)
    if nearest > target:
        raise CompressionError(f"no allocation reaches target_score {target:g}: the nearest reachable score is "
                               f"{nearest:.6g} (every layer at its cheapest setting)",
                               hint=f"raise target_score to {nearest:.6g} or more, or add cheaper settings")
    lo, hi, rescores = 0.0, 1.0, len(plan.layers) * len(plan.settings) + 1
    while plan.score(_pick(drops, costs, hi)) > target and hi < 1e12:
        hi, rescores = hi * 2, rescores + 1
    if plan.score(_pick(drops, costs, lo)) <= target:
        hi = lo
    for _ in range(60 if hi > lo else 0):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if plan.score(_pick(drops, costs, mid)) <= target else (mid, hi)
        rescores += 1
    choice = _pick(drops, costs, hi) if plan.score(_pick(drops, costs, hi)) <= target else cheapest
    choice, extra = _fill(plan, drops, choice, target)
    total = sum(drops[layer][s] for layer, s in choice.items())
    return Allocation(choice, total, plan.score(choice), hi, rescores + extra + 3)


def _fill(plan: Plan, drops, choice: dict[str, Setting], target: float) -> tuple[dict[str, Setting], int]:
    """Greedily take the upgrade with the most drop saved per unit of score while within ``target``."""
    rescores, score = 0, plan.score(choice)
    while True:
        best, best_rate = None, 0.0
        for layer, now in choice.items():
            for s in plan.settings:
                saved = drops[layer][now] - drops[layer][s]
                if saved <= 0:
                    continue
                trial = plan.score({**choice, layer: s})
                rescores += 1
                rate = saved / max(trial - score, 1e-12)
                if trial <= target and rate > best_rate:
                    best, best_rate = (layer, s, trial), rate
        if best is None:
            return choice, rescores
        choice, score = {**choice, best[0]: best[1]}, best[2]


# ---------------------------------------------------------------- apply


def apply(targets: Mapping[str, Candidate], choice: Mapping[str, Setting]) -> None:
    """Zero and mask each weight to its sparsity, then put its parameters on
    their grids (fake-quant parametrizations, the mask kept) and declare the
    bits and the grid scales."""
    for name, (bits, sparsity) in choice.items():
        target, module = targets[name], targets[name].module
        if sparsity > 0:
            set_mask(module, target.weight, perturbed(target.tensor.detach(), "sparsity", sparsity) != 0)
        quantize_parameters(module, target.weight, bits,
                            lambda param, module=module, weight=target.weight:
                            module._buffers.get(f"{param}_mask") if param == weight else None)
        set_bits(module, weight=bits)


def _zero_fraction(tensor: torch.Tensor) -> float:
    return 1.0 - int(torch.count_nonzero(tensor)) / tensor.numel()


# ----------------------------------------------------------------- step


def _table(model: nn.Module, targets: Mapping[str, Candidate], options: Mapping[str, Any],
           context: StepContext) -> dict[str, Any]:
    """The sensitivity table for the search's levels: an earlier ``sensitivity``
    step's, when it covers them and no step changed the model since; else
    measured now on the calibration split."""
    settings = [("bits", int(b)) for b in options["weight_bits"]]
    settings += [("sparsity", float(s)) for s in options["sparsity"] if s > 0]
    reused = _earlier_table(context, targets, settings)
    if reused is not None:
        return reused
    loaded = load_batches(model, {"batches": None}, context)
    return measure(model, targets, settings, loaded, context.log)


def _earlier_table(context: StepContext, targets: Mapping[str, Candidate],
                   settings: list[tuple[str, float]]) -> dict[str, Any] | None:
    """The notes of the last ``sensitivity`` step, if they measured every
    (layer, setting) needed on the model as it still is."""
    for record in reversed(context.earlier):
        if record.name == "sensitivity" and record.error is None:
            table = record.notes.get("table") or []
            have = {(row["layer"], row["kind"], float(row["level"])) for row in table}
            needed = {(layer, kind, float(level)) for layer in targets for kind, level in settings}
            if not needed <= have:
                return None
            context.note("sensitivity_from", f"step {record.index}")
            return dict(record.notes)
        if record.changed:
            return None  # the model changed after any sensitivity step: measure again
    return None


def _finetune(model: nn.Module, teacher: nn.Module, options: Mapping[str, Any], context: StepContext) -> None:
    config = TrainConfig(epochs=options["epochs"], lr=options["lr"], device=context.device, progress=False,
                         evaluate=False)
    found = fit(model, context.data, config, input_shape=context.input_shape,
                num_classes=output_classes(teacher, context.input_shape),
                teacher=teacher, log=context.log)
    context.note("loss", [round(loss, 6) for loss in found["loss"]])
    model.eval()


def _reaudit(model: nn.Module, context: StepContext) -> float:
    from micronet.audit import audit

    result = context.result
    return audit(model, context.input_shape, track=result.track.name, rulebook=result.rulebook.name,
                 freebie=result.options.freebie, registries=context.registries).score.total


def search(model: nn.Module, options: Mapping[str, Any], context: StepContext) -> nn.Module:
    """Choose, apply and verify per-layer settings (see the module docstring)."""
    started = time.perf_counter()
    warner = StepWarnings("search")
    targets = select_targets(model, options, warner, context)
    settings = [(int(b), float(s)) for b in options["weight_bits"] for s in options["sparsity"]]
    found = _table(model, targets, options, context)
    plan = make_plan(context.result, targets, settings)
    allocation = allocate(plan, predicted_drops(found["table"], plan.layers, settings), options["target_score"])
    teacher = copy.deepcopy(model).eval() if options["epochs"] > 0 else None
    apply(targets, allocation.choice)
    if teacher is not None:
        _finetune(model, teacher, options, context)
    bake_weights(model)
    reached = {name: _zero_fraction(t.tensor) for name, t in targets.items()}
    score = _reaudit(model, context)
    _notes(context, allocation, found, plan, reached, score, time.perf_counter() - started)
    warner.note(context)
    if score > options["target_score"]:
        raise CompressionError(f"the searched model scores {score:.6g} after the step, above target_score "
                               f"{options['target_score']:g} (predicted {allocation.score:.6g})")
    return model


def _notes(context: StepContext, allocation: Allocation, found, plan: Plan, reached, score: float,
           seconds: float) -> None:
    context.note("settings", {layer: {"weight_bits": b, "sparsity": s} for layer, (b, s) in allocation.choice.items()})
    context.note("predicted_drop", round(allocation.drop, 4))
    context.note("predicted_score", allocation.score)
    context.note("score", score)
    context.note("rescored", plan.score(allocation.choice, reached))
    context.note("lambda", allocation.lam)
    context.note("sparsity_reached", {name: round(f, 6) for name, f in reached.items()})
    context.note("sensitivity", "measured on the calibration split")
    context.note("baseline", found["baseline"])
    context.note("rescores", allocation.rescores)
    context.note("seconds", round(seconds, 3))


def _validate(options: Mapping[str, Any]) -> None:
    if not options["weight_bits"] or not options["sparsity"]:
        raise UsageError("weight_bits and sparsity each need at least one level",
                         hint="weight_bits = [8, 4, 2], sparsity = [0, 0.5, 0.9]")


def _check_target(value: float) -> str | None:
    return None if value > 0 else f"expected a score > 0, got {value!r}"


SEARCH = CompressionStep(
    name="search",
    description="per-layer weight bits and sparsity chosen by a Lagrangian allocation over measured "
                "sensitivities to reach target_score exactly by the rules, applied (and fine-tuned)",
    run=search,
    needs_data=True,
    options=(
        StepOption("target_score", (float,), help="the score to reach or beat under the run's rulebook "
                   "and track", check=_check_target),
        StepOption("weight_bits", (list,), [8, 6, 4, 2], "weight bits each layer may take (1 to 16)",
                   check=check_bit_levels),
        StepOption("sparsity", (list,), [0, 0.5, 0.75, 0.9], "unstructured sparsities each layer may take, "
                   "0 <= s < 1", check=check_sparsity_levels),
        StepOption("layers", (list,), [], "module name globs to search (default: every Conv*/Linear and "
                   "declared weighted layer)", check=check_globs),
        StepOption("ignore", (list,), [], "module name globs to leave alone", check=check_globs),
        StepOption("epochs", (int,), 0, "epochs of distillation from the step's input model (0: none)",
                   check=at_least(0)),
        StepOption("lr", (float,), 0.01, "learning rate of the fine-tuning", check=at_least(0.0, strict=True)),
    ),
    validate=_validate,
)


@hookimpl
def micronet_register_steps():
    return [SEARCH]
