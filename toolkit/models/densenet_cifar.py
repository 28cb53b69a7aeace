"""DenseNet for CIFAR (32x32 inputs), as in kuangliu/pytorch-cifar ``models/densenet.py``.

The architecture is Huang et al., "Densely Connected Convolutional Networks"
(DenseNet-BC: bottleneck layers and compressing transitions), adapted to
CIFAR the way kuangliu/pytorch-cifar does it: a 3x3 stem convolution to
``2 * growth_rate`` channels, no stem pooling, four dense blocks of
[6, 12, 24, 16] bottlenecks (the ``DenseNet121`` layout) and a final
``avg_pool2d(4)`` over the 4x4 map. ``forward`` uses ``F.relu``,
``F.avg_pool2d`` and ``torch.cat`` like the original, so a counter that
misses functional calls shows up here.

With ``growth_rate=12`` and 10 classes (kuangliu's ``densenet_cifar``) it has
1,000,618 parameters; the MicroNet course teams used ``growth_rate=4``, one
of them with ``groups=2`` on both bottleneck convolutions
(``micronet:densenet_cifar?growth_rate=4&groups=2``).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Bottleneck", "Transition", "DenseNet", "densenet_cifar"]


class Bottleneck(nn.Module):
    """BN-ReLU-1x1 conv (4 * growth) -BN-ReLU-3x3 conv (growth), concatenated
    in front of the input: ``in_planes`` channels in, ``in_planes + growth_rate`` out.

    ``groups`` splits both convolutions into that many channel groups (the
    course's growth-4 team used 2), dividing their weights by ``groups``;
    ``name`` is the layer's path, for the error a width ``groups`` does not
    divide raises (ValueError)."""

    def __init__(self, in_planes: int, growth_rate: int, groups: int = 1, name: str = "bottleneck"):
        super().__init__()
        _check_divisible(f"{name}.conv1", {"input": in_planes, "output": 4 * growth_rate}, groups)
        _check_divisible(f"{name}.conv2", {"input": 4 * growth_rate, "output": growth_rate}, groups)
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, 4 * growth_rate, kernel_size=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * growth_rate)
        self.conv2 = nn.Conv2d(4 * growth_rate, growth_rate, kernel_size=3, padding=1, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return torch.cat([out, x], 1)


def _check_divisible(layer: str, channels: dict[str, int], groups: int) -> None:
    """ValueError naming ``layer`` when ``groups`` does not divide one of its
    channel counts."""
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"groups must be an integer >= 1, got {groups!r}")
    for side, count in channels.items():
        if count % groups:
            raise ValueError(f"groups={groups} does not divide the {count} {side} channels of {layer}; "
                             f"choose groups dividing growth_rate and every dense layer's input width")


class Transition(nn.Module):
    """BN-ReLU-1x1 conv-``avg_pool2d(2)``: compresses channels and halves H and W."""

    def __init__(self, in_planes: int, out_planes: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(in_planes)
        self.conv = nn.Conv2d(in_planes, out_planes, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(F.relu(self.bn(x)))
        return F.avg_pool2d(out, 2)


class DenseNet(nn.Module):
    """kuangliu/pytorch-cifar's DenseNet: four dense blocks with ``nblocks``
    bottlenecks each, a transition (``reduction`` of the channels) after the
    first three, then BN, ReLU, ``avg_pool2d(4)`` and a linear classifier;
    ``groups`` is the bottlenecks' (:class:`Bottleneck`).
    1,000,618 parameters for ``nblocks=(6, 12, 24, 16)``, growth 12, 10 classes."""

    def __init__(self, nblocks=(6, 12, 24, 16), growth_rate: int = 12, reduction: float = 0.5,
                 num_classes: int = 10, groups: int = 1):
        super().__init__()
        self.growth_rate = growth_rate
        self.groups = groups
        planes = 2 * growth_rate
        self.conv1 = nn.Conv2d(3, planes, kernel_size=3, padding=1, bias=False)
        for index, count in enumerate(nblocks, start=1):
            self.add_module(f"dense{index}", self._make_dense_layers(planes, count, f"dense{index}"))
            planes += count * growth_rate
            if index < len(nblocks):
                out_planes = int(math.floor(planes * reduction))
                self.add_module(f"trans{index}", Transition(planes, out_planes))
                planes = out_planes
        self.bn = nn.BatchNorm2d(planes)
        self.linear = nn.Linear(planes, num_classes)

    def _make_dense_layers(self, in_planes: int, count: int, name: str) -> nn.Sequential:
        layers = []
        for index in range(count):
            layers.append(Bottleneck(in_planes, self.growth_rate, self.groups, f"{name}.{index}"))
            in_planes += self.growth_rate
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        out = self.trans1(self.dense1(out))
        out = self.trans2(self.dense2(out))
        out = self.trans3(self.dense3(out))
        out = self.dense4(out)
        out = F.avg_pool2d(F.relu(self.bn(out)), 4)
        out = out.view(out.size(0), -1)
        return self.linear(out)


def densenet_cifar(*, growth_rate: int = 12, reduction: float = 0.5, num_classes: int = 10,
                   nblocks: tuple[int, ...] = (6, 12, 24, 16), groups: int = 1) -> DenseNet:
    """kuangliu/pytorch-cifar's ``densenet_cifar`` (the DenseNet121 block layout,
    growth 12): 1,000,618 parameters with the defaults. ``nblocks`` must have
    four entries (forward wires four dense blocks). ``groups`` splits both
    bottleneck convolutions (1x1 and 3x3) into channel groups; it must divide
    ``growth_rate`` and every bottleneck's input width (ValueError naming the
    layer otherwise): growth 4 with groups 2 has 70,922 parameters (10 classes)."""
    if len(nblocks) != 4:
        raise ValueError(f"nblocks must have 4 entries, got {len(nblocks)}")
    return DenseNet(tuple(nblocks), growth_rate=growth_rate, reduction=reduction,
                    num_classes=num_classes, groups=groups)
