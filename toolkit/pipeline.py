"""``compress()``: run a recipe's steps, re-capturing and re-scoring after each.

Each step receives a deep copy of the current model as a GraphModule and
returns a new model; the pipeline captures that model afresh (so a submodule
a step swapped is counted as it now is) and audits it with the recipe's
rulebook and track, keeping every intermediate :class:`~micronet.audit.Result`.
A step that raises, or leaves a parameter that is NaN or infinite, is reported
with its name and plugin as a CompressionError; the history up to it is kept
(and written when an output folder is given), and the input model is never
modified. An output folder is written as a whole (:mod:`micronet.outdir`).

A step with its own ``data`` table gets the recipe's ``[data]`` with those
keys replaced; a ``repeat`` runs its inner steps round after round
(:mod:`micronet.schedule`), each one an ordinary step of the history that
also says which round of which repeat it was.

Under ``torchrun`` (a torch.distributed process group of two or more
processes, :mod:`micronet.training.distributed`) every rank runs the same
deterministic pipeline, and the training steps train data-parallel. The
ranks agree after each step whether it failed anywhere (a step that failed
on one rank fails on all, naming that rank), rank 0 alone measures top-1
(and hands it to the others), and rank 0 alone writes ``out``; the other
ranks write nothing.
"""
from __future__ import annotations

import copy
import io
import json
import time
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import fx, nn

from .audit import Result, audit, input_dtype_of, measure_accuracy
from .bits import ARCHIVE_FILE, archive_document, bits_violation
from .capture import is_aten_graph, trace_fx
from .errors import CompressionError, SpecError, UsageError, first_line
from .exportfile import save_export
from .fileio import atomic_write_bytes, atomic_write_text
from .manager import Registries, default_registries
from .outdir import claim_output_folder
from .recipe import Recipe, load_recipe, parse_recipe
from .resolve import resolve_model, set_eval
from .schedule import PlannedStep, Round, plan_steps, run_plan, total_steps
from .steps import StepContext
from .training import distributed
from .training.data import resolve_device

__all__ = ["compress", "History", "StepRecord"]


@dataclass(frozen=True)
class StepRecord:
    """One step as it ran: its options (defaults filled in), the plugin that
    provides it, its re-scored result (or the error), its wall time (seconds)
    and the notes it left through ``context.note``. ``data`` is the data
    table it received when it had its own ``data`` (the recipe's ``[data]``
    merged with it; None when it used the recipe's as is). A step run by a
    ``repeat`` has ``round`` (from 1) and ``repeat`` (the repeat's index in
    the recipe); both are None for the recipe's other steps. ``index``
    counts every step that ran, each round's steps included."""

    index: int
    name: str
    plugin: str
    options: Mapping[str, Any]
    result: Result | None
    error: str | None = None
    seconds: float = 0.0
    notes: Mapping[str, Any] = field(default_factory=dict)
    changed: bool = True
    data: Mapping[str, Any] | None = None
    round: int | None = None
    repeat: int | None = None

    @property
    def label(self) -> str:
        """How tables and pages name the step: ``"4. sparsify"``, or
        ``"4. sparsify (round 2 of step 3)"`` inside a repeat."""
        where = f" (round {self.round} of step {self.repeat})" if self.round is not None else ""
        return f"{self.index}. {self.name}{where}"


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

    def to_list(self, sections: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """``history.json``: the input's audit document, then one per step,
        each with ``step`` = {index, name, plugin, options, seconds, error,
        notes, changed, data, round, repeat} (see :class:`StepRecord`); with report ``sections`` (name ->
        :class:`~micronet.reports.sections.ReportSection`), each result's
        document carries ``"sections": {title: [[label, value], ...]}`` as
        ``audit --json`` does."""
        from .reports.sections import sections_document

        def document(result: Result) -> dict[str, Any]:
            entry = result.to_dict()
            if sections:
                entry["sections"] = sections_document(result, sections)
            return entry

        entries = [{"step": None, **document(self.input)}]
        for s in self.steps:
            step = {"index": s.index, "name": s.name, "plugin": s.plugin, "options": dict(s.options),
                    "seconds": round(s.seconds, 4), "error": s.error, "notes": dict(s.notes),
                    "changed": s.changed, "data": dict(s.data) if s.data is not None else None,
                    "round": s.round, "repeat": s.repeat}
            entries.append({"step": step, **(document(s.result) if s.result is not None else {})})
        return entries


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
    trust: bool = False,
    progress: bool = False,
) -> History:
    """Run ``recipe`` (a TOML path, a parsed :class:`Recipe` or a dict).

    ``model`` overrides the recipe's spec with a module (it is not modified).
    ``trust`` (or the recipe's ``trust = true``) lets the recipe's specs run
    code (``module:factory``, ``file.py:factory``, pickles); without it they
    are refused. ``progress`` lets steps draw progress bars on the terminal
    (:attr:`StepContext.progress`; the CLI sets it unless ``--quiet``). With
    ``out``, the folder is checked and locked before any work, the run is
    written beside it (``history.json``, one audit table per
    step, the final model; see :func:`write_outputs`) and swapped in whole at
    the end, also when a step fails. Returns the :class:`History`; raises
    :class:`CompressionError` when a step fails, after writing what ran.
    Under torchrun only rank 0 claims and writes ``out`` (see the module docstring).
    """
    with ExitStack() as stack:
        with distributed.all_or_none():  # under torchrun: a rank failing here stops every rank
            recipe = _as_recipe(recipe)
            trust = trust or recipe.trust
            registries = registries or default_registries()
            plan = plan_steps(recipe, registries)
            writes = out is not None and distributed.is_main()  # under torchrun: rank 0 alone
            folder = stack.enter_context(claim_output_folder(out)) if writes else None
        history, failure = _run(recipe, plan, model, registries, log, trust, progress)
        if folder is not None:
            write_outputs(history, folder.begin(), log, registries)
            folder.commit()
    if failure is not None:
        raise failure
    return history


def _run(recipe: Recipe, plan, model: nn.Module | None, registries: Registries, log: Callable[[str], None],
         trust: bool, progress: bool = False) -> tuple[History, CompressionError | None]:
    """Audit the input, then run each step on a copy; stops at the first failure."""
    name = _model_name(recipe, model)
    distributed.share_random_state()  # under torchrun: every rank draws what rank 0 draws...
    with distributed.all_or_none():  # (a rank failing to read the model stops every rank)
        current, own_shape = _input_model(recipe, model, registries, trust, log)
    distributed.broadcast_state(current)  # ...and starts from rank 0's input model
    original = copy.deepcopy(current)  # what steps may learn from (teachers); never handed on
    score = dict(track=recipe.track, rulebook=recipe.rulebook, freebie=recipe.freebie, registries=registries)
    with distributed.all_or_none():
        audited = _audited(current, recipe.input_shape or own_shape, name, score)
    first = _measured(audited, current, recipe)
    history = History(recipe, first)
    hooks = registries.pm.hook
    hooks.micronet_pipeline_started(recipe=recipe, result=first)
    run = _Run(history, current, original, name, score, registries, log, trust, total_steps(plan), progress)
    failure = run_plan(plan, history, run.step, log)
    history.model = None if failure else run.current
    hooks.micronet_pipeline_finished(history=history)
    return history, failure


@dataclass
class _Run:
    """One run's moving parts: its history so far, the model the next step
    gets, and what every step is scored with."""

    history: History
    current: nn.Module
    original: nn.Module  # what steps may learn from (teachers); never handed on
    name: str
    score: Mapping[str, Any]
    registries: Registries
    log: Callable[[str], None]
    trust: bool
    total: int | None  # steps in all; None when a repeat may stop early
    progress: bool = False  # progress bars on the terminal (StepContext.progress)

    def step(self, planned: PlannedStep, where: Round | None) -> CompressionError | None:
        """Run one step on a copy of the current model, re-capture and
        re-score what it returns, and record it; returns its failure, if any."""
        step, options, plugin, history = planned.step, planned.options, planned.plugin, self.history
        recipe, hooks, index = history.recipe, self.registries.pm.hook, len(history.steps) + 1
        own = f" data {dict(planned.spec.data)}" if planned.spec.data is not None else ""
        self.log(f"step {index}/{self.total or '?'}: {step.name}{f' ({where})' if where else ''} {options}{own}")
        working = copy.deepcopy(self.current)
        hooks.micronet_step_started(index=index, step=step, options=options, model=working)
        started = time.perf_counter()
        context = StepContext(history.input.input_shape, history.final, planned.data, str(resolve_device("auto")),
                              self.log, original=self.original, trust=self.trust, registries=self.registries,
                              earlier=tuple(history.steps), progress=self.progress)
        record = partial(StepRecord, index, step.name, plugin, options, data=planned.own_data,
                         round=where.number if where else None, repeat=where.repeat if where else None)
        try:
            produced = step.run(working, options, context)
            _check_produced(produced)
            produced = _recaptured(produced, self.registries)
            result = _audited(produced, history.input.input_shape, self.name, self.score)
        except Exception as caught:
            error = caught
        else:
            error = None
        # under torchrun every rank learns whether the step failed anywhere (before the next collective)
        agreed = distributed.first_failure(error)
        if agreed is None:
            try:  # rank 0 measures, every rank gets its figure or its error
                result = _measured(result, produced, recipe)
            except Exception as caught:
                error = caught
                agreed = distributed.first_failure(error)
        if agreed is not None:
            message = agreed.message
            if not agreed.everywhere:
                message += f" (on rank {agreed.rank} of {distributed.current().size})"
            history.steps.append(record(None, message, time.perf_counter() - started, dict(context.notes)))
            hooks.micronet_step_finished(index=index, step=step, options=options, result=None,
                                         error=error if error is not None else CompressionError(message))
            failure = CompressionError(f"step {index} ({step.name!r}, plugin {plugin!r})"
                                       f"{f' in {where}' if where else ''} failed: {message}",
                                       hint="the results up to this step are kept; the input model "
                                            "is untouched")
            failure.__cause__ = error
            if agreed.usage:  # a bad option or a refused file: the user's to fix
                failure.exit_code = UsageError.exit_code
            distributed.reported(failure)  # every rank has it; rank 0 prints it
            return failure
        changed = not _same_model(self.current, produced)
        if not changed:
            self.log(f"step {index} ({step.name}) changed nothing: the model it returned equals its input")
        history.steps.append(record(result, None, time.perf_counter() - started, dict(context.notes), changed))
        hooks.micronet_step_finished(index=index, step=step, options=options, result=result, error=None)
        self.current = produced
        return None


def _model_name(recipe: Recipe, model: nn.Module | None) -> str:
    """How tables and ``history.json`` name the model: the recipe's spec, or
    the class of the module handed in."""
    if model is None:
        return recipe.spec
    return type(model).__name__ if "<locals>" in type(model).__qualname__ else type(model).__qualname__


def _audited(model: nn.Module, input_shape, name: str, score: Mapping[str, Any]) -> Result:
    """A fresh audit of ``model`` as it now is, named ``name``."""
    return replace(audit(model, input_shape, **score), model=name)


def _check_produced(produced: Any) -> None:
    """A step must return a module whose parameters are finite numbers
    (buffers may hold infinities, e.g. attention masks, but not NaN) and hold
    no more values than their declared bits can (:func:`micronet.bits.bits_violation`)."""
    if not isinstance(produced, nn.Module):
        raise TypeError(f"returned {type(produced).__name__}, expected an nn.Module")
    tensors = [("parameter", n, t, False) for n, t in produced.named_parameters()]
    tensors += [("buffer", n, t, True) for n, t in produced.named_buffers()]
    for kind, tensor_name, tensor, inf_ok in tensors:
        if not tensor.is_floating_point() or tensor.is_meta:
            continue
        bad = torch.isnan(tensor) if inf_ok else ~torch.isfinite(tensor)
        if bool(bad.any()):
            count = int(bad.sum())
            raise ValueError(f"the model it returned has {count} non-finite value(s) in {kind} "
                             f"{tensor_name!r} (NaN{'' if inf_ok else ' or infinity'}); nothing was kept")
    violation = bits_violation(produced)
    if violation is not None:  # the score would charge fewer bits than the values need
        raise ValueError(f"the model it returned breaks its bit declarations: {violation}; train through "
                         "the quantizer (the built-in finetune/distill do) or quantize after training")


def _same_model(before: nn.Module, after: nn.Module) -> bool:
    """Whether a step handed back what it was given: the same module tree
    (names and classes), the same graph code and equal tensors."""
    if before is after:
        return True
    if _tree(before) != _tree(after):
        return False
    if getattr(before, "code", None) != getattr(after, "code", None):
        return False
    first, second = before.state_dict(), after.state_dict()
    if first.keys() != second.keys():
        return False
    return all(a.dtype == b.dtype and a.shape == b.shape and (a.is_meta or torch.equal(a, b))
               for a, b in ((first[k], second[k]) for k in first))


def _tree(model: nn.Module) -> list[tuple[str, Any]]:
    # each GraphModule gets a class of its own (a copy too): compare those as "a GraphModule"
    return [(name, fx.GraphModule if isinstance(m, fx.GraphModule) else type(m))
            for name, m in model.named_modules()]


def _input_model(recipe: Recipe, model: nn.Module | None, registries: Registries, trust: bool,
                 log: Callable[[str], None]) -> tuple[fx.GraphModule, tuple[int, ...] | None]:
    """The recipe's model with real weights, as a GraphModule (a private copy),
    and its own input shape when the spec knows one (a built-in's, an archive's)."""
    own_shape = None
    if model is not None:
        module = copy.deepcopy(model)
    else:
        resolved = resolve_model(recipe.spec, weights=recipe.weights, trust=trust, models=registries.models,
                                 meta=False, origin=recipe.source)
        module, own_shape = resolved.model, resolved.input_shape
    set_eval(module)
    if is_aten_graph(module):  # a torch.export archive: steps get its module as it is
        return module, own_shape
    try:
        captured = trace_fx(module, registries.counters)
    except Exception as error:
        raise CompressionError(f"compression steps need a torch.fx graph, and {type(module).__name__} "
                               f"cannot be traced: {type(error).__name__}: {error}",
                               hint="make the forward traceable, or register a counter for the "
                                    "offending module so it becomes a leaf") from error
    graph_module, renamed = captured.graph_module(type(module).__name__)
    if renamed:
        log("module names Python code cannot hold were renamed in the pipeline's copy: "
            + ", ".join(f"{old!r} -> {new!r}" for old, new in renamed.items()))
    return graph_module, own_shape


def _recaptured(model: nn.Module, registries: Registries) -> nn.Module:
    """The model a step returned, its graph captured afresh (in place, its
    module tree kept): a step may have swapped a submodule without touching
    the graph, and the next step, the score and the saved archive must all see
    the model as it is. Left as it is when fx cannot trace it again."""
    if not isinstance(model, fx.GraphModule) or is_aten_graph(model):
        return model
    try:
        captured = trace_fx(model, registries.counters)
    except Exception:
        return model
    model.graph = captured.graph  # recompiles forward from the fresh graph
    return model


def _measured(result: Result, model: nn.Module, recipe: Recipe) -> Result:
    """The result with its accuracy when the recipe has a ``[data]`` table."""
    if recipe.data is None or "dataset" not in recipe.data:
        return result
    accuracy = distributed.on_main(lambda: measure_accuracy(result, model, recipe.data).accuracy)
    return replace(result, accuracy=accuracy)


# ------------------------------------------------------------------ outputs


def write_outputs(history: History, out: str | Path, log: Callable[[str], None] = lambda m: None,
                  registries: Registries | None = None) -> Path:
    """Write ``history.json``, ``NN-STEP.txt`` audit tables, and the final model:
    ``model.pt2`` (a torch.export archive, loadable with ``micronet audit``) and
    ``state_dict.pt`` (its weights), into the folder ``out``. :func:`compress`
    writes them into a staging folder it swaps in whole; called on its own,
    every file is written atomically but the folder is not."""
    from .reports import render_table
    from .reports.json_report import clean

    registries = registries or default_registries()
    sections = registries.report_sections
    folder = Path(out)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create output folder {folder}: {error.strerror or error}") from error
    names = ["input"] + [s.name for s in history.steps if s.result is not None]
    for number, (name, result) in enumerate(zip(names, history.results)):
        atomic_write_text(folder / f"{number:02d}-{name}.txt",
                          render_table(result, sections=sections) + "\n")
    if history.model is not None:
        _save_model(history, folder, log, registries)
    # last: a folder with history.json is a whole run (micronet.outdir.RUN_MARKER)
    atomic_write_text(folder / "history.json", json.dumps(clean(history.to_list(sections)), indent=1) + "\n")
    return folder


def _save_model(history: History, folder: Path, log: Callable[[str], None], registries: Registries) -> None:
    """``state_dict.pt``, and ``model.pt2`` when torch.export can capture the
    model and the archive re-scores to the score recorded last (so that
    ``micronet audit model.pt2`` agrees with ``history.json``)."""
    model = history.model
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buffer)
    atomic_write_bytes(folder / "state_dict.pt", buffer.getvalue())
    example = (torch.zeros(history.input.input_shape, dtype=input_dtype_of(model)),)
    try:
        # no_grad: some kernels (flex_attention) cannot be exported while autograd records
        with torch.no_grad():
            exported = torch.export.export(model, example, strict=False)
        buffer = io.BytesIO()
        # bit widths and declared storage live on modules, which an archive does not keep
        save_export(exported, buffer, extra_files={ARCHIVE_FILE: archive_document(model)})
    except SpecError as error:  # already one line (e.g. torch cannot serialise flex_attention)
        log(f"model.pt2 not written: {error}; state_dict.pt holds its weights")
        return
    except Exception as error:  # the weights are saved; say why the archive is not
        log(f"torch.export could not save the final model ({type(error).__name__}: {first_line(error)}); "
            "state_dict.pt holds its weights")
        return
    final = history.final
    archived = _archive_score(buffer, final, registries)
    if archived is None or abs(archived - final.score.total) > 1e-9 * max(1.0, abs(final.score.total)):
        log(f"model.pt2 not written: re-scored from the archive it gives {archived}, not the "
            f"{final.score.total} recorded; state_dict.pt holds the weights")
        return
    atomic_write_bytes(folder / "model.pt2", buffer.getvalue())


def _archive_score(buffer: io.BytesIO, final: Result, registries: Registries) -> float | None:
    """The score ``micronet audit model.pt2`` would give the archive in ``buffer``."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="micronet-archive-") as scratch:
        path = Path(scratch) / "model.pt2"
        path.write_bytes(buffer.getvalue())
        try:
            again = audit(str(path), final.input_shape, final.track.name, final.rulebook.name,
                          freebie=final.options.freebie, registries=registries)
        except Exception:
            return None
    return again.score.total
