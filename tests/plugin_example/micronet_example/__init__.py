"""A third-party micronet plugin in one file.

It brings a module micronet has never heard of (``ClippedReLU``), tells
micronet how to count it, and adds a compression step (``swap-relu``) that
puts it in place of every ``nn.ReLU``.
"""
import sys

import torch
from torch import fx, nn

from micronet import Counts, hookimpl
from micronet.registry import collect, counter, shape_rule
from micronet.reports.sections import ReportSection
from micronet.steps import CompressionStep, StepOption


class ClippedReLU(nn.Module):
    """min(max(x, 0), ceiling): a ReLU with a ceiling, as used for low-bit activations."""

    def __init__(self, ceiling: float = 6.0):
        super().__init__()
        self.ceiling = ceiling

    def forward(self, x):
        return torch.clamp(x, 0.0, self.ceiling)


@counter(ClippedReLU, op="clipped_relu")
def count_clipped_relu(call):
    """Two comparisons per element, booked as multiplies like ReLU's one."""
    return Counts(mults=2 * call.y.numel)


@shape_rule(ClippedReLU)
def clipped_relu_shape(call):
    """Same shape and dtype as the input."""
    return call.x


def swap_relu(model: fx.GraphModule, options, context):
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


@hookimpl
def micronet_register_counters():
    return collect(sys.modules[__name__])


@hookimpl
def micronet_register_steps():
    return [SWAP_RELU]


def _clipped_layers(result):
    """How many ClippedReLU layers the model has, and their share of the ops."""
    layers = [(record, cost) for record, cost in result.layers if record.op == "clipped_relu"]
    if not layers:
        return []
    ops = sum(cost.ops for _, cost in layers)
    return [("layers", str(len(layers))), ("share of MicroNet ops", f"{ops / result.score.ops:.2%}")]


@hookimpl
def micronet_register_report_sections():
    return [ReportSection("clipped-relu", "ClippedReLU layers", _clipped_layers)]
