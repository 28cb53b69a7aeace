"""Torch as the oracle for the counters' shape rules.

A shape rule answers from shapes alone (``TensorInfo``); torch answers by running
the op. These helpers turn an ``OpCall``'s ``TensorInfo`` arguments into small CPU
tensors, run the call for real, describe what comes back as ``TensorInfo``, and
check that a rule gives the same answer, or refuses (``NotImplementedError``)
where torch raises.

The test modules in this folder import it by name (``from torch_oracle import
...``): the folder has no ``__init__.py``, so pytest puts it on ``sys.path``.
"""
from __future__ import annotations

from typing import Any, Callable

import pytest
import torch

from micronet.records import TensorInfo
from micronet.registry import CounterRegistry, Method, OpCall

#: what torch raises for a call it rejects: where it does, the rule must refuse
TORCH_ERRORS = (RuntimeError, ValueError, IndexError, TypeError)


def real(value: Any, fill: Callable[..., torch.Tensor] = torch.randn) -> Any:
    """A CPU tensor ``fill(shape, dtype=...)`` for each ``TensorInfo`` in value,
    through lists and tuples; anything else as it is."""
    if isinstance(value, TensorInfo):
        return fill(value.shape, dtype=value.dtype)
    if isinstance(value, (list, tuple)) and not isinstance(value, torch.Size):
        return type(value)(real(v, fill) for v in value)
    return value


def info(value: Any) -> Any:
    """``TensorInfo`` of tensors; lists and tuples (structseqs too) become plain
    tuples of what their items become; anything else as it is."""
    if isinstance(value, torch.Tensor):
        return TensorInfo(tuple(value.shape), value.dtype)
    if isinstance(value, (list, tuple)) and not isinstance(value, torch.Size):
        return tuple(info(v) for v in value)
    return value


def kind_of(target: Any) -> str:
    """The ``OpCall`` kind of a target: method, module, aten or function."""
    if isinstance(target, Method):
        return "method"
    if isinstance(target, type):
        return "module"
    if isinstance(target, (torch._ops.OpOverload, torch._ops.OpOverloadPacket)):
        return "aten"
    return "function"


def make(target: Any, *args: Any, module: Any = None, **kwargs: Any) -> OpCall:
    """The call of target on args and kwargs, its kind read from the target."""
    return OpCall(kind_of(target), target, args, kwargs, module=module)


def execute(call: OpCall, fill: Callable[..., torch.Tensor] = torch.randn) -> Any:
    """Run the call for real, on tensors made by fill, and describe its output."""
    args, kwargs = real(call.args, fill), {k: real(v, fill) for k, v in call.kwargs.items()}
    if call.kind == "module":
        return info(call.module(*args, **kwargs))
    if call.kind == "method":
        return info(getattr(args[0], call.target.name)(*args[1:], **kwargs))
    return info(call.target(*args, **kwargs))


def run(kind: str, target: Any, *args: Any, module: Any = None,
        fill: Callable[..., torch.Tensor] = torch.randn, **kwargs: Any) -> OpCall:
    """The call with its output filled in by running it for real (``module``
    and ``fill`` are the helper's; the other keywords go to the target)."""
    call = OpCall(kind, target, args, kwargs, module=module)
    return OpCall(kind, target, args, kwargs, module=module, out=execute(call, fill))


def check(rule: Callable[[OpCall], Any], call: OpCall, may_refuse: bool = False, *,
          fill: Callable[..., torch.Tensor] = torch.randn, errors: tuple[type[BaseException], ...] = TORCH_ERRORS):
    """The rule gives torch's output (same value, same type or both tuples), or
    refuses where torch raises one of ``errors`` (or, with ``may_refuse``, in a
    corner it leaves to meta execution)."""
    try:
        expected = execute(call, fill)
    except errors:
        with pytest.raises(NotImplementedError):
            rule(call)
        return
    try:
        got = rule(call)
    except NotImplementedError:
        if may_refuse:
            return
        raise
    assert info(got) == expected
    assert type(got) is type(expected) or isinstance(got, tuple) and isinstance(expected, tuple)


def check_registered(registry: CounterRegistry, call: OpCall, may_refuse: bool = False, **options: Any):
    """:func:`check` with the shape rule the registry holds for the call's target."""
    check(registry.shape(call.target).fn, call, may_refuse, **options)


def check_free_groups(registry: CounterRegistry, groups: list) -> None:
    """Every target of every group is registered free (no counter function),
    has a shape rule, and, for a method, is a real ``torch.Tensor`` method."""
    for group in groups:
        assert group
        for target in group:
            entry = registry.counter(target)
            assert entry is not None and entry.free and entry.fn is None, target
            assert registry.shape(target) is not None, target
            if isinstance(target, Method):
                assert hasattr(torch.Tensor, target.name), target
