"""MobileNetV2 for CIFAR (32x32 inputs), as in kuangliu/pytorch-cifar ``models/mobilenetv2.py``.

Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks", adapted
the way kuangliu/pytorch-cifar does it: stride 1 in the 3x3 stem and in the
first stride-2 stage (24 channels), ``avg_pool2d(4)`` instead of 7, ReLU (not
ReLU6), and, kuangliu's quirk, a 1x1 conv + BN projection on the shortcut of
stride-1 blocks whose width changes (the paper has no residual there).

``width_mult`` scales every width, rounded to a multiple of 8 as torchvision
does (``_make_divisible``); the last 1x1 conv keeps 1280 channels unless
``width_mult > 1``. At ``width_mult=1`` this is exactly kuangliu's network:
2,296,922 parameters with 10 classes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["InvertedResidual", "MobileNetV2Cifar", "mobilenet_v2_cifar"]

#: (expansion, out_planes, num_blocks, stride); stage 2 has stride 1 for CIFAR.
CFG: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round ``value`` to the nearest multiple of ``divisor`` without going
    below 90% of it (torchvision's ``_make_divisible``)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class InvertedResidual(nn.Module):
    """Expand (1x1) - depthwise (3x3, ``stride``) - project (1x1, linear); the
    shortcut is added at stride 1 only."""

    def __init__(self, in_planes: int, out_planes: int, expansion: int, stride: int):
        super().__init__()
        self.stride = stride
        planes = expansion * in_planes
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, groups=planes,
                               bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = nn.Sequential()
        if stride == 1 and in_planes != out_planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, out_planes, kernel_size=1, bias=False),
                nn.BatchNorm2d(out_planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return out + self.shortcut(x) if self.stride == 1 else out


class MobileNetV2Cifar(nn.Module):
    """kuangliu/pytorch-cifar's MobileNetV2 with a width multiplier:
    2,296,922 parameters at ``width_mult=1`` with 10 classes."""

    def __init__(self, width_mult: float = 1.0, num_classes: int = 10):
        super().__init__()
        stem = make_divisible(32 * width_mult)
        self.last_planes = make_divisible(1280 * max(1.0, width_mult))
        self.conv1 = nn.Conv2d(3, stem, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.layers, planes = self._make_layers(stem, width_mult)
        self.conv2 = nn.Conv2d(planes, self.last_planes, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(self.last_planes)
        self.linear = nn.Linear(self.last_planes, num_classes)

    @staticmethod
    def _make_layers(in_planes: int, width_mult: float) -> tuple[nn.Sequential, int]:
        layers = []
        for expansion, out_planes, count, stride in CFG:
            out_planes = make_divisible(out_planes * width_mult)
            for block_stride in [stride] + [1] * (count - 1):
                layers.append(InvertedResidual(in_planes, out_planes, expansion, block_stride))
                in_planes = out_planes
        return nn.Sequential(*layers), in_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layers(out)
        out = F.relu(self.bn2(self.conv2(out)))
        out = F.avg_pool2d(out, 4)
        out = out.view(out.size(0), -1)
        return self.linear(out)


def mobilenet_v2_cifar(*, width_mult: float = 1.0, num_classes: int = 10) -> MobileNetV2Cifar:
    """kuangliu/pytorch-cifar's MobileNetV2 for 32x32 inputs: 2,296,922
    parameters at ``width_mult=1`` with 10 classes."""
    if width_mult <= 0:
        raise ValueError(f"width_mult must be positive, got {width_mult}")
    return MobileNetV2Cifar(width_mult=width_mult, num_classes=num_classes)
