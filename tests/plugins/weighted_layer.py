"""A plugin's weighted layer, for the tests of the built-in steps that select layers.

``Mix`` is what a third party writes: a module Torch-Pruning and micronet's
built-ins have never seen, owning ``weight`` ``[out, in]`` (used through
``F.linear``), ``scale`` ``[out]`` and ``bias`` ``[out]``. Its counter books
``numel(y)`` dot products of ``in`` terms over the weight (so sparsity
shrinks them), one multiply by the scale and one bias add per output.
:func:`registries` builds the run's registries with that counter and, unless
told not to, the :class:`~micronet.steps.WeightedLayer` declaration.
"""
import sys

import torch
import torch.nn.functional as F
from torch import fx, nn

from micronet.capture import trace_fx
from micronet.manager import Registries, get_plugin_manager, hookimpl
from micronet.records import Counts, TensorInfo
from micronet.registry import collect, counter, shape_rule
from micronet.steps import WeightedLayer


class Mix(nn.Module):
    """y = (x @ weight.T) * scale + bias."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin) / cin ** 0.5)
        self.scale = nn.Parameter(torch.ones(cout))
        self.bias = nn.Parameter(torch.zeros(cout))

    def forward(self, x):
        return F.linear(x, self.weight) * self.scale + self.bias


@counter(Mix, op="mix")
def count_mix(call):
    """# x: [*, in]  weight: [out, in]  y: [*, out]
    # dot_products = numel(y) of dot_length = in; mults = numel(y) (scale); adds = numel(y) (bias)"""
    outputs = call.y.numel
    return Counts(dot_products=outputs, dot_length=call.module.weight.shape[1], sparse_weight=True,
                  mults=outputs, adds=outputs)


@shape_rule(Mix)
def mix_shape(call):
    """[*, in] -> [*, out], the input's dtype."""
    return TensorInfo(call.x.shape[:-1] + (call.module.weight.shape[0],), call.x.dtype)


class MixPlugin:
    """Counts Mix and, with ``declare``, declares it a weighted layer."""

    def __init__(self, declare: bool = True):
        self.declare = declare

    @hookimpl
    def micronet_register_counters(self):
        return collect(sys.modules[__name__])

    @hookimpl
    def micronet_register_weighted_layers(self):
        return [WeightedLayer(Mix)] if self.declare else []


def registries(declare: bool = True) -> Registries:
    """The built-ins plus :class:`MixPlugin` (no entry points)."""
    return Registries.from_manager(get_plugin_manager(entry_points=False, extra=[MixPlugin(declare)]))


def traced(model: nn.Module, found: Registries) -> fx.GraphModule:
    """``model`` as the pipeline hands it to a step: traced, Mix kept as one call."""
    return fx.GraphModule(model, trace_fx(model, found.counters).graph)
