"""Saved models: a state dict with its spec, a torch.export archive, a pickle.

- ``model.pt`` / ``.pth``: ``{"micronet_spec": spec, "state_dict": ...}``
  written by :func:`save_with_spec`; the spec is rebuilt, then the weights
  loaded (a spec that imports user code needs ``trust``) [state_dict];
- ``model.pt2``: a ``torch.export`` archive, read without unpickling (see
  :mod:`micronet.exportfile`) [export];
- any other file holding a pickled whole module, only with ``trust=True`` [pickle].

``torch.load`` always uses ``weights_only=True`` unless trusted
(:mod:`micronet.training.checkpoints`).
"""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Callable, Mapping

import torch
from torch import nn

from .bits import ARCHIVE_FILE, restore_archive_document
from .errors import SpecError
from .exportfile import is_export_archive, load_export
from .specs import ResolvedModel, parse_spec
from .training.checkpoints import describe as _describe
from .training.checkpoints import is_meta as _is_meta
from .training.checkpoints import load_state as _load_state
from .training.checkpoints import torch_load as _torch_load

__all__ = ["from_saved", "save_with_spec", "SPEC_KEY", "STATE_KEY"]

#: Keys of the file :func:`save_with_spec` writes.
SPEC_KEY = "micronet_spec"
STATE_KEY = "state_dict"


def from_saved(spec: str, location: str, *, trust: bool, rebuild: Callable[..., ResolvedModel]) -> ResolvedModel:
    """The model saved at ``location``; ``rebuild(spec, meta=, trust=, origin=)``
    resolves the spec a state-dict file names (:func:`micronet.resolve.resolve_model`)."""
    path = Path(location).expanduser()
    if not path.is_file():
        raise SpecError(f"no such file: {location}",
                        hint="check the path, or give a model name or module:factory")
    if is_export_archive(path):
        return _from_export(spec, path, trust=trust)
    obj = _torch_load(path, trust=trust)
    if isinstance(obj, Mapping) and SPEC_KEY in obj:
        return _from_spec_file(spec, path, obj, trust=trust, rebuild=rebuild)
    if isinstance(obj, nn.Module):
        return ResolvedModel(model=obj, spec=spec, name=f"{path.name} ({type(obj).__qualname__})",
                             source="pickle", kwargs=MappingProxyType({}), on_meta=_is_meta(obj),
                             input_shape=None)
    if isinstance(obj, Mapping):
        raise SpecError(f"{path.name} holds a state dict without a model spec",
                        hint=f"give the model spec and --weights {location}")
    raise SpecError(f"{path.name} holds a {type(obj).__name__}, not a model",
                    hint="expected a state dict saved with its spec, a torch.export archive "
                         "or a pickled module")


def _from_export(spec: str, path: Path, *, trust: bool) -> ResolvedModel:
    extra = {ARCHIVE_FILE: ""}
    exported = load_export(path, trust=trust, extra_files=extra)
    try:
        module = exported.module()
    except Exception as error:
        raise SpecError(f"cannot rebuild the module of the torch.export archive {path.name}: "
                        f"{_describe(error)}", hint="expected a file written by torch.export.save") from error
    restore_archive_document(module, extra[ARCHIVE_FILE])
    return ResolvedModel(model=module, spec=spec, name=path.name, source="export",
                         kwargs=MappingProxyType({}), on_meta=False,
                         input_shape=_export_input_shape(exported), exported=exported)


def _export_input_shape(exported) -> tuple[int, ...] | None:
    """The shape of the one user input, when there is exactly one and it is static."""
    users = set(exported.graph_signature.user_inputs)
    shapes = [n.meta.get("val") for n in exported.graph.nodes if n.op == "placeholder" and n.name in users]
    if len(shapes) != 1 or not isinstance(shapes[0], torch.Tensor):
        return None
    # a dynamic dimension is a SymInt; int() on it would pin the program to its example size
    dims = tuple(shapes[0].shape)
    return dims if all(type(d) is int for d in dims) else None


def _from_spec_file(spec: str, path: Path, saved: Mapping, *, trust: bool,
                    rebuild: Callable[..., ResolvedModel]) -> ResolvedModel:
    inner, state = saved[SPEC_KEY], saved.get(STATE_KEY)
    if not isinstance(inner, str) or not isinstance(state, Mapping):
        raise SpecError(f"{path.name} is malformed: {SPEC_KEY!r} must be a string "
                        f"and {STATE_KEY!r} a state dict",
                        hint="write it with micronet.resolve.save_with_spec")
    scheme = parse_spec(inner)[0]
    if scheme == "path":
        raise SpecError(f"{path.name} names another saved file {inner!r} as its model",
                        hint="save the spec that builds it")
    built = rebuild(inner, meta=False, trust=trust, origin=path.name)
    _load_state(built.model, state, path.name)
    return replace(built, spec=spec, source="state_dict")



def save_with_spec(model: nn.Module, spec: str, path: str | os.PathLike) -> Path:
    """Write ``{"micronet_spec": spec, "state_dict": ...}`` atomically, so that
    ``resolve_model(path)`` rebuilds ``model``. ``spec`` must build the same
    architecture (a torchvision name, a built-in or a factory)."""
    if parse_spec(spec)[0] == "path":
        raise SpecError(f"cannot save {spec!r} as a model spec: it names a saved file",
                        hint="give the spec that builds the model")
    if _is_meta(model):
        raise SpecError("cannot save a model built on the meta device: it has no weights",
                        hint="resolve it with weights, or meta=False")
    path = Path(path)
    state = {key: value.detach().cpu() for key, value in model.state_dict().items()}
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save({SPEC_KEY: spec, STATE_KEY: state}, temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path
