"""The ``search`` step's arithmetic: candidate settings, their exact score, the allocations.

A :class:`Setting` is what one layer may become: weight bits, the bits of
its input activations (``32``: left as they are), unstructured sparsity
and the fraction of output channels zeroed. A :class:`Plan` prices any
choice of one setting per layer *exactly* by the run's rulebook: the step
input's records re-scored with per-layer :class:`~micronet.rules.ScoreOptions`
overrides, no re-trace:

- ``layer_weight_bits``: the setting's weight bits;
- ``layer_act_bits``: its input bits (``None`` for 32: as measured);
- ``layer_sparsity``: the zero fraction of the weight *as the setting
  leaves it* (:func:`setting_mask`, the very mask :func:`micronet.plugins.search.apply`
  puts on the layer): its ``min(round(channels * out), out - 1)`` output
  channels of lowest L2 norm zeroed (whole rows), then its ``round(sparsity
  * elements)`` smallest magnitudes (the channel zeros rank lowest, so they
  overlap), then the weights its per-output-channel grid at the setting's
  bits rounds to zero (:func:`~micronet.plugins.fakequant.fake_quant`,
  ``|w| < scale / 2``: at 2 bits, every weight under half its row's
  largest; a binary grid has none). These grid zeros are real zeros the
  rules charge as sparsity, so 2-bit layers are priced at what they cost.
  Computed once per layer and setting by :func:`make_plan` (one tensor
  operation each; the input bits change nothing here). A zeroed channel
  is priced as zeros of the layer's own weight, as the rules count a
  masked model: the next layer's inputs from it are zero at run time only,
  which the rules do not let an entry exploit. The audit of the applied
  model finds exactly these zeros; it may find channel zeros in blocks (a
  cheaper bitmask) and score lower;
- ``layer_storage_bits``: the storage the record declares plus the float32
  scales the setting adds: one per output channel of the weight and one per
  other parameter (the grids), and one for the input quantizer when the
  input is quantized (as ``quantize`` declares them).

The predicted accuracy cost of a setting is additive (:func:`predicted_drops`):
its drop at those weight bits, plus at those input bits, plus at that
sparsity, plus at that channel fraction, each measured with the layer alone
perturbed (the ``sensitivity`` table; neutral levels cost 0; negative drops,
noise on a small split, count as 0), summed over layers.

Allocation, two problems with one machinery (a Lagrangian relaxation of the
multiple-choice knapsack). For a multiplier ``lambda`` each layer takes the
setting minimising ``drop + lambda * cost`` (its cost: the exact score with
that layer changed alone); the predicted drop rises and the score falls as
``lambda`` grows.

- :func:`allocate` (``target_score``): bisect to the smallest ``lambda``
  whose allocation's exact score is <= the budget, then, while within it,
  take the upgrade (a setting of smaller drop) that saves the most drop per
  unit of score, checked exactly each time.
- :func:`allocate_drop` (``max_accuracy_drop``): bisect to the largest
  ``lambda`` whose predicted drop is <= the bound, then, while within it,
  take the downgrade that saves the most score per point of drop, as long
  as the exact score falls.

Every answer's score is exact; what is predicted is the drop.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch

from micronet.errors import CompressionError
from micronet.plugins.fakequant import fake_quant
from micronet.plugins.sensitivity import channel_keep, perturbed
from micronet.rules import ScoreOptions
from micronet.selection import Candidate

__all__ = ["Setting", "setting_mask", "Plan", "make_plan", "Allocation", "predicted_drops", "allocate", "allocate_drop",
           "total", "FLOAT_BITS", "NEUTRAL"]

FLOAT_BITS = 32
#: The level of each kind that changes nothing (so costs no accuracy and needs no measurement).
NEUTRAL = {"act_bits": FLOAT_BITS, "sparsity": 0.0, "channels": 0.0}
_LAMBDA_MAX = 1e12


@dataclass(frozen=True, order=True)
class Setting:
    """One layer's setting: weight bits (1 to 16), input activation bits
    (2 to 16, or 32: as they are), unstructured sparsity and channel
    fraction (each in [0, 1))."""

    weight_bits: int
    act_bits: int = FLOAT_BITS
    sparsity: float = 0.0
    channels: float = 0.0

    def levels(self) -> tuple[tuple[str, float], ...]:
        """``(kind, level)`` per sensitivity kind, the neutral ones left out."""
        found = [("bits", self.weight_bits), ("act_bits", self.act_bits), ("sparsity", self.sparsity),
                 ("channels", self.channels)]
        return tuple((kind, level) for kind, level in found if NEUTRAL.get(kind) != level)

    def to_dict(self) -> dict[str, Any]:
        return {"weight_bits": self.weight_bits, "act_bits": self.act_bits, "sparsity": self.sparsity,
                "channels": self.channels}


Choice = Mapping[str, Setting]


def setting_mask(weight: torch.Tensor, setting: Setting) -> torch.Tensor:
    """Bool, ``weight``'s shape, True where ``weight`` stays nonzero once
    ``setting`` is applied (see the module docstring): the lowest-L2-norm
    channels zeroed (:func:`~micronet.plugins.sensitivity.channel_keep`),
    the smallest magnitudes zeroed (:func:`~micronet.plugins.sensitivity.perturbed`),
    and what the ``weight_bits`` grid rounds to zero (:func:`~micronet.plugins.fakequant.fake_quant`,
    per output channel). ``weight`` itself is left as it is."""
    found = weight.detach()
    if setting.channels > 0:
        found = perturbed(found, "channels", setting.channels)
    if setting.sparsity > 0:
        found = perturbed(found, "sparsity", setting.sparsity)
    return fake_quant(found, setting.weight_bits) != 0


@dataclass(frozen=True)
class Plan:
    """What the search chooses among, and how a choice is scored exactly.

    ``layers``: the selected module names; ``choices``: each layer's
    candidate settings; ``result``: the audit of the step's input; ``rows``
    maps each layer to the indices of its records; ``scales`` to the float32
    values its grids would store; ``zero_fractions`` to the zero fraction
    each of its candidate settings leaves in its weight (:func:`setting_mask`)."""

    layers: tuple[str, ...]
    choices: Mapping[str, tuple[Setting, ...]]
    result: Any
    rows: Mapping[str, tuple[int, ...]]
    scales: Mapping[str, int]
    zero_fractions: Mapping[str, Mapping[Setting, float]]

    def zeros(self, layer: str, setting: Setting) -> float:
        """The fraction of zeros ``setting`` leaves in ``layer``'s weight, grid zeros included
        (see the module docstring); a KeyError for a setting not among the layer's candidates."""
        return self.zero_fractions[layer][setting]

    def options(self, choice: Choice, sparsity: Mapping[str, float] | None = None) -> ScoreOptions:
        """The run's options with ``choice`` as per-layer overrides (``sparsity``
        replaces the zero fractions, e.g. by those reached)."""
        n = len(self.result.records)
        bits: list[int | None] = [None] * n
        acts: list[int | None] = [None] * n
        zeros: list[float | None] = [None] * n
        storage: list[float | None] = [None] * n
        for layer, setting in choice.items():
            quantized_input = setting.act_bits < FLOAT_BITS
            added = (self.scales[layer] + quantized_input) * FLOAT_BITS
            fraction = (sparsity or {}).get(layer, self.zeros(layer, setting))
            for i in self.rows[layer]:
                bits[i], zeros[i] = setting.weight_bits, fraction
                acts[i] = setting.act_bits if quantized_input else None
                storage[i] = self.result.records[i].declared_storage_bits + added
        return ScoreOptions(freebie=self.result.options.freebie, extra=self.result.options.extra,
                            layer_weight_bits=tuple(bits), layer_act_bits=tuple(acts),
                            layer_sparsity=tuple(zeros), layer_storage_bits=tuple(storage))

    def score(self, choice: Choice, sparsity: Mapping[str, float] | None = None) -> float:
        """The exact score of the step's input records under ``choice``."""
        return self.result.rescore(self.options(choice, sparsity)).score.total


def make_plan(result: Any, targets: Mapping[str, Candidate],
              choices: Sequence[Setting] | Mapping[str, Sequence[Setting]]) -> Plan:
    """The :class:`Plan` for ``targets`` (module name -> candidate) on
    ``result``'s records (a module call's record is named by its module
    path); ``choices``: one list for every layer, or a list per layer."""
    per_layer = {name: tuple(choices[name] if isinstance(choices, Mapping) else choices) for name in targets}
    rows = {name: tuple(i for i, r in enumerate(result.records) if r.name == name) for name in targets}
    scales = {name: sum(p.shape[0] if p is c.tensor and p.dim() else 1
                        for p in c.module.parameters(recurse=False)) for name, c in targets.items()}
    zeros = {name: _zero_fractions(c.tensor, per_layer[name]) for name, c in targets.items()}
    return Plan(tuple(targets), per_layer, result, rows, scales, zeros)


def _zero_fractions(weight: torch.Tensor, settings: Sequence[Setting]) -> dict[Setting, float]:
    """Each setting's zero fraction of ``weight`` (:func:`setting_mask`), computed once per
    (weight bits, sparsity, channels): the input bits leave the weight as it is."""
    found: dict[tuple[int, float, float], float] = {}
    with torch.no_grad():
        for s in settings:
            key = (s.weight_bits, s.sparsity, s.channels)
            if key not in found:
                found[key] = 1.0 - int(torch.count_nonzero(setting_mask(weight, s))) / max(weight.numel(), 1)
    return {s: found[(s.weight_bits, s.sparsity, s.channels)] for s in settings}


# ------------------------------------------------------------- prediction


def predicted_drops(table: Sequence[Mapping[str, Any]], plan: Plan,
                    key: str = "drop") -> dict[str, dict[Setting, float]]:
    """The additive model: per layer and candidate setting, the sum of the
    measured drops (points; ``key="loss_increase"``: cross-entropy
    increases, nats) of its non-neutral levels, negative ones as 0.
    A KeyError names a (layer, kind, level) the table lacks."""
    measured = {(r["layer"], r["kind"], float(r["level"])): max(float(r[key]), 0.0) for r in table}
    return {layer: {s: sum(measured[(layer, kind, float(level))] for kind, level in s.levels())
                    for s in plan.choices[layer]} for layer in plan.layers}


# ------------------------------------------------------------- allocation


@dataclass(frozen=True)
class Allocation:
    """A chosen setting per layer, its predicted drop (points), exact score,
    multiplier, the re-scores it took, and ``bound``: the nearest reachable
    score (:func:`allocate`) or the least predicted drop (:func:`allocate_drop`)."""

    choice: Mapping[str, Setting]
    drop: float
    score: float
    lam: float
    rescores: int
    bound: float


def _costs(plan: Plan) -> dict[str, dict[Setting, float]]:
    """Each layer's score at each setting, the other layers at their first
    (exact; the rules add over layers, so differences are what matters)."""
    base = {layer: plan.choices[layer][0] for layer in plan.layers}
    return {layer: {s: plan.score({**base, layer: s}) for s in plan.choices[layer]} for layer in plan.layers}


def _pick(plan: Plan, drops, costs, lam: float) -> dict[str, Setting]:
    return {layer: min(plan.choices[layer], key=lambda s: (drops[layer][s] + lam * costs[layer][s],
                                                           costs[layer][s], drops[layer][s]))
            for layer in plan.layers}


def total(drops: Mapping[str, Mapping[Setting, float]], choice: Choice) -> float:
    """The predicted drop of ``choice``: the sum over its layers."""
    return sum(drops[layer][s] for layer, s in choice.items())


def _bisect(fits: Callable[[float], bool], smallest: bool) -> tuple[float, int]:
    """For ``fits`` monotone in ``lambda`` >= 0: the smallest ``lambda`` where
    it holds when it goes from false to true (``smallest``), else the largest
    where it holds when it goes from true to false (60 halvings; the end of
    [0, 1e12] nearest an answer when there is none). Returns it and the
    number of ``fits`` calls (each an exact re-score or a sum of drops)."""
    calls = 0

    def inside(lam: float) -> bool:  # on the side of the answer where fits(lam) == smallest
        nonlocal calls
        calls += 1
        return fits(lam) == smallest

    if smallest and inside(0.0):
        return 0.0, calls
    lo, hi = 0.0, 1.0
    while not inside(hi):
        if hi >= _LAMBDA_MAX:
            return hi, calls
        lo, hi = hi, hi * 2
    for _ in range(60):  # smallest: fits(lo) false, fits(hi) true; else fits(lo) true, fits(hi) false
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if inside(mid) else (mid, hi)
    return (hi if smallest else lo), calls


def allocate(plan: Plan, drops: Mapping[str, Mapping[Setting, float]], target: float) -> Allocation:
    """The least predicted drop whose exact score is <= ``target`` (see the
    module docstring); CompressionError naming the nearest reachable score
    when even the cheapest settings exceed ``target``."""
    costs = _costs(plan)
    rescores = sum(map(len, plan.choices.values()))
    cheapest = {layer: min(plan.choices[layer], key=lambda s: (costs[layer][s], drops[layer][s]))
                for layer in plan.layers}
    nearest = plan.score(cheapest)
    if nearest > target:
        raise CompressionError(f"no allocation reaches target_score {target:g}: the nearest reachable score is "
                               f"{nearest:.6g} (every layer at its cheapest setting)",
                               hint=f"raise target_score to {nearest:.6g} or more, or add cheaper settings")
    lam, calls = _bisect(lambda lam: plan.score(_pick(plan, drops, costs, lam)) <= target, smallest=True)
    choice = _pick(plan, drops, costs, lam)
    if plan.score(choice) > target:
        choice = cheapest
    choice, extra = _upgrade(plan, drops, costs, choice, target)
    return Allocation(choice, total(drops, choice), plan.score(choice), lam, rescores + calls + extra + 3, nearest)


def _upgrade(plan: Plan, drops, costs, choice: dict[str, Setting], target: float) -> tuple[dict[str, Setting], int]:
    """Greedily take the upgrade saving the most drop per unit of score
    (ranked by the layer's own cost, checked exactly) while within ``target``."""
    rescores = 0
    while True:
        moves = []
        for layer, now in choice.items():
            for s in plan.choices[layer]:
                saved = drops[layer][now] - drops[layer][s]
                if saved > 0:
                    moves.append((saved / max(costs[layer][s] - costs[layer][now], 1e-15), layer, s))
        for _, layer, s in sorted(moves, key=lambda m: m[0], reverse=True):
            trial = {**choice, layer: s}
            rescores += 1
            if plan.score(trial) <= target:
                choice = trial
                break
        else:
            return choice, rescores


def allocate_drop(plan: Plan, drops: Mapping[str, Mapping[Setting, float]], bound: float) -> Allocation:
    """The lowest exact score whose predicted drop is <= ``bound`` points (see
    the module docstring); CompressionError naming the least predicted drop
    when even the safest settings exceed ``bound``."""
    costs = _costs(plan)
    rescores = sum(map(len, plan.choices.values()))
    safest = _pick(plan, drops, costs, 0.0)
    least = total(drops, safest)
    if least > bound:
        raise CompressionError(f"no allocation keeps the predicted top-1 drop within max_accuracy_drop {bound:g}: "
                               f"the least predicted drop is {least:.4g} points",
                               hint=f"raise max_accuracy_drop to {least:.4g} or more, or add safer settings "
                                    "(more weight bits)")
    lam, calls = _bisect(lambda lam: total(drops, _pick(plan, drops, costs, lam)) <= bound, smallest=False)
    choice = _pick(plan, drops, costs, lam)
    if total(drops, choice) > bound:
        choice = safest
    choice, extra = _downgrade(plan, drops, costs, choice, bound)
    return Allocation(choice, total(drops, choice), plan.score(choice), lam, rescores + extra + 1, least)


def _downgrade(plan: Plan, drops, costs, choice: dict[str, Setting], bound: float) -> tuple[dict[str, Setting], int]:
    """Greedily take the downgrade saving the most score per point of drop
    (ranked by the layer's own cost) while the predicted drop stays within
    ``bound`` and the exact score falls."""
    rescores, score, predicted = 1, plan.score(choice), total(drops, choice)
    while True:
        moves = []
        for layer, now in choice.items():
            for s in plan.choices[layer]:
                saved, added = costs[layer][now] - costs[layer][s], drops[layer][s] - drops[layer][now]
                if saved > 0 and predicted + added <= bound:
                    moves.append((saved / max(added, 1e-15), layer, s))
        for _, layer, s in sorted(moves, key=lambda m: m[0], reverse=True):
            trial = {**choice, layer: s}
            rescores += 1
            trial_score = plan.score(trial)
            if trial_score < score:
                choice, score, predicted = trial, trial_score, total(drops, trial)
                break
        else:
            return choice, rescores
