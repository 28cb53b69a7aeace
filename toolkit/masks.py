"""The mask convention: how a pruned weight stays pruned through training.

A pruning step that zeroes part of a parameter ``name`` of a module leaves a
boolean buffer ``f"{name}_mask"`` beside it (``conv.weight_mask`` for
``conv.weight``): ``True`` where the value is kept, ``False`` where it was
pruned. The parameter itself holds real zeros at the pruned positions, so
the audit measures them and a saved state dict carries them.

- :func:`set_mask` registers (or replaces) the mask and zeroes the masked
  values now.
- :func:`apply_masks` re-zeroes every masked parameter of a model: a
  fine-tuning step calls it after each optimizer step (gradient updates and
  weight decay move pruned values away from zero).
- :func:`masks` iterates the masks of a model.

Masks are buffers, not parameters: the audit charges parameters only, so a
mask costs no storage (the rules' bitmask is charged from the zeros, not
from this buffer). They are *non-persistent*: they survive ``copy.deepcopy``
(every pipeline step works on a deep copy) and ``torch.export``, but not
``state_dict()``, so a compressed model's ``state_dict.pt`` loads strictly
into the architecture it came from. After reloading such weights,
:func:`mask_zeros` rebuilds the masks from the zeros.

A step that replaces a masked module (a factorisation) drops its masks with
it: the new layers are dense.
"""
from __future__ import annotations

from typing import Iterator, NamedTuple

import torch
from torch import nn

__all__ = ["MASK_SUFFIX", "MaskedParameter", "set_mask", "apply_masks", "masks", "mask_zeros"]

#: A mask of parameter ``name`` is the buffer ``name + MASK_SUFFIX``.
MASK_SUFFIX = "_mask"


class MaskedParameter(NamedTuple):
    """One mask: ``path`` is the parameter's dotted name in the model
    (``"layer1.0.conv1.weight"``), ``module`` its owner, ``name`` its name
    there (``"weight"``), ``mask`` the bool buffer (True = kept)."""

    path: str
    module: nn.Module
    name: str
    mask: torch.Tensor


def set_mask(module: nn.Module, name: str, mask: torch.Tensor) -> None:
    """Register ``mask`` (bool, the parameter's shape, True = kept) as the
    buffer ``f"{name}_mask"`` of ``module``, replacing any earlier one, and
    zero the parameter where the mask is False."""
    param = module._parameters.get(name)
    if param is None:
        raise ValueError(f"{type(module).__name__} has no parameter {name!r} to mask")
    if tuple(mask.shape) != tuple(param.shape):
        raise ValueError(f"mask for {name!r} has shape {tuple(mask.shape)}, "
                         f"expected the parameter's {tuple(param.shape)}")
    mask = mask.detach().to(device=param.device, dtype=torch.bool)
    module.register_buffer(name + MASK_SUFFIX, mask, persistent=False)
    with torch.no_grad():
        param.masked_fill_(~mask, 0)


def masks(model: nn.Module) -> Iterator[MaskedParameter]:
    """Every mask of ``model`` (a bool buffer ``X_mask`` beside a parameter
    ``X`` of the same shape), in ``named_modules()`` order."""
    for prefix, module in model.named_modules():
        for buffer_name, buffer in module._buffers.items():
            if buffer is None or buffer.dtype != torch.bool or not buffer_name.endswith(MASK_SUFFIX):
                continue
            name = buffer_name[: -len(MASK_SUFFIX)]
            param = module._parameters.get(name)
            if param is not None and param.shape == buffer.shape:
                yield MaskedParameter(f"{prefix}.{name}" if prefix else name, module, name, buffer)


def apply_masks(model: nn.Module) -> int:
    """Zero every masked value of ``model`` again (call after each optimizer
    step); returns the number of masked parameters."""
    count = 0
    with torch.no_grad():
        for entry in masks(model):
            getattr(entry.module, entry.name).masked_fill_(~entry.mask, 0)
            count += 1
    return count


def mask_zeros(module: nn.Module, name: str = "weight") -> None:
    """Mask the values of ``module.<name>`` that are exactly zero (rebuilds
    a mask from weights saved with their zeros)."""
    set_mask(module, name, getattr(module, name) != 0)
