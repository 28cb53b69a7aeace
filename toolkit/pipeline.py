"""``compress()``: run a recipe's steps, re-capturing and re-scoring after each.

Each step receives a deep copy of the current model as a GraphModule and
returns a new model; the pipeline audits it with the recipe's rulebook and
track and keeps every intermediate :class:`~micronet.audit.Result`. A step
that raises is reported with its name and plugin as a CompressionError; the
history up to it is kept (and written when an output folder is given), and
the input model is never modified.
"""
from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import fx, nn

from .audit import Result, audit, input_dtype_of, measure_accuracy
from .capture import trace_fx
from .errors import CompressionError, UsageError
from .fileio import atomic_write_text
from .manager import Registries, default_registries
from .recipe import Recipe, load_recipe, parse_recipe
from .resolve import resolve_model
from .steps import CompressionStep, StepContext, check_options
from .walk import BITS_FILE, module_bits

__all__ = ["compress", "History", "StepRecord"]


@dataclass(frozen=True)
class StepRecord:
    """One step as it ran: its options (defaults filled in), the plugin that
    provides it, its re-scored result (or the error), its wall time and the
    notes it left through ``context.note``."""

    index: int
    name: str
    plugin: str
    options: Mapping[str, Any]
    result: Result | None
    error: str | None = None
    seconds: float = 0.0
    notes: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class History:
    """The input audit, then one record per step that ran."""

    recipe: Recipe
    input: Result
    steps: list[StepRecord] = field(default_factory=list)
    model: nn.Module | None = None  # the final model (None when a step failed)

    @property
    def results(self) -> list[Result]:
        """Every result in order: the input's, then each successful step's."""
        return [self.input] + [s.result for s in self.steps if s.result is not None]

    @property
    def final(self) -> Result:
        return self.results[-1]

    @property
    def failed(self) -> StepRecord | None:
        return next((s for s in self.steps if s.error is not None), None)

    def to_list(self) -> list[dict[str, Any]]:
        """``history.json``: the input's audit document, then one per step,
        each with ``step`` = {index, name, plugin, options, seconds, error}."""
        entries = [{"step": None, **self.input.to_dict()}]
        for s in self.steps:
            step = {"index": s.index, "name": s.name, "plugin": s.plugin, "options": dict(s.options),
                    "seconds": round(s.seconds, 4), "error": s.error, "notes": dict(s.notes)}
            entries.append({"step": step, **(s.result.to_dict() if s.result is not None else {})})
        return entries


def _plan(recipe: Recipe, registries: Registries) -> list[tuple[CompressionStep, dict[str, Any], str]]:
    """Check every step and its options before any work starts."""
    plan = []
    for spec in recipe.steps:
        step = registries.steps.get(spec.use)
        if step is None:
            known = ", ".join(sorted(registries.steps)) or "none"
            raise UsageError(f"{recipe.source}: {spec.where}: unknown step {spec.use!r}; "
                             f"steps available: {known}", hint="`micronet plugins` lists them")
        options = check_options(step, spec.options, f"{recipe.source}: {spec.where}")
        plan.append((step, options, registries.origin("steps", spec.use)))
    return plan


def _as_recipe(recipe: Recipe | str | Path | Mapping[str, Any]) -> Recipe:
    if isinstance(recipe, Recipe):
        return recipe
    if isinstance(recipe, Mapping):
        return parse_recipe(recipe)
    return load_recipe(recipe)


def compress(
    recipe: Recipe | str | Path | Mapping[str, Any],
    *,
    out: str | Path | None = None,
    model: nn.Module | None = None,
    registries: Registries | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> History:
    """Run ``recipe`` (a TOML path, a parsed :class:`Recipe` or a dict).

    ``model`` overrides the recipe's spec with a module (it is not modified).
    With ``out``, writes ``history.json``, one audit table per step and the
    final model there (see :func:`micronet.pipeline.write_outputs`). Returns
    the :class:`History`; raises :class:`CompressionError` when a step fails,
    after writing what ran.
    """
    recipe = _as_recipe(recipe)
    registries = registries or default_registries()
    plan = _plan(recipe, registries)
    current = _input_model(recipe, model, registries)
    original = copy.deepcopy(current)  # what steps may learn from (teachers); never handed on
    score = dict(track=recipe.track, rulebook=recipe.rulebook, freebie=recipe.freebie, registries=registries)
    first = _measured(audit(current, recipe.input_shape, **score), current, recipe)
    history = History(recipe, first)
    hooks = registries.pm.hook
    hooks.micronet_pipeline_started(recipe=recipe, result=first)
    failure: CompressionError | None = None
    for index, (step, options, plugin) in enumerate(plan, start=1):
        log(f"step {index}/{len(plan)}: {step.name} {options}")
        working = copy.deepcopy(current)
        hooks.micronet_step_started(index=index, step=step, options=options, model=working)
        started = time.perf_counter()
        context = StepContext(first.input_shape, history.final, recipe.data, _device(), log,
                              original=original)
        try:
            produced = step.run(working, options, context)
            if not isinstance(produced, nn.Module):
                raise TypeError(f"returned {type(produced).__name__}, expected an nn.Module")
            result = _measured(audit(produced, first.input_shape, **score), produced, recipe)
        except Exception as error:
            message = f"{type(error).__name__}: {error}"
            history.steps.append(StepRecord(index, step.name, plugin, options, None, message,
                                            time.perf_counter() - started, dict(context.notes)))
            hooks.micronet_step_finished(index=index, step=step, options=options, result=None, error=error)
            failure = CompressionError(f"step {index} ({step.name!r}, plugin {plugin!r}) failed: {message}",
                                       hint="the results up to this step are kept; the input model "
                                            "is untouched")
            failure.__cause__ = error
            break
        history.steps.append(StepRecord(index, step.name, plugin, options, result, None,
                                        time.perf_counter() - started, dict(context.notes)))
        hooks.micronet_step_finished(index=index, step=step, options=options, result=result, error=None)
        current = produced
    history.model = None if failure else current
    hooks.micronet_pipeline_finished(history=history)
    if out is not None:
        write_outputs(history, out, log, registries.report_sections)
    if failure is not None:
        raise failure
    return history


def _input_model(recipe: Recipe, model: nn.Module | None, registries: Registries) -> fx.GraphModule:
    """The recipe's model with real weights, as a GraphModule (a private copy)."""
    if model is not None:
        module = copy.deepcopy(model).eval()
    else:
        resolved = resolve_model(recipe.spec, weights=recipe.weights, trust=recipe.trust,
                                 models=registries.models, meta=False)
        module = resolved.model.eval()
    if isinstance(module, fx.GraphModule):
        return module
    try:
        capture = trace_fx(module, registries.counters)
    except Exception as error:
        raise CompressionError(f"compression steps need a torch.fx graph, and {type(module).__name__} "
                               f"cannot be traced: {type(error).__name__}: {error}",
                               hint="make the forward traceable, or register a counter for the "
                                    "offending module so it becomes a leaf") from error
    return fx.GraphModule(module, capture.graph, type(module).__name__)


def _measured(result: Result, model: nn.Module, recipe: Recipe) -> Result:
    """The result with its accuracy when the recipe has a ``[data]`` table."""
    if recipe.data is None or "dataset" not in recipe.data:
        return result
    return measure_accuracy(result, model, recipe.data)


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


# ------------------------------------------------------------------ outputs


def write_outputs(history: History, out: str | Path, log: Callable[[str], None] = lambda m: None,
                  sections: Mapping[str, Any] | None = None) -> Path:
    """Write ``history.json``, ``NN-STEP.txt`` audit tables, and the final model:
    ``model.pt2`` (a torch.export archive, loadable with ``micronet audit``) and
    ``state_dict.pt`` (its weights). Every file is written atomically."""
    from .reports import render_table
    from .reports.json_report import clean

    folder = Path(out)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create output folder {folder}: {error.strerror or error}") from error
    atomic_write_text(folder / "history.json", json.dumps(clean(history.to_list()), indent=1) + "\n")
    names = ["input"] + [s.name for s in history.steps if s.result is not None]
    for number, (name, result) in enumerate(zip(names, history.results)):
        atomic_write_text(folder / f"{number:02d}-{name}.txt",
                          render_table(result, sections=sections) + "\n")
    if history.model is not None:
        _save_model(history, folder, log)
    return folder


def _save_model(history: History, folder: Path, log: Callable[[str], None]) -> None:
    from .fileio import atomic_write_bytes
    import io

    model = history.model
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buffer)
    atomic_write_bytes(folder / "state_dict.pt", buffer.getvalue())
    example = (torch.zeros(history.input.input_shape, dtype=input_dtype_of(model)),)
    try:
        exported = torch.export.export(model, example, strict=False)
        buffer = io.BytesIO()
        # bit widths live on modules, which an archive does not keep: carry them beside the graph
        bits = {name: module_bits(m) for name, m in model.named_modules() if module_bits(m)}
        torch.export.save(exported, buffer, extra_files={BITS_FILE: json.dumps(bits)})
    except Exception as error:  # the weights are saved; say why the archive is not
        log(f"torch.export could not save the final model ({type(error).__name__}: {error}); "
            "state_dict.pt holds its weights")
        return
    atomic_write_bytes(folder / "model.pt2", buffer.getvalue())
