"""How a plugin tells the score what a layer is stored and computed at.

This is the one way (part of the plugin contract, :mod:`micronet.plugin`):

- :func:`set_bits` ``(module, weight=4, input=8, accumulator=16)`` declares a
  layer's bit widths. ``weight`` covers every parameter the layer owns
  (weights and biases alike: the rules charge a layer's parameters at one
  width); ``input`` is the width of its input activations, so of its
  multiplies (a multiply costs its widest operand); ``accumulator`` the
  width of the additions in its dot products.
- :func:`declare_storage` ``(module, "codebook", elements=16, bits=32)``
  declares storage a compression adds beside the parameters (a clustering
  codebook, quantization scales and zero points): the rules charge
  ``elements x bits / 32`` to that layer's storage.

Both are kept as attributes of the module (``micronet_bits``,
``micronet_storage``), so they survive ``copy.deepcopy`` (every pipeline
step works on a copy), re-tracing, ``state_dict`` round trips of the
module object, and the ``model.pt2`` archive ``micronet compress`` writes
(carried in its extra file :data:`ARCHIVE_FILE` and restored when it is
read, without running anything).

Precedence, strongest first: the user's overrides (``--bits 'conv*=8'``,
``--act-bits``, ``--accumulator-bits``: an explicit request by name), then
what the model declares here, then the tensors' own dtypes (fp16/bf16 are
16 bits, int8 is 8).
"""
from __future__ import annotations

import json
from typing import Any, Mapping

from torch import nn

from .errors import UsageError
from .precision import check_bits

__all__ = ["set_bits", "bits_of", "bits_violation", "declare_storage", "storage_of", "declared_storage_bits",
           "archive_document", "restore_archive_document", "ARCHIVE_FILE", "BIT_KINDS"]

#: Extra file of a ``torch.export`` archive holding ``{module path: {"bits": ..., "storage": ...}}``.
ARCHIVE_FILE = "micronet_bits.json"
#: The widths :func:`set_bits` takes.
BIT_KINDS = ("weight", "input", "accumulator")

_BITS_ATTR = "micronet_bits"
_STORAGE_ATTR = "micronet_storage"
#: The pre-contract layout of :data:`ARCHIVE_FILE` (``{path: {"micronet_weight_bits": 4}}``),
#: read from archives written before it.
_LEGACY = {"weight": "micronet_weight_bits", "input": "micronet_input_bits",
           "accumulator": "micronet_accumulator_bits"}


def set_bits(module: nn.Module, *, weight: int | None = None, input: int | None = None,
             accumulator: int | None = None) -> None:
    """Declare the bit widths of ``module`` (a layer); ``None`` leaves a width
    as it was. Each width is a whole number from 1 to 64 (UsageError otherwise).

    :param weight: bits of every parameter the layer owns (weights and biases).
    :param input: bits of its input activations (and so of its multiplies).
    :param accumulator: bits of the additions of its dot products.
    """
    declared = dict(bits_of(module))
    for kind, value in (("weight", weight), ("input", input), ("accumulator", accumulator)):
        if value is not None:
            declared[kind] = check_bits(value, f"{kind} bits")
    object.__setattr__(module, _BITS_ATTR, declared)


def bits_of(module: nn.Module | None) -> Mapping[str, int]:
    """The widths declared for ``module`` (``{"weight": 4, ...}``; empty when none)."""
    if module is None:
        return {}
    return dict(vars(module).get(_BITS_ATTR) or {})


def declare_storage(module: nn.Module, name: str, *, elements: int, bits: int) -> None:
    """Declare ``elements`` values of ``bits`` bits stored for ``module`` beside
    its parameters (a codebook, scales); declaring a name again replaces it.

    The score charges ``elements * bits / 32`` to the layer's storage (in
    32-bit equivalents), whatever the freebie: it is not a parameter."""
    if not isinstance(name, str) or not name:
        raise UsageError(f"declare_storage needs a name, got {name!r}")
    if isinstance(elements, bool) or not isinstance(elements, int) or elements < 0:
        raise UsageError(f"declare_storage({name!r}): elements must be a whole number >= 0, got {elements!r}")
    declared = dict(storage_of(module))
    declared[name] = (elements, check_bits(bits, f"declare_storage({name!r}) bits"))
    object.__setattr__(module, _STORAGE_ATTR, declared)


def storage_of(module: nn.Module | None) -> Mapping[str, tuple[int, int]]:
    """The storage declared for ``module``: ``{name: (elements, bits)}``."""
    if module is None:
        return {}
    return dict(vars(module).get(_STORAGE_ATTR) or {})


def declared_storage_bits(module: nn.Module | None) -> int:
    """Total bits of the storage declared for ``module``."""
    return sum(elements * bits for elements, bits in storage_of(module).values())


def bits_violation(model: nn.Module) -> str | None:
    """Why ``model`` holds more than its declarations allow, or None.

    A parameter of a layer declaring ``b`` weight bits can hold at most
    ``2^b`` distinct values in each output channel (dim 0; the whole tensor
    for 0-d and 1-d ones) whatever the grid (uniform, per channel, a
    codebook). More means the score would charge ``b`` bits for values that
    need more, e.g. a quantized layer fine-tuned off its grid. Checked on the
    values the forward uses (a parametrized parameter's output)."""
    import torch
    from torch.nn.utils import parametrize

    for path, module in model.named_modules():
        bits = bits_of(module).get("weight")
        if bits is None or bits >= 32:
            continue
        names = list(getattr(module, "parametrizations", {}) or {}) if parametrize.is_parametrized(module) else []
        names += [n for n, p in module._parameters.items() if p is not None]
        for name in names:
            tensor = getattr(module, name)
            if not isinstance(tensor, torch.Tensor) or tensor.is_meta or not tensor.is_floating_point():
                continue
            rows = tensor.detach().reshape(tensor.shape[0], -1) if tensor.dim() > 1 else tensor.detach().reshape(1, -1)
            if rows.shape[1] <= 2 ** bits:
                continue
            ordered = rows.sort(dim=1).values
            distinct = 1 + (ordered[:, 1:] != ordered[:, :-1]).sum(dim=1)
            worst = int(distinct.argmax())
            if int(distinct[worst]) > 2 ** bits:
                where = f"output channel {worst}" if tensor.dim() > 1 else "the tensor"
                label = f"{path}.{name}" if path else name
                return (f"{label!r} declares {bits}-bit weights and holds {int(distinct[worst]):,} distinct values "
                        f"in {where} (at most {2 ** bits:,} fit in {bits} bit{'s' * (bits > 1)})")
    return None


def archive_document(model: nn.Module) -> str:
    """What :data:`ARCHIVE_FILE` holds for ``model``: every declaration, by module path."""
    document = {}
    for path, module in model.named_modules():
        entry = {"bits": dict(bits_of(module)), "storage": {k: list(v) for k, v in storage_of(module).items()}}
        if entry["bits"] or entry["storage"]:
            document[path] = entry
    return json.dumps(document)


def restore_archive_document(model: nn.Module, text: str | bytes) -> None:
    """Put the declarations of :func:`archive_document` back on ``model``.

    The text comes from a file: only whole numbers in range are taken, for
    known kinds and existing modules; anything else is ignored (an archive is
    usable without them). The pre-contract layout ``{path: {"micronet_weight_bits": 4}}``
    is read too."""
    try:
        document = json.loads(text) if text else {}
    except ValueError:
        return
    if not isinstance(document, dict):
        return
    for path, entry in document.items():
        module = _submodule(model, path)
        if module is None or not isinstance(entry, dict):
            continue
        bits = entry.get("bits", {k: entry[a] for k, a in _LEGACY.items() if a in entry})
        widths = {k: v for k, v in (bits.items() if isinstance(bits, dict) else ()) if k in BIT_KINDS and _width(v)}
        if widths:
            set_bits(module, **widths)
        storage = entry.get("storage")
        for name, value in (storage.items() if isinstance(storage, dict) else ()):
            if isinstance(value, list) and len(value) == 2 and _count(value[0]) and _width(value[1]):
                declare_storage(module, str(name), elements=value[0], bits=value[1])


def _submodule(model: nn.Module, path: Any) -> nn.Module | None:
    if not isinstance(path, str):
        return None
    try:
        return model.get_submodule(path)
    except AttributeError:
        return None


def _width(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 64


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
