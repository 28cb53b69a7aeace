"""The ``digits`` dataset: scikit-learn's 1,797 real 8x8 handwritten digits.

They ship inside scikit-learn (``load_digits``), so this real data set is
there offline, for tests and examples whose accuracy must mean something.
The split into train / calibration / test is fixed and stratified; see
:class:`Digits`. scikit-learn is imported only when the set is read.
"""
from __future__ import annotations

import functools
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from ..errors import UsageError

__all__ = ["Digits", "DIGITS_SIZES", "DIGITS_SEED", "SPLITS", "SKLEARN_MISSING"]

#: The splits a dataset can be read as (``calibration`` is the train split but for ``digits``).
SPLITS = ("train", "calibration", "test")
SKLEARN_MISSING = "the digits dataset needs scikit-learn: pip install 'micronet-toolkit[data]'"

#: (train, calibration, test) sizes of the ``digits`` split: 60% / 10% / 30% of 1,797.
DIGITS_SIZES = {"train": 1077, "calibration": 180, "test": 540}
#: The seed of the ``digits`` split (``random_state`` of both train_test_split calls).
DIGITS_SEED = 0


class Digits(Dataset):
    """A split of scikit-learn's 8x8 handwritten digits (``load_digits``:
    1,797 images of 64 pixels valued 0..16, labels 0..9), never downloaded.

    The split is fixed: ``train_test_split(stratify=labels,
    random_state=DIGITS_SEED)`` takes the 540 test images, a second call the
    180 calibration images from the rest, leaving 1,077 to train on; every
    split holds each class within one image of its share. Pixels are scaled
    to [0, 1] (divided by 16), then normalised by the train split's mean and
    standard deviation (:attr:`mean`, :attr:`std`, one channel), then resized
    to ``size`` (``(height, width)``, default 8x8) by ``mode`` (nearest or
    bilinear) and repeated to ``channels`` (1 or 3). Items are ``(x, label)``
    with ``x``: float32 [channels, height, width].
    """

    def __init__(self, split: str = "train", *, size: Sequence[int] = (8, 8), mode: str = "nearest",
                 channels: int = 1):
        if split not in SPLITS:
            raise UsageError(f"digits has the splits {', '.join(SPLITS)}, got {split!r}")
        images, labels, self.mean, self.std = _digits_split(split)
        x = (images - self.mean) / self.std  # x: [n, 1, 8, 8]
        if tuple(size) != (8, 8):
            x = F.interpolate(x, size=tuple(size), mode=mode, **({"align_corners": False} if mode == "bilinear" else {}))
        self.split = split
        self.images = x.expand(-1, channels, -1, -1).contiguous()
        self.targets = labels.tolist()
        self.classes = [str(c) for c in range(10)]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.images[index], self.targets[index]


@functools.lru_cache(maxsize=None)
def _digits_split(split: str) -> tuple[Tensor, Tensor, float, float]:
    """(images in [0, 1] as float32 [n, 1, 8, 8], int64 labels [n], train
    mean, train std) of one split, computed once per process."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as error:
        raise UsageError(SKLEARN_MISSING) from error
    digits = load_digits()
    labels = digits.target
    rest, test = train_test_split(range(len(labels)), test_size=DIGITS_SIZES["test"], stratify=labels,
                                  random_state=DIGITS_SEED)
    train, calibration = train_test_split(rest, test_size=DIGITS_SIZES["calibration"], stratify=labels[rest],
                                          random_state=DIGITS_SEED)
    index = {"train": train, "calibration": calibration, "test": test}[split]
    images = torch.tensor(digits.data[index] / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    scaled_train = torch.tensor(digits.data[train] / 16.0, dtype=torch.float32)
    return images, torch.tensor(labels[index]), float(scaled_train.mean()), float(scaled_train.std())
