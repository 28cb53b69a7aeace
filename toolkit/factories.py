"""Spec -> callable -> model: finding a spec's factory and building it.

A factory must be a model factory: an ``nn.Module`` subclass, or a Python
function (or method, or ``functools.partial`` of one) defined outside the
standard library and torch (torchvision's only in ``torchvision.models``)
whose return annotation, if it is a class, could be an ``nn.Module``.
Anything else (``os:system``, ``builtins:exec``, ``pathlib:Path``,
``torch:load``) is refused before it is called.

Without weights a factory runs under ``torch.device("meta")``; a factory
that computes with real tensors while building runs with each parameter and
buffer moved to meta as a module registers it (:func:`meta_on_register`,
torch's global registration hooks, removed on exit). Torchvision builders
never download: arguments that would are refused.
"""
from __future__ import annotations

import builtins
import difflib
import functools
import hashlib
import importlib
import importlib.util
import inspect
import re
import sys
import typing
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

import torch
from torch import nn
from torch.nn.modules.module import (register_module_buffer_registration_hook,
                                     register_module_parameter_registration_hook)

from .errors import SpecError
from .specs import DOTTED, HINT_SPEC
from .training.checkpoints import describe as _describe
from .training.checkpoints import is_meta as _is_meta

if TYPE_CHECKING:
    from .resolve import ModelEntry

__all__ = ["Target", "find_target", "build", "meta_on_register", "display_name", "input_shape_of"]

#: Keyword arguments with which torchvision builders download weights.
DOWNLOAD_KWARGS = ("weights", "pretrained", "weights_backbone", "pretrained_backbone")
UNEXPECTED_ARG = re.compile(r"unexpected keyword argument '(\w+)'")
MISSING_ARG = re.compile(r"missing \d+ required \w+(?: \w+)? arguments?: '(\w+)'")
HINT_FACTORY = "a spec must name a function or class that returns an nn.Module"


@dataclass(frozen=True)
class Target:
    """A callable found for a spec, before it is built."""

    factory: Callable[..., Any]
    source: str
    display: str
    input_shape: tuple[int, ...] | None = None
    prebuilt: bool = False
    defaults: Mapping[str, object] = field(default_factory=dict)


def display_name(prefix: str, kwargs: Mapping[str, object]) -> str:
    """``prefix(key=value, ...)``: how a built model is named in reports."""
    if not kwargs:
        return prefix
    return prefix + "(" + ", ".join(f"{key}={value!r}" for key, value in kwargs.items()) + ")"


def input_shape_of(target: Target, model: nn.Module) -> tuple[int, ...] | None:
    """The model's default input (batch 1), when its entry or torchvision says."""
    if target.input_shape is not None:
        return tuple(target.input_shape)
    if target.source == "torchvision" and target.display.partition(":")[2] in _torchvision_classifiers():
        size = getattr(model, "image_size", 224)  # ViTs fix their image size
        return (1, 3, size, size) if isinstance(size, int) else None
    return None


def find_target(scheme: str, name: str, kwargs: Mapping[str, object],
                models: Mapping[str, ModelEntry] | None) -> Target:
    """The factory a parsed spec names (not yet called)."""
    if scheme == "torchvision":
        return _torchvision_target(name, kwargs)
    if scheme == "micronet":
        return _builtin_target(name, _builtins(models))
    if scheme == "transformers":  # lazy: imports transformers only for such a spec
        from .models_transformers import transformers_target

        return transformers_target(name, kwargs)
    if scheme == "python":
        return _python_target(name, kwargs)
    if scheme == "file":
        return _file_target(name, kwargs)
    if name.lower() in _torchvision_names():
        return _torchvision_target(name, kwargs)
    builtins = _builtins(models)
    if name in builtins:
        return _builtin_target(name, builtins)
    raise _unknown(name, [*_torchvision_names(), *builtins], "")


def _builtins(models: Mapping[str, ModelEntry] | None) -> Mapping[str, ModelEntry]:
    if models is not None:
        return models
    from .manager import default_registries  # lazy: builds the plugin manager only when needed

    return default_registries().models


@functools.lru_cache(maxsize=1)
def _torchvision_names() -> frozenset[str]:
    import torchvision.models

    return frozenset(torchvision.models.list_models())


@functools.lru_cache(maxsize=1)
def _torchvision_classifiers() -> frozenset[str]:
    import torchvision.models

    return frozenset(torchvision.models.list_models(module=torchvision.models))


def _unknown(name: str, candidates, prefix: str, hint: str = HINT_SPEC) -> SpecError:
    close = difflib.get_close_matches(name.lower(), sorted(set(candidates)), n=3, cutoff=0.6)
    if close:
        return SpecError(f"unknown model '{prefix}{name}'; did you mean: {', '.join(close)}?")
    return SpecError(f"unknown model '{prefix}{name}'", hint=hint)


def _torchvision_target(name: str, kwargs: Mapping[str, object]) -> Target:
    import torchvision.models

    key = name.lower()
    if key not in _torchvision_names():
        raise _unknown(name, _torchvision_names(), "torchvision:",
                       hint="see torchvision.models.list_models()")
    builder = torchvision.models.get_model_builder(key)
    display = f"torchvision:{key}"
    return Target(builder, "torchvision", display, defaults=_no_download(builder, kwargs, display))


def _no_download(builder: Callable[..., Any], kwargs: Mapping[str, object], display: str) -> dict:
    """Refuse arguments that make a torchvision builder download weights; the
    defaults that keep it offline (detection builders fetch a backbone otherwise)."""
    for arg in DOWNLOAD_KWARGS:
        if kwargs.get(arg) not in (None, False):
            raise SpecError(f"{arg}={kwargs[arg]!r} would download pretrained weights for {display}",
                            hint="micronet never downloads; pass a local state dict with --weights FILE")
    offline = "weights_backbone" in _parameters(builder)[0] and "weights_backbone" not in kwargs
    return {"weights_backbone": None} if offline else {}


def _builtin_target(name: str, builtins: Mapping[str, ModelEntry]) -> Target:
    entry = builtins.get(name)
    if entry is None:
        known = ", ".join(sorted(builtins)) or "none"
        raise _unknown(name, builtins, "micronet:", hint=f"built-in models: {known}")
    return Target(entry.factory, "builtin", f"micronet:{name}", input_shape=entry.input_shape)


def _python_target(name: str, kwargs: Mapping[str, object]) -> Target:
    module_name, _, attr = name.rpartition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:
        raise SpecError(f"cannot import module {module_name!r}: {_describe(error)}",
                        hint="check the name, and that its package is installed or on PYTHONPATH") from error
    return _attr_target(module, attr, kwargs, "python", name)


def _file_target(name: str, kwargs: Mapping[str, object]) -> Target:
    location, _, attr = name.rpartition(":")
    path = Path(location).expanduser()
    if not path.is_file():
        raise SpecError(f"no such file: {location}", hint="check the path of the .py file in the spec")
    module = _load_file_module(path)
    return _attr_target(module, attr, kwargs, "file", f"{path.name}:{attr}")


def _load_file_module(path: Path):
    """Execute a .py file as a fresh module, its folder on ``sys.path`` only meanwhile.

    The module is kept in ``sys.modules`` under a private name (dataclasses
    and pickling of its classes need that); ``sys.path`` is restored."""
    path = path.resolve()
    digest = hashlib.sha1(str(path).encode(), usedforsecurity=False).hexdigest()[:12]
    stem = re.sub(r"\W", "_", path.stem)
    module_name = f"micronet_user_{stem}_{digest}"
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module
    try:
        with _on_sys_path(str(path.parent)):
            module_spec.loader.exec_module(module)
    except Exception as error:
        sys.modules.pop(module_name, None)
        raise SpecError(f"cannot load {path.name}: {_describe(error)}",
                        hint="fix the file; it must import cleanly on its own") from error
    return module


@contextmanager
def _on_sys_path(folder: str) -> Iterator[None]:
    sys.path.insert(0, folder)
    try:
        yield
    finally:
        if folder in sys.path:
            sys.path.remove(folder)


def _attr_target(module, attr: str, kwargs: Mapping[str, object], source: str, display: str) -> Target:
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(obj) if not n.startswith("_")]
            close = difflib.get_close_matches(part, names, n=3)
            hint = f"did you mean: {', '.join(close)}?" if close else "check the factory name after ':'"
            owner = getattr(obj, "__name__", attr)
            raise SpecError(f"{display}: {owner!r} has no attribute {part!r}", hint=hint)
        obj = getattr(obj, part)
    if isinstance(obj, nn.Module):
        if kwargs:
            raise SpecError(f"{display} is an nn.Module instance; it takes no keyword arguments",
                            hint="point the spec at a function or class to pass arguments")
        return Target(lambda: obj, source, display, prebuilt=True)
    if not callable(obj):
        raise SpecError(f"{display} is a {type(obj).__name__}, not callable", hint=HINT_FACTORY)
    problem = _factory_problem(obj)
    if problem:
        raise SpecError(f"{display} is {problem}, not a model factory", hint=HINT_FACTORY)
    if str(getattr(obj, "__module__", "")).startswith("torchvision."):  # torchvision.models:resnet18
        return Target(obj, source, display, defaults=_no_download(obj, kwargs, display))
    return Target(obj, source, display)


def _factory_problem(obj: Any) -> str | None:
    """What ``obj`` is, when it is not a model factory (the rule is in the module docstring)."""
    inner = obj
    while isinstance(inner, functools.partial):
        inner = inner.func
    if inspect.isclass(inner):
        return None if issubclass(inner, nn.Module) else f"the class {_qualified(inner)} (not an nn.Module)"
    function = inner.__func__ if inspect.ismethod(inner) else inner
    if not inspect.isfunction(function):
        kind = "built-in function" if inspect.isbuiltin(inner) else type(inner).__name__
        return f"the {kind} {_qualified(inner)}"
    module = function.__module__ if isinstance(function.__module__, str) else ""
    root = module.partition(".")[0]
    if not root or root in sys.stdlib_module_names:
        return f"the standard-library function {_qualified(function)}"
    if root == "torch" or root == "torchvision" and not module.startswith("torchvision.models"):
        return f"the {root} function {_qualified(function)} (not a model builder)"
    returns = _return_class(function)
    if returns is not None and not issubclass(returns, nn.Module):
        return f"the function {_qualified(function)}, returning {returns.__qualname__}"
    return None


def _qualified(obj: Any) -> str:
    module, name = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    name = name if isinstance(name, str) else type(obj).__qualname__
    return f"{module}.{name}" if isinstance(module, str) and module else name


def _return_class(function: Callable[..., Any]) -> type | None:
    """The class ``function`` is annotated to return, when it names one.

    A string annotation (``from __future__ import annotations``) is looked up
    as a dotted name in the function's globals, never evaluated."""
    annotation = getattr(function, "__annotations__", {}).get("return", inspect.Signature.empty)
    if annotation is None:
        return type(None)
    if isinstance(annotation, str) and DOTTED.fullmatch(annotation):
        head, *rest = annotation.split(".")
        annotation = getattr(function, "__globals__", {}).get(head, getattr(builtins, head, None))
        for part in rest:
            annotation = vars(annotation).get(part) if inspect.ismodule(annotation) else None
    if not inspect.isclass(annotation) or annotation in (typing.Any, inspect.Signature.empty):
        return None
    return annotation


def build(target: Target, kwargs: Mapping[str, object], *, use_meta: bool,
          forced: bool) -> tuple[nn.Module, bool]:
    """The model, and whether it is on meta: plain meta device, then meta on
    registration, then (unless ``forced``) a real build."""
    if target.prebuilt:
        model = target.factory()
        return model, _is_meta(model)
    for on_meta in (torch.device("meta"), meta_on_register()) if use_meta else ():
        try:
            with on_meta:
                return _call(target, kwargs), True
        except SpecError:
            raise
        except Exception as error:  # a factory reading tensor values (RegNet's widths) fails on meta
            failure = error
    if use_meta and forced:
        raise SpecError(f"{target.display} cannot be built on the meta device: {_describe(failure)}",
                        hint="build it for real (meta=False)") from failure
    try:
        return _call(target, kwargs), False
    except SpecError:
        raise
    except Exception as error:
        raise SpecError(f"{display_name(target.display, kwargs)} failed to build: {_describe(error)}",
                        hint="check its keyword arguments") from error


@contextmanager
def meta_on_register() -> Iterator[None]:
    """Move each parameter and buffer to the meta device as a module registers it.

    For factories that compute with real tensors while building: only one
    layer's uninitialised weights exist at a time, and initialisers run on
    meta. Torch's global registration hooks do it, removed on exit: no class
    attribute of ``nn.Module`` changes."""
    handles = (register_module_parameter_registration_hook(_meta_parameter),
               register_module_buffer_registration_hook(_meta_buffer))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _meta_parameter(module: nn.Module, name: str, param: nn.Parameter) -> nn.Parameter | None:
    """A meta copy of a plain parameter being registered (None keeps it)."""
    if type(param) is nn.Parameter and not param.is_meta:
        return nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
    return None


def _meta_buffer(module: nn.Module, name: str, tensor: torch.Tensor | None) -> torch.Tensor | None:
    """A meta copy of a buffer being registered."""
    return None if tensor is None else tensor.to("meta")


def _call(target: Target, kwargs: Mapping[str, object]) -> nn.Module:
    try:
        model = target.factory(**target.defaults, **kwargs)
    except TypeError as error:
        spec_error = _argument_error(target, error)
        if spec_error is None:
            raise
        raise spec_error from error
    if not isinstance(model, nn.Module):
        raise SpecError(f"{target.display} returned a {type(model).__name__}, not an nn.Module",
                        hint="the factory must return the model")
    return model


def _argument_error(target: Target, error: TypeError) -> SpecError | None:
    """A SpecError naming the argument when ``error`` is about one, else None."""
    text = str(error)
    found = UNEXPECTED_ARG.search(text)
    if found:
        arg = found.group(1)
        accepted, open_ended = _parameters(target.factory)
        close = difflib.get_close_matches(arg, accepted, n=1)
        hint = (f"did you mean {close[0]!r}?" if close else f"it accepts: {', '.join(accepted)}"
                if accepted and not open_ended else f"see the documentation of {target.display}")
        return SpecError(f"{target.display} got an unknown keyword argument {arg!r}", hint=hint)
    found = MISSING_ARG.search(text)
    if found:
        return SpecError(f"{target.display} needs the argument {found.group(1)!r}",
                         hint=f"add ?{found.group(1)}=VALUE to the spec")
    return None


def _parameters(factory: Callable[..., Any]) -> tuple[list[str], bool]:
    """The factory's keyword parameters, and whether it also takes ``**kwargs``."""
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return [], True
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return ([p.name for p in parameters if p.kind in kinds],
            any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters))

