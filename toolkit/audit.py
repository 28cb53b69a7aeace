"""``audit()``: resolve -> capture -> walk -> score, and the Result it returns."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import torch
from torch import nn

from .capture import capture, forget_constants, held_constants
from .errors import UsageError
from .inputs import (InputSpec, ModelInput, bind, describe, forward_parameters, normalise, parse_dtype,
                     parse_input_shape)
from .manager import Registries, default_registries
from .precision import Precision, check_bits, parse_bits
from .records import UNCOUNTED, LayerRecord, TensorInfo
from .rules import LayerCost, Rulebook, Score, ScoreOptions, Scoring, Track
from .steps import model_device
from .walk import WalkSettings, walk
from .walk_export import walk_exported
from .whatif import WhatIfGrid, parse_what_if, what_if_grid

__all__ = ["audit", "Result", "UncountedWarning", "default_registries", "parse_input_shape"]


class UncountedWarning(UserWarning):
    """Some nodes have no counter: their cost is missing from the score."""


@dataclass(frozen=True)
class Result:
    """Everything an audit learned: records, per-layer costs, score, totals.

    ``layers`` pairs each record with its cost; ``rows()`` gives the flat
    per-layer dicts every report renders (one source for every format).
    """

    model: str
    input_shape: tuple[int, ...]
    records: tuple[LayerRecord, ...]
    scoring: Scoring
    rulebook: Rulebook
    track: Track
    options: ScoreOptions
    captured_via: str = "fx"
    unused_params: int = 0
    warnings: tuple[str, ...] = ()
    accuracy: float | None = None
    _prepared: Any = field(default=None, repr=False, compare=False)
    inputs: tuple[ModelInput, ...] = ()

    @property
    def input_text(self) -> str:
        """The inputs in words for headers: ``1x3x32x32`` for one float32 input,
        ``x 1x4, y 1x8 int64`` for several or another dtype."""
        if not self.inputs or len(self.inputs) == 1 and self.inputs[0].dtype == torch.float32 \
                and not self.inputs[0].images:
            return "x".join(map(str, self.input_shape))
        return describe(self.inputs)

    @property
    def meets_bar(self) -> bool | None:
        """Whether the measured top-1 accuracy reaches the track's quality bar
        (None when accuracy was not measured): the score only counts if so."""
        return self.track.meets_bar(self.accuracy)

    @property
    def num_classes(self) -> int | None:
        """Size of the model's output (its last dimension), from the graph."""
        for record in reversed(self.records):
            if record.status != "free" and record.output_shapes:
                return record.output_shapes[0][-1]
        return None

    @property
    def score(self) -> Score:
        return self.scoring.score

    @property
    def totals(self) -> dict[str, float]:
        return self.scoring.totals

    @property
    def layers(self) -> tuple[tuple[LayerRecord, LayerCost], ...]:
        return tuple(zip(self.records, self.scoring.layers))

    @property
    def uncounted(self) -> tuple[LayerRecord, ...]:
        return tuple(r for r in self.records if r.status == UNCOUNTED)

    def rows(self) -> list[dict[str, Any]]:
        """One dict per node, units in the keys' documentation (see docs).

        Costs, MACs and bits charged are the rulebook's (:class:`LayerCost`),
        ``share`` the layer's fraction of the score (:meth:`Score.share`);
        ``rule`` / ``plugin`` name the counter behind the numbers."""
        return [_row(record, cost, self.score) for record, cost in self.layers]

    def to_dict(self) -> dict[str, Any]:
        """The audit JSON document (see README, 'JSON format')."""
        score = self.score
        return {
            "model": self.model,
            "input_shape": list(self.input_shape),
            "inputs": [i.to_dict() for i in self.inputs],
            "rulebook": self.rulebook.name,
            "track": self.track.name,
            "freebie": score.freebie,
            "score": {"total": score.total, "storage_term": score.storage_term, "ops_term": score.ops_term},
            "reference": {"model": self.track.reference_model, "params": self.track.reference_params,
                          "ops": self.track.reference_ops, "quality_bar_top1": self.track.quality_bar},
            "totals": dict(self.totals),
            "accuracy": None if self.accuracy is None else {
                "top1": self.accuracy, "quality_bar": self.track.quality_bar, "meets_bar": self.meets_bar,
                "metric": self.track.metric},  # "top1" (percent) or "perplexity": which way the bar points
            "unused_params": self.unused_params,
            "captured_via": self.captured_via,
            "notes": list(score.notes),
            "warnings": list(self.warnings),
            "layers": self.rows(),
            "uncounted": [{"name": r.name, "target": r.target, "reason": r.reason} for r in self.uncounted],
        }

    def rescore(self, options: ScoreOptions, per_layer: bool = False) -> Scoring:
        """Score the same records again under other options, without re-tracing."""
        prepared = self._prepared if self._prepared is not None else self.rulebook.prepare(self.records)
        return self.rulebook.evaluate(prepared, self.track, options, per_layer)

    def what_if(self, grid: str | Mapping[str, Sequence[float]] | None = None, **axes: Sequence[float]) -> WhatIfGrid:
        """Scores under every combination of uniform bits / sparsity levels.

        ``grid`` is ``'bits=32,16,8,4;sparsity=0,0.5,0.9'`` or a mapping;
        axes: ``bits`` (weights and activations), ``weight_bits``,
        ``act_bits``, ``sparsity`` (fraction of zero weights, 0..1).
        """
        levels = parse_what_if(grid) if isinstance(grid, str) else dict(grid or {})
        levels.update({k: list(v) for k, v in axes.items()})
        return what_if_grid(self, levels)


def _row(record: LayerRecord, cost: LayerCost, score: Score) -> dict[str, Any]:
    return {
        "name": record.name,
        "node": record.node,
        "inputs": list(record.inputs),
        "op": record.op,
        "status": record.status,
        "target": record.target,
        "module_path": record.module_path,
        "input_shapes": [list(s) for s in record.input_shapes],
        "output_shapes": [list(s) for s in record.output_shapes],
        "params": record.params,
        "nonzero_params": record.nonzero_params,
        "weight_sparsity": round(1.0 - record.weight_density, 6),
        "weight_block": list(record.weight_block),
        "storage": cost.storage,
        "mults": cost.mults,
        "adds": cost.adds,
        "other_ops": cost.other_ops,
        "ops": cost.ops,
        "macs": cost.macs,
        "weight_bits": record.weight_bits,
        "input_bits": record.input_bits,
        "accumulator_bits": record.accumulator_bits,
        "charged_param_bits": cost.param_bits,
        "charged_mult_bits": cost.mult_bits,
        "share": score.share(cost.storage, cost.ops),
        "via": record.via,
        "rule": record.rule,
        "plugin": record.plugin,
        "reason": record.reason,
    }


def _lookup(table: Mapping[str, Any], name: str, what: str) -> Any:
    if name not in table:
        choices = ", ".join(sorted(table))
        raise UsageError(f"unknown {what} {name!r}; choose one of: {choices}")
    return table[name]


def audit(
    model: nn.Module | str,
    input_shape: Sequence[int] | str | None = None,
    track: str = "cifar100",
    rulebook: str = "micronet-2019",
    *,
    weights: str | None = None,
    trust: bool = False,
    bits: Iterable[str] | Mapping[str, int] = (),
    act_bits: Iterable[str] | Mapping[str, int] = (),
    accumulator_bits: int = 32,
    freebie: bool = True,
    strict: bool = False,
    data: str | Mapping[str, Any] | None = None,
    input_dtype: str | torch.dtype | None = None,
    registries: Registries | None = None,
    inputs: Any = None,
) -> Result:
    """Audit a model under a rulebook and track; returns a :class:`Result`.

    ``model`` is an ``nn.Module`` or a spec (``resnet18``,
    ``torchvision:mobilenet_v2?width_mult=1.4``, ``micronet:wrn_28_10``,
    ``pkg.mod:factory``, ``file.py:factory``, a saved file). ``input_shape``
    defaults to the model's own, else the track's (batch 1); ``input_dtype``
    to token ids (int64) for a model that starts with an embedding, else the
    parameters' float dtype. ``bits`` /
    ``act_bits`` are glob overrides (``'features.*=8'`` or ``{"features.*": 8}``).
    Nothing is run for real: shapes are propagated and weights only read for
    their zeros. Scores are in MicroNet units (storage and ops relative to the
    track's reference model). With ``data`` (``"cifar10:PATH"``, ``"fake"``
    or a recipe's ``[data]`` table) the model's top-1 accuracy (percent) on
    the test split is measured too, and ``result.meets_bar`` says whether it
    reaches the track's quality bar; that needs real weights.

    ``inputs`` is for a forward taking several inputs: a tuple of shapes
    or tensors (positional), a dict ``{parameter: shape or tensor}``
    (keywords), items being ``(shape, dtype)`` pairs where the dtype is
    not the default (see :mod:`micronet.inputs`); a tensor is read only
    for its shape and dtype. Not together with ``input_shape``;
    ``result.inputs`` records them and ``result.input_shape`` is the first.
    """
    if inputs is not None and input_shape is not None:
        raise UsageError("give input_shape (one input) or inputs (several), not both",
                         hint="put every input in inputs=, e.g. inputs=((1, 3, 32, 32), (1, 10))")
    specs = normalise(inputs) if inputs is not None else None
    from .resolve import resolve_model

    registries = registries or default_registries()
    track_obj: Track = _lookup(registries.tracks, track, "track")
    book: Rulebook = _lookup(registries.rulebooks, rulebook, "rulebook")
    precision = Precision(_overrides(bits, "--bits"), _overrides(act_bits, "--act-bits"),
                          check_bits(accumulator_bits, "accumulator_bits"))
    # resolve puts a module in eval mode: note the caller's modes first, to give them back
    modes = {m: m.training for m in model.modules()} if isinstance(model, nn.Module) else {}
    resolved = resolve_model(model, weights=weights, trust=trust, models=registries.models)
    module = resolved.model
    dtype = input_dtype_of(module, input_dtype)
    if specs is None and input_shape is None and resolved.source == "transformers":
        from .models_transformers import default_inputs_of

        defaults = default_inputs_of(module)  # T5: decoder_input_ids too; CLIP: pixel_values too
        if len(defaults) > 1:
            specs = normalise(defaults)
    if specs is None:
        shape = parse_input_shape(input_shape if input_shape is not None
                                  else resolved.input_shape or track_obj.input_shape)
        specs = (InputSpec(None, shape),)
    if len(specs) == 1 and specs[0].name is None:
        # one tensor, as always, for the forward's first parameter (capture says if it needs more)
        first = ModelInput(_first_parameter(module), specs[0].shape, specs[0].dtype or dtype, images=specs[0].images)
        model_inputs, given = (first,), None
    elif resolved.exported is None:
        model_inputs = bind(module, specs, dtype)
        given = {m.name for m in model_inputs}
    else:  # an archive's graph takes its inputs in order
        model_inputs, given = tuple(ModelInput(s.name or f"input{i}", s.shape, s.dtype or dtype, False, i)
                                    for i, s in enumerate(specs)), None
    shape = model_inputs[0].shape
    settings = WalkSettings(precision=precision, strict=strict,
                            weight_names={w.module_class: w.weight for w in registries.weighted_layers.values()})
    try:  # resolve_model put the model in eval mode
        records, cap = _capture_and_walk(module, resolved.exported, registries, model_inputs, settings, given)
    finally:  # the caller's model comes back as it was handed in
        for child, training in modes.items():
            if child.training != training:
                child.training = training
    messages = _warnings(records, precision, cap)
    if resolved.exported is None and any(modes.values()):
        messages.append("the model was in training mode: it was priced as in inference "
                        "(BatchNorm folded, dropout free), as the rules count a test example")
    options = ScoreOptions(freebie=freebie)
    prepared = book.prepare(records)
    scoring = book.evaluate(prepared, track_obj, options, True)
    reached = sum(r.params for r in records)
    total_params = _parameter_count(modes if module is model and modes else module.modules())
    result = Result(resolved.name, shape, tuple(records), scoring, book, track_obj, options, cap.via,
                    max(total_params - reached, 0), tuple(messages), None, prepared, model_inputs)
    if data is not None:
        if len(model_inputs) > 1:
            raise UsageError(f"measuring accuracy feeds the model one input, and it takes {len(model_inputs)}",
                             hint="drop --data for a model with several inputs")
        result = measure_accuracy(result, module, data)
    return result


def _capture_and_walk(module: nn.Module, exported, registries: Registries, inputs: Sequence[ModelInput],
                      settings: WalkSettings, given: set[str] | None) -> tuple[list[LayerRecord], Any]:
    """Capture the model (its archive's graph when it came from one) and walk it.

    ``given``: the forward parameters that are inputs (None: one tensor, the
    first parameter, whatever its name)."""
    own_constants = held_constants(module)  # a traced GraphModule's code reads these: they stay
    if exported is not None:
        from .capture import capture_exported

        cap = capture_exported(exported)
    else:
        # torch.export's example is made only if it is needed; zeros are valid token ids too.
        # Leading positional inputs go as args, the others (a gap before them) as kwargs.
        leading = [m for i, m in enumerate(inputs) if not m.keyword and m.index == i]
        if given is None:
            leading = list(inputs)
        rest = [m for m in inputs if m not in leading]

        def zeros(m: ModelInput) -> torch.Tensor | list[torch.Tensor]:
            if m.images:  # a list of images (a detector's input): the list, as its forward takes it
                return [torch.zeros(shape, dtype=m.dtype, device=model_device(module)) for shape in m.images]
            return torch.zeros(m.shape, dtype=m.dtype, device=model_device(module))

        listed = [m.name for m in inputs if m.images]
        if listed:
            from .detection_plan import is_detector

            if not is_detector(module):
                raise UsageError(f"input {listed[0]!r} is a list of images: only torchvision's detectors take one "
                                 f"as an input, not {type(module).__name__}",
                                 hint="give it one tensor shape, e.g. --input 1x3x224x224")

        cap = capture(module, registries.counters, lambda: tuple(zeros(m) for m in leading),
                      lambda: {m.name: zeros(m) for m in rest}, given)
    try:
        if cap.via == "fx":
            infos = [TensorInfo(m.shape, m.dtype) for m in inputs]
            return walk(cap, registries.counters, infos[0] if given is None else
                        {m.name: info for m, info in zip(inputs, infos)}, settings), cap
        return walk_exported(cap, registries.counters, settings, module), cap
    finally:
        forget_constants(module, own_constants)  # the user's model leaves the audit as it came


def _parameter_count(modules: Iterable[nn.Module]) -> int:
    """Elements of the modules' own parameters, a shared one once: ``sum(p.numel()
    for p in model.parameters())`` over ``model.modules()``, without walking the tree again."""
    sizes = {id(p): p.numel() for m in modules for p in m._parameters.values() if p is not None}
    return sum(sizes.values())


def _first_parameter(module: nn.Module) -> str:
    """The name of the forward's first parameter (``input`` when it has none readable)."""
    return next((p.name for p in forward_parameters(module)), "input")


def measure_accuracy(result: Result, model: nn.Module, data: str | Mapping[str, Any]) -> Result:
    """``result`` with the top-1 accuracy (percent) of ``model`` on ``data``'s test split."""
    from dataclasses import replace

    from .training.data import evaluate

    if any(p.is_meta for p in model.parameters()):
        raise UsageError("measuring accuracy needs the model's weights, and this one was built "
                         "without them (on the meta device)", hint="pass --weights FILE")
    accuracy = evaluate(model, data, input_shape=result.input_shape,
                        num_classes=result.num_classes or result.track.num_classes)
    return replace(result, accuracy=accuracy)


def _overrides(value, what: str):
    if isinstance(value, Mapping):
        return parse_bits([f"{k}={v}" for k, v in value.items()], what)
    if isinstance(value, str):
        value = [value]
    return parse_bits(value, what)


def input_dtype_of(module: nn.Module, requested: str | torch.dtype | None = None) -> torch.dtype:
    """The dtype of the example input: ``requested`` (a name of ``INPUT_DTYPES``
    or a dtype), else token ids (int64) for a model whose first layer with
    parameters is an embedding (text models), else its first floating
    parameter's dtype."""
    if requested is not None:
        return parse_dtype(requested)
    for child in module.modules():
        if child._parameters:
            if isinstance(child, (nn.Embedding, nn.EmbeddingBag)):
                return torch.int64
            break
    for p in module.parameters():
        if p.dtype.is_floating_point:
            return p.dtype
    return torch.get_default_dtype()


def _warnings(records: Sequence[LayerRecord], precision: Precision, cap) -> list[str]:
    messages = []
    uncounted = [r for r in records if r.status == UNCOUNTED]
    if uncounted:
        names = ", ".join(f"{r.name} ({r.target})" for r in uncounted[:5])
        more = f" and {len(uncounted) - 5} more" if len(uncounted) > 5 else ""
        text = f"{len(uncounted)} node(s) not counted, their cost is missing: {names}{more}"
        messages.append(text)
        warnings.warn(text, UncountedWarning, stacklevel=3)
    for pattern in precision.unmatched(r.name for r in records):
        messages.append(f"bit-width pattern {pattern!r} matches no layer")
    if cap.fx_error:
        messages.append(f"torch.fx could not trace the model ({cap.fx_error}); captured with torch.export")
    if cap.note:
        messages.append(cap.note)
    return messages
