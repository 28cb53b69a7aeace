"""A small CNN for scikit-learn's 8x8 handwritten digits (the ``digits`` dataset and track).

Three 3x3 convolutions (padding 1, no bias: each is followed by BatchNorm)
of ``width``, ``2 * width`` and ``4 * width`` channels with a 2x2 max pool
after the second, a global average pool and a linear classifier::

    x: [N, 1, 8, 8] -> conv1 [N, w, 8, 8] -> conv2 [N, 2w, 8, 8] -> pool [N, 2w, 4, 4]
      -> conv3 [N, 4w, 4, 4] -> mean [N, 4w] -> fc [N, classes]

With the defaults (``width=16``, 10 classes) it has 24,058 parameters:
convolutions 1*16*9 + 16*32*9 + 32*64*9 = 23,184, BatchNorm 2*(16 + 32 + 64)
= 224, linear 64*10 + 10 = 650. ``micronet audit micronet:digits_cnn --track
digits --no-freebie`` counts 23,946 32-bit parameters of storage (the
BatchNorm scales fold into the convolutions: 24,058 - 112) and 1,206,016
MicroNet ops at fp32 (603,840 multiplies + 602,176 adds; 599,680 MACs =
16*64*9 + 32*64*144 + 64*16*288 + 640): the ``digits`` track's reference
constants, so this model scores exactly 2.0 there. Trained on
``digits`` it reaches about 98% top-1 on the test split (tests/test_digits.py).
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["DigitsCNN", "digits_cnn"]


class DigitsCNN(nn.Module):
    """conv-BN-ReLU x2, max pool 2, conv-BN-ReLU, global average pool, linear."""

    def __init__(self, width: int = 16, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(2 * width)
        self.pool = nn.MaxPool2d(2)
        self.conv3 = nn.Conv2d(2 * width, 4 * width, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(4 * width)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))  # x: [N, w, H, W]
        x = self.pool(self.relu(self.bn2(self.conv2(x))))  # x: [N, 2w, H/2, W/2]
        x = self.relu(self.bn3(self.conv3(x)))  # x: [N, 4w, H/2, W/2]
        return self.fc(x.mean(dim=(2, 3)))  # x.mean: [N, 4w]


def digits_cnn(width: int = 16, num_classes: int = 10, in_channels: int = 1) -> DigitsCNN:
    """The digits CNN: ``width`` channels in the first convolution (then 2x
    and 4x); 24,058 parameters with the defaults."""
    return DigitsCNN(width=width, num_classes=num_classes, in_channels=in_channels)
