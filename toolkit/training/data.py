"""Datasets by name, data loaders, calibration batches and top-1 evaluation.

A dataset is named by a short text (the recipe's ``[data] dataset`` and
``micronet audit --data``):

- ``cifar10:PATH`` / ``cifar100:PATH``: the python-pickle CIFAR layout read by
  ``torchvision.datasets.CIFAR10`` / ``CIFAR100`` (checksums included), never
  downloaded. ``PATH`` is the folder holding ``cifar-10-batches-py/`` (or
  ``cifar-100-python/``), or that folder itself.
- ``imagefolder:PATH``: ``PATH/train/CLASS/*.png`` and ``PATH/val/CLASS/*.png``
  (or ``PATH/test``) through ``torchvision.datasets.ImageFolder``, resized to
  the model's input.
- ``fake``: a deterministic, learnable synthetic problem (see
  :class:`SyntheticProblem`) shaped like the model's input, for demos and tests.
- ``digits``: scikit-learn's 1,797 real 8x8 handwritten digits (shipped inside
  scikit-learn, never downloaded; ``pip install 'micronet-toolkit[data]'``) in
  a fixed stratified split of 1,077 train / 180 calibration / 540 test images
  (see :class:`Digits`). ``digits:size=32`` (and ``mode=bilinear``, default
  ``nearest``: ``digits:size=32,mode=bilinear``) upsamples to a larger square.

Splits: ``train`` and ``test`` everywhere; ``calibration`` is a split of its
own for ``digits`` and the train split for the others (:func:`batches`'
``split``).

The recipe's ``[data]`` table: ``dataset``, ``batch_size`` (128), ``workers``
(0), ``calibration_batches`` (8), ``augment`` (true for CIFAR and image folders:
random crop with 4 pixels of padding and horizontal flip, or a random resized
crop; false and ignored for ``fake`` and ``digits``), ``mixup`` and ``cutmix`` (Beta alphas for :func:`mix_batch`, 0 = off).
"""
from __future__ import annotations

import importlib.util
import math
import numbers
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from ..errors import UsageError
from ..steps import model_device, model_dtype
from .digits import SKLEARN_MISSING, SPLITS, Digits

__all__ = ["DatasetSpec", "SyntheticProblem", "Digits", "parse_dataset", "load_dataset", "loaders", "batches",
           "evaluate", "top1", "top1_counts", "mix_batch", "resolve_device", "eval_mode",
           "logits_of", "output_classes", "check_data_options", "DATA_LIMITS", "DATASET_FORMS", "SPLITS"]

DATASET_FORMS = ("cifar10:PATH, cifar100:PATH, imagefolder:PATH or fake, "
                 "or digits[:size=N,mode=nearest|bilinear]")
#: The splits a dataset can be read as (``calibration`` is the train split but for ``digits``).
DEFAULT_BATCH_SIZE = 128
DEFAULT_CALIBRATION_BATCHES = 8
#: Batch size of the synthetic batches :func:`batches` makes without data.
SYNTHETIC_BATCH_SIZE = 32
#: Per-channel mean and standard deviation of the training images.
CIFAR_STATS = {"cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
               "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))}
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
_PATH_KINDS = ("cifar10", "cifar100", "imagefolder")
#: The ``digits`` options: key -> (parser, test, what it takes).
_DIGITS_OPTIONS = {"size": (int, lambda side: side >= 8, "a square side of at least 8 pixels"),
                   "mode": (str, lambda mode: mode in ("nearest", "bilinear"), "nearest or bilinear")}
_DIGITS_HINT = "e.g. digits, digits:size=32 or digits:size=32,mode=bilinear"
#: The ``[data]`` table's numbers: key -> (smallest value the loaders take, hint).
DATA_LIMITS = {
    "batch_size": (1, "examples per batch, e.g. batch_size = 128"),
    "workers": (0, "loader processes; 0 loads in the main process"),
    "calibration_batches": (0, "batches for calibration, e.g. calibration_batches = 8"),
    "mixup": (0.0, "a Beta alpha such as 0.2; 0 turns mixup off"),
    "cutmix": (0.0, "a Beta alpha such as 1.0; 0 turns CutMix off"),
}


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed dataset text: ``kind`` (cifar10, cifar100, imagefolder, fake,
    digits), the local folder (None for ``fake`` and ``digits``) and the
    options (``digits``: sorted ``(key, value)`` pairs of size and mode)."""

    kind: str
    path: Path | None = None
    options: tuple[tuple[str, Any], ...] = ()

    def __str__(self) -> str:
        if self.options:
            return f"{self.kind}:" + ",".join(f"{key}={value}" for key, value in self.options)
        return self.kind if self.path is None else f"{self.kind}:{self.path}"


def parse_dataset(text: str) -> DatasetSpec:
    """``"cifar10:~/data"`` -> ``DatasetSpec("cifar10", Path("~/data").expanduser())``.

    :raises UsageError: naming the accepted forms.
    """
    if not isinstance(text, str):
        raise UsageError(f"a dataset must be a string, got {type(text).__name__} {text!r}",
                         hint=f"write {DATASET_FORMS}")
    kind, sep, path = text.strip().partition(":")
    if kind == "fake" and not sep:
        return DatasetSpec("fake")
    if kind == "digits":
        return DatasetSpec("digits", options=_digits_options(path) if sep else ())
    if kind in _PATH_KINDS and path.strip():
        return DatasetSpec(kind, Path(path.strip()).expanduser())
    if kind in _PATH_KINDS:
        raise UsageError(f"dataset {text!r} needs a folder after {kind}:", hint=f"e.g. {kind}:~/data")
    raise UsageError(f"unknown dataset {text!r}; expected {DATASET_FORMS}",
                     hint="datasets are read from local folders (digits: from scikit-learn) and never downloaded")


def _digits_options(text: str) -> tuple[tuple[str, Any], ...]:
    """``"size=32,mode=bilinear"`` -> ``(("mode", "bilinear"), ("size", 32))``."""
    options: dict[str, Any] = {}
    for item in text.split(","):
        key, sep, value = (part.strip() for part in item.partition("="))
        if key not in _DIGITS_OPTIONS or not sep or key in options:
            raise UsageError(f"dataset digits: cannot read {item.strip()!r}; expected size=N or "
                             "mode=nearest|bilinear, each once", hint=_DIGITS_HINT)
        parse, ok, wanted = _DIGITS_OPTIONS[key]
        try:
            options[key] = parse(value)
        except ValueError:
            options[key] = None
        if options[key] is None or not ok(options[key]):
            raise UsageError(f"dataset digits: {key} must be {wanted}, got {value!r}", hint=_DIGITS_HINT)
    return tuple(sorted(options.items()))


def check_data_options(data: Mapping[str, Any], where: str = "[data]") -> None:
    """Refuse what the loaders cannot take, before any work: a ``dataset``
    text :func:`parse_dataset` refuses, ``digits`` without scikit-learn,
    and a number of :data:`DATA_LIMITS` that is not finite or is below its
    smallest value (``batch_size`` 1, ``workers``, ``calibration_batches``,
    ``mixup`` and ``cutmix`` 0).

    :raises UsageError: naming the key, the value and what it means.
    """
    if isinstance(data.get("dataset"), str):
        try:
            spec = parse_dataset(data["dataset"])
        except UsageError as error:
            raise UsageError(f"{where} {error}") from error
        if spec.kind == "digits" and importlib.util.find_spec("sklearn") is None:
            raise UsageError(f"{where} {SKLEARN_MISSING}")
    for key, (least, hint) in DATA_LIMITS.items():
        value = data.get(key)
        if value is None:
            continue
        number = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
        if not number or value < least:
            raise UsageError(f"{where} {key} must be a finite number of at least {least}, got {value!r}",
                             hint=hint)


# ------------------------------------------------------------------ datasets


class SyntheticProblem(Dataset):
    """A deterministic classification problem a small network can learn.

    Class ``c`` has a fixed smooth pattern (for images: a random 4x4 grid per
    channel, upsampled bilinearly to the input size; otherwise a random
    tensor of the input's shape) scaled by ``signal``; item ``i`` is its
    class's pattern plus unit Gaussian noise drawn from a generator seeded by
    ``(seed, i)``, so every run, split and worker sees the same items. The
    patterns depend only on the shape and the number of classes, so the
    train and test splits (different seeds) pose the same problem.
    """

    def __init__(self, shape: Sequence[int], num_classes: int, size: int, *, seed: int,
                 signal: float = 0.5):
        self.shape = tuple(int(s) for s in shape)
        self.num_classes = num_classes
        self.size = size
        self.seed = seed
        self.signal = signal
        self.classes = [f"class {c}" for c in range(num_classes)]
        patterns = torch.Generator().manual_seed(12345)
        if len(self.shape) == 3:  # a colour per class plus a 4x4 grid of variations
            colours = torch.randn((num_classes, self.shape[0], 1, 1), generator=patterns)
            self._patterns = colours + torch.randn((num_classes, self.shape[0], 4, 4), generator=patterns)
        else:
            self._patterns = torch.randn((num_classes, *self.shape), generator=patterns)
        labels = torch.Generator().manual_seed(seed)
        self.targets = torch.randint(num_classes, (size,), generator=labels).tolist()

    def __len__(self) -> int:
        return self.size

    def pattern(self, label: int) -> Tensor:
        """The noise-free input of class ``label`` (times ``signal``)."""
        pattern = self._patterns[label]
        if len(self.shape) == 3:
            pattern = F.interpolate(pattern[None], size=self.shape[1:], mode="bilinear",
                                    align_corners=False)[0]
        return self.signal * pattern

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        if not 0 <= index < self.size:
            raise IndexError(index)
        noise = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        label = self.targets[index]
        return self.pattern(label) + torch.randn(self.shape, generator=noise), label


def load_dataset(text: str | DatasetSpec, train: bool, *, augment: bool = False,
                 input_shape: Sequence[int] | None = None, num_classes: int = 10,
                 split: str | None = None) -> Dataset:
    """A split of a dataset, as a torch ``Dataset`` of ``(image tensor, label)``.

    :param train: the train split (True) or the test split.
    :param split: ``train``, ``calibration`` or ``test``, in place of
        ``train`` (``calibration``: its own split for ``digits``, the train
        split for the others).
    :param augment: random crop and flip (CIFAR), random resized crop and
        flip (image folders); ignored for ``fake``, ``digits`` and for test splits.
    :param input_shape: the model's input (batch first); images are resized
        to its height and width (CIFAR: only when it is not 32x32; ``digits``
        with ``size``: must be that size) and made grey when it has one
        channel (``digits``: grey repeated to three channels when it has
        three). Default: 32x32 (CIFAR, fake), 224x224, 8x8 (digits).
    :param num_classes: classes of the ``fake`` problem.
    :raises UsageError: for a bad text, a missing folder or missing files,
        saying exactly what to put where.
    """
    spec = text if isinstance(text, DatasetSpec) else parse_dataset(text)
    if split is not None and split not in SPLITS:
        raise UsageError(f"unknown split {split!r}; expected {', '.join(SPLITS)}")
    split = split or ("train" if train else "test")
    if spec.kind == "digits":
        return _digits(spec, split, input_shape)
    train = split != "test"
    if spec.kind == "fake":
        shape = tuple(input_shape[1:]) if input_shape is not None else (3, 32, 32)
        return SyntheticProblem(shape, num_classes, 1024 if train else 512, seed=1 if train else 2)
    augment = augment and train
    if spec.kind in CIFAR_STATS:
        return _cifar(spec, train, _image_transform(spec.kind, augment, input_shape))
    return _image_folder(spec, train, _image_transform(spec.kind, augment, input_shape))


def _digits(spec: DatasetSpec, split: str, input_shape: Sequence[int] | None) -> Digits:
    """The ``digits`` split at the model's input (or the text's ``size``)."""
    options = dict(spec.options)
    side = options.get("size", 8)
    channels, size = 1, (side, side)
    if input_shape is not None:
        if len(input_shape) != 4 or input_shape[1] not in (1, 3):
            raise UsageError(f"digits gives images with 1 or 3 channels, the model takes input "
                             f"{tuple(input_shape)}", hint="use fake for other input shapes")
        channels, size = input_shape[1], (input_shape[2], input_shape[3])
        if "size" in options and size != (side, side):
            raise UsageError(f"{spec} gives {side}x{side} images, the model takes input {tuple(input_shape)}",
                             hint=f"write digits:size={input_shape[2]} or leave size out (the model's input)")
    return Digits(split, size=size, mode=options.get("mode", "nearest"), channels=channels)


def _image_transform(kind: str, augment: bool, input_shape: Sequence[int] | None):
    from torchvision import transforms as T

    channels, size = 3, ((32, 32) if kind in CIFAR_STATS else (224, 224))
    if input_shape is not None:
        if len(input_shape) != 4 or input_shape[1] not in (1, 3):
            raise UsageError(f"{kind} gives images with 1 or 3 channels, the model takes input "
                             f"{tuple(input_shape)}", hint="use fake for other input shapes")
        channels, size = input_shape[1], (input_shape[2], input_shape[3])
    mean, std = CIFAR_STATS.get(kind, IMAGENET_STATS)
    steps: list[Any] = []
    if kind in CIFAR_STATS:
        if augment:
            steps += [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()]
        if size != (32, 32):
            steps.append(T.Resize(size))
    else:
        steps += [T.RandomResizedCrop(size), T.RandomHorizontalFlip()] if augment else [T.Resize(size)]
    if channels == 1:
        steps.append(T.Grayscale(1))
        mean, std = (sum(mean) / 3,), (sum(std) / 3,)
    return T.Compose([*steps, T.ToTensor(), T.Normalize(mean, std)])


def _cifar_class(kind: str):
    from torchvision.datasets import CIFAR10, CIFAR100

    return CIFAR10 if kind == "cifar10" else CIFAR100


def _cifar_files(cls) -> list[tuple[str, str]]:
    """(file name, md5) of every file torchvision reads, the metadata last."""
    return [tuple(entry) for entry in cls.train_list + cls.test_list] + [(cls.meta["filename"],
                                                                         cls.meta["md5"])]


def _cifar(spec: DatasetSpec, train: bool, transform) -> Dataset:
    from torchvision.datasets.utils import check_integrity

    cls = _cifar_class(spec.kind)
    folder = _cifar_folder(spec, cls)
    missing = [name for name, _ in _cifar_files(cls) if not (folder / name).is_file()]
    if missing:
        raise UsageError(f"{spec.kind}: {folder} lacks {', '.join(missing)}", hint=_cifar_hint(spec, cls))
    if folder.name == cls.base_folder:
        loader, root = cls, folder.parent
    else:  # the batches folder itself, under another name
        loader, root = type(cls.__name__, (cls,), {"base_folder": ""}), folder
    try:
        return loader(str(root), train=train, transform=transform, download=False)
    except RuntimeError as error:  # torchvision's checksum test failed
        bad = [name for name, md5 in _cifar_files(cls) if not check_integrity(str(folder / name), md5)]
        raise UsageError(f"{spec.kind}: {', '.join(bad) or 'files'} in {folder} do not match the "
                         f"official checksums ({error})", hint=_cifar_hint(spec, cls)) from error


def _cifar_folder(spec: DatasetSpec, cls) -> Path:
    """The folder holding the batch files: PATH/base_folder, else PATH itself
    when it holds any of them (or is named base_folder)."""
    path = spec.path
    if not path.is_dir():
        raise UsageError(f"{spec.kind}: no folder {path}", hint=_cifar_hint(spec, cls))
    nested = path / cls.base_folder
    if nested.is_dir():
        return nested
    if path.name == cls.base_folder or any((path / name).exists() for name, _ in _cifar_files(cls)):
        return path
    return nested


def _cifar_hint(spec: DatasetSpec, cls) -> str:
    names = [name for name, _ in _cifar_files(cls)]
    return (f"extract {cls.filename} (the python version, https://www.cs.toronto.edu/~kriz/cifar.html) "
            f"into {spec.path}, giving {spec.path / cls.base_folder}/ with {', '.join(names)}; "
            "nothing is downloaded")


def _image_folder(spec: DatasetSpec, train: bool, transform) -> Dataset:
    from torchvision.datasets import ImageFolder

    splits = ("train",) if train else ("val", "test")
    folder = next((spec.path / s for s in splits if (spec.path / s).is_dir()), None)
    if folder is None:
        wanted = " or ".join(f"{spec.path / s}/" for s in splits)
        raise UsageError(f"imagefolder: no {wanted}",
                         hint=f"put images in {spec.path}/train/CLASS_NAME/*.png and "
                              f"{spec.path}/val/CLASS_NAME/*.png (or test/), one folder per class")
    try:
        return ImageFolder(str(folder), transform=transform, loader=_read_image)
    except (FileNotFoundError, OSError) as error:
        raise UsageError(f"imagefolder: {folder}: {error}",
                         hint="one subfolder per class, each holding .png/.jpg images") from error


def _read_image(path: str):
    """torchvision's image loader, with a file it cannot decode (truncated,
    not an image, too large) refused by name instead of failing deep in a batch."""
    from PIL import Image
    from torchvision.datasets.folder import default_loader

    try:
        return default_loader(path)
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as error:
        reason = ("not in a format PIL recognises" if isinstance(error, Image.UnidentifiedImageError)
                  else f"{type(error).__name__}: {error}")
        raise UsageError(f"imagefolder: cannot read the image {path} ({reason})",
                         hint="replace or delete the file; every file with an image extension is read") from error


# ------------------------------------------------------------------ loaders


def _dataset_text(data: Mapping[str, Any] | str) -> str:
    if isinstance(data, str):
        return data
    if "dataset" not in data:
        raise UsageError("[data] needs dataset", hint=f'e.g. dataset = "cifar10:~/data"; forms: {DATASET_FORMS}')
    return data["dataset"]


def _check_classes(dataset: Dataset, num_classes: int, text: str) -> None:
    classes = getattr(dataset, "classes", None)
    if classes is not None and len(classes) > num_classes:
        raise UsageError(f"dataset {text} has {len(classes)} classes, the model outputs {num_classes}",
                         hint="give a model with as many outputs as the dataset has classes")


def loaders(data: Mapping[str, Any], input_shape: Sequence[int], num_classes: int, *,
            batch_size: int | None = None, seed: int = 0, rank: int = 0, world_size: int = 1,
            test_batches: int | None = None) -> tuple[DataLoader, DataLoader]:
    """(train, test) loaders for a ``[data]`` table.

    The train loader shuffles with its own generator (``loader.generator``,
    seeded by ``seed``: the global RNG is not consumed for the order) and
    drops a lone last example (BatchNorm cannot train on batch 1); the test
    loader keeps the dataset's order. ``batch_size`` overrides the table's.
    With ``world_size`` > 1 the batch size is the global batch and rank
    ``rank`` gets its share of each batch one process would see, the test
    loader cut to ``test_batches`` batches
    (:func:`micronet.training.distributed.shard_loaders`).
    """
    text = _dataset_text(data)
    spec = parse_dataset(text)
    augment = data.get("augment", spec.kind not in ("fake", "digits"))
    check_data_options({**data, **({"batch_size": batch_size} if batch_size else {})})
    size = batch_size or data.get("batch_size", DEFAULT_BATCH_SIZE)
    workers = data.get("workers", 0)
    train = load_dataset(spec, True, augment=augment, input_shape=input_shape, num_classes=num_classes)
    test = load_dataset(spec, False, input_shape=input_shape, num_classes=num_classes)
    _check_classes(train, num_classes, text)
    common = dict(batch_size=size, num_workers=workers, persistent_workers=False)
    if world_size > 1:  # data-parallel: this rank's share of each global batch
        from .distributed import shard_loaders

        return shard_loaders(train, test, rank, world_size, seed=seed, test_batches=test_batches, **common)
    return (DataLoader(train, shuffle=True, drop_last=len(train) % size == 1,
                       generator=torch.Generator().manual_seed(seed), **common),
            DataLoader(test, shuffle=False, generator=torch.Generator().manual_seed(seed), **common))


def batches(data: Mapping[str, Any] | None, input_shape: Sequence[int], n: int | None = None, *,
            num_classes: int = 10, train: bool = True, split: str | None = None,
            batch_size: int | None = None) -> list[tuple[Tensor, Tensor]]:
    """``n`` batches of (inputs, labels) for calibration or importance estimates.

    With ``data`` (a ``[data]`` table): the first ``n`` batches of the train
    (or test) split, or of ``split`` when given (``train``, ``calibration``:
    for ``digits`` its own split, else the train split; ``test``), not augmented, in an order fixed by seed 0, of the
    table's ``batch_size`` (fewer batches when the split is smaller). With
    ``data=None``: standard-normal inputs of ``input_shape[1:]`` and uniform
    random labels, ``SYNTHETIC_BATCH_SIZE`` per batch, from a generator seeded
    with 0 (the global RNG is left alone). ``n=None`` takes the table's
    ``calibration_batches`` (default 8). Inputs are float32 on the CPU: cast
    and move them as the model needs.
    """
    if n is None:
        n = (data or {}).get("calibration_batches", DEFAULT_CALIBRATION_BATCHES)
    if n < 0:
        raise UsageError(f"the number of batches must be >= 0, got {n}")
    if data is None:
        generator = torch.Generator().manual_seed(0)
        size = batch_size or SYNTHETIC_BATCH_SIZE
        return [(torch.randn((size, *input_shape[1:]), generator=generator),
                 torch.randint(num_classes, (size,), generator=generator)) for _ in range(n)]
    text = _dataset_text(data)
    check_data_options(data)
    dataset = load_dataset(text, train, input_shape=input_shape, num_classes=num_classes, split=split)
    loader = DataLoader(dataset, batch_size=batch_size or data.get("batch_size", DEFAULT_BATCH_SIZE),
                        shuffle=True, num_workers=data.get("workers", 0),
                        generator=torch.Generator().manual_seed(0))
    out = []
    for x, y in loader:
        if len(out) == n:
            break
        out.append((x, y))
    return out


# ------------------------------------------------------------------ evaluation


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> CUDA when available, else the CPU; anything else as given."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise UsageError(f"unknown device {device!r}", hint="auto, cpu, cuda or cuda:N") from error


def output_classes(model: nn.Module, input_shape: Sequence[int]) -> int:
    """The width of the model's output logits (one forward pass of zeros at batch 1,
    in eval mode, in the model's dtype and on its device)."""
    with eval_mode(model), torch.no_grad():
        x = torch.zeros(tuple(input_shape), dtype=model_dtype(model), device=model_device(model))
        return int(logits_of(model(x)).shape[-1])


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model.eval()`` inside, every submodule's own training flag restored after."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, mode in modes:
            module.training = mode


def logits_of(output: Any) -> Tensor:
    """The logits of a forward's output: the tensor, or the first of a tuple
    (models with auxiliary heads), or ``output.logits``."""
    if isinstance(output, Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    if isinstance(getattr(output, "logits", None), Tensor):
        return output.logits
    raise UsageError(f"cannot find logits in the model's output ({type(output).__name__})",
                     hint="the model should return a tensor of shape [N, classes]")


def evaluate(model: nn.Module, data: Mapping[str, Any] | str, *, input_shape: Sequence[int],
             num_classes: int, device: str | torch.device = "auto",
             max_batches: int | None = None) -> float:
    """Top-1 accuracy in percent on the test split of ``data`` (a ``[data]``
    table or a dataset text), over at most ``max_batches`` batches.

    Runs under ``torch.no_grad`` in eval mode with inputs in the model's
    dtype (a half model gets half inputs) on ``device`` ("auto": CUDA when
    available); the model goes back to its device and training flags after.
    """
    table = {"dataset": data} if isinstance(data, str) else data
    text = _dataset_text(table)
    check_data_options(table)
    dataset = load_dataset(text, False, input_shape=input_shape, num_classes=num_classes)
    _check_classes(dataset, num_classes, text)
    loader = DataLoader(dataset, batch_size=table.get("batch_size", DEFAULT_BATCH_SIZE),
                        num_workers=table.get("workers", 0), generator=torch.Generator().manual_seed(0))
    return top1(model, loader, device=device, max_batches=max_batches)


def top1(model: nn.Module, loader: Iterable[tuple[Tensor, Tensor]], *,
         device: str | torch.device = "auto", max_batches: int | None = None) -> float:
    """Top-1 accuracy in percent of ``model`` over the batches of ``loader``
    (at most ``max_batches``), as :func:`evaluate` computes it."""
    correct, total = top1_counts(model, loader, device=device, max_batches=max_batches)
    if total == 0:
        raise UsageError("no test examples to evaluate on")
    return 100.0 * correct / total


def top1_counts(model: nn.Module, loader: Iterable[tuple[Tensor, Tensor]], *,
                device: str | torch.device = "auto", max_batches: int | None = None) -> tuple[int, int]:
    """(examples whose top-1 prediction is right, examples seen) over the
    batches of ``loader`` (at most ``max_batches``), under ``torch.no_grad``
    in eval mode on ``device``; the model goes back to its device after."""
    target, home = resolve_device(device), model_device(model)
    dtype = model_dtype(model)
    correct = total = 0
    model.to(target)
    try:
        with eval_mode(model), torch.no_grad():
            for index, (x, y) in enumerate(loader):
                if max_batches is not None and index >= max_batches:
                    break
                predicted = logits_of(model(x.to(target, dtype))).argmax(dim=1).cpu()
                correct += int((predicted == y).sum())
                total += len(y)
    finally:
        model.to(home)
    return correct, total


# ------------------------------------------------------------------ mixing


def mix_batch(x: Tensor, y: Tensor, num_classes: int, *, mixup: float = 0.0,
              cutmix: float = 0.0) -> tuple[Tensor, Tensor]:
    """Mixup or CutMix on a batch; returns (inputs, targets).

    With both alphas 0 the batch is returned as is (integer labels). Else a
    mixing weight ``lam ~ Beta(alpha, alpha)`` pairs each example with one of
    a random permutation of the batch: mixup blends the images, CutMix pastes
    a box covering ``1 - lam`` of the image (``lam`` then recomputed from the
    clipped box); with both on, each batch uses one of them at random. The
    targets are then class probabilities ``lam * onehot(y) + (1 - lam) *
    onehot(y[perm])``, which ``F.cross_entropy`` accepts. Randomness comes
    from the global torch RNG.
    """
    if mixup <= 0 and cutmix <= 0:
        return x, y
    if cutmix > 0 and x.dim() != 4:
        raise UsageError(f"cutmix needs image batches [N, C, H, W], got shape {tuple(x.shape)}",
                         hint="use mixup for other inputs")
    use_cutmix = cutmix > 0 and (mixup <= 0 or bool(torch.rand(()) < 0.5))
    alpha = cutmix if use_cutmix else mixup
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(x.shape[0], device=x.device)
    if use_cutmix:
        x, lam = _cutmix(x, perm, lam)
    else:
        x = lam * x + (1 - lam) * x[perm]
    onehot = F.one_hot(y, num_classes).to(torch.float32)
    return x, lam * onehot + (1 - lam) * onehot[perm]


def _cutmix(x: Tensor, perm: Tensor, lam: float) -> tuple[Tensor, float]:
    # x: [N, C, H, W]; a box of about (1 - lam) of the area, centred anywhere, clipped
    height, width = x.shape[-2:]
    ratio = math.sqrt(1 - lam)
    cy, cx = int(torch.randint(height, ())), int(torch.randint(width, ()))
    half_h, half_w = int(height * ratio) // 2, int(width * ratio) // 2
    top, bottom = max(cy - half_h, 0), min(cy + half_h, height)
    left, right = max(cx - half_w, 0), min(cx + half_w, width)
    x = x.clone()
    x[..., top:bottom, left:right] = x[perm][..., top:bottom, left:right]
    return x, 1 - (bottom - top) * (right - left) / (height * width)
