"""Recipes: a TOML file naming a model, how to score it, and ordered steps.

```toml
[model]
spec = "micronet:resnet18_cifar"
input = [1, 3, 32, 32]          # optional: the model's or the track's default
weights = "trained.pt"          # optional, relative to the recipe file

[score]
track = "cifar10"
rulebook = "imta-2021"
freebie = true

[data]
dataset = "cifar10:~/data"
mixup = 0.2

[[step]]
use = "finetune"                # trains with mixup = 0.2, the recipe's [data]

[[step]]
use = "distill"
[step.data]                     # this step only: the recipe's [data] with these keys replaced
mixup = 0.0                     # (inline: data = {mixup = 0.0})

[[step]]
use = "repeat"                  # a schedule: rounds of the inner steps
times = 10                      # at most this many rounds (>= 1)
until = {sparsity = 0.65}       # optional: stop after the first round that meets every bound
  [[step.steps]]
  use = "sparsify"
  amount = 0.1
  [[step.steps]]
  use = "distill"
  epochs = 1
```

A step's ``data`` table takes the keys of ``[data]``, checked alike; it is
not an option of the step (a step's own option named ``data`` cannot be
set from a recipe). Without a recipe ``[data]`` table it must name
``dataset``. Accuracy after each step is measured with the recipe's
``[data]`` only, so that every step's top-1 is on the same test split.

``repeat`` (a reserved name) holds ``steps`` (one ``[[step.steps]]`` table
each, with their own ``data`` if they like; a repeat inside a repeat is
refused), ``times`` and ``until``, whose bounds are ``score`` (total score
<= value), ``sparsity`` (zero fraction of the sparsifiable weights, those
whose sparsity the rules charge, >= value, in [0, 1]), ``accuracy`` (top-1
percent >= value) and ``bar = true`` (the track's quality bar met); the
last two need ``[data]`` with a dataset. Without ``until`` all ``times``
rounds run. Each inner step of each round is one step of the history
(:mod:`micronet.schedule` runs them).

Everything is validated before any work starts: unknown tables or keys,
wrong types, unknown steps and their options, each error naming where it is
(``step 2 (repeat) > step 1 (sparsify)`` inside a repeat).
"""
from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping

from .training.data import check_data_options
from .errors import UsageError

__all__ = ["Recipe", "StepSpec", "RepeatSpec", "Until", "REPEAT", "load_recipe", "parse_recipe"]

#: The step name a recipe keeps for schedules; a plugin's step of that name cannot be used.
REPEAT = "repeat"

_MODEL_KEYS = {"spec": str, "input": list, "weights": str, "trust": bool}
_SCORE_KEYS = {"track": str, "rulebook": str, "freebie": bool}
_DATA_KEYS = {"dataset": str, "batch_size": int, "workers": int, "calibration_batches": int,
              "augment": bool, "mixup": float, "cutmix": float}
_REPEAT_KEYS = ("times", "until", "steps")
_UNTIL_KEYS = {"score": float, "sparsity": float, "accuracy": float, "bar": bool}


@dataclass(frozen=True)
class StepSpec:
    """One ``[[step]]`` entry: the step's name, its raw options, and its own
    ``data`` table (the keys it overrides in the recipe's ``[data]``; None
    when it has none). ``within`` is the enclosing repeat's location (``""``
    at the top level); ``index`` counts from 1 in its list of steps."""

    index: int
    use: str
    options: Mapping[str, Any] = field(default_factory=dict)
    data: Mapping[str, Any] | None = None
    within: str = ""

    @property
    def where(self) -> str:
        """How errors name the step: ``step 3 (distill)``, or
        ``step 2 (repeat) > step 1 (sparsify)`` inside a repeat."""
        here = f"step {self.index} ({self.use})"
        return f"{self.within} > {here}" if self.within else here

    def to_dict(self) -> dict[str, Any]:
        entry = {"use": self.use, **self.options}
        return entry if self.data is None else {**entry, "data": dict(self.data)}


@dataclass(frozen=True)
class Until:
    """When a repeat stops early: every bound given must hold for the result
    of a round. ``score``: total score <= it; ``sparsity``: zero fraction of
    the sparsifiable weights >= it (0..1); ``accuracy``: top-1 percent >= it;
    ``bar``: the track's quality bar met."""

    score: float | None = None
    sparsity: float | None = None
    accuracy: float | None = None
    bar: bool = False

    def to_dict(self) -> dict[str, Any]:
        bounds = {"score": self.score, "sparsity": self.sparsity, "accuracy": self.accuracy}
        return {**{k: v for k, v in bounds.items() if v is not None}, **({"bar": True} if self.bar else {})}


@dataclass(frozen=True)
class RepeatSpec:
    """A ``use = "repeat"`` entry: up to ``times`` rounds of ``steps``, stopped
    after the first round whose result meets ``until`` (None: all rounds)."""

    index: int
    times: int
    steps: tuple[StepSpec, ...]
    until: Until | None = None

    @property
    def use(self) -> str:
        return REPEAT

    @property
    def where(self) -> str:
        return f"step {self.index} ({REPEAT})"

    def to_dict(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"use": REPEAT, "times": self.times}
        if self.until is not None:
            entry["until"] = self.until.to_dict()
        return {**entry, "steps": [s.to_dict() for s in self.steps]}


@dataclass(frozen=True)
class Recipe:
    """A parsed recipe (paths already resolved against the recipe's folder)."""

    spec: str
    input_shape: tuple[int, ...] | None = None
    weights: str | None = None
    trust: bool = False
    track: str = "cifar100"
    rulebook: str = "micronet-2019"
    freebie: bool = True
    data: Mapping[str, Any] | None = None
    steps: tuple[StepSpec | RepeatSpec, ...] = ()
    source: str = "<dict>"
    #: The recipe file's folder: relative paths in step options (``StepOption.path``) start there.
    base: str | None = None

    def data_for(self, step: StepSpec) -> Mapping[str, Any] | None:
        """The data table ``step`` receives: the recipe's ``[data]`` with the
        step's own ``data`` keys replacing its keys (None when neither exists)."""
        if step.data is None:
            return self.data
        return {**(self.data or {}), **step.data}

    def with_dataset(self, text: str) -> "Recipe":
        """This recipe reading ``text`` (``cifar10:PATH``, ``digits``, ...) as
        its ``[data]`` dataset, the table's other keys kept (``micronet
        compress --data``); a step naming its own dataset keeps it."""
        from .training.data import parse_dataset

        parse_dataset(text)  # a one-line UsageError naming the accepted forms
        return replace(self, data={**(self.data or {}), "dataset": text})

    def to_dict(self) -> dict[str, Any]:
        """The recipe as plain data (for history files)."""
        return {
            "model": {"spec": self.spec, "input": list(self.input_shape) if self.input_shape else None,
                      "weights": self.weights},
            "score": {"track": self.track, "rulebook": self.rulebook, "freebie": self.freebie},
            "data": dict(self.data) if self.data is not None else None,
            "steps": [s.to_dict() for s in self.steps],
        }


def _type_error(value: Any, expected: type) -> str | None:
    """``"must be int, got str 'x'"`` when ``value`` is not of the TOML type
    ``expected`` (an integer passes for a float, a boolean for no number)."""
    ok = isinstance(value, expected) and not (expected is not bool and isinstance(value, bool))
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    return None if ok else f"must be {expected.__name__}, got {type(value).__name__} {value!r}"


def _table(document: Mapping, name: str, keys: Mapping[str, type], source: str,
           required: bool = False) -> dict[str, Any]:
    table = document.get(name)
    if table is None:
        if required:
            raise UsageError(f"{source}: missing [{name}] table", hint='e.g. [model] spec = "resnet18"')
        return {}
    if not isinstance(table, dict):
        raise UsageError(f"{source}: [{name}] must be a table")
    _check_keys(table, keys, unknown=lambda key: f"{source}: unknown key {key!r} in [{name}]",
                where=f"{source}: [{name}]")
    return dict(table)


def _check_keys(table: Mapping[str, Any], keys: Mapping[str, type], *, unknown: Callable[[str], str],
                where: str) -> None:
    """Every key of ``table`` known and of its TOML type; ``unknown(key)``
    words a key not in ``keys``, ``where`` starts the message for a wrong type."""
    for key, value in table.items():
        if key not in keys:
            raise UsageError(f"{unknown(key)}; known: {', '.join(keys)}")
        problem = _type_error(value, keys[key])
        if problem:
            raise UsageError(f"{where} {key} {problem}")


def parse_recipe(document: Mapping[str, Any], source: str = "<dict>", base: Path | None = None) -> Recipe:
    """Validate a recipe document (the parsed TOML) and build a :class:`Recipe`."""
    known = {"model", "score", "data", "step"}
    for key in document:
        if key not in known:
            raise UsageError(f"{source}: unknown table [{key}]; known: [model], [score], [data], [[step]]")
    model = _table(document, "model", _MODEL_KEYS, source, required=True)
    if "spec" not in model:
        raise UsageError(f"{source}: [model] needs spec", hint='e.g. spec = "micronet:resnet18_cifar"')
    score = _table(document, "score", _SCORE_KEYS, source)
    data = _table(document, "data", _DATA_KEYS, source) if "data" in document else None
    if data is not None:
        check_data_options(data, f"{source}: [data]")
    shape = model.get("input")
    if shape is not None and not (shape and all(isinstance(s, int) and not isinstance(s, bool) and s > 0
                                                for s in shape)):
        raise UsageError(f"{source}: [model] input must be a list of positive integers, got {shape!r}")
    weights = model.get("weights")
    if weights is not None and base is not None and not os.path.isabs(weights):
        weights = str(base / weights)
    steps = _steps(document.get("step", []), _Context(source, data), "", "steps must be written as [[step]] tables")
    return Recipe(
        spec=model["spec"], input_shape=tuple(shape) if shape else None, weights=weights,
        trust=model.get("trust", False), track=score.get("track", "cifar100"),
        rulebook=score.get("rulebook", "micronet-2019"), freebie=score.get("freebie", True),
        data=data, steps=steps, source=source, base=str(base) if base is not None else None,
    )


@dataclass(frozen=True)
class _Context:
    """What parsing a step needs to know of its recipe."""

    source: str
    data: Mapping[str, Any] | None


def _steps(entries: Any, context: _Context, within: str, shape_error: str) -> tuple[StepSpec | RepeatSpec, ...]:
    """The ``[[step]]`` (or a repeat's ``[[step.steps]]``) tables, each checked."""
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise UsageError(f"{context.source}: {shape_error}")
    specs = []
    for index, entry in enumerate(entries, start=1):
        use = entry.get("use")
        if not isinstance(use, str) or not use:
            raise UsageError(f"{context.source}: {within + ' > ' if within else ''}step {index} "
                             "needs use = \"STEP_NAME\"")
        if use == REPEAT:
            specs.append(_repeat(index, entry, context, within))
            continue
        spec = StepSpec(index, use, {k: v for k, v in entry.items() if k not in ("use", "data")}, within=within)
        specs.append(replace(spec, data=_step_data(entry.get("data"), spec, context)))
    return tuple(specs)


def _step_data(table: Any, spec: StepSpec, context: _Context) -> dict[str, Any] | None:
    """A step's own ``data`` table, checked as ``[data]`` is."""
    if table is None:
        return None
    where = f"{context.source}: {spec.where}: [step.data]"
    if not isinstance(table, dict):
        raise UsageError(f"{where} must be a table, got {type(table).__name__} {table!r}",
                         hint="e.g. data = {mixup = 0.0}, or a [step.data] table after the [[step]]")
    _check_keys(table, _DATA_KEYS, unknown=lambda key: f"{where} unknown key {key!r}", where=where)
    check_data_options(table, where)
    if context.data is None and "dataset" not in table:
        raise UsageError(f"{where} overrides a [data] table the recipe does not have",
                         hint='name the dataset here (dataset = "digits"), or add a [data] table')
    return dict(table)


def _repeat(index: int, entry: Mapping[str, Any], context: _Context, within: str) -> RepeatSpec:
    """A ``use = "repeat"`` entry: its keys, ``times``, ``until`` and inner steps."""
    where = f"{context.source}: {within + ' > ' if within else ''}step {index} ({REPEAT})"
    if within:
        raise UsageError(f"{where}: a repeat cannot hold another repeat",
                         hint="write the inner repeat's steps out, or give the outer repeat more times")
    for key in entry:
        if key != "use" and key not in _REPEAT_KEYS:
            raise UsageError(f"{where}: unknown key {key!r}; a repeat takes: {', '.join(_REPEAT_KEYS)}",
                             hint="options and data belong to its inner steps ([[step.steps]])")
    times = entry.get("times")
    if times is None or _type_error(times, int) or times < 1:
        raise UsageError(f"{where}: times must be an integer >= 1 (the most rounds), got {times!r}",
                         hint="e.g. times = 10")
    if "steps" not in entry or entry["steps"] == []:
        raise UsageError(f"{where}: no steps to repeat", hint='add [[step.steps]] tables, e.g. use = "sparsify"')
    steps = _steps(entry["steps"], context, f"step {index} ({REPEAT})",
                   f"step {index} ({REPEAT}): its steps must be written as [[step.steps]] tables")
    until = _until(entry["until"], where, context) if "until" in entry else None
    return RepeatSpec(index, times, steps, until)


def _until(table: Any, where: str, context: _Context) -> Until:
    """A repeat's ``until`` table: known bounds, of their types and ranges."""
    if not isinstance(table, dict) or not table:
        raise UsageError(f"{where}: until must be a table of bounds, got {table!r}",
                         hint="e.g. until = {sparsity = 0.65}; keys: " + ", ".join(_UNTIL_KEYS))
    _check_keys(table, _UNTIL_KEYS, unknown=lambda key: f"{where}: until: unknown key {key!r}",
                where=f"{where}: until")
    ranges = {"score": (0.0, math.inf, "a score >= 0"), "sparsity": (0.0, 1.0, "a fraction in [0, 1]"),
              "accuracy": (0.0, 100.0, "a top-1 percentage in [0, 100]")}
    for key, (low, high, wanted) in ranges.items():
        value = table.get(key)
        if value is not None and not (math.isfinite(value) and low <= value <= high):
            raise UsageError(f"{where}: until {key} must be {wanted}, got {value!r}")
    if table.get("bar") is False:
        raise UsageError(f"{where}: until bar = false stops on nothing",
                         hint="bar = true stops once the track's quality bar is met; or leave bar out")
    measured = [key for key in ("accuracy", "bar") if key in table]
    if measured and (context.data is None or "dataset" not in context.data):
        raise UsageError(f"{where}: until {measured[0]} needs top-1, and the recipe has no [data] dataset "
                         "to measure it on", hint='add [data] dataset = "digits" (or cifar10:PATH, ...)')
    return Until(**{key: float(value) if key != "bar" else value for key, value in table.items()})


def load_recipe(path: str | os.PathLike) -> Recipe:
    """Read and validate a TOML recipe file."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as error:
        raise UsageError(f"cannot read recipe {path}: {error.strerror or error}") from error
    except UnicodeDecodeError as error:
        raise UsageError(f"{file.name}: not UTF-8 text (byte {error.object[error.start]:#04x} at offset "
                         f"{error.start}); a recipe must be UTF-8 TOML",
                         hint="save the file as UTF-8") from error
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise UsageError(f"{file.name}: not valid TOML: {error}") from error
    return parse_recipe(document, file.name, file.resolve().parent)
