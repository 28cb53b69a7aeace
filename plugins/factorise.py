"""Built-in step ``factorise``: replace dense layers by cheaper factored ones.

Candidates are the ``nn.Conv2d`` / ``nn.Linear`` modules the model's graph
calls (a module used only through its weight, like the output projection
inside ``nn.MultiheadAttention``, is never replaced), whose class keeps the
stock ``forward``, and the layers plugins declared as
:class:`~micronet.steps.WeightedLayer` (which no method knows how to
factorise: they are left unchanged with that reason); ``layers`` /
``ignore`` globs pick among them by dotted name and ``min_size``
(parameters, bias included) leaves small ones alone. A candidate that
cannot take the method is left unchanged, with its reason in one warning and
in the step's notes; a glob or a selection that matches nothing, and a run
that changes nothing, warn.

``method = "groups"`` (option ``groups = g``; Conv2d with groups 1):
a Conv2d of ``g`` groups with the same hyper-parameters; group ``j`` keeps
the dense kernel's diagonal block ``W[j*cout/g:(j+1)*cout/g,
j*cin/g:(j+1)*cin/g]`` and the bias is kept. Weights and dot products both
shrink by ``g``. Needs cin and cout divisible by ``g``.

``method = "depthwise-separable"`` (Conv2d, groups 1, kernel larger than
1x1): ``nn.Sequential(depthwise, pointwise)``, a ``cin -> cin`` conv of
``groups = cin`` with the original kernel size, stride, padding, dilation and
padding mode (no bias), then a 1x1 ``cin -> cout`` conv with the original
bias. The pair computes the conv of kernel ``W'[o, c] = P[o, c] * D[c]``:
one spatial kernel per *input* channel, scaled per output. Initialisation:
for each input channel ``c`` the matrix ``M_c[o, :] = W[o, c].flatten()``
(cout x k*k) is replaced by its best rank-1 approximation
``s1 * u1 v1^T`` (Eckart-Young), ``D[c] = v1`` and ``P[:, c] = s1 * u1``.
As the channels are independent this is the least-squares closest
depthwise-separable conv to ``W``, and it is exact when every ``M_c`` has
rank 1 (each input channel's kernels are multiples of one kernel). The
fraction of ``||W||^2`` kept is noted per layer (``energy``).

``method = "low-rank"`` (Linear, or Conv2d with groups 1; option ``rank`` or
``energy``, exactly one): the weight viewed as ``[out, in*kernel]`` is
``U S V^T``; truncated at rank ``r`` it becomes ``nn.Sequential(first,
second)``, ``first`` holding ``V_r^T`` (``r x in`` Linear without bias, or a
``in -> r`` conv with the original kernel, stride, padding and dilation and
no bias: a 1x1 conv stays 1x1) and ``second`` holding ``U_r S_r`` (``r ->
out`` Linear or 1x1 conv, with the original bias). At full rank the output
equals the original's to float tolerance. With ``energy = e`` the rank is
the smallest whose singular values keep ``sum(s_i^2) >= e * sum(all s^2)``
(to 1e-6).
A rank above ``min(out, in*kernel)`` cannot be taken. A rank that does not
save parameters (``r * (in*kernel + out) >= in*kernel*out``) is applied and
named in the notes (``larger``).

Replacements use ``model.set_submodule``; when the model is an fx
GraphModule (as the pipeline hands it over) each call of a split layer
``name`` becomes calls of ``name.0`` and ``name.1`` in the graph, so the
audit sees (and charges) the two new layers. A replaced module's pruning
masks go with it: the new layers are dense. Factors are computed in float64
and stored in the layer's dtype.

Notes: ``replaced`` (per layer: params before and after, and the rank or
energy kept), ``unchanged`` (layer -> reason), ``skipped_small``,
``larger`` and ``warnings``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
from torch import fx, nn

from micronet.errors import UsageError
from micronet.manager import hookimpl
from micronet.selection import StepWarnings, kinds_text, registered_for, select_modules
from micronet.steps import CompressionStep, StepContext, StepOption, at_least, check_globs

__all__ = ["FACTORISE", "factorise", "grouped_conv", "depthwise_separable", "low_rank", "energy_rank", "thin_svd"]

METHODS = ("groups", "depthwise-separable", "low-rank")


# ------------------------------------------------------------- builders


def _conv_like(conv: nn.Conv2d, cin: int, cout: int, *, groups: int = 1, bias: bool, kernel=None) -> nn.Conv2d:
    """A Conv2d with ``conv``'s spatial hyper-parameters (kernel, stride,
    padding, dilation, padding mode), dtype and device."""
    return nn.Conv2d(cin, cout, conv.kernel_size if kernel is None else kernel, conv.stride, conv.padding,
                     conv.dilation, groups, bias, conv.padding_mode,
                     device=conv.weight.device, dtype=conv.weight.dtype)


def _pointwise(cin: int, cout: int, like: nn.Conv2d, bias: bool) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, bias=bias, device=like.weight.device, dtype=like.weight.dtype)


def _copy_bias(source: nn.Module, target: nn.Module) -> None:
    if source.bias is not None:
        target.bias.copy_(source.bias.detach())


@torch.no_grad()
def grouped_conv(conv: nn.Conv2d, groups: int) -> nn.Conv2d:
    """``conv`` (groups 1) as a conv of ``groups`` groups keeping the dense
    kernel's block diagonal."""
    cout, cin = conv.out_channels, conv.in_channels
    new = _conv_like(conv, cin, cout, groups=groups, bias=conv.bias is not None)
    per_out, per_in = cout // groups, cin // groups
    blocks = [conv.weight[j * per_out:(j + 1) * per_out, j * per_in:(j + 1) * per_in] for j in range(groups)]
    new.weight.copy_(torch.cat(blocks))
    _copy_bias(conv, new)
    return new


@torch.no_grad()
def depthwise_separable(conv: nn.Conv2d) -> tuple[nn.Sequential, float]:
    """``conv`` (groups 1) as depthwise k x k then pointwise 1x1, initialised
    by the best rank-1 approximation of each input channel's kernels across
    outputs; returns the pair and the fraction of ``||W||^2`` kept."""
    weight = conv.weight.detach().double()  # [cout, cin, kh, kw]
    cout, cin, kh, kw = weight.shape
    stacked = weight.permute(1, 0, 2, 3).reshape(cin, cout, kh * kw)  # M_c: [cout, k*k] per c
    u, s, vh = torch.linalg.svd(stacked, full_matrices=False)  # [cin, cout, m], [cin, m], [cin, m, k*k]
    depthwise = _conv_like(conv, cin, cin, groups=cin, bias=False)
    pointwise = _pointwise(cin, cout, conv, conv.bias is not None)
    depthwise.weight.copy_(vh[:, 0, :].reshape(cin, 1, kh, kw))
    pointwise.weight.copy_((u[:, :, 0] * s[:, :1]).T.reshape(cout, cin, 1, 1))
    _copy_bias(conv, pointwise)
    total = float((s ** 2).sum())
    return nn.Sequential(depthwise, pointwise), float((s[:, 0] ** 2).sum()) / total if total else 1.0


def thin_svd(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``U, S, V^T`` of a 2-d float64 matrix (thin), through a QR of its tall
    orientation and the SVD of the small square factor: torch's CPU SVD of a
    wide matrix is several times slower (13 s against 1.5 s for 512 x 4608)."""
    tall = matrix if matrix.shape[0] >= matrix.shape[1] else matrix.T
    q, r = torch.linalg.qr(tall)
    ur, s, vh = torch.linalg.svd(r)
    u, v = q @ ur, vh.T  # tall = u diag(s) v^T
    return (u, s, v.T) if tall is matrix else (v, s, u.T)


def _svd(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SVD (float64) of ``layer``'s weight viewed as ``[out, in*kernel]``."""
    weight = layer.weight.detach().double()
    return thin_svd(weight.reshape(weight.shape[0], -1))


def energy_rank(singular: torch.Tensor, energy: float) -> int:
    """Smallest rank whose singular values keep ``energy`` of ``sum(s^2)``
    (to 1e-6: float32 weights do not give their singular values more
    exactly)."""
    squares = singular.double() ** 2
    total = float(squares.sum())
    if total == 0:
        return 1
    kept = torch.cumsum(squares, 0) / total
    return min(int((kept < energy - 1e-6).sum()) + 1, singular.numel())


@torch.no_grad()
def low_rank(layer: nn.Linear | nn.Conv2d, rank: int,
             svd: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> nn.Sequential:
    """``layer`` as two layers through ``rank`` channels: ``V_r^T`` then
    ``U_r S_r`` (with the bias)."""
    u, s, vh = svd if svd is not None else _svd(layer)
    first_w, second_w = vh[:rank], u[:, :rank] * s[:rank]  # [r, in*k], [out, r]
    bias = layer.bias is not None
    if isinstance(layer, nn.Linear):
        kwargs = dict(device=layer.weight.device, dtype=layer.weight.dtype)
        first = nn.Linear(layer.in_features, rank, bias=False, **kwargs)
        second = nn.Linear(rank, layer.out_features, bias=bias, **kwargs)
        first.weight.copy_(first_w)
        second.weight.copy_(second_w)
    else:
        first = _conv_like(layer, layer.in_channels, rank, bias=False)
        second = _pointwise(rank, layer.out_channels, layer, bias)
        first.weight.copy_(first_w.reshape(first.weight.shape))
        second.weight.copy_(second_w.reshape(second.weight.shape))
    _copy_bias(layer, second)
    return nn.Sequential(first, second)


# -------------------------------------------------------------- methods


@dataclass(frozen=True)
class _Method:
    """What a method applies to, why a layer cannot take it, and how to
    build its replacement (the module and facts for the notes)."""

    kinds: tuple[type, ...]
    problem: Callable[[nn.Module], str | None]
    build: Callable[[nn.Module], tuple[nn.Module, dict[str, Any]]]
    split: bool  # the replacement is a two-layer Sequential


def _grouped_problem(conv: nn.Conv2d, groups: int) -> str | None:
    if conv.groups != 1:
        return f"already grouped (groups={conv.groups})"
    if conv.in_channels % groups or conv.out_channels % groups:
        return (f"in_channels {conv.in_channels} and out_channels {conv.out_channels} "
                f"are not both divisible by groups {groups}")
    return None


def _separable_problem(conv: nn.Conv2d) -> str | None:
    if conv.groups != 1:
        return f"already grouped (groups={conv.groups}): a depthwise-separable conv needs groups=1"
    if tuple(conv.kernel_size) == (1, 1):
        return "kernel is 1x1: nothing to separate"
    return None


def _low_rank_problem(layer: nn.Module, rank: int) -> str | None:
    if isinstance(layer, nn.Conv2d) and layer.groups != 1:
        return f"grouped convolution (groups={layer.groups}): low-rank needs groups=1"
    out = layer.weight.shape[0]
    inner = layer.weight.numel() // out
    if rank > min(out, inner):
        return f"rank {rank} is larger than min(out, in*kernel) = min({out}, {inner}) = {min(out, inner)}"
    return None


def _build_low_rank(layer: nn.Module, rank: int, energy: float) -> tuple[nn.Module, dict[str, Any]]:
    svd = _svd(layer)
    chosen = rank or energy_rank(svd[1], energy)
    squares = svd[1] ** 2
    kept = float(squares[:chosen].sum() / squares.sum()) if float(squares.sum()) else 1.0
    return low_rank(layer, chosen, svd), {"rank": chosen, "energy": round(kept, 6)}


def _build_separable(conv: nn.Conv2d) -> tuple[nn.Module, dict[str, Any]]:
    pair, kept = depthwise_separable(conv)
    return pair, {"energy": round(kept, 6)}


def _method(options: Mapping[str, Any]) -> _Method:
    """The chosen method, after the checks that involve several options."""
    method, groups, rank, energy = options["method"], options["groups"], options["rank"], options["energy"]
    unused = [name for name, value, users in (("groups", groups, "groups"), ("rank", rank, "low-rank"),
                                               ("energy", energy, "low-rank")) if value and method != users]
    if unused:
        raise UsageError(f"factorise: option(s) {', '.join(unused)} do not apply to method {method!r}")
    if method == "groups":
        if groups < 2:
            raise UsageError(f"factorise: method 'groups' needs groups >= 2, got {groups}")
        return _Method((nn.Conv2d,), lambda m: _grouped_problem(m, groups),
                       lambda m: (grouped_conv(m, groups), {"groups": groups}), split=False)
    if method == "depthwise-separable":
        return _Method((nn.Conv2d,), _separable_problem, _build_separable, split=True)
    if bool(rank) == bool(energy):
        raise UsageError(f"factorise: method 'low-rank' needs exactly one of rank or energy, "
                         f"got rank={rank}, energy={energy}", hint="e.g. rank = 64, or energy = 0.9")
    return _Method((nn.Conv2d, nn.Linear), lambda m: _low_rank_problem(m, rank),
                   lambda m: _build_low_rank(m, rank, energy), split=True)


# ---------------------------------------------------------------- step


def _called_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Modules the graph calls (every named module of a plain nn.Module)."""
    if isinstance(model, fx.GraphModule):
        names = dict.fromkeys(n.target for n in model.graph.nodes if n.op == "call_module")
        return {name: model.get_submodule(name) for name in names}
    return {name: module for name, module in model.named_modules() if name}


def _stock(module: nn.Module, kinds: tuple[type, ...]) -> bool:
    """An instance of one of ``kinds`` that keeps that class's forward."""
    return any(isinstance(module, kind) and type(module).forward is kind.forward for kind in kinds)


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _replace(model: nn.Module, name: str, new: nn.Module, split: bool) -> None:
    """Put ``new`` at ``name``; in a GraphModule, calls of a split layer
    become calls of ``name.0`` then ``name.1``."""
    model.set_submodule(name, new)
    if not (split and isinstance(model, fx.GraphModule)):
        return
    graph = model.graph
    for node in [n for n in graph.nodes if n.op == "call_module" and n.target == name]:
        with graph.inserting_after(node):
            first = graph.call_module(f"{name}.0", node.args, node.kwargs)
        with graph.inserting_after(first):
            second = graph.call_module(f"{name}.1", (first,))
        node.replace_all_uses_with(second)
        graph.erase_node(node)


def _summary(unchanged: Mapping[str, str], method: str) -> str:
    listed = "; ".join(f"{name}: {reason}" for name, reason in list(unchanged.items())[:5])
    more = f"; and {len(unchanged) - 5} more (see the step's notes)" if len(unchanged) > 5 else ""
    return f"{len(unchanged)} layer(s) cannot be factorised by {method!r} and are left unchanged: {listed}{more}"


def _problem(module: nn.Module, method: _Method, declared) -> str | None:
    """Why ``module`` cannot take ``method`` (None when it can)."""
    if _stock(module, method.kinds):
        return method.problem(module)
    return (f"{type(module).__name__} is a weighted layer a plugin declared "
            f"({registered_for(module, declared).name}); factorise replaces only Conv2d and Linear")


def factorise(model: nn.Module, options: Mapping[str, Any], context: StepContext) -> nn.Module:
    """Factorise the selected layers of ``model`` (in place on the pipeline's
    copy) and return it; see the module docstring."""
    method, declared = _method(options), context.weighted_layers
    warner = StepWarnings("factorise")
    candidates = {name: m for name, m in _called_modules(model).items()
                  if registered_for(m, declared) is not None or _stock(m, method.kinds)}
    kinds = kinds_text(" or ".join(k.__name__ for k in method.kinds), declared)
    chosen = select_modules(candidates, options["layers"], options["ignore"], options["min_size"], _params,
                            f"{kinds} layer called by the model")
    for message in chosen.unmatched:
        warner.warn(message)
    replaced, unchanged, larger = {}, {}, []
    for name, module in chosen.modules.items():
        problem = _problem(module, method, declared)
        if problem:
            unchanged[name] = problem
            continue
        new, facts = method.build(module)
        before, after = _params(module), _params(new)
        _replace(model, name, new, method.split)
        replaced[name] = {"params": [before, after], **facts}
        if after >= before:
            larger.append(name)
    if isinstance(model, fx.GraphModule):
        model.graph.lint()
        model.recompile()
    if unchanged:
        warner.warn(_summary(unchanged, options["method"]))
    if not replaced:
        warner.warn(f"no layer was changed by {options['method']!r}")
    for key, value in (("replaced", replaced), ("unchanged", unchanged),
                       ("skipped_small", list(chosen.small)), ("larger", larger)):
        if value:
            context.note(key, value)
    warner.note(context)
    return model


def _check_energy(value: float) -> str | None:
    return None if 0 <= value <= 1 else f"expected 0 < energy <= 1 (0 = unset), got {value!r}"


FACTORISE = CompressionStep(
    name="factorise",
    description="grouped, depthwise-separable or low-rank (SVD) replacements of conv and linear layers",
    run=factorise,
    options=(
        StepOption("method", (str,), help="groups, depthwise-separable or low-rank", choices=METHODS),
        StepOption("layers", (list,), [], "module name globs to factorise (default: every eligible layer)",
                   check=check_globs),
        StepOption("ignore", (list,), [], "module name globs to leave alone", check=check_globs),
        StepOption("min_size", (int,), 0, "leave layers with fewer parameters alone", check=at_least(0)),
        StepOption("groups", (int,), 0, "groups of the new convs (method groups)", check=at_least(0)),
        StepOption("rank", (int,), 0, "rank of the factors (method low-rank; 0 = unset)", check=at_least(0)),
        StepOption("energy", (float,), 0.0, "kept fraction of singular-value energy (method low-rank; "
                   "0 = unset)", check=_check_energy),
    ),
    validate=_method,  # option combinations fail before any work starts
)


@hookimpl
def micronet_register_steps():
    return [FACTORISE]
