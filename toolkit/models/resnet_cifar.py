"""ResNet-18 for CIFAR (32x32 inputs), as in kuangliu/pytorch-cifar ``models/resnet.py``.

He et al., "Deep Residual Learning for Image Recognition", with the CIFAR stem
used by kuangliu/pytorch-cifar: a 3x3 convolution to 64 channels at stride 1
and no max pooling, four stages of two BasicBlocks (64, 128, 256, 512 channels;
strides 1, 2, 2, 2), 1x1 conv + BN shortcuts where the shape changes,
``F.avg_pool2d(out, 4)`` and a linear classifier.

With 10 classes it has 11,173,962 parameters: the reference model of the
``imta-2021`` rulebook (see RULES.md).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BasicBlock", "ResNet", "resnet18_cifar"]


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN with a ReLU between, plus the shortcut, then ReLU."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + self.shortcut(x)
        return F.relu(out)


class ResNet(nn.Module):
    """kuangliu/pytorch-cifar's ResNet: stem, four stages of ``num_blocks``
    BasicBlocks, ``avg_pool2d(4)``, linear. 11,173,962 parameters for
    ``num_blocks=(2, 2, 2, 2)`` and 10 classes."""

    def __init__(self, num_blocks=(2, 2, 2, 2), num_classes: int = 10):
        super().__init__()
        self.in_planes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._make_layer(64, num_blocks[0], stride=1)
        self.layer2 = self._make_layer(128, num_blocks[1], stride=2)
        self.layer3 = self._make_layer(256, num_blocks[2], stride=2)
        self.layer4 = self._make_layer(512, num_blocks[3], stride=2)
        self.linear = nn.Linear(512 * BasicBlock.expansion, num_classes)

    def _make_layer(self, planes: int, count: int, stride: int) -> nn.Sequential:
        layers = []
        for block_stride in [stride] + [1] * (count - 1):
            layers.append(BasicBlock(self.in_planes, planes, block_stride))
            self.in_planes = planes * BasicBlock.expansion
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.avg_pool2d(out, 4)
        out = out.view(out.size(0), -1)
        return self.linear(out)


def resnet18_cifar(*, num_classes: int = 10) -> ResNet:
    """kuangliu/pytorch-cifar's ``ResNet18``: 11,173,962 parameters with 10 classes."""
    return ResNet((2, 2, 2, 2), num_classes=num_classes)
