"""A plugin's weighted layer whose weight is not called ``weight``: the steps
select it through the declared name, and the audit reads its sparsity there."""
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from micronet.manager import Registries, get_plugin_manager
from micronet.pipeline import compress
from micronet.plugin import Counts, OpCall, TensorInfo, WeightedLayer, collect, counter, hookimpl, shape_rule


class KernelLinear(nn.Module):
    """A linear layer whose matrix is called ``kernel`` ([out, in]), no bias."""

    def __init__(self, features_in: int, features_out: int):
        super().__init__()
        self.features_in, self.features_out = features_in, features_out
        self.kernel = nn.Parameter(torch.randn(features_out, features_in))

    def forward(self, x):
        return F.linear(x, self.kernel)


@counter(KernelLinear, op="kernel_linear")
def count_kernel_linear(call: OpCall) -> Counts:
    """One dot product of ``features_in`` terms per output; the kernel's sparsity shrinks it."""
    return Counts(dot_products=call.y.numel, dot_length=call.module.features_in, sparse_weight=True)


@shape_rule(KernelLinear)
def kernel_linear_shape(call: OpCall) -> TensorInfo:
    """[*, in] -> [*, out]."""
    return TensorInfo(call.x.shape[:-1] + (call.module.features_out,), call.x.dtype)


class KernelPlugin:
    @hookimpl
    def micronet_register_counters(self):
        return collect(sys.modules[__name__])

    @hookimpl
    def micronet_register_weighted_layers(self):
        return [WeightedLayer(KernelLinear, weight="kernel")]


def test_a_declared_weight_name_is_sparsified_and_its_sparsity_shrinks_the_ops():
    registries = Registries.from_manager(get_plugin_manager(entry_points=False, extra=[KernelPlugin()]))
    model = nn.Sequential(nn.Flatten(), KernelLinear(16, 8))
    history = compress({"model": {"spec": "x", "input": [1, 16]}, "score": {"freebie": False},
                        "step": [{"use": "sparsify", "amount": 0.5}]}, model=model, registries=registries)
    before = next(r for r in history.input.records if r.name == "1")
    after = next(r for r in history.final.records if r.name == "1")
    assert int((history.model.get_submodule("1").kernel == 0).sum()) == 64  # half of 8*16
    assert (after.weight_params, after.weight_nonzero) == (128, 64)
    # dense: 8 outputs x 16 mults = 128, 8 x 15 adds = 120; at density 1/2: 8 x 8 = 64 and 8 x 7 = 56
    before_cost = next(c for r, c in history.input.layers if r.name == "1")
    after_cost = next(c for r, c in history.final.layers if r.name == "1")
    assert (before_cost.mults, before_cost.adds) == (128, 120)
    assert (after_cost.mults, after_cost.adds) == (64, 56)
    assert before.rule == after.rule == f"{__name__}:count_kernel_linear"
