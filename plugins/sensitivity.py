"""Built-in step ``sensitivity``: how much each layer alone suffers from bits and sparsity.

For every selected layer (by default the ``weight`` of every Conv*/Linear
module and of every declared :class:`~micronet.steps.WeightedLayer`; ``layers``
/ ``ignore`` globs as in the other steps) and every setting alone:

- ``bits = b``: the weight rounded to its per-output-channel symmetric
  ``b``-bit grid (:func:`micronet.plugins.fakequant.fake_quant`, as
  ``quantize`` does; the bias and the activations stay float);
- ``sparsity = s``: the ``round(s * elements)`` smallest magnitudes of the
  weight zeroed, the layer-wise unstructured mask of ``sparsify``
  (zeros already there rank lowest);

the model runs the calibration split (the ``[data]`` table's
``calibration_batches``, or ``batches``), and top-1 (percent) and mean
cross-entropy (nats per example) are compared with the unchanged model on the
same batches. Everything else is untouched: the weight is overwritten in
place under ``torch.no_grad`` and copied back from one saved copy per layer,
so the model returned is bit-identical to the one received (the pipeline
says the step changed nothing). The batches are loaded once and kept on the
model's device, in its dtype. Structured (channel) pruning is not measured.

Cost: one evaluation (a pass over the calibration batches) for the baseline
and one per (layer, setting).

Notes left in the history: ``baseline`` ``{top1, loss}``; ``table``, one row
per (layer, setting): ``{layer, kind ("bits" | "sparsity"), level, top1, loss,
drop, loss_increase}`` with ``drop = baseline top1 - top1`` in percentage
points and ``loss_increase = loss - baseline loss``; ``ranking``, the layer
names by their worst drop, most sensitive first (ties: worst loss increase);
``batches`` / ``examples`` evaluated on; ``evaluations`` (table rows) and
``evaluations_per_second``; ``warnings``.
"""
from __future__ import annotations

import time
from typing import Any, Iterable, Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from micronet.errors import UsageError
from micronet.manager import hookimpl
from micronet.plugins.fakequant import fake_quant
from micronet.plugins.sparsify import PRUNABLE, _expand, _keep, _tile_scores
from micronet.selection import Candidate, StepWarnings, kinds_text, select_modules, weighted_candidates
from micronet.steps import CompressionStep, StepContext, StepOption, check_globs, model_device, model_dtype
from micronet.training import data as training_data
from micronet.training.data import eval_mode, logits_of

__all__ = ["SENSITIVITY", "sensitivity", "measure", "perturbed", "rank"]

Batch = tuple[torch.Tensor, torch.Tensor]


# ------------------------------------------------------------- options


def check_bit_levels(value: list) -> str | None:
    if not all(isinstance(b, int) and not isinstance(b, bool) and 1 <= b <= 16 for b in value):
        return f"expected a list of integers from 1 to 16 such as [8, 4, 2], got {value!r}"
    return None


def check_sparsity_levels(value: list) -> str | None:
    ok = all(isinstance(s, (int, float)) and not isinstance(s, bool) and 0 <= s < 1 for s in value)
    return None if ok else f"expected a list of numbers in [0, 1) such as [0.5, 0.9], got {value!r}"


def _check_batches(value: int) -> str | None:
    return None if value >= 1 else f"expected an integer >= 1, got {value!r}"


def _validate(options: Mapping[str, Any]) -> None:
    if not options["bits"] and not options["sparsity"]:
        raise UsageError("bits and sparsity are both empty: nothing to measure",
                         hint="bits = [8, 4, 2] or sparsity = [0.5, 0.9]")


# --------------------------------------------------------- measurement


def perturbed(weight: torch.Tensor, kind: str, level: float) -> torch.Tensor:
    """``weight`` fake-quantized to ``level`` bits (``kind == "bits"``) or with
    its ``round(level * numel)`` smallest magnitudes zeroed (``"sparsity"``)."""
    if kind == "bits":
        return fake_quant(weight, int(level))
    scores = _tile_scores(weight, (1, 1))  # [out, in*kernel], |w|
    keep = _keep(scores, round(level * scores.numel()))
    return weight * _expand(keep, (1, 1), weight)


def _evaluate(model: nn.Module, loaded: Sequence[Batch]) -> tuple[float, float]:
    """(top-1 in percent, mean cross-entropy per example) over ``loaded``."""
    correct, loss, total = 0, 0.0, 0
    for x, y in loaded:
        logits = logits_of(model(x))
        correct += int((logits.argmax(dim=1) == y).sum())
        loss += float(F.cross_entropy(logits.float(), y, reduction="sum"))
        total += len(y)
    return 100.0 * correct / total, loss / total


def measure(model: nn.Module, targets: Mapping[str, Candidate], settings: Iterable[tuple[str, float]],
            loaded: Sequence[Batch], log=lambda line: None) -> dict[str, Any]:
    """The baseline and one row per (layer, setting); see the module docstring.
    Each weight is overwritten in place and restored bit for bit."""
    settings = list(settings)
    rows = []
    with eval_mode(model), torch.no_grad():
        top, loss = _evaluate(model, loaded)
        started = time.perf_counter()
        for name, target in targets.items():
            weight = target.tensor
            saved = weight.detach().clone()
            layer_rows = []
            try:
                for kind, level in settings:
                    weight.copy_(perturbed(saved, kind, level))
                    t, l = _evaluate(model, loaded)
                    layer_rows.append({"layer": name, "kind": kind, "level": level, "top1": round(t, 4),
                                       "loss": round(l, 6), "drop": round(top - t, 4),
                                       "loss_increase": round(l - loss, 6)})
                    weight.copy_(saved)
            finally:
                weight.copy_(saved)
            log(_layer_line(name, layer_rows))
            rows.extend(layer_rows)
        seconds = time.perf_counter() - started
    return {"baseline": {"top1": round(top, 4), "loss": round(loss, 6)}, "table": rows,
            "ranking": rank(rows), "evaluations": len(rows),
            "evaluations_per_second": round(len(rows) / seconds, 2) if seconds > 0 else None}


def rank(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """Layer names by their worst drop, then worst loss increase, most sensitive first."""
    worst: dict[str, tuple[float, float]] = {}
    for row in rows:
        drop, increase = worst.get(row["layer"], (float("-inf"), float("-inf")))
        worst[row["layer"]] = (max(drop, row["drop"]), max(increase, row["loss_increase"]))
    return sorted(worst, key=lambda name: worst[name], reverse=True)


def _layer_line(name: str, rows: Sequence[Mapping[str, Any]]) -> str:
    """``sensitivity: conv1: drop 8b 0.00, 4b 0.56, 2b 12.22, 50% 0.00, ... points``."""
    parts = [f"{row['level']}b" if row["kind"] == "bits" else f"{row['level']:.0%}" for row in rows]
    drops = ", ".join(f"{part} {row['drop']:.2f}" for part, row in zip(parts, rows))
    return f"sensitivity: {name}: top-1 drop {drops} points"


# ---------------------------------------------------------------- step


def select_targets(model: nn.Module, options: Mapping[str, Any], warner: StepWarnings,
                   context: StepContext) -> dict[str, Candidate]:
    """The weighted layers the ``layers`` / ``ignore`` globs pick (Conv*/Linear and
    declared ones), each glob that matches nothing warned."""
    declared = context.weighted_layers
    candidates = weighted_candidates(model.named_modules(), declared, PRUNABLE)
    chosen = select_modules(candidates, options["layers"], options["ignore"], 0,
                            lambda c: c.tensor.numel(), kinds_text("Conv/Linear", declared) + " layer")
    for message in chosen.unmatched:
        warner.warn(message)
    return chosen.modules


def load_batches(model: nn.Module, options: Mapping[str, Any], context: StepContext) -> list[Batch]:
    """The calibration batches, once, on the model's device and in its dtype."""
    if context.data is None:
        raise UsageError("sensitivity needs a [data] table", hint='[data] dataset = "digits"')
    device, dtype = model_device(model), model_dtype(model)
    classes = training_data.output_classes(model, context.input_shape)
    found = training_data.batches(context.data, context.input_shape, options["batches"], num_classes=classes,
                                  split="calibration")
    if not found:
        raise UsageError("sensitivity has no calibration batches to evaluate on",
                         hint="set calibration_batches in [data] (or batches) to 1 or more")
    return [(x.to(device, dtype), y.to(device)) for x, y in found]


def sensitivity(model: nn.Module, options: Mapping[str, Any], context: StepContext) -> nn.Module:
    """Measure each selected layer's sensitivity (see the module docstring) and
    return ``model`` unchanged."""
    loaded = load_batches(model, options, context)
    warner = StepWarnings("sensitivity")
    targets = select_targets(model, options, warner, context)
    settings = [("bits", int(b)) for b in options["bits"]] + [("sparsity", float(s)) for s in options["sparsity"]]
    found = measure(model, targets, settings, loaded, context.log)
    context.note("batches", len(loaded))
    context.note("examples", sum(len(y) for _, y in loaded))
    for key, value in found.items():
        context.note(key, value)
    warner.note(context)
    return model


SENSITIVITY = CompressionStep(
    name="sensitivity",
    description="per-layer top-1 drop and loss increase on the calibration split at each bits and "
                "sparsity setting; the model is not changed",
    run=sensitivity,
    needs_data=True,
    options=(
        StepOption("layers", (list,), [], "module name globs to measure (default: every Conv*/Linear "
                   "and declared weighted layer)", check=check_globs),
        StepOption("ignore", (list,), [], "module name globs to leave out", check=check_globs),
        StepOption("bits", (list,), [8, 4, 2], "weight bits to try, each alone (1 to 16)", check=check_bit_levels),
        StepOption("sparsity", (list,), [0.5, 0.75, 0.9], "unstructured magnitude sparsities to try, "
                   "each alone, 0 <= s < 1", check=check_sparsity_levels),
        StepOption("batches", (int,), None, "calibration batches to evaluate on (default: the [data] "
                   "table's calibration_batches)", check=_check_batches),
    ),
    validate=_validate,
)


@hookimpl
def micronet_register_steps():
    return [SENSITIVITY]
