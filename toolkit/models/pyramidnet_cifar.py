"""PyramidNet for CIFAR (32x32 inputs): Han, Kim and Kim, "Deep Pyramidal
Residual Networks" (CVPR 2017), as in the authors' dyhan0920/PyramidNet-PyTorch
``PyramidNet.py``.

Additive widening: a 3x3 stem convolution to 16 channels and its BatchNorm
(no ReLU), then three stages of ``n`` residual units (strides 1, 2, 2) whose
widths grow by ``alpha / (3n)`` at every unit, so the last unit is
``16 + alpha`` wide (times 4 with bottlenecks); then BN, ReLU,
``AvgPool2d(8)`` and a linear classifier. ``n = (depth - 2) / 6`` for the
basic unit (BN-conv3x3-BN-ReLU-conv3x3-BN) and ``(depth - 2) / 9`` for the
bottleneck (BN-conv1x1-BN-ReLU-conv3x3-BN-ReLU-conv1x1(x4)-BN).

Widths are rounded as the reference code does: the width accumulates
``alpha / (3n)`` in floating point and each unit takes
``round(width)``, with halves rounded away from zero (the reference ran
under Python 2, whose ``range(1, block_depth)`` needs the integer division of
``(depth - 2) / 6`` and whose ``round`` rounds halves up; the authors' LuaTorch
code rounds with ``math.floor(x + 0.5)``). A checkpoint of the reference
loads into this model: the module names are the same.

The shortcut is the identity, with ``AvgPool2d((2, 2), stride=(2, 2))``
where a stage halves H and W (a tuple kernel, as in the reference: the
course profiler ``imta-2021`` counts 4 per output for it, 2 for an int 2),
and padded with zero channels up to the residual's width
(``torch.cat`` with a zeros tensor, as in the reference; the zeros take the
residual's width at run time, so a model whose channels were pruned still
runs). The counters book the zeros and the concatenation as free data
movement; the pooling and the sum are counted.

Structured pruning (the ``prune`` step, Torch-Pruning 1.6): every unit's
inner channels are pruned, but of the residual stream only the stem's 16
channels are; the channels each unit adds stay whole. Torch-Pruning roots
one group at the stem conv that runs through every unit's last conv (the
add couples them), and marks those convs done, so no group is ever rooted
at the added channels. It gets this right only because its graph walk
reaches the stem first through ``out + shortcut``'s second operand: with
``shortcut + out`` it roots a group at a late unit, maps the padded
channels onto the narrower shortcut (``torch.cat``'s offsets are inferred
as the stem's 16 channels; ``F.pad`` passes indices straight through) and
fails with an IndexError. Keep the operand order.

Parameters with 100 classes: PyramidNet-110 (alpha 48) 1,778,556; alpha 84
3,913,536; alpha 270 28,511,307; bottleneck PyramidNet-164 (alpha 48)
1,738,572. The paper's Table gives 1.7M, 3.8M, 28.3M and 1.7M, each within
5% (its additive rows repeat the multiplicative rows' figures; neither 10
classes, nor leaving BatchNorm out, nor flooring the widths gives all of
them). The output widths (64, 100, 286; 256 with bottlenecks) are the
published ones.
"""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["BasicBlock", "Bottleneck", "PyramidNet", "pyramidnet_cifar", "unit_widths"]

STEM = 16


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def _zero_padded(shortcut: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """``shortcut`` [N, Cs, H, W] followed by ``Cr - Cs`` zero channels, Cr the
    residual's width: the pyramidal units' identity shortcut."""
    n, channels, height, width = shortcut.shape
    zeros = shortcut.new_zeros(n, residual.shape[1] - channels, height, width)
    return torch.cat([shortcut, zeros], 1)


class BasicBlock(nn.Module):
    """Pyramidal basic unit: BN-conv3x3 (stride)-BN-ReLU-conv3x3-BN plus the
    zero-padded shortcut (2x2 average pooling first where ``stride`` is 2):
    ``in_planes`` channels in, ``planes`` out."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = _conv3x3(in_planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = _conv3x3(planes, planes)
        self.bn3 = nn.BatchNorm2d(planes)
        self.downsample = nn.AvgPool2d((2, 2), stride=(2, 2)) if stride != 1 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.relu(self.bn2(self.conv1(self.bn1(x))))))
        shortcut = self.downsample(x) if self.downsample is not None else x
        return out + _zero_padded(shortcut, out)


class Bottleneck(nn.Module):
    """Pyramidal bottleneck unit: BN-conv1x1-BN-ReLU-conv3x3 (stride)-BN-ReLU-
    conv1x1 (x4)-BN plus the zero-padded shortcut: ``in_planes`` channels in,
    ``4 * planes`` out."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn4 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU()
        self.downsample = nn.AvgPool2d((2, 2), stride=(2, 2)) if stride != 1 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn2(self.conv1(self.bn1(x))))
        out = self.bn4(self.conv3(self.relu(self.bn3(self.conv2(out)))))
        shortcut = self.downsample(x) if self.downsample is not None else x
        return out + _zero_padded(shortcut, out)


def unit_widths(depth: int, alpha: float, bottleneck: bool = False) -> list[int]:
    """The ``planes`` of each residual unit, in order (3n of them): the
    reference's float accumulation of ``alpha / (3n)`` from 16, rounded half
    away from zero. Raises ValueError for a depth the layout cannot take."""
    per_unit, name = (9, "bottleneck") if bottleneck else (6, "basic")
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 2 + per_unit or (depth - 2) % per_unit:
        raise ValueError(f"PyramidNet depth with {name} units must be {per_unit}n+2 "
                         f"({2 + per_unit}, {2 + 2 * per_unit}, ...), got {depth!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha >= 0:
        raise ValueError(f"PyramidNet alpha (the channels added over all units) must be a number >= 0, "
                         f"got {alpha!r}")
    n = (depth - 2) // per_unit
    addrate = alpha / (3 * n * 1.0)
    width, widths = float(STEM), []
    for _ in range(3 * n):
        width = width + addrate
        widths.append(int(math.floor(width + 0.5)))
    return widths


class PyramidNet(nn.Module):
    """The additive PyramidNet for CIFAR: stem conv3x3 (16) and BN, three
    stages of pyramidal units (``block``, strides 1, 2, 2), then BN, ReLU,
    ``AvgPool2d(8)`` and ``fc``. Module names follow the reference code.
    1,778,556 parameters at depth 110, alpha 48, 100 classes."""

    def __init__(self, depth: int = 110, alpha: float = 48, num_classes: int = 100, bottleneck: bool = False):
        super().__init__()
        block = Bottleneck if bottleneck else BasicBlock
        widths = unit_widths(depth, alpha, bottleneck)
        n = len(widths) // 3
        self.conv1 = _conv3x3(3, STEM)
        self.bn1 = nn.BatchNorm2d(STEM)
        in_planes = STEM
        for index, stride in enumerate((1, 2, 2)):
            units = []
            for i, planes in enumerate(widths[index * n:(index + 1) * n]):
                units.append(block(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes * block.expansion
            self.add_module(f"layer{index + 1}", nn.Sequential(*units))
        self.bn_final = nn.BatchNorm2d(in_planes)
        self.relu_final = nn.ReLU()
        self.avgpool = nn.AvgPool2d(8)
        self.fc = nn.Linear(in_planes, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        """The reference's initialisation: conv weights N(0, 2 / (k*k*cout)),
        BatchNorm weight 1 and bias 0 (the Linear keeps torch's default)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn1(self.conv1(x))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = self.avgpool(self.relu_final(self.bn_final(x)))
        return self.fc(x.view(x.size(0), -1))


def pyramidnet_cifar(*, depth: int = 110, alpha: float = 48, num_classes: int = 100,
                     bottleneck: bool = False) -> PyramidNet:
    """Additive PyramidNet for 32x32 inputs (Han et al., CVPR 2017; the
    authors' PyTorch code): ``depth`` 6n+2 (9n+2 with ``bottleneck``),
    ``alpha`` the channels added over all units. 1,778,556 parameters with
    the defaults (PyramidNet-110, alpha 48, 100 classes; the paper says 1.7M)."""
    return PyramidNet(depth=depth, alpha=alpha, num_classes=num_classes, bottleneck=bottleneck)
