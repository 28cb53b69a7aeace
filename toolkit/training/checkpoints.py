"""Reading weights from files: ``torch.load`` kept safe, state dicts matched.

``torch.load`` always runs with ``weights_only=True``; full unpickling (which
can run arbitrary code) happens only with ``trust=True``. State dicts are
unwrapped from common checkpoint layouts and loaded strictly, with errors
that name the missing and unexpected keys.
"""
from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from ..errors import SpecError

__all__ = ["load_weights", "load_state", "torch_load", "describe", "is_meta",
           "WRAPPER_KEYS", "WRAPPER_PREFIXES"]

#: Keys under which training checkpoints commonly wrap their state dict.
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")
#: Prefixes DataParallel (``module.``) and ``torch.compile`` (``_orig_mod.``) add.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
UNSAFE_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def describe(error: BaseException) -> str:
    """One line about an exception; a SyntaxError gives file and line."""
    if isinstance(error, SyntaxError):
        return f"syntax error in {Path(error.filename or '?').name} line {error.lineno}: {error.msg}"
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def is_meta(model: nn.Module) -> bool:
    """Whether the model's tensors live on the meta device (no data)."""
    # one pass over the module tree, stopping at the first meta tensor (the audit asks for every model)
    for module in model.modules():
        for tensor in (*module._parameters.values(), *module._buffers.values()):
            if tensor is not None and tensor.is_meta:
                return True
    return False


def torch_load(path: Path, *, trust: bool) -> object:
    """``torch.load`` with ``weights_only=True``; full unpickling only with ``trust``."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = UNSAFE_GLOBAL.search(str(error))
        if not found and not (zipfile.is_zipfile(path) and "weights only" in str(error).lower()):
            raise SpecError(f"cannot read {path.name}: not a file written by torch.save",
                            hint="expected a state dict, a model saved with its spec, "
                                 "or a torch.export archive") from error
        if not trust:
            what = f" ({found.group(1)}...)" if found else ""
            raise SpecError(f"{path.name} holds pickled Python objects{what}, and unpickling them "
                            "can run arbitrary code",
                            hint="pass --trust (trust=True) only for a file from a source you trust, "
                                 "or save a state dict with its spec instead") from error
    except Exception as error:
        raise SpecError(f"cannot read {path.name}: {describe(error)}",
                        hint="expected a file written by torch.save or torch.export.save") from error
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:
        raise SpecError(f"cannot unpickle {path.name}: {describe(error)}",
                        hint="the classes it pickled must be importable here") from error


def load_weights(model: nn.Module, weights: str | os.PathLike, *, trust: bool = False) -> None:
    """Load a local state-dict file into ``model`` (strictly: every key must match).

    Accepts ``{"state_dict": ...}``-style wrappers and ``module.`` prefixes.
    A model on the meta device gets the file's tensors assigned."""
    path = Path(weights).expanduser()
    if not path.is_file():
        raise SpecError(f"no such weights file: {weights}",
                        hint="give a local state dict saved with torch.save")
    load_state(model, _unwrap_state(torch_load(path, trust=trust), path.name), path.name)


def _unwrap_state(obj: object, where: str) -> Mapping[str, torch.Tensor]:
    if isinstance(obj, nn.Module):
        return obj.state_dict()
    if isinstance(obj, Mapping):
        for key in WRAPPER_KEYS:
            if isinstance(obj.get(key), (Mapping, nn.Module)):
                return _unwrap_state(obj[key], where)
        tensors = any(isinstance(v, torch.Tensor) for v in obj.values())
        if tensors and all(isinstance(k, str) for k in obj):
            return obj
    raise SpecError(f"{where} does not hold a state dict (got {type(obj).__name__})",
                    hint="save one with torch.save(model.state_dict(), FILE)")


def _strip_prefixes(state: Mapping[str, torch.Tensor], expected) -> Mapping[str, torch.Tensor]:
    for prefix in WRAPPER_PREFIXES:
        if all(k.startswith(prefix) for k in state) and not any(k.startswith(prefix) for k in expected):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def load_state(model: nn.Module, state: Mapping[str, torch.Tensor], where: str) -> None:
    """Load ``state`` strictly (DataParallel / compile prefixes stripped)."""
    expected = model.state_dict().keys()
    state = _strip_prefixes(state, expected)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = [_few(label, keys) for label, keys in (("missing", missing), ("unexpected", unexpected))
                 if keys]
        raise SpecError(f"{where} does not match the model: {'; '.join(parts)}",
                        hint="build the model with the spec and arguments used in training "
                             "(num_classes, width...)")
    try:
        model.load_state_dict(state, strict=True, assign=is_meta(model))
    except RuntimeError as error:
        lines = [line.strip() for line in str(error).splitlines() if "size mismatch" in line]
        detail = "; ".join(lines[:2]) or describe(error)
        raise SpecError(f"{where} does not match the model: {detail}",
                        hint="build the model with the spec and arguments used in training") from error


def _few(label: str, keys: list[str], shown: int = 3) -> str:
    more = f" and {len(keys) - shown} more" if len(keys) > shown else ""
    return f"{len(keys)} {label} key{'s' if len(keys) != 1 else ''} ({', '.join(keys[:shown])}{more})"
