"""A recipe's steps as they will run: checked before any work, then run in
order, a ``repeat`` as rounds of its inner steps.

:func:`plan_steps` turns the steps of a :class:`~micronet.recipe.Recipe` into
:class:`PlannedStep` entries (the registered step, its options with the
defaults filled in, its plugin, the data table it receives) and
:class:`PlannedRepeat` entries holding them, refusing unknown steps,
options, and steps that need data the recipe lacks, before any work starts.
:func:`run_plan` runs the plan through a callback that runs one step (the
pipeline's: copy, run, re-capture, re-score, record), so every inner step
of every round is an ordinary step of the history, and after each round of
a repeat checks its ``until`` bounds on the result the round ended with:
the first round that meets them all is the last, the rounds left are
skipped and logged; a repeat that runs all its rounds without meeting them
goes on to the next step, logged, and its last record notes
``until_met: false`` (``true`` on the record of the round that met them).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable, Mapping

from .errors import CompressionError, UsageError
from .recipe import REPEAT, Recipe, RepeatSpec, StepSpec, Until
from .steps import CompressionStep, check_options

if TYPE_CHECKING:
    from .audit import Result
    from .manager import Registries
    from .pipeline import History

__all__ = ["PlannedStep", "PlannedRepeat", "Round", "ShadowedStepWarning", "plan_steps", "run_plan", "total_steps",
           "weight_sparsity", "check_until"]


class ShadowedStepWarning(UserWarning):
    """A plugin registered a step under a name recipes keep for themselves
    (``repeat``): the recipe's meaning wins and the plugin's step cannot be used."""


@dataclass(frozen=True)
class PlannedStep:
    """One step, checked: ``options`` with defaults filled in, the ``plugin``
    that registered it, and ``data``, the table its
    :class:`~micronet.steps.StepContext` gets (the recipe's ``[data]`` with
    the step's own ``data`` keys replacing its keys)."""

    spec: StepSpec
    step: CompressionStep
    options: Mapping[str, Any]
    plugin: str
    data: Mapping[str, Any] | None

    @property
    def own_data(self) -> Mapping[str, Any] | None:
        """What the history records as the step's data: the merged table
        when the step has its own ``data``, None when it uses the recipe's."""
        return self.data if self.spec.data is not None else None


@dataclass(frozen=True)
class PlannedRepeat:
    """A ``repeat`` step with its inner steps checked."""

    spec: RepeatSpec
    steps: tuple[PlannedStep, ...]


@dataclass(frozen=True)
class Round:
    """Where a step inside a repeat runs: round ``number`` (from 1) of at
    most ``times``, of the recipe's step ``repeat`` (its index in the recipe)."""

    number: int
    times: int
    repeat: int

    def __str__(self) -> str:
        return f"round {self.number}/{self.times} of step {self.repeat}"


#: Runs one step (in a round, or not) and returns its failure, or None when it succeeded.
RunOne = Callable[[PlannedStep, "Round | None"], "CompressionError | None"]


def plan_steps(recipe: Recipe, registries: "Registries") -> tuple[PlannedStep | PlannedRepeat, ...]:
    """Check every step, inner steps included, and its options before any
    work starts.

    :raises UsageError: naming the step (``step 2 (repeat) > step 1 (sparsify)``)
        and what is wrong with it.
    """
    if REPEAT in registries.steps:
        warnings.warn(ShadowedStepWarning(
            f"plugin {registries.origin('steps', REPEAT)!r} registers a step named {REPEAT!r}, a name recipes "
            f"keep for schedules: use = {REPEAT!r} runs a schedule, never that step; the plugin should rename it"),
            stacklevel=3)
    return tuple(PlannedRepeat(spec, tuple(_planned(inner, recipe, registries) for inner in spec.steps))
                 if isinstance(spec, RepeatSpec) else _planned(spec, recipe, registries)
                 for spec in recipe.steps)


def _planned(spec: StepSpec, recipe: Recipe, registries: "Registries") -> PlannedStep:
    """One step checked: registered, its options valid, its data there if it needs some."""
    step = registries.steps.get(spec.use) if spec.use != REPEAT else None
    if step is None:
        known = ", ".join(sorted(set(registries.steps) - {REPEAT})) or "none"
        raise UsageError(f"{recipe.source}: {spec.where}: unknown step {spec.use!r}; "
                         f"steps available: {known}", hint="`micronet plugins` lists them")
    options = check_options(step, spec.options, f"{recipe.source}: {spec.where}", recipe.base)
    data = recipe.data_for(spec)
    if step.needs_data and data is None:
        raise UsageError(f"{recipe.source}: {spec.where}: {step.name!r} measures the model on data, "
                         "and the recipe has no [data] table",
                         hint='add [data] dataset = "digits" (or cifar10:PATH, imagefolder:PATH)')
    return PlannedStep(spec, step, options, registries.origin("steps", spec.use), data)


def total_steps(planned: tuple[PlannedStep | PlannedRepeat, ...]) -> int | None:
    """How many steps the plan runs: None when a repeat may stop early (``until``)."""
    total = 0
    for item in planned:
        if isinstance(item, PlannedRepeat):
            if item.spec.until is not None:
                return None
            total += item.spec.times * len(item.steps)
        else:
            total += 1
    return total


def weight_sparsity(result: "Result") -> float:
    """Fraction of zeros (0..1) among the elements of the sparsifiable
    weights (each Conv*/Linear ``weight`` and declared weighted layer: those
    whose zeros the rules charge as sparse), whatever the rulebook; 0.0 for
    a model without any."""
    elements = sum(record.weight_params for record in result.records)
    nonzero = sum(record.weight_nonzero for record in result.records)
    return 1.0 - nonzero / elements if elements else 0.0


def check_until(until: Until, result: "Result") -> tuple[bool, str]:
    """Whether ``result`` meets every bound of ``until``, and the bounds
    compared, e.g. ``"sparsity 0.5217 >= 0.5, score 0.41 > 0.4"``."""
    checks = []
    if until.score is not None:
        total = result.score.total
        checks.append((total <= until.score, f"score {total:.4g} {'<=' if total <= until.score else '>'} "
                                             f"{until.score:g}"))
    if until.sparsity is not None:
        sparsity = weight_sparsity(result)
        met = sparsity >= until.sparsity
        checks.append((met, f"sparsity {sparsity:.4f} {'>=' if met else '<'} {until.sparsity:g}"))
    if until.accuracy is not None:
        top1 = result.accuracy
        met = top1 is not None and top1 >= until.accuracy
        shown = "not measured" if top1 is None else f"{top1:.2f}%"
        checks.append((met, f"top-1 {shown} {'>=' if met else '<'} {until.accuracy:g}%"))
    if until.bar:
        met = bool(result.meets_bar)
        bar = f"{result.track.quality_bar:g}%" if result.track.higher_is_better else result.track.bar_text()
        checks.append((met, f"the {result.track.name} bar ({bar}) "
                            f"{'met' if met else 'not met'}"))
    return all(met for met, _ in checks), ", ".join(text for _, text in checks)


def run_plan(planned: tuple[PlannedStep | PlannedRepeat, ...], history: "History", run_one: RunOne,
             log: Callable[[str], None]) -> CompressionError | None:
    """Run every step in order through ``run_one``, a repeat's inner steps
    once per round; stops at the first failure and returns it (None when
    every step ran)."""
    for item in planned:
        failure = _run_repeat(item, history, run_one, log) if isinstance(item, PlannedRepeat) \
            else run_one(item, None)
        if failure is not None:
            return failure
    return None


def _run_repeat(item: PlannedRepeat, history: "History", run_one: RunOne,
                log: Callable[[str], None]) -> CompressionError | None:
    """The rounds of one repeat, stopped after the first that meets ``until``."""
    spec = item.spec
    for number in range(1, spec.times + 1):
        for inner in item.steps:
            failure = run_one(inner, Round(number, spec.times, spec.index))
            if failure is not None:
                return failure
        if spec.until is None:
            continue
        met, compared = check_until(spec.until, history.final)
        if met:
            _note_until(history, True)
            left = spec.times - number
            log(f"step {spec.index} ({REPEAT}): until met after round {number} ({compared}); "
                + (f"{left} remaining round{'s' * (left != 1)} skipped" if left else "that was the last round"))
            return None
    if spec.until is not None:
        _note_until(history, False)
        log(f"step {spec.index} ({REPEAT}): until not met after all {spec.times} rounds ({compared}); "
            "going on with the next step")
    return None


def _note_until(history: "History", met: bool) -> None:
    """Note ``until_met`` on the record of the step that ended the round."""
    last = history.steps[-1]
    history.steps[-1] = replace(last, notes={**last.notes, "until_met": met})
