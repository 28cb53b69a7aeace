"""WideResNet-28-10 (Zagoruyko & Komodakis, "Wide Residual Networks", 2016).

The layout follows the authors' code and its widely used PyTorch port
(xternalz/WideResNet-pytorch): a 3x3 stem convolution to 16 channels, three
groups of ``(depth - 4) / 6`` pre-activation BasicBlocks (BN-ReLU-conv3x3,
BN-ReLU-[dropout]-conv3x3) with ``16k, 32k, 64k`` channels (``k`` the widen
factor; strides 1, 2, 2), a 1x1 convolution on the shortcut where the width
changes, then BN, ReLU, global average pooling and a linear classifier.
Convolutions have no bias. ReLUs are ``nn.ReLU`` modules, as in the port.

WRN-28-10 is the reference model of the MicroNet CIFAR-100 track. With 100
classes it has 36,536,884 parameters:
    conv weights          36,454,832
    fc weight + bias          64,100  (640 * 100 + 100)
    BN weight + bias          17,952  (2 * 8,976 channels)
so conv + fc weights are 36,518,832 ~= 36.52M, as RULES.md says. The often
quoted 36,479,194 is the same network with 10 classes (fc 6,410).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["WideBasicBlock", "WideResNet", "wrn_28_10"]


class WideBasicBlock(nn.Module):
    """Pre-activation block. Where the width or stride changes, the shortcut
    is a 1x1 convolution of the *pre-activated* input, as in the reference
    implementation; otherwise it is the identity on the raw input."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, dropout: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.dropout = dropout
        self.equal_in_out = in_planes == out_planes and stride == 1
        self.conv_shortcut = None
        if not self.equal_in_out:
            self.conv_shortcut = nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = self.relu1(self.bn1(x))
        out = self.relu2(self.bn2(self.conv1(activated)))
        if self.dropout > 0:
            out = F.dropout(out, p=self.dropout, training=self.training)
        out = self.conv2(out)
        shortcut = x if self.conv_shortcut is None else self.conv_shortcut(activated)
        return torch.add(shortcut, out)


class WideResNet(nn.Module):
    """WRN-``depth``-``widen_factor``: 36,536,884 parameters for 28-10 with
    100 classes (36,479,194 with 10)."""

    def __init__(self, depth: int = 28, widen_factor: int = 10, dropout: float = 0.0,
                 num_classes: int = 100):
        super().__init__()
        if (depth - 4) % 6 != 0 or depth < 10:
            raise ValueError(f"WideResNet depth must be 6n+4 (10, 16, 22, 28, ...), got {depth}")
        blocks = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.block1 = self._group(widths[0], widths[1], blocks, 1, dropout)
        self.block2 = self._group(widths[1], widths[2], blocks, 2, dropout)
        self.block3 = self._group(widths[2], widths[3], blocks, 2, dropout)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(widths[3], num_classes)
        self._init_weights()

    @staticmethod
    def _group(in_planes: int, out_planes: int, count: int, stride: int, dropout: float) -> nn.Sequential:
        layers = [WideBasicBlock(in_planes, out_planes, stride, dropout)]
        layers += [WideBasicBlock(out_planes, out_planes, 1, dropout) for _ in range(count - 1)]
        return nn.Sequential(*layers)

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        out = self.block3(self.block2(self.block1(out)))
        out = self.relu(self.bn1(out))
        # Global average pooling; at 32x32 this is the reference's avg_pool2d(out, 8).
        out = F.adaptive_avg_pool2d(out, 1)
        out = out.view(out.size(0), -1)
        return self.fc(out)


def wrn_28_10(*, depth: int = 28, widen_factor: int = 10, dropout: float = 0.0,
              num_classes: int = 100) -> WideResNet:
    """WideResNet-28-10, the MicroNet CIFAR-100 reference: 36,536,884 parameters
    with 100 classes (conv + fc weights 36,518,832 ~= 36.52M)."""
    return WideResNet(depth=depth, widen_factor=widen_factor, dropout=dropout, num_classes=num_classes)
