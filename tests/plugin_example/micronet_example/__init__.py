"""A third-party micronet plugin: the hooks micronet calls.

The entry point (``micronet = example = micronet_example`` in setup.cfg)
names this module; micronet registers it as the plugin ``example`` and
calls the hooks below, each returning the records it declares.
"""
from torch import nn

from micronet.plugin import ModelEntry, WeightedLayer, collect, hookimpl

from . import layers, report, steps
from .layers import ClippedReLU, ScaledLinear

__all__ = ["ClippedReLU", "ScaledLinear", "ExampleNet"]


class ExampleNet(nn.Module):
    """conv -> ReLU -> pool -> ScaledLinear: a model holding the plugin's layer."""

    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = ScaledLinear(4, num_classes)

    def forward(self, x):
        return self.fc(self.pool(self.relu(self.conv(x))).flatten(1))


@hookimpl
def micronet_register_counters():
    return collect(layers)


@hookimpl
def micronet_register_weighted_layers():
    # the built-in prune / sparsify / quantize / factorise steps may now select ScaledLinear.weight
    return [WeightedLayer(ScaledLinear, weight="weight")]


@hookimpl
def micronet_register_steps():
    return [steps.SWAP_RELU, steps.CLUSTER]


@hookimpl
def micronet_register_report_sections():
    return report.SECTIONS


@hookimpl
def micronet_register_models():
    return [ModelEntry("example_net", ExampleNet, "conv, ReLU, pool, ScaledLinear", input_shape=(1, 3, 8, 8))]
