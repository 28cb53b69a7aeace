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

[[step]]
use = "half"
```

Everything is validated before any work starts: unknown tables or keys,
wrong types, unknown steps and their options, each error naming where it is.
"""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .training.data import check_data_options
from .errors import UsageError

__all__ = ["Recipe", "StepSpec", "load_recipe", "parse_recipe"]

_MODEL_KEYS = {"spec": str, "input": list, "weights": str, "trust": bool}
_SCORE_KEYS = {"track": str, "rulebook": str, "freebie": bool}
_DATA_KEYS = {"dataset": str, "batch_size": int, "workers": int, "calibration_batches": int,
              "augment": bool, "mixup": float, "cutmix": float}


@dataclass(frozen=True)
class StepSpec:
    """One ``[[step]]`` entry: the step's name and its raw options."""

    index: int
    use: str
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"step {self.index} ({self.use})"


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
    steps: tuple[StepSpec, ...] = ()
    source: str = "<dict>"

    def to_dict(self) -> dict[str, Any]:
        """The recipe as plain data (for history files)."""
        return {
            "model": {"spec": self.spec, "input": list(self.input_shape) if self.input_shape else None,
                      "weights": self.weights},
            "score": {"track": self.track, "rulebook": self.rulebook, "freebie": self.freebie},
            "data": dict(self.data) if self.data is not None else None,
            "steps": [{"use": s.use, **s.options} for s in self.steps],
        }


def _table(document: Mapping, name: str, keys: Mapping[str, type], source: str,
           required: bool = False) -> dict[str, Any]:
    table = document.get(name)
    if table is None:
        if required:
            raise UsageError(f"{source}: missing [{name}] table", hint='e.g. [model] spec = "resnet18"')
        return {}
    if not isinstance(table, dict):
        raise UsageError(f"{source}: [{name}] must be a table")
    for key, value in table.items():
        if key not in keys:
            raise UsageError(f"{source}: unknown key {key!r} in [{name}]; known: {', '.join(keys)}")
        expected = keys[key]
        ok = isinstance(value, expected) and not (expected is not bool and isinstance(value, bool))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if not ok:
            raise UsageError(f"{source}: [{name}] {key} must be {expected.__name__}, "
                             f"got {type(value).__name__} {value!r}")
    return dict(table)


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
    steps = document.get("step", [])
    if not isinstance(steps, list) or not all(isinstance(s, dict) for s in steps):
        raise UsageError(f"{source}: steps must be written as [[step]] tables")
    specs = []
    for index, entry in enumerate(steps, start=1):
        use = entry.get("use")
        if not isinstance(use, str) or not use:
            raise UsageError(f"{source}: step {index} needs use = \"STEP_NAME\"")
        specs.append(StepSpec(index, use, {k: v for k, v in entry.items() if k != "use"}))
    return Recipe(
        spec=model["spec"], input_shape=tuple(shape) if shape else None, weights=weights,
        trust=model.get("trust", False), track=score.get("track", "cifar100"),
        rulebook=score.get("rulebook", "micronet-2019"), freebie=score.get("freebie", True),
        data=data, steps=tuple(specs), source=source,
    )


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
