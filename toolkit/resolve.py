"""Model specs -> models: the first step of every run.

A spec is a string (or an ``nn.Module`` passed directly); ``source`` in brackets:

- ``resnet18``: a torchvision model, else a built-in of that name [torchvision / builtin];
- ``torchvision:mobilenet_v2?width_mult=1.4``: torchvision, with keyword arguments [torchvision];
- ``micronet:densenet_cifar?growth_rate=4``: a built-in (``micronet_register_models``) [builtin];
- ``package.module:factory?k=v``: ``factory(k=v)`` after importing the module [python];
- ``path/to/file.py:factory?k=v``: the same, loading the file by its path [file];
- ``model.pt`` / ``.pth``: a state dict and its spec, see :func:`save_with_spec` [state_dict];
- ``model.pt2``: a ``torch.export`` archive, read without unpickling (see
  :mod:`micronet.exportfile`) [export];
- any other file holding a pickled whole module, only with ``trust=True`` [pickle].

A factory must be a model factory (:mod:`micronet.factories` says which
callables are refused before they are called). A spec read from a file or a
recipe (``origin=``) may name a ``python`` or ``file`` factory only with
``trust=True``: importing that code runs it. Keyword values are parsed by
:mod:`micronet.specs`; saved files are read by :mod:`micronet.saved`.

Without ``weights`` a factory runs under ``torch.device("meta")``: shapes and
parameter counts are exact, no weight memory is spent and the model cannot
run real arithmetic (counting never needs it). ``torch.load`` always uses
``weights_only=True``; arbitrary pickles (whole modules, pickled tensors in
an export archive), a saved spec or a recipe's spec that would import user
code need ``trust=True``. Torchvision weights are never
downloaded: pass a local ``weights=FILE`` instead.
"""
from __future__ import annotations

import functools
import os
from dataclasses import replace
from types import MappingProxyType
from typing import Mapping

from torch import nn

from .errors import SpecError
from .factories import build, display_name, find_target, input_shape_of
from .saved import SPEC_KEY, STATE_KEY, from_saved, save_with_spec
from .specs import ModelEntry, ResolvedModel, parse_spec, parse_value
from .training.checkpoints import is_meta as _is_meta
from .training.checkpoints import load_weights

__all__ = ["ModelEntry", "ResolvedModel", "resolve_model", "set_eval", "parse_spec", "parse_value",
           "load_weights", "save_with_spec", "SPEC_KEY", "STATE_KEY"]


def resolve_model(spec: str | nn.Module, *, weights: str | os.PathLike | None = None, trust: bool = False,
                  models: Mapping[str, ModelEntry] | None = None, meta: bool | None = None,
                  origin: str | None = None) -> ResolvedModel:
    """Build the model a spec names, put it in ``eval()`` mode, and say where it came from.

    :param spec: a spec string (see the module docstring) or an ``nn.Module``,
        which is returned as is after ``.eval()`` is called on it (in place).
    :param weights: a local state-dict file loaded into the model
        (``{"state_dict": ...}`` wrappers and ``module.`` prefixes accepted).
    :param trust: allow arbitrary pickles (whole modules, checkpoints holding
        Python objects, pickled tensors in an export archive) and specs read
        from a file that import user code. Only for files you trust.
    :param models: the built-ins for ``micronet:NAME`` (default: what the
        plugins register, looked up only when needed).
    :param meta: ``None``: build on the meta device when no ``weights`` are
        given (falling back to a real build if the factory cannot run there);
        ``False``: always build for real; ``True``: meta or fail.
    :param origin: where ``spec`` was read from (a recipe file, a step's
        option, a saved file), said in errors; such a spec may name a
        ``package.module:factory`` or ``file.py:factory`` only with ``trust``.
    :raises SpecError: with a one-line message and a hint, chained to the cause.
    """
    if isinstance(spec, nn.Module):
        resolved = _from_module(spec)
    elif not isinstance(spec, str):
        raise SpecError(f"a model spec must be a string or an nn.Module, got {type(spec).__name__}")
    else:
        resolved = _from_spec(spec, weights=weights, trust=trust, models=models, meta=meta, origin=origin)
    if weights is not None:
        load_weights(resolved.model, weights, trust=trust)
        resolved = replace(resolved, on_meta=_is_meta(resolved.model))
    set_eval(resolved.model)
    return resolved


def _from_spec(spec: str, *, weights, trust: bool, models, meta: bool | None, origin: str | None) -> ResolvedModel:
    scheme, name, kwargs = parse_spec(spec)
    if origin is not None and not trust and scheme in ("python", "file"):
        raise SpecError(f"{origin} names the model {spec!r}, which would run code from that "
                        f"{'module' if scheme == 'python' else 'file'}",
                        hint="pass --trust (recipe: trust = true) only if you trust that code")
    if scheme == "path":
        if kwargs:
            raise SpecError(f"keyword arguments do not apply to the saved model {name!r}",
                            hint="a saved model is rebuilt as it was saved; drop the ?key=value part")
        return from_saved(spec, name, trust=trust, rebuild=functools.partial(resolve_model, models=models))
    if meta and weights is not None:
        raise SpecError("meta=True cannot take weights", hint="drop weights= or meta=True")
    target = find_target(scheme, name, kwargs, models)
    model, on_meta = build(target, kwargs, use_meta=weights is None if meta is None else meta, forced=meta is True)
    return ResolvedModel(model=model, spec=spec, name=display_name(target.display, kwargs), source=target.source,
                         kwargs=MappingProxyType(dict(kwargs)), on_meta=on_meta,
                         input_shape=input_shape_of(target, model))


def _from_module(model: nn.Module) -> ResolvedModel:
    name = type(model).__qualname__
    return ResolvedModel(model=model, spec=name, name=name, source="python", kwargs=MappingProxyType({}),
                         on_meta=_is_meta(model), input_shape=None)


def set_eval(model: nn.Module) -> None:
    """``model.eval()``, where it can be called: the module of a torch.export
    archive refuses it (its mode was fixed when it was exported)."""
    if not any(m.training for m in model.modules()):
        return  # already in eval mode throughout: eval() would only walk the tree again
    try:
        model.eval()
    except NotImplementedError:  # torch.export's module(): its mode was fixed at export
        pass
