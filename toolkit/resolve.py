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

A factory must be a model factory: an ``nn.Module`` subclass, or a Python
function (or method, or ``functools.partial`` of one) defined outside the
standard library and torch (torchvision's only in ``torchvision.models``)
whose return annotation, if it is a class, could be an ``nn.Module``.
Anything else (``os:system``, ``builtins:exec``, ``pathlib:Path``,
``torch:load``) is refused before it is called. A spec read from a file or a
recipe (``origin=``) may name a ``python`` or ``file`` factory only with
``trust=True``: importing that code runs it.

Keyword values are Python literals (``ast.literal_eval``: ints, floats,
tuples, quoted strings), ``true`` / ``false`` / ``none`` in any case, and plain
strings otherwise; ``%26`` and friends are URL-unquoted.

Without ``weights`` a factory runs under ``torch.device("meta")``: shapes and
parameter counts are exact, no weight memory is spent and the model cannot
run real arithmetic (counting never needs it). ``torch.load`` always uses
``weights_only=True``; arbitrary pickles (whole modules, pickled tensors in
an export archive), a saved spec or a recipe's spec that would import user
code need ``trust=True``. Torchvision weights are never
downloaded: pass a local ``weights=FILE`` instead.
"""
from __future__ import annotations

import ast
import builtins
import difflib
import functools
import hashlib
import importlib
import importlib.util
import inspect
import os
import re
import sys
import typing
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Iterator, Mapping
from urllib.parse import unquote

import torch
from torch import nn

from .bits import ARCHIVE_FILE, restore_archive_document
from .checkpoints import describe as _describe
from .checkpoints import is_meta as _is_meta
from .checkpoints import load_state as _load_state
from .checkpoints import load_weights
from .checkpoints import torch_load as _torch_load
from .errors import SpecError
from .exportfile import is_export_archive, load_export

__all__ = ["ModelEntry", "ResolvedModel", "resolve_model", "set_eval", "parse_spec", "parse_value",
           "load_weights", "save_with_spec", "SPEC_KEY", "STATE_KEY"]

#: Keys of the file :func:`save_with_spec` writes.
SPEC_KEY = "micronet_spec"
STATE_KEY = "state_dict"
#: Keyword arguments with which torchvision builders download weights.
DOWNLOAD_KWARGS = ("weights", "pretrained", "weights_backbone", "pretrained_backbone")
SAVED_SUFFIXES = frozenset({".pt", ".pth", ".pt2", ".pkl", ".pickle", ".bin", ".ckpt"})
PREFIXES = ("torchvision", "micronet")
WORDS = {"true": True, "false": False, "none": None, "null": None}
DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
UNEXPECTED_ARG = re.compile(r"unexpected keyword argument '(\w+)'")
MISSING_ARG = re.compile(r"missing \d+ required \w+(?: \w+)? arguments?: '(\w+)'")
HINT_FACTORY = "a spec must name a function or class that returns an nn.Module"
HINT_SPEC = ("write NAME, torchvision:NAME, micronet:NAME, package.module:factory, "
             "path/to/file.py:factory or a saved .pt/.pt2 file, with ?key=value&... for arguments")


@dataclass(frozen=True)
class ModelEntry:
    """A built-in model, registered by ``micronet_register_models``.

    ``factory(**kwargs)`` returns an ``nn.Module``; ``input_shape`` is its
    default input (batch 1) when the model has one; a later plugin may
    override an entry of the same name with ``replace=True``.
    """

    name: str
    factory: Callable[..., nn.Module]
    description: str = ""
    input_shape: tuple[int, ...] | None = None
    replace: bool = False


@dataclass(frozen=True)
class ResolvedModel:
    """A model built from a spec, in ``eval()`` mode, and where it came from."""

    model: nn.Module
    spec: str
    name: str
    source: str
    kwargs: Mapping[str, object]
    on_meta: bool
    input_shape: tuple[int, ...] | None
    exported: object | None = None


@dataclass(frozen=True)
class _Target:
    """A callable found for a spec, before it is built."""

    factory: Callable[..., Any]
    source: str
    display: str
    input_shape: tuple[int, ...] | None = None
    prebuilt: bool = False
    defaults: Mapping[str, object] = field(default_factory=dict)


# --------------------------------------------------------------------- parse


def parse_spec(spec: str) -> tuple[str, str, dict]:
    """Split ``spec`` into ``(scheme, name, kwargs)``.

    Schemes: ``torchvision`` and ``micronet`` (the prefix is dropped from the
    name), ``python`` (name ``package.module:factory``), ``file`` (name
    ``path.py:factory``), ``path`` (a saved file) and ``name`` (a bare name:
    torchvision first, then the built-ins). Raises :class:`SpecError`.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise SpecError(f"empty model spec {spec!r}", hint=HINT_SPEC)
    head, _, query = spec.strip().partition("?")
    scheme, name = _split_scheme(head.strip())
    return scheme, name, _parse_query(query, spec)


def _split_scheme(head: str) -> tuple[str, str]:
    prefix, sep, rest = head.partition(":")
    if sep and prefix in PREFIXES:
        if not DOTTED.fullmatch(rest):
            raise SpecError(f"bad model name {rest!r} after '{prefix}:'", hint=f"write {prefix}:NAME")
        return prefix, rest
    location, sep, attr = head.rpartition(":")
    if sep and DOTTED.fullmatch(attr):
        if location.endswith(".py"):
            return "file", head
        if DOTTED.fullmatch(location):
            return "python", head
        raise SpecError(f"bad model spec {head!r}: {location!r} is neither a module name nor a .py file",
                        hint="write package.module:factory or path/to/file.py:factory")
    if head.endswith(".py"):
        raise SpecError(f"model spec {head!r} names a Python file but no factory",
                        hint=f"write {head}:FACTORY, the function or class that builds the model")
    if Path(head).suffix in SAVED_SUFFIXES or "/" in head or os.sep in head:
        return "path", head
    if DOTTED.fullmatch(head):
        return "name", head
    if Path(head).is_file():
        return "path", head
    raise SpecError(f"bad model spec {head!r}", hint=HINT_SPEC)


def _parse_query(query: str, spec: str) -> dict:
    kwargs: dict[str, object] = {}
    for item in query.split("&") if query else ():
        if not item:
            continue
        key, sep, raw = item.partition("=")
        key = unquote(key).strip()
        if not sep or not key.isidentifier():
            raise SpecError(f"bad keyword argument {item!r} in spec {spec!r}",
                            hint="write NAME?key=value&key2=value2")
        if key in kwargs:
            raise SpecError(f"keyword argument {key!r} given twice in spec {spec!r}")
        kwargs[key] = parse_value(unquote(raw))
    return kwargs


def parse_value(text: str) -> object:
    """A keyword value: ``true``/``false``/``none`` (any case), a Python
    literal, or else the text itself as a string."""
    text = text.strip()
    if text.lower() in WORDS:
        return WORDS[text.lower()]
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


# ------------------------------------------------------------------- resolve


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
        scheme, name, kwargs = parse_spec(spec)
        if origin is not None and not trust and scheme in ("python", "file"):
            raise SpecError(f"{origin} names the model {spec!r}, which would run code from that "
                            f"{'module' if scheme == 'python' else 'file'}",
                            hint="pass --trust (recipe: trust = true) only if you trust that code")
        if scheme == "path":
            if kwargs:
                raise SpecError(f"keyword arguments do not apply to the saved model {name!r}",
                                hint="a saved model is rebuilt as it was saved; drop the ?key=value part")
            resolved = _from_saved(spec, name, trust=trust, models=models)
        else:
            if meta and weights is not None:
                raise SpecError("meta=True cannot take weights", hint="drop weights= or meta=True")
            target = _find_target(scheme, name, kwargs, models)
            use_meta = weights is None if meta is None else meta
            model, on_meta = _build(target, kwargs, use_meta=use_meta, forced=meta is True)
            resolved = ResolvedModel(model=model, spec=spec, name=_display(target.display, kwargs),
                                     source=target.source, kwargs=MappingProxyType(dict(kwargs)),
                                     on_meta=on_meta, input_shape=_input_shape(target, model))
    if weights is not None:
        load_weights(resolved.model, weights, trust=trust)
        resolved = replace(resolved, on_meta=_is_meta(resolved.model))
    set_eval(resolved.model)
    return resolved


def _from_module(model: nn.Module) -> ResolvedModel:
    name = type(model).__qualname__
    return ResolvedModel(model=model, spec=name, name=name, source="python", kwargs=MappingProxyType({}),
                         on_meta=_is_meta(model), input_shape=None)


def set_eval(model: nn.Module) -> None:
    """``model.eval()``, where it can be called: the module of a torch.export
    archive refuses it (its mode was fixed when it was exported)."""
    try:
        model.eval()
    except NotImplementedError:  # torch.export's module(): its mode was fixed at export
        pass


def _display(prefix: str, kwargs: Mapping[str, object]) -> str:
    if not kwargs:
        return prefix
    return prefix + "(" + ", ".join(f"{key}={value!r}" for key, value in kwargs.items()) + ")"


def _input_shape(target: _Target, model: nn.Module) -> tuple[int, ...] | None:
    if target.input_shape is not None:
        return tuple(target.input_shape)
    if target.source == "torchvision" and target.display.partition(":")[2] in _torchvision_classifiers():
        size = getattr(model, "image_size", 224)  # ViTs fix their image size
        return (1, 3, size, size) if isinstance(size, int) else None
    return None


# ------------------------------------------------------------------ factories


def _find_target(scheme: str, name: str, kwargs: Mapping[str, object],
                 models: Mapping[str, ModelEntry] | None) -> _Target:
    if scheme == "torchvision":
        return _torchvision_target(name, kwargs)
    if scheme == "micronet":
        return _builtin_target(name, _builtins(models))
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


def _torchvision_target(name: str, kwargs: Mapping[str, object]) -> _Target:
    import torchvision.models

    key = name.lower()
    if key not in _torchvision_names():
        raise _unknown(name, _torchvision_names(), "torchvision:",
                       hint="see torchvision.models.list_models()")
    builder = torchvision.models.get_model_builder(key)
    display = f"torchvision:{key}"
    return _Target(builder, "torchvision", display, defaults=_no_download(builder, kwargs, display))


def _no_download(builder: Callable[..., Any], kwargs: Mapping[str, object], display: str) -> dict:
    """Refuse arguments that make a torchvision builder download weights; the
    defaults that keep it offline (detection builders fetch a backbone otherwise)."""
    for arg in DOWNLOAD_KWARGS:
        if kwargs.get(arg) not in (None, False):
            raise SpecError(f"{arg}={kwargs[arg]!r} would download pretrained weights for {display}",
                            hint="micronet never downloads; pass a local state dict with --weights FILE")
    offline = "weights_backbone" in _parameters(builder)[0] and "weights_backbone" not in kwargs
    return {"weights_backbone": None} if offline else {}


def _builtin_target(name: str, builtins: Mapping[str, ModelEntry]) -> _Target:
    entry = builtins.get(name)
    if entry is None:
        known = ", ".join(sorted(builtins)) or "none"
        raise _unknown(name, builtins, "micronet:", hint=f"built-in models: {known}")
    return _Target(entry.factory, "builtin", f"micronet:{name}", input_shape=entry.input_shape)


def _python_target(name: str, kwargs: Mapping[str, object]) -> _Target:
    module_name, _, attr = name.rpartition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:
        raise SpecError(f"cannot import module {module_name!r}: {_describe(error)}",
                        hint="check the name, and that its package is installed or on PYTHONPATH") from error
    return _attr_target(module, attr, kwargs, "python", name)


def _file_target(name: str, kwargs: Mapping[str, object]) -> _Target:
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


def _attr_target(module, attr: str, kwargs: Mapping[str, object], source: str, display: str) -> _Target:
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
        return _Target(lambda: obj, source, display, prebuilt=True)
    if not callable(obj):
        raise SpecError(f"{display} is a {type(obj).__name__}, not callable", hint=HINT_FACTORY)
    problem = _factory_problem(obj)
    if problem:
        raise SpecError(f"{display} is {problem}, not a model factory", hint=HINT_FACTORY)
    if str(getattr(obj, "__module__", "")).startswith("torchvision."):  # torchvision.models:resnet18
        return _Target(obj, source, display, defaults=_no_download(obj, kwargs, display))
    return _Target(obj, source, display)


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


def _build(target: _Target, kwargs: Mapping[str, object], *, use_meta: bool,
           forced: bool) -> tuple[nn.Module, bool]:
    """The model, and whether it is on meta: plain meta device, then meta on
    registration, then (unless ``forced``) a real build."""
    if target.prebuilt:
        model = target.factory()
        return model, _is_meta(model)
    for on_meta in (torch.device("meta"), _meta_on_register()) if use_meta else ():
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
        raise SpecError(f"{_display(target.display, kwargs)} failed to build: {_describe(error)}",
                        hint="check its keyword arguments") from error


@contextmanager
def _meta_on_register() -> Iterator[None]:
    """Move each parameter and buffer to the meta device as a module registers it.

    For factories that compute with real tensors while building: only one
    layer's uninitialised weights exist at a time, and initialisers run on meta."""
    register_parameter, register_buffer = nn.Module.register_parameter, nn.Module.register_buffer

    def parameter(module: nn.Module, name: str, param) -> None:
        if type(param) is nn.Parameter and not param.is_meta:
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register_parameter(module, name, param)

    def buffer(module: nn.Module, name: str, tensor, persistent: bool = True) -> None:
        register_buffer(module, name, tensor if tensor is None else tensor.to("meta"), persistent)

    nn.Module.register_parameter, nn.Module.register_buffer = parameter, buffer
    try:
        yield
    finally:
        nn.Module.register_parameter, nn.Module.register_buffer = register_parameter, register_buffer


def _call(target: _Target, kwargs: Mapping[str, object]) -> nn.Module:
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


def _argument_error(target: _Target, error: TypeError) -> SpecError | None:
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


# ---------------------------------------------------------------- saved files


def _from_saved(spec: str, location: str, *, trust: bool, models) -> ResolvedModel:
    path = Path(location).expanduser()
    if not path.is_file():
        raise SpecError(f"no such file: {location}",
                        hint="check the path, or give a model name or module:factory")
    if is_export_archive(path):
        return _from_export(spec, path, trust=trust)
    obj = _torch_load(path, trust=trust)
    if isinstance(obj, Mapping) and SPEC_KEY in obj:
        return _from_spec_file(spec, path, obj, trust=trust, models=models)
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


def _from_spec_file(spec: str, path: Path, saved: Mapping, *, trust: bool, models) -> ResolvedModel:
    inner, state = saved[SPEC_KEY], saved.get(STATE_KEY)
    if not isinstance(inner, str) or not isinstance(state, Mapping):
        raise SpecError(f"{path.name} is malformed: {SPEC_KEY!r} must be a string "
                        f"and {STATE_KEY!r} a state dict",
                        hint="write it with micronet.resolve.save_with_spec")
    scheme = parse_spec(inner)[0]
    if scheme == "path":
        raise SpecError(f"{path.name} names another saved file {inner!r} as its model",
                        hint="save the spec that builds it")
    built = resolve_model(inner, models=models, meta=False, trust=trust, origin=path.name)
    _load_state(built.model, state, path.name)
    return replace(built, spec=spec, source="state_dict")


# ------------------------------------------------------------------ saving


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
