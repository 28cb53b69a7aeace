"""Which layers a built-in step works on, chosen by name globs.

A step's candidates are its built-in layer kinds (``nn.Conv*`` / ``nn.Linear``
for most) plus the module classes plugins declared as
:class:`~micronet.steps.WeightedLayer`. ``layers`` / ``ignore`` globs pick
among them by dotted module name (``fnmatch``, whole names: ``layer1.*``,
``*.conv2``). A glob that matches no candidate, and a selection that leaves
nothing, is said in one message each: the step warns it
(:class:`StepWarnings`) and keeps it in its notes.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Callable, Generic, Iterable, Mapping, Sequence, TypeVar

import torch
from torch import nn

from .steps import StepContext, WeightedLayer

__all__ = ["BUILTIN_WEIGHTED", "Candidate", "Selection", "StepWarnings", "glob_matches", "kinds_text",
           "registered_for", "select_modules", "weighted_candidates"]

#: Layers every built-in step knows, whose parameter ``weight`` it selects.
BUILTIN_WEIGHTED: tuple[type[nn.Module], ...] = (nn.modules.conv._ConvNd, nn.Linear)


class StepWarnings:
    """Warnings a step raises (``warnings.warn``, which ``micronet compress``
    prints) and also records, so they land in the step's notes
    (``context.note("warnings", [...])``)."""

    def __init__(self, step: str, category: type[Warning] = UserWarning):
        self.step, self.category = step, category
        self.messages: list[str] = []

    def warn(self, message: str) -> None:
        self.messages.append(message)
        warnings.warn(f"{self.step}: {message}", self.category, stacklevel=3)

    def note(self, context: StepContext) -> None:
        if self.messages:
            context.note("warnings", list(self.messages))


@dataclass(frozen=True)
class Candidate:
    """A layer a step may select: the module, the name of its weight
    parameter, and the plugin declaration that made it one (None for the
    built-in kinds)."""

    module: nn.Module
    weight: str = "weight"
    declared: WeightedLayer | None = None

    @property
    def tensor(self) -> torch.Tensor:
        """The weight parameter itself."""
        return self.module._parameters[self.weight]


def registered_for(module: nn.Module, layers: Iterable[WeightedLayer]) -> WeightedLayer | None:
    """The declaration ``module`` is an instance of; the most specific class wins."""
    mro = type(module).__mro__
    found = [layer for layer in layers if isinstance(module, layer.module_class)]
    return min(found, key=lambda layer: mro.index(layer.module_class), default=None)


def weighted_candidates(modules: Iterable[tuple[str, nn.Module]], layers: Sequence[WeightedLayer],
                        builtin: tuple[type[nn.Module], ...] = BUILTIN_WEIGHTED) -> dict[str, Candidate]:
    """name -> :class:`Candidate` for each named module that is one of
    ``builtin`` (weight ``"weight"``) or a declared weighted layer, and owns
    that weight as a parameter. A declaration beats a built-in kind it subclasses."""
    found = {}
    for name, module in modules:
        declared = registered_for(module, layers)
        weight = declared.weight if declared is not None else "weight"
        if declared is None and not isinstance(module, builtin):
            continue
        if name and isinstance(module._parameters.get(weight), torch.Tensor):
            found[name] = Candidate(module, weight, declared)
    return found


def kinds_text(builtin: str, layers: Sequence[WeightedLayer]) -> str:
    """``"Conv/Linear"`` or, with declared layers, ``"Conv/Linear or ScaledLinear"``."""
    names = sorted({layer.module_class.__name__ for layer in layers})
    return f"{builtin} or {', '.join(names)}" if names else builtin


def glob_matches(names: Iterable[str], globs: Iterable[str]) -> dict[str, list[str]]:
    """glob -> the names it matches as a whole (``fnmatchcase``), in order."""
    names = list(names)
    return {glob: [name for name in names if fnmatchcase(name, glob)] for glob in globs}


#: What a step selects among: modules, or :class:`Candidate` records.
T = TypeVar("T")


@dataclass(frozen=True)
class Selection(Generic[T]):
    """Layers chosen by name globs and size: ``modules`` (name -> candidate),
    ``unmatched`` (one message per glob that matched no candidate, and one
    when nothing is chosen) and ``small`` (names skipped for being under
    ``min_size``)."""

    modules: dict[str, T]
    unmatched: tuple[str, ...]
    small: tuple[str, ...]


def select_modules(candidates: Mapping[str, T], layers: Sequence[str], ignore: Sequence[str],
                   min_size: int, size: Callable[[T], int], what: str) -> Selection[T]:
    """Candidates whose name matches a ``layers`` glob (all when empty) and
    no ``ignore`` glob, of ``size(module) >= min_size``; ``what`` names the
    candidates in the messages (``"Conv/Linear layer"``)."""
    messages = [f"{key} glob {glob!r} matches no {what}"
                for key, globs in (("layers", layers), ("ignore", ignore))
                for glob, names in glob_matches(candidates, globs).items() if not names]
    chosen = {name: module for name, module in candidates.items()
              if (not layers or any(fnmatchcase(name, g) for g in layers))
              and not any(fnmatchcase(name, g) for g in ignore)}
    if not candidates:
        messages.append(f"the model has no {what}: nothing is selected")
    elif not chosen:
        messages.append(f"no {what} is selected (layers {list(layers)}, ignore {list(ignore)})")
    small = tuple(name for name, module in chosen.items() if size(module) < min_size)
    kept = {name: module for name, module in chosen.items() if name not in small}
    return Selection(kept, tuple(messages), small)
