"""Built-in step ``sparsify``: magnitude pruning to a target sparsity.

Every selected weight (by default the ``weight`` of every Conv*/Linear
module, and the weight of every layer a plugin declared as a
:class:`~micronet.steps.WeightedLayer`) is viewed as ``[out, in*kernel]``, the view
:mod:`micronet.sparsity` measures, and cut into ``block`` tiles (``"1x1"``
is unstructured, ``"1x4"`` four consecutive inputs of one output, ``"4x1"``
four outputs at one input position). A tile's magnitude is the L1 norm of
its values (``|w|`` for 1x1). The lowest ``round(amount * tiles)`` tiles are
zeroed: per weight (``scope = "layer"``: every weight reaches ``amount``) or
ranked together across all selected weights (``scope = "global"``: the
weights reach ``amount`` in total, each layer whatever its magnitudes give).
``amount`` is the fraction of zeros after the step, zeros already there
included (they rank lowest): ``of = "total"``, the default. With ``of =
"remaining"`` it is the fraction of the still-nonzero tiles to zero now, as
``torch.nn.utils.prune`` counts iterative pruning: from dense it is the same,
and ten steps of 0.1 leave 0.9 ** 10 of the weights (65.13% zeros, up to
each step's rounding to whole tiles). The count is per weight (``layer``) or
over all selected weights (``global``): ``round(amount * nonzero tiles)``
more tiles are zeroed. Values an earlier step masked (:mod:`micronet.masks`)
count as zero and stay zero whatever the weight holds there now.

The zeros are real zeros in the weights, and each pruned weight gets a mask
(:mod:`micronet.masks`) so a later fine-tuning step keeps them at
zero. ``schedule = n`` prunes in ``n`` geometric steps, the sparsity after
step ``t`` being ``1 - (1 - amount) ** (t / n)`` (each step removes the same
fraction of what is left); without training in between this ends at the
same zeros as one step, and the targets are recorded for a trainer to
interleave with. With ``of = "remaining"`` each of the ``n`` steps zeroes
``1 - (1 - amount) ** (1 / n)`` of what is still nonzero.

How the rules charge it: ``micronet-2019`` charges a sparse weight its
nonzeros plus a bitmask of one bit per tile (the audit measures the tile
shape from the zeros; zeros that happen to line up into larger candidate
blocks are charged as those) and shrinks the dot products of conv and
linear layers, mults and adds, by the density; a weight is charged dense
when that is cheaper (low sparsity). ``imta-2021`` scales all parameters by
(1 - the fraction of zero parameters) and leaves ops unchanged.

Notes left in the history: ``of``, ``schedule`` (the sparsity after each
step; with ``of = "remaining"`` the fraction of the nonzero tiles each step
zeroes), ``sparsity_before`` and ``sparsity`` (per weight, the fraction of
zeros before the step and reached; masked values count as zeros), ``zeros`` /
``elements`` over the selected weights, ``skipped`` (weights left alone and
why) and ``warnings``.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

import torch
from torch import nn

from micronet.manager import hookimpl
from micronet.masks import MASK_SUFFIX, set_mask
from micronet.selection import Candidate, StepWarnings, kinds_text, select_modules, weighted_candidates
from micronet.steps import CompressionStep, StepContext, StepOption, at_least, check_globs

__all__ = ["SPARSIFY", "sparsify", "parse_block", "schedule_targets", "remaining_schedule"]

#: Modules whose ``weight`` is pruned by default (besides declared weighted layers).
PRUNABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
            nn.ConvTranspose3d, nn.Linear)

_BLOCK = re.compile(r"^\s*(\d+)\s*x\s*(\d+)\s*$")


# ------------------------------------------------------------- options


def parse_block(text: str) -> tuple[int, int]:
    """``"1x4"`` -> ``(1, 4)``: rows (outputs) x columns (inputs*kernel)."""
    match = _BLOCK.match(text)
    if not match or int(match[1]) < 1 or int(match[2]) < 1:
        raise ValueError(f"expected a block like '1x4' (rows x columns, each >= 1), got {text!r}")
    return int(match[1]), int(match[2])


def _check_block(value: str) -> str | None:
    try:
        parse_block(value)
    except ValueError as error:
        return str(error)
    return None


def _check_amount(value: float) -> str | None:
    return None if 0 <= value < 1 else f"expected 0 <= amount < 1, got {value!r}"


# ------------------------------------------------------------- pruning


def _matrix_shape(weight: torch.Tensor) -> tuple[int, int]:
    """The ``[out, in*kernel]`` view :mod:`micronet.sparsity` measures."""
    rows = weight.shape[0] if weight.dim() > 1 else 1
    return rows, weight.numel() // max(rows, 1)


def _tile_scores(weight: torch.Tensor, block: tuple[int, int], mask: torch.Tensor | None = None) -> torch.Tensor:
    """L1 norm of each block tile: ``[rows/br, cols/bc]`` (float32); values
    ``mask`` (True = kept) drops count as zero."""
    rows, cols = _matrix_shape(weight)
    br, bc = block
    magnitude = weight.detach().float().abs()
    if mask is not None:
        magnitude = magnitude * mask.to(magnitude.device)
    if block == (1, 1):
        return magnitude.reshape(rows, cols)
    return magnitude.reshape(rows // br, br, cols // bc, bc).sum(dim=(1, 3))


def _expand(keep: torch.Tensor, block: tuple[int, int], weight: torch.Tensor) -> torch.Tensor:
    """A per-tile keep mask as a mask of ``weight``'s shape."""
    br, bc = block
    full = keep[:, None, :, None].expand(keep.shape[0], br, keep.shape[1], bc)
    return full.reshape(weight.shape)


def _keep(scores: torch.Tensor, k: int) -> torch.Tensor:
    """True except at exactly ``k`` of the lowest scores (ties broken by position)."""
    flat = scores.flatten()
    if k <= 0:
        return torch.ones_like(scores, dtype=torch.bool)
    if k >= flat.numel():
        return torch.zeros_like(scores, dtype=torch.bool)
    threshold = flat.kthvalue(k).values
    prune = flat <= threshold
    extra = int(prune.sum()) - k  # ties at the threshold: keep the last ones
    if extra > 0:
        prune[(flat == threshold).nonzero().flatten()[-extra:]] = False
    return ~prune.view_as(scores)


def _earlier_mask(target: Candidate) -> torch.Tensor | None:
    return target.module._buffers.get(target.weight + MASK_SUFFIX)


def _pruned_tiles(scores: torch.Tensor, fraction: float, of: str) -> int:
    """How many tiles are zero after the step: ``fraction`` of them all
    (``of = "total"``), or the zero ones plus ``fraction`` of the others
    (``"remaining"``)."""
    if of == "total":
        return round(fraction * scores.numel())
    zero = int((scores == 0).sum())
    return zero + round(fraction * (scores.numel() - zero))


def _prune(targets: Mapping[str, Candidate], fraction: float, scope: str, block: tuple[int, int],
           of: str = "total") -> None:
    """Zero the lowest tiles of every target's weight (``fraction`` as
    :func:`_pruned_tiles` reads it, per weight or over all of them) and mask
    them (an earlier mask stays in force; its dropped values rank as zeros)."""
    scores = {name: _tile_scores(target.tensor, block, _earlier_mask(target)) for name, target in targets.items()}
    if scope == "layer":
        keep = {name: _keep(s, _pruned_tiles(s, fraction, of)) for name, s in scores.items()}
    else:
        flat = torch.cat([s.flatten() for s in scores.values()])
        kept = _keep(flat, _pruned_tiles(flat, fraction, of)).split([s.numel() for s in scores.values()])
        keep = {name: k.view_as(scores[name]) for name, k in zip(scores, kept)}
    for name, target in targets.items():
        mask = _expand(keep[name], block, target.tensor)
        earlier = _earlier_mask(target)
        set_mask(target.module, target.weight, mask if earlier is None else mask & earlier)


def schedule_targets(amount: float, steps: int) -> list[float]:
    """Sparsity after each of ``steps`` geometric steps; the last is ``amount``."""
    return [1 - (1 - amount) ** (t / steps) if t < steps else amount for t in range(1, steps + 1)]


def remaining_schedule(amount: float, steps: int) -> list[float]:
    """The fraction of the nonzero weights each of ``steps`` steps zeroes so
    that together they zero ``amount`` of them: ``1 - (1 - amount) ** (1 / steps)``."""
    return [amount if steps == 1 else 1 - (1 - amount) ** (1 / steps)] * steps


# ---------------------------------------------------------------- step


def _targets(model: nn.Module, options: Mapping[str, Any], block: tuple[int, int], warner: StepWarnings,
             context: StepContext) -> tuple[dict[str, Candidate], dict[str, str]]:
    declared = context.weighted_layers
    candidates = weighted_candidates(model.named_modules(), declared, PRUNABLE)
    chosen = select_modules(candidates, options["layers"], options["ignore"], options["min_size"],
                            lambda c: c.tensor.numel(), kinds_text("Conv/Linear", declared) + " layer")
    for message in chosen.unmatched:
        warner.warn(message)
    skipped = {name: f"weight smaller than min_size {options['min_size']}" for name in chosen.small}
    targets = {}
    for name, target in chosen.modules.items():
        rows, cols = _matrix_shape(target.tensor)
        if target.tensor.dim() < 2:
            skipped[name] = f"weight {target.weight!r} has {target.tensor.dim()} dimension(s), not [out, in, ...]"
        elif rows % block[0] or cols % block[1]:
            skipped[name] = (f"weight viewed as [{rows}, {cols}] does not split into "
                             f"{block[0]}x{block[1]} blocks; left unpruned")
        else:
            targets[name] = target
            continue
        warner.warn(f"{name}: {skipped[name]}")
    return targets, skipped


def _zero_fraction(target: Candidate) -> float:
    """The fraction of ``target``'s weight that is zero or masked."""
    weight, mask = target.tensor.detach(), _earlier_mask(target)
    kept = weight != 0 if mask is None else (weight != 0) & mask.to(weight.device)
    return 1.0 - int(kept.sum()) / weight.numel()


def sparsify(model: nn.Module, options: Mapping[str, Any], context: StepContext) -> nn.Module:
    """Magnitude-prune the selected weights of ``model`` (in place on the
    pipeline's copy) and return it; see the module docstring."""
    warner = StepWarnings("sparsify")
    block = parse_block(options["block"])
    targets, skipped = _targets(model, options, block, warner, context)
    if not targets and skipped:
        warner.warn("no weight was selected: nothing pruned")
    of = options["of"]
    schedule = (schedule_targets if of == "total" else remaining_schedule)(options["amount"], options["schedule"])
    before = {name: _zero_fraction(target) for name, target in targets.items()}
    if targets:
        for fraction in schedule:
            _prune(targets, fraction, options["scope"], block, of)
    reached = {name: _zero_fraction(target) for name, target in targets.items()}
    for name, fraction in reached.items():
        if fraction == 1.0 and options["amount"] > 0:
            warner.warn(f"{name}: every weight was pruned (its output no longer depends on its input)")
    zeros = sum(round(f * targets[n].tensor.numel()) for n, f in reached.items())
    context.note("of", of)
    context.note("schedule", [round(s, 6) for s in schedule])
    context.note("sparsity_before", {name: round(f, 6) for name, f in before.items()})
    context.note("sparsity", {name: round(f, 6) for name, f in reached.items()})
    context.note("zeros", zeros)
    context.note("elements", sum(t.tensor.numel() for t in targets.values()))
    if skipped:
        context.note("skipped", skipped)
    warner.note(context)
    return model


SPARSIFY = CompressionStep(
    name="sparsify",
    description="magnitude pruning (unstructured or in blocks) to a target sparsity; masks keep the zeros",
    run=sparsify,
    options=(
        StepOption("amount", (float,), help="0 <= amount < 1: the fraction of zeros to reach in the selected "
                   "weights (of = 'total') or of their nonzeros to zero now (of = 'remaining')",
                   check=_check_amount),
        StepOption("of", (str,), "total", "what amount is a fraction of: 'total' (the zeros reached, those "
                   "already there included) or 'remaining' (the weights still nonzero: iterative pruning, "
                   "ten steps of 0.1 reach 1 - 0.9**10 = 65.13%)", choices=("total", "remaining")),
        StepOption("scope", (str,), "layer", "'layer': every weight reaches amount; 'global': ranked "
                   "across all selected weights", choices=("layer", "global")),
        StepOption("schedule", (int,), 1, "prune in this many geometric steps", check=at_least(1)),
        StepOption("block", (str,), "1x1", "tile pruned together over the weight viewed as "
                   "[out, in*kernel]: '1x1' (unstructured), '1x4', '4x1', ...", check=_check_block),
        StepOption("layers", (list,), [], "module name globs to prune (default: every Conv*/Linear "
                   "and declared weighted layer)", check=check_globs),
        StepOption("ignore", (list,), [], "module name globs to leave alone", check=check_globs),
        StepOption("min_size", (int,), 0, "leave weights with fewer elements alone", check=at_least(0)),
    ),
)


@hookimpl
def micronet_register_steps():
    return [SPARSIFY]
