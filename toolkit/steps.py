"""Compression steps: what a plugin declares, and how options are checked.

A step is a pure transformation ``run(model, options, context) -> nn.Module``.
The pipeline hands it a *copy* of the model as a ``torch.fx.GraphModule``,
re-captures and re-scores what it returns, and never lets it touch the
input. Options are declared up front so that a recipe is validated, with
every unknown key and wrong type named, before any work starts.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from torch import nn

from .errors import UsageError

__all__ = ["StepOption", "CompressionStep", "StepContext", "WeightedLayer", "check_options", "MISSING",
           "check_globs", "at_least", "within", "model_device", "model_dtype"]


class _Missing:
    def __repr__(self) -> str:
        return "<required>"


#: Default of an option the recipe must give.
MISSING: Any = _Missing()


@dataclass(frozen=True)
class StepOption:
    """One option of a step: its name, accepted types, default and help.

    ``types`` are Python types as TOML produces them (``int``, ``float``,
    ``bool``, ``str``, ``list``, ``dict``); an ``int`` is accepted where a
    ``float`` is. ``choices`` restricts the values; ``check(value)`` may
    return an error message for values out of range. ``path``: the value is
    a file or folder, and a relative one is taken from the recipe file's
    folder (as ``[model] weights`` is), not from where the command runs.
    """

    name: str
    types: tuple[type, ...]
    default: Any = MISSING
    help: str = ""
    choices: tuple[Any, ...] = ()
    check: Callable[[Any], str | None] | None = None
    path: bool = False


@dataclass(frozen=True)
class StepContext:
    """What a step may know besides its model and options.

    ``input_shape`` is the model's input (batch 1); ``result`` the audit of
    the model it receives; ``data`` the recipe's data settings merged with the step's own
    ``[step.data]`` table (or None);
    ``device`` where to run any computation; ``original`` the pipeline's
    input model (a teacher for distillation; do not modify it).
    ``trust`` says whether the user passed ``--trust`` (recipe: ``trust =
    true``): a step that resolves specs or loads files named in its options
    must pass it on (``resolve_model(..., trust=context.trust)``).
    ``note(key, value)`` records a
    fact about how the step ran (e.g. which batches an importance used); the
    notes land in the step's record and in ``history.json``.
    ``registries`` are the run's merged :class:`~micronet.manager.Registries`
    (None outside a pipeline: then only the built-ins are known);
    :attr:`weighted_layers` reads the plugins' weighted layers from them.
    ``earlier`` holds the records of the steps that ran before this one
    (:class:`~micronet.pipeline.StepRecord`: name, options, notes, result,
    ``changed``), so a step can reuse what an earlier one measured.
    ``progress``: draw progress bars on the terminal; false under
    ``--quiet`` (a step passes it to :func:`micronet.sweep.run_tasks` and to
    :class:`~micronet.training.train.TrainConfig`; the bar itself shows only
    when stderr is a terminal and tqdm is installed).
    """

    input_shape: tuple[int, ...]
    result: Any
    data: Mapping[str, Any] | None = None
    device: str = "cpu"
    log: Callable[[str], None] = print
    notes: dict[str, Any] = field(default_factory=dict)
    original: nn.Module | None = None
    trust: bool = False
    registries: Any = None
    earlier: tuple[Any, ...] = ()
    progress: bool = False

    def note(self, key: str, value: Any) -> None:
        """Record ``key = value`` (JSON-friendly) for this step's history entry."""
        self.notes[key] = value

    @property
    def weighted_layers(self) -> tuple["WeightedLayer", ...]:
        """The weighted layers plugins registered for this run (none without registries)."""
        return tuple(self.registries.weighted_layers.values()) if self.registries is not None else ()


@dataclass(frozen=True)
class WeightedLayer:
    """A module class whose parameter ``weight`` the built-in steps ``prune``,
    ``sparsify``, ``quantize`` and ``factorise`` may select, besides
    ``nn.Conv*`` and ``nn.Linear`` (``micronet_register_weighted_layers``).

    The weight is read as ``[out, in*kernel]`` (dim 0 the outputs), the view
    :mod:`micronet.sparsity` measures. ``sparsify`` zeroes and masks it;
    ``quantize`` puts it on a per-output-channel grid and the layer's other
    parameters on per-tensor grids; ``factorise`` leaves it alone with a
    reason; ``prune`` keeps it whole, with the channels entering and leaving
    it. Subclasses match too. A class declared twice is refused, naming both
    plugins, unless the later declaration says ``replace=True``.
    """

    module_class: type[nn.Module]
    weight: str = "weight"
    replace: bool = False

    @property
    def name(self) -> str:
        """The class's dotted path: what duplicates are found by."""
        return f"{self.module_class.__module__}.{self.module_class.__qualname__}"

    def weight_of(self, module: nn.Module) -> torch.Tensor | None:
        """``module``'s weight parameter, if it has one."""
        return module._parameters.get(self.weight)


@dataclass(frozen=True)
class CompressionStep:
    """A registered compression step (see ``micronet_register_steps``).

    ``validate(options)`` (optional) checks combinations of options that a
    single :class:`StepOption` cannot, raising UsageError; the pipeline calls
    it for every step before any work starts. ``needs_data``: the step
    cannot run without a ``[data]`` table (the recipe's, or its own
    ``[step.data]`` naming a dataset: a measurement on real data), so a
    recipe without one is refused before any work.
    """

    name: str
    description: str
    run: Callable[[nn.Module, Mapping[str, Any], StepContext], nn.Module]
    options: tuple[StepOption, ...] = ()
    replace: bool = False
    validate: Callable[[Mapping[str, Any]], None] | None = None
    needs_data: bool = False

    def option(self, name: str) -> StepOption | None:
        return next((o for o in self.options if o.name == name), None)


def _type_names(types: tuple[type, ...]) -> str:
    return " or ".join(t.__name__ for t in types)


def _accepts(option: StepOption, value: Any) -> bool:
    if isinstance(value, bool) and bool not in option.types:
        return False  # TOML true is not a number
    if isinstance(value, int) and float in option.types:
        return True
    return isinstance(value, option.types)


def check_options(step: CompressionStep, given: Mapping[str, Any], where: str,
                  base: str | os.PathLike | None = None) -> dict[str, Any]:
    """Options of ``step`` with defaults filled in; a UsageError names the
    step (``where``) and the key for unknown keys, wrong types, bad values or
    missing required options. With ``base`` (the recipe's folder), a
    relative, non-empty value of a ``path`` option is joined to it."""
    known = {o.name: o for o in step.options}
    for key in given:
        if key not in known:
            listed = ", ".join(sorted(known)) or "none"
            raise UsageError(f"{where}: unknown option {key!r}; "
                             f"it takes: {listed}")
    options = {}
    for name, option in known.items():
        if name not in given:
            if option.default is MISSING:
                raise UsageError(f"{where}: option {name!r} is required",
                                 hint=option.help or None)
            options[name] = option.default
            continue
        value = given[name]
        if not _accepts(option, value):
            raise UsageError(f"{where}: option {name!r} must be "
                             f"{_type_names(option.types)}, got {type(value).__name__} {value!r}")
        if option.choices and value not in option.choices:
            raise UsageError(f"{where}: option {name!r} must be one of "
                             f"{', '.join(map(repr, option.choices))}, got {value!r}")
        problem = option.check(value) if option.check else None
        if problem:
            raise UsageError(f"{where}: option {name!r}: {problem}")
        options[name] = float(value) if float in option.types and isinstance(value, int) \
            and int not in option.types else value
        if option.path and base is not None and isinstance(value, str) and value \
                and not os.path.isabs(os.path.expanduser(value)):
            options[name] = os.path.join(base, value)
    if step.validate is not None:
        try:
            step.validate(options)
        except UsageError as error:
            raise UsageError(f"{where}: {error}") from error
    return options


# ------------------------------------------------------------- option checks
# ``StepOption.check`` functions shared by the built-in steps: each returns an
# error message for a bad value, or None.


def check_globs(value: list) -> str | None:
    """A list of non-empty glob strings (``["layer1.*", "*.conv2"]``)."""
    if not all(isinstance(item, str) and item for item in value):
        return f"expected a list of layer-name globs such as ['layer1.*'], got {value!r}"
    return None


def at_least(low: float, *, strict: bool = False) -> Callable[[float], str | None]:
    """A finite number ``>= low`` (``> low`` when ``strict``); ``low``'s type
    names the kind in the message: ``at_least(1)`` an integer, ``at_least(0.0)``
    a number."""
    kind = "an integer" if isinstance(low, int) else "a number"

    def check(value: float) -> str | None:
        if not math.isfinite(value) or value < low or strict and value == low:
            return f"expected {kind} {'>' if strict else '>='} {low}, got {value!r}"
        return None

    return check


def within(low: float, high: float, *, closed: bool = True) -> Callable[[float], str | None]:
    """A number in ``[low, high]`` (``[low, high)`` when not ``closed``)."""

    def check(value: float) -> str | None:
        if low <= value <= high and (closed or value < high):
            return None
        return f"expected a number in [{low}, {high}{']' if closed else ')'}, got {value!r}"

    return check


# ------------------------------------------------------------ device, dtype


def model_device(model: nn.Module) -> torch.device:
    """Where the model's first parameter (or buffer) lives; the CPU when it has none."""
    tensor = next(iter([*model.parameters(), *model.buffers()]), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def model_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the model's first floating-point parameter (float32 when none)."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
