"""Compression steps: what a plugin declares, and how options are checked.

A step is a pure transformation ``run(model, options, context) -> nn.Module``.
The pipeline hands it a *copy* of the model as a ``torch.fx.GraphModule``,
re-captures and re-scores what it returns, and never lets it touch the
input. Options are declared up front so that a recipe is validated, with
every unknown key and wrong type named, before any work starts.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from torch import nn

from .errors import UsageError

__all__ = ["StepOption", "CompressionStep", "StepContext", "check_options", "MISSING"]


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
    return an error message for values out of range.
    """

    name: str
    types: tuple[type, ...]
    default: Any = MISSING
    help: str = ""
    choices: tuple[Any, ...] = ()
    check: Callable[[Any], str | None] | None = None


@dataclass(frozen=True)
class StepContext:
    """What a step may know besides its model and options.

    ``input_shape`` is the model's input (batch 1); ``result`` the audit of
    the model it receives; ``data`` the recipe's data settings (or None);
    ``device`` where to run any computation; ``original`` the pipeline's
    input model (a teacher for distillation; do not modify it).
    ``trust`` says whether the user passed ``--trust`` (recipe: ``trust =
    true``): a step that resolves specs or loads files named in its options
    must pass it on (``resolve_model(..., trust=context.trust)``).
    ``note(key, value)`` records a
    fact about how the step ran (e.g. which batches an importance used); the
    notes land in the step's record and in ``history.json``.
    """

    input_shape: tuple[int, ...]
    result: Any
    data: Mapping[str, Any] | None = None
    device: str = "cpu"
    log: Callable[[str], None] = print
    notes: dict[str, Any] = field(default_factory=dict)
    original: nn.Module | None = None
    trust: bool = False

    def note(self, key: str, value: Any) -> None:
        """Record ``key = value`` (JSON-friendly) for this step's history entry."""
        self.notes[key] = value


@dataclass(frozen=True)
class CompressionStep:
    """A registered compression step (see ``micronet_register_steps``).

    ``validate(options)`` (optional) checks combinations of options that a
    single :class:`StepOption` cannot, raising UsageError; the pipeline calls
    it for every step before any work starts.
    """

    name: str
    description: str
    run: Callable[[nn.Module, Mapping[str, Any], StepContext], nn.Module]
    options: tuple[StepOption, ...] = ()
    replace: bool = False
    validate: Callable[[Mapping[str, Any]], None] | None = None

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


def check_options(step: CompressionStep, given: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Options of ``step`` with defaults filled in; a UsageError names the
    step (``where``) and the key for unknown keys, wrong types, bad values or
    missing required options."""
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
    if step.validate is not None:
        try:
            step.validate(options)
        except UsageError as error:
            raise UsageError(f"{where}: {error}") from error
    return options
