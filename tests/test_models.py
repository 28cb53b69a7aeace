"""The built-in models (``micronet.models``): exact sizes, real forward passes,
meta builds, and their registration through the plugin hook."""
from __future__ import annotations

import inspect
import math
import warnings
from fractions import Fraction

import pluggy
import pytest
import torch
from torch import fx, nn

import micronet
import micronet.models as builtin_models
from micronet import hookspecs
from micronet.manager import Registries
from micronet.models import (densenet_cifar, digits_cnn, mobilenet_v2_cifar, pyramidnet_cifar, resnet18_cifar,
                             wikitext103_lstm, wrn_28_10)
from micronet.models.densenet_cifar import Bottleneck, DenseNet, Transition
from micronet.models.mobilenet_v2_cifar import InvertedResidual, MobileNetV2Cifar
from micronet.models.pyramidnet_cifar import BasicBlock as PyramidBasicBlock
from micronet.models.pyramidnet_cifar import Bottleneck as PyramidBottleneck
from micronet.models.pyramidnet_cifar import PyramidNet, unit_widths
from micronet.models.resnet_cifar import BasicBlock, ResNet
from micronet.models.wide_resnet import WideBasicBlock, WideResNet
from micronet.plugins.prune import PRUNE
from micronet.resolve import ModelEntry
from micronet.steps import StepContext, check_options

FACTORIES = {
    "densenet_cifar": densenet_cifar,
    "resnet18_cifar": resnet18_cifar,
    "wrn_28_10": wrn_28_10,
    "mobilenet_v2_cifar": mobilenet_v2_cifar,
    "pyramidnet_cifar": pyramidnet_cifar,
}
#: Every built-in: the CIFAR models above and the digits CNN (tests/test_digits.py).
BUILTINS = {**FACTORIES, "digits_cnn": digits_cnn, "wikitext103_lstm": wikitext103_lstm}


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
    (pyramidnet_cifar, {}, 1_778_556),         # PyramidNet-110, alpha 48, 100 classes (see pyramid_params)
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
                  WideBasicBlock, WideResNet, InvertedResidual, MobileNetV2Cifar, PyramidBasicBlock,
                  PyramidBottleneck, PyramidNet, unit_widths]
    assert all((obj.__doc__ or "").strip() for obj in documented)
    # each factory states its parameter count with its defaults (checked against the model above)
    stated = {densenet_cifar: "1,000,618", resnet18_cifar: "11,173,962", mobilenet_v2_cifar: "2,296,922",
              wrn_28_10: "36,536,884", pyramidnet_cifar: "1,778,556"}
    for factory, count in stated.items():
        assert f"{count} parameters" in " ".join(factory.__doc__.split()), factory.__name__
        assert f"{n_params(on_meta(factory)):,}" == count


def test_hook_registers_every_builtin():
    entries = builtin_models.micronet_register_models()
    assert all(isinstance(e, ModelEntry) for e in entries)
    assert {e.name: e.factory for e in entries} == BUILTINS
    assert {e.name: e.input_shape for e in entries} == {**{name: (1, 3, 32, 32) for name in FACTORIES},
                                                         "digits_cnn": (1, 1, 8, 8), "wikitext103_lstm": (1, 1)}
    assert all(e.description and not e.replace for e in entries)


def test_registered_through_the_plugin_manager():
    pm = pluggy.PluginManager("micronet")
    pm.add_hookspecs(hookspecs)
    pm.register(builtin_models, name="micronet.models")
    pm.check_pending()
    models = Registries(pm).models
    assert sorted(models) == sorted(BUILTINS)
    assert models["wrn_28_10"].factory is wrn_28_10


# ------------------------------------------------------------------ DenseNet groups


def test_densenet_groups_split_both_bottleneck_convs():
    model = on_meta(densenet_cifar, growth_rate=4, groups=2)
    bottlenecks = [m for m in model.modules() if isinstance(m, Bottleneck)]
    assert len(bottlenecks) == 6 + 12 + 24 + 16
    assert all(b.conv1.groups == b.conv2.groups == 2 for b in bottlenecks)
    assert model.conv1.groups == model.trans1.conv.groups == 1  # stem and transitions stay whole
    # growth 4, groups 2, 10 classes. A bottleneck reading c channels: bn1 2c, conv1 1x1
    # c/2 * 16 = 8c, bn2 2*16 = 32, conv2 3x3 16/2 * 9 * 4 = 288: 10c + 320.
    # dense1 c = 8, 12, ..., 28 (sum 108): 10*108 + 6*320 = 3,000; trans1 bn 2*32 + conv 32*16 = 576
    # dense2 c = 16..60 (sum 456): 4,560 + 12*320 = 8,400; trans2 2*64 + 64*32 = 2,176
    # dense3 c = 32..124 (sum 1,872): 18,720 + 24*320 = 26,400; trans3 2*128 + 128*64 = 8,448
    # dense4 c = 64..124 (sum 1,504): 15,040 + 16*320 = 20,160; stem 3*8*9 = 216; bn 2*128; fc 128*10 + 10
    assert n_params(model) == 216 + 3_000 + 576 + 8_400 + 2_176 + 26_400 + 8_448 + 20_160 + 256 + 1_290 == 70_922
    # groups 1 (the per-bottleneck 18c + 608): 119,146, the growth-4 DenseNet of the other teams
    assert n_params(on_meta(densenet_cifar, growth_rate=4)) == 216 + 5_592 + 576 + 15_504 + 2_176 + 48_288 \
        + 8_448 + 36_800 + 256 + 1_290 == 119_146


def test_densenet_groups_from_a_spec():
    result = micronet.audit("micronet:densenet_cifar?growth_rate=4&groups=2", track="cifar10")
    assert result.totals["params"] == 70_922
    assert result.uncounted == ()


@pytest.mark.parametrize("kwargs, message", [
    ({"growth_rate": 4, "groups": 3}, "groups=3 does not divide the 8 input channels of dense1.0.conv1"),
    ({"growth_rate": 6, "groups": 4}, "groups=4 does not divide the 6 output channels of dense1.0.conv2"),
    # growth 4, reduction 0.3: trans1 keeps floor(32 * 0.3) = 9 channels, odd
    ({"growth_rate": 4, "groups": 2, "reduction": 0.3},
     "groups=2 does not divide the 9 input channels of dense2.0.conv1"),
    ({"growth_rate": 4, "groups": 0}, "groups must be an integer >= 1, got 0"),
])
def test_densenet_groups_must_divide_the_widths(kwargs, message):
    with pytest.raises(ValueError, match=message):
        on_meta(densenet_cifar, **kwargs)


def test_densenet_groups_run_forward():
    torch.manual_seed(0)
    with torch.no_grad():
        out = densenet_cifar(growth_rate=4, groups=2).eval()(torch.randn(1, 3, 32, 32))
    assert out.shape == (1, 10) and torch.isfinite(out).all()


# ------------------------------------------------------------------ PyramidNet


def pyramid_widths(depth, alpha, bottleneck=False):
    """Each unit's planes in exact arithmetic: 16 + alpha * k / (3n), halves up."""
    n = (depth - 2) // (9 if bottleneck else 6)
    return [math.floor(16 + Fraction(alpha) * k / (3 * n) + Fraction(1, 2)) for k in range(1, 3 * n + 1)]


def pyramid_params(depth, alpha, bottleneck=False, num_classes=100):
    """The parameters, from the widths alone."""
    total, cin = 3 * 16 * 9 + 2 * 16, 16  # stem conv and its BN
    for w in pyramid_widths(depth, alpha, bottleneck):
        if bottleneck:  # bn1, conv1 1x1, bn2, conv2 3x3, bn3, conv3 1x1 (x4), bn4
            total += 2 * cin + cin * w + 2 * w + 9 * w * w + 2 * w + w * 4 * w + 2 * 4 * w
            cin = 4 * w
        else:  # bn1, conv1 3x3, bn2, conv2 3x3, bn3
            total += 2 * cin + 9 * cin * w + 2 * w + 9 * w * w + 2 * w
            cin = w
    return total + 2 * cin + cin * num_classes + num_classes  # final BN, fc


# (depth, alpha, bottleneck, params in the paper's Table / the authors' READMEs, output feature width)
PAPER = [
    (110, 48, False, 1.7e6, 64),
    (110, 84, False, 3.8e6, 100),
    (110, 270, False, 28.3e6, 286),
    (164, 48, True, 1.7e6, 256),
    (164, 84, True, 3.8e6, 400),
    (164, 270, True, 27.0e6, 1144),
    (200, 240, True, 26.6e6, 1024),
    (236, 220, True, 26.8e6, 944),
    (272, 200, True, 26.0e6, 864),
]


@pytest.mark.parametrize("depth, alpha, bottleneck, published, width", PAPER)
def test_pyramidnet_matches_the_paper(depth, alpha, bottleneck, published, width):
    model = on_meta(pyramidnet_cifar, depth=depth, alpha=alpha, bottleneck=bottleneck)
    assert model.fc.in_features == width  # the published output feature dimension, exactly
    assert n_params(model) == pyramid_params(depth, alpha, bottleneck)
    # The paper rounds to 0.1M and its additive rows repeat the multiplicative rows' figures:
    # the exact counts are 1.78M, 3.91M, 28.51M (basic), 1.74M, 3.79M, 27.32M, 26.84M,
    # 27.05M, 26.29M (bottleneck), all within 5% of the Table.
    assert abs(n_params(model) - published) < 0.05 * published


def test_pyramidnet_published_figures_by_name():
    assert n_params(on_meta(pyramidnet_cifar)) == 1_778_556  # PyramidNet-110, alpha 48
    assert n_params(on_meta(pyramidnet_cifar, alpha=84)) == 3_913_536
    assert n_params(on_meta(pyramidnet_cifar, alpha=270)) == 28_511_307
    bottleneck = on_meta(pyramidnet_cifar, depth=164, bottleneck=True)
    assert n_params(bottleneck) == 1_738_572
    assert round(n_params(bottleneck) / 1e6, 1) == 1.7  # the README's "PyramidNet-164 (alpha=48) 1.7M"


def test_pyramidnet_widths():
    # depth 20: n = 3, alpha 24 adds 24/9 = 2.67 per unit: 18.67, 21.33, 24, 26.67, ... 40
    assert unit_widths(20, 24) == [19, 21, 24, 27, 29, 32, 35, 37, 40]
    # depth 194: n = 32, alpha 48 adds 0.5: 16.5 rounds up to 17 (Python 2 / Lua, not Python 3's 16)
    assert unit_widths(194, 48)[:4] == [17, 17, 18, 18]
    assert unit_widths(110, 270) == [16 + 5 * k for k in range(1, 55)]
    assert unit_widths(20, 0) == [16] * 9  # alpha 0: a pre-activation ResNet, no padding
    model = on_meta(pyramidnet_cifar, depth=20, alpha=24, num_classes=10)
    assert [model.layer2[0].conv1.stride, model.layer3[0].conv1.stride] == [(2, 2), (2, 2)]
    assert model.layer1[0].downsample is None and isinstance(model.layer2[0].downsample, nn.AvgPool2d)


@pytest.mark.parametrize("kwargs, message", [
    ({"depth": 21}, r"basic units must be 6n\+2 \(8, 14, \.\.\.\), got 21"),
    ({"depth": 110.0}, r"must be 6n\+2"),
    ({"depth": 25, "bottleneck": True}, r"bottleneck units must be 9n\+2 \(11, 20, \.\.\.\), got 25"),
    ({"alpha": -1}, r"alpha .* must be a number >= 0, got -1"),
])
def test_pyramidnet_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        pyramidnet_cifar(**kwargs)


def test_pyramidnet_spec_is_a_usage_error_for_a_bad_depth():
    with pytest.raises(micronet.errors.UsageError, match=r"pyramidnet_cifar.*6n\+2"):
        micronet.audit("micronet:pyramidnet_cifar?depth=21")


def test_pyramidnet_audit_counts_everything_and_pads_for_free():
    result = micronet.audit("micronet:pyramidnet_cifar?depth=20&alpha=24", track="cifar100")
    assert result.uncounted == ()
    assert result.totals["params"] == pyramid_params(20, 24) == 146_823
    # MACs: stem 27*16 per position at 32x32; each unit's two 3x3 convs at its output size
    # (stride 2 in the first conv of stages 2 and 3); fc 40*100
    widths, cin, positions = [19, 21, 24, 27, 29, 32, 35, 37, 40], 16, [1024] * 3 + [256] * 3 + [64] * 3
    macs = 27 * 16 * 1024 + 40 * 100
    for w, p in zip(widths, positions):
        macs += 9 * cin * w * p + 9 * w * w * p
        cin = w
    assert result.totals["macs"] == macs == 40_340_704
    records = {r.name: r for r in result.records}
    # layer2.0: 24 channels in, 27 out: the shortcut is pooled to 16x16, then padded by 3 zero channels
    pad = [r for r in result.records if r.module_path == "layer2.0" and r.op in ("cat", "new_zeros")]
    assert sorted(r.op for r in pad) == ["cat", "new_zeros"]
    assert all(r.status == "free" for r in pad)
    assert {r.op: r.output_shapes[0] for r in pad} == {"new_zeros": (1, 3, 16, 16), "cat": (1, 27, 16, 16)}
    add = next(r for r in result.records if r.module_path == "layer2.0" and r.op == "add")
    assert add.counts.adds == 27 * 16 * 16  # the sum is counted over the padded width
    assert records["layer2.0.downsample"].counts.adds > 0  # the pooling is counted
    # the reference's AvgPool2d((2, 2), stride=(2, 2)): the course profiler counts the tuple kernel's
    # 2*2 = 4 per output element (an int kernel 2 would count 2)
    course = micronet.audit("micronet:pyramidnet_cifar?depth=20&alpha=24", track="cifar10", rulebook="imta-2021")
    costs = {r.name: c for r, c in course.layers}
    assert costs["layer2.0.downsample"].ops == 4 * 24 * 16 * 16


def _distinct_batchnorms(model):
    """Every BatchNorm's gamma set to distinct values, to follow channels through pruning."""
    gammas = {}
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features) + 0.5)
                gammas[name] = m.weight.detach().clone()
    return gammas


def _kept(gammas, model, name):
    """Original indices of the channels a pruned BatchNorm kept."""
    after = dict(model.named_modules())[name].weight.detach()
    return [int((gammas[name] == value).nonzero()[0]) for value in after]


@pytest.mark.parametrize("bottleneck, depth, last", [(False, 20, "bn3"), (True, 29, "bn4")])
def test_pyramidnet_prunes_with_torch_pruning(bottleneck, depth, last):
    """The prune step keeps every shortcut aligned: a unit's kept output channels
    below its input width are exactly the channels its input kept."""
    torch.manual_seed(0)
    model = pyramidnet_cifar(depth=depth, alpha=24, num_classes=10, bottleneck=bottleneck).eval()
    gammas = _distinct_batchnorms(model)
    before = [m.num_features for n, m in model.named_modules() if n.endswith(last)]
    context = StepContext((1, 3, 32, 32), None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Torch-Pruning's own deprecation chatter
        pruned = PRUNE.run(fx.symbolic_trace(model), check_options(PRUNE, {"ratio": 0.5}, "test"), context)
    assert context.notes["params"]["after"] < 0.5 * context.notes["params"]["before"]
    assert pruned(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    units = [f"layer{s}.{i}" for s in (1, 2, 3) for i in range(3)]
    kept = _kept(gammas, pruned, "bn1")
    assert len(kept) == 8  # half of the stem's 16 channels
    for unit in units:
        assert _kept(gammas, pruned, f"{unit}.bn1") == kept
        out = _kept(gammas, pruned, f"{unit}.{last}")
        assert out[:len(kept)] == kept and all(i >= gammas[f"{unit}.bn1"].numel() for i in out[len(kept):])
        kept = out
    # Torch-Pruning prunes the residual stream only through the stem's group: the
    # channels each unit adds stay whole (see micronet.models.pyramidnet_cifar)
    after = [m.num_features for n, m in pruned.named_modules() if n.endswith(last)]
    assert after == [b - 8 for b in before]
    assert micronet.audit(pruned, (1, 3, 32, 32), track="cifar100").uncounted == ()
