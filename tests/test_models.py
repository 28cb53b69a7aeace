"""The built-in models (``micronet.models``): exact sizes, real forward passes,
meta builds, and their registration through the plugin hook."""
from __future__ import annotations

import inspect

import pluggy
import pytest
import torch
from torch import nn

import micronet.models as builtin_models
from micronet import hookspecs
from micronet.manager import Registries
from micronet.models import densenet_cifar, digits_cnn, mobilenet_v2_cifar, resnet18_cifar, wrn_28_10
from micronet.models.densenet_cifar import Bottleneck, DenseNet, Transition
from micronet.models.mobilenet_v2_cifar import InvertedResidual, MobileNetV2Cifar
from micronet.models.resnet_cifar import BasicBlock, ResNet
from micronet.models.wide_resnet import WideBasicBlock, WideResNet
from micronet.resolve import ModelEntry

FACTORIES = {
    "densenet_cifar": densenet_cifar,
    "resnet18_cifar": resnet18_cifar,
    "wrn_28_10": wrn_28_10,
    "mobilenet_v2_cifar": mobilenet_v2_cifar,
}
#: Every built-in: the CIFAR models above and the digits CNN (tests/test_digits.py).
BUILTINS = {**FACTORIES, "digits_cnn": digits_cnn}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def on_meta(factory, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return factory(**kwargs)


@pytest.mark.parametrize("factory, kwargs, expected", [
    (densenet_cifar, {}, 1_000_618),           # kuangliu densenet_cifar, growth 12, 10 classes
    (resnet18_cifar, {}, 11_173_962),          # kuangliu ResNet18; the imta-2021 reference
    (mobilenet_v2_cifar, {}, 2_296_922),       # kuangliu MobileNetV2, 10 classes
    (wrn_28_10, {}, 36_536_884),               # WRN-28-10, 100 classes (see test_wrn_breakdown)
    (wrn_28_10, {"num_classes": 10}, 36_479_194),  # the often quoted "36.5M" is this 10-class count
])
def test_exact_parameter_counts(factory, kwargs, expected):
    assert n_params(on_meta(factory, **kwargs)) == expected


def test_wrn_breakdown_matches_rules():
    """RULES.md: WRN-28-10 with 100 classes has about 36.52M conv+fc weights."""
    model = on_meta(wrn_28_10)
    convs = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Conv2d))
    # stem 3*16*9 = 432; group 1: 16*160*9 + 160*160*9 + 16*160 + 3 * 2*160*160*9 = 1,638,400;
    # group 2: 160*320*9 + 320*320*9 + 160*320 + 3 * 2*320*320*9 = 6,963,200;
    # group 3: 320*640*9 + 640*640*9 + 320*640 + 3 * 2*640*640*9 = 27,852,800
    assert convs == 432 + 1_638_400 + 6_963_200 + 27_852_800 == 36_454_832
    assert model.fc.weight.numel() == 640 * 100
    assert convs + model.fc.weight.numel() == 36_518_832  # ~= 36.52M
    bn = sum(m.weight.numel() + m.bias.numel() for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    # BN channels: (16 + 7*160) + (160 + 7*320) + (320 + 7*640) + 640 = 8,976, weight and bias each
    assert bn == 2 * 8_976
    assert n_params(model) == 36_518_832 + 100 + 2 * 8_976


def test_wrn_depth_and_width_arguments():
    # WRN-16-4: (16-4)/6 = 2 blocks per group, widths 64/128/256
    model = on_meta(wrn_28_10, depth=16, widen_factor=4, num_classes=10)
    assert [len(g) for g in (model.block1, model.block2, model.block3)] == [2, 2, 2]
    assert model.fc.in_features == 64 * 4
    with pytest.raises(ValueError, match="6n\\+4"):
        wrn_28_10(depth=27)


def test_densenet_growth_rate_and_reduction():
    model = on_meta(densenet_cifar, growth_rate=4, num_classes=100)
    assert model.conv1.out_channels == 2 * 4
    # dense1: 8 + 6*4 = 32 channels -> trans1 halves to 16
    assert model.trans1.conv.in_channels == 32 and model.trans1.conv.out_channels == 16
    assert model.linear.out_features == 100


def test_mobilenet_width_mult_rounds_to_eight():
    model = on_meta(mobilenet_v2_cifar, width_mult=0.5)
    assert model.conv1.out_channels == 16               # 32 * 0.5
    assert model.layers[0].conv3.out_channels == 8      # 16 * 0.5
    assert model.conv2.out_channels == 1280             # kept unless width_mult > 1
    assert on_meta(mobilenet_v2_cifar, width_mult=1.4).conv2.out_channels == 1792  # 1280 * 1.4


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_forward_on_real_cifar_input(name):
    torch.manual_seed(0)
    model = FACTORIES[name](num_classes=7).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 32, 32))
    assert out.shape == (1, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_meta_build_spends_no_storage(name):
    model = on_meta(FACTORIES[name])
    assert next(model.parameters()).is_meta
    assert all(t.is_meta for t in [*model.parameters(), *model.buffers()])


def test_functional_calls_as_in_the_originals():
    """The kuangliu models use F.relu / F.avg_pool2d / torch.cat, not modules:
    counters that miss functional calls must show it on them."""
    for model in (on_meta(densenet_cifar), on_meta(resnet18_cifar), on_meta(mobilenet_v2_cifar)):
        assert not any(isinstance(m, (nn.ReLU, nn.AvgPool2d)) for m in model.modules())
    assert any(isinstance(m, nn.ReLU) for m in on_meta(wrn_28_10).modules())


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_factories_take_keyword_arguments_with_defaults(name):
    parameters = inspect.signature(FACTORIES[name]).parameters.values()
    assert "num_classes" in [p.name for p in parameters]
    assert all(p.kind is p.KEYWORD_ONLY and p.default is not p.empty for p in parameters)


def test_classes_and_factories_are_documented():
    documented = [*FACTORIES.values(), Bottleneck, Transition, DenseNet, BasicBlock, ResNet,
                  WideBasicBlock, WideResNet, InvertedResidual, MobileNetV2Cifar]
    assert all((obj.__doc__ or "").strip() for obj in documented)
    # each factory states its parameter count with its defaults (checked against the model above)
    stated = {densenet_cifar: "1,000,618", resnet18_cifar: "11,173,962", mobilenet_v2_cifar: "2,296,922",
              wrn_28_10: "36,536,884"}
    for factory, count in stated.items():
        assert f"{count} parameters" in " ".join(factory.__doc__.split()), factory.__name__
        assert f"{n_params(on_meta(factory)):,}" == count


def test_hook_registers_every_builtin():
    entries = builtin_models.micronet_register_models()
    assert all(isinstance(e, ModelEntry) for e in entries)
    assert {e.name: e.factory for e in entries} == BUILTINS
    assert {e.name: e.input_shape for e in entries} == {**{name: (1, 3, 32, 32) for name in FACTORIES},
                                                         "digits_cnn": (1, 1, 8, 8)}
    assert all(e.description and not e.replace for e in entries)


def test_registered_through_the_plugin_manager():
    pm = pluggy.PluginManager("micronet")
    pm.add_hookspecs(hookspecs)
    pm.register(builtin_models, name="micronet.models")
    pm.check_pending()
    models = Registries(pm).models
    assert sorted(models) == sorted(BUILTINS)
    assert models["wrn_28_10"].factory is wrn_28_10
