"""micronet.steps: the shared option checks, device and dtype helpers, and the
WeightedLayer declarations from the hook to a step's context."""
import math

import pluggy
import pytest
import torch
from torch import nn

from micronet.errors import PluginError
from micronet.manager import Registries, get_plugin_manager, hookimpl
from micronet.steps import StepContext, WeightedLayer, at_least, check_globs, model_device, model_dtype, within

# ---------------------------------------------------------------- option checks


@pytest.mark.parametrize("check, value, message", [
    (at_least(1), 0, "expected an integer >= 1, got 0"),
    (at_least(0.0), -0.5, "expected a number >= 0.0, got -0.5"),
    (at_least(0.0), math.nan, "expected a number >= 0.0, got nan"),
    (at_least(0.0, strict=True), 0, "expected a number > 0.0, got 0"),
    (at_least(0.0, strict=True), math.inf, "expected a number > 0.0, got inf"),
    (within(0, 1), 1.5, "expected a number in [0, 1], got 1.5"),
    (within(0, 1, closed=False), 1.0, "expected a number in [0, 1), got 1.0"),
    (within(0, 1), math.nan, "expected a number in [0, 1], got nan"),
    (check_globs, ["layer1.*", 3], "expected a list of layer-name globs such as ['layer1.*'], got ['layer1.*', 3]"),
    (check_globs, [""], "expected a list of layer-name globs such as ['layer1.*'], got ['']"),
])
def test_a_bad_value_gets_expected_versus_got(check, value, message):
    assert check(value) == message


@pytest.mark.parametrize("check, value", [
    (at_least(1), 1), (at_least(0.0, strict=True), 1e-9), (within(0, 1), 1), (within(0, 1, closed=False), 0),
    (check_globs, []), (check_globs, ["*.conv2"]),
])
def test_a_good_value_passes(check, value):
    assert check(value) is None


def test_device_and_dtype_of_a_model():
    assert model_device(nn.ReLU()) == torch.device("cpu") and model_dtype(nn.ReLU()) == torch.float32
    half = nn.Sequential(nn.Embedding(4, 2), nn.Linear(2, 2)).half()
    assert model_dtype(half) == torch.float16  # the first floating-point parameter's
    assert model_device(nn.BatchNorm1d(2, affine=False)) == torch.device("cpu")  # buffers count too


# ---------------------------------------------------------- weighted layers


class Kernel(nn.Module):
    """A plugin's module with a ``kernel`` weight."""

    def __init__(self):
        super().__init__()
        self.kernel = nn.Parameter(torch.ones(2, 2))


class Declares:
    """A plugin declaring ``layers`` (a fixed list) as weighted layers."""

    def __init__(self, *layers):
        self.layers = list(layers)

    @hookimpl
    def micronet_register_weighted_layers(self):
        return self.layers


def registries(*plugins) -> Registries:
    return Registries.from_manager(get_plugin_manager(entry_points=False, extra=plugins))


def test_declarations_are_merged_and_reach_a_steps_context():
    kernel = WeightedLayer(Kernel, weight="kernel")
    found = registries(Declares(kernel))
    assert found.weighted_layers == {"test_steps.Kernel": kernel}
    assert found.origin("weighted_layers", "test_steps.Kernel").isdigit()  # pluggy's name for an object
    assert StepContext((1, 2), None, registries=found).weighted_layers == (kernel,)
    assert StepContext((1, 2), None).weighted_layers == ()


def test_a_class_declared_twice_is_refused_naming_both_plugins_unless_replaced():
    first, second = Declares(WeightedLayer(Kernel)), Declares(WeightedLayer(Kernel, weight="kernel"))
    with pytest.raises(PluginError, match=r"weighted layer 'test_steps.Kernel' registered twice: by plugin "
                       r"'\d+' and by plugin '\d+'"):
        registries(first, second).weighted_layers
    third = Declares(WeightedLayer(Kernel, weight="kernel", replace=True))
    assert registries(first, third).weighted_layers["test_steps.Kernel"].weight == "kernel"


def test_something_else_than_a_weighted_layer_is_refused_naming_the_plugin():
    with pytest.raises(PluginError, match=r"plugin '\d+' returned 'Kernel' from micronet_register_weighted_layers"):
        registries(Declares(WeightedLayer(nn.Linear), "Kernel")).weighted_layers


def test_a_manager_without_the_hook_has_no_weighted_layers():
    assert Registries(pluggy.PluginManager("micronet")).weighted_layers == {}


def test_the_built_ins_declare_none():
    assert registries().weighted_layers == {}
