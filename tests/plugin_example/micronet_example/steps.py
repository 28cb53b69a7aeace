"""Two compression steps: ``swap-relu`` and ``cluster``.

``cluster`` is weight sharing (Han et al., Deep Compression): each selected
layer's parameters are replaced by the nearest of k = 2**bits centroids
that k-means finds among its values. The layer then stores a ``bits``-wide
index per parameter and the k centroids as float32: the step declares both,
so the score charges ``params * bits / 32 + k * 32 / 32`` per layer.
"""
from fnmatch import fnmatchcase

import torch
from torch import fx, nn

from micronet.plugin import (MISSING, CompressionStep, StepContext, StepOption, declare_storage,
                             set_bits)

from .layers import ClippedReLU


def swap_relu(model: fx.GraphModule, options, context: StepContext) -> nn.Module:
    """Replace every nn.ReLU submodule by ClippedReLU(ceiling)."""
    for name, module in list(model.named_modules()):
        if type(module) is nn.ReLU:
            model.set_submodule(name, ClippedReLU(options["ceiling"]))
    return model


SWAP_RELU = CompressionStep(
    name="swap-relu",
    description="replace nn.ReLU by ClippedReLU",
    run=swap_relu,
    options=(StepOption("ceiling", (float,), 6.0, "upper clip value"),),
)


def nearest(values: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Index of the nearest of the sorted ``centroids`` for each of ``values``."""
    return torch.bucketize(values, (centroids[1:] + centroids[:-1]) / 2)


def kmeans(values: torch.Tensor, k: int, iterations: int, init: str) -> torch.Tensor:
    """k sorted centroids of the 1-d ``values`` (Lloyd's algorithm), started
    evenly spaced between the extremes ("linear") or at quantiles ("density")."""
    if init == "linear":
        centroids = torch.linspace(values.min().item(), values.max().item(), k, device=values.device)
    else:
        ordered = values.sort().values
        centroids = ordered[torch.linspace(0, len(ordered) - 1, k, device=values.device).long()]
    for _ in range(iterations):
        index = nearest(values, centroids)
        sums = torch.zeros(k, device=values.device).index_add_(0, index, values)
        counts = torch.bincount(index, minlength=k)
        centroids = torch.where(counts > 0, sums / counts.clamp(min=1), centroids).sort().values
    return centroids


def has_weight(module: nn.Module) -> bool:
    """Whether ``module`` owns a parameter ``weight`` of two or more dims
    (convolutions, linear layers, embeddings, ScaledLinear)."""
    weight = dict(module.named_parameters(recurse=False)).get("weight")
    return weight is not None and weight.dim() >= 2


def cluster(model: fx.GraphModule, options, context: StepContext) -> nn.Module:
    """Share the values of every selected layer's parameters among k centroids."""
    bits, k = options["bits"], 2 ** options["bits"]
    chosen = {name: module for name, module in model.named_modules()
              if has_weight(module) and any(fnmatchcase(name, glob) for glob in options["layers"])}
    if not chosen:
        context.log(f"cluster: layers {options['layers']} match no layer with a weight")
    for name, module in chosen.items():
        # set_bits(weight=...) covers every parameter the layer owns: all share the codebook
        params = list(module.parameters(recurse=False))
        with torch.no_grad():
            values = torch.cat([p.detach().flatten().float() for p in params])
            centroids = kmeans(values, k, options["iterations"], options["init"])
            for p in params:
                p.copy_(centroids[nearest(p.detach().float(), centroids)])
        set_bits(module, weight=bits)
        declare_storage(module, "codebook", elements=k, bits=32)
    context.note("clustered", sorted(chosen))
    return model


def _check_globs(globs: list) -> str | None:
    if not all(isinstance(glob, str) and glob for glob in globs):
        return f"expected a list of module name globs, got {globs!r}"
    return None


CLUSTER = CompressionStep(
    name="cluster",
    description="weight sharing: k-means with 2**bits centroids per layer",
    run=cluster,
    options=(
        StepOption("bits", (int,), MISSING, "index bits: 2**bits centroids per layer",
                   check=lambda bits: None if 1 <= bits <= 8 else f"expected 1 to 8, got {bits}"),
        StepOption("layers", (list,), ["*"], "module name globs to cluster", check=_check_globs),
        StepOption("iterations", (int,), 20, "k-means iterations",
                   check=lambda n: None if n >= 1 else f"expected at least 1, got {n}"),
        StepOption("init", (str,), "linear", "where the centroids start", choices=("linear", "density")),
    ),
)
