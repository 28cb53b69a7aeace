"""The digits dataset, model and track: scikit-learn's real 8x8 digits in a fixed
stratified split, micronet:digits_cnn counted by hand, the track's 2.0 reference
score, and a real-data accuracy at the track's bar."""
import importlib
import json
import sys
import time

import pytest
import torch

import micronet.training.digits as digits_module
from micronet.cli import main
from micronet.errors import UsageError
from micronet.models import digits_cnn
from micronet.rules import DIGITS
from micronet.training.data import (DatasetSpec, batches, check_data_options, evaluate,
                                    load_dataset, loaders, parse_dataset)
from micronet.training.digits import DIGITS_SIZES, Digits
from micronet.training.train import TrainConfig, fit

SHAPE = (1, 1, 8, 8)


@pytest.fixture
def sklearn():
    """scikit-learn's ``load_digits``: the tests reading the images need the data extra."""
    return pytest.importorskip("sklearn.datasets")


# ------------------------------------------------------------------ the dataset text


def test_parse_digits_forms():
    assert parse_dataset("digits") == DatasetSpec("digits")
    spec = parse_dataset(" digits:size=32,mode=bilinear ")
    assert spec.options == (("mode", "bilinear"), ("size", 32))
    assert str(spec) == "digits:mode=bilinear,size=32"
    assert parse_dataset(str(spec)) == spec


@pytest.mark.parametrize("text, says", [("digits:size=4", "size must be"), ("digits:size=x", "size must be"),
                                        ("digits:mode=cubic", "mode must be"), ("digits:", "cannot read ''"),
                                        ("digits:upsample=4", "cannot read 'upsample=4'"),
                                        ("digits:size=16,size=32", "each once")])
def test_bad_digits_options_are_refused_with_the_forms(text, says):
    with pytest.raises(UsageError, match=says) as error:
        parse_dataset(text)
    assert "digits:size=32" in str(error.value)


def test_missing_scikit_learn_is_one_line_naming_the_extra(monkeypatch):
    for name in ("sklearn", "sklearn.datasets", "sklearn.model_selection"):  # as if not installed,
        monkeypatch.setitem(sys.modules, name, None)  # also when an earlier test imported them
    monkeypatch.setattr(digits_module, "_digits_split", digits_module._digits_split.__wrapped__)
    with pytest.raises(UsageError) as checked:
        check_data_options({"dataset": "digits"})
    with pytest.raises(UsageError) as loaded:
        load_dataset("digits", True)
    for error in (checked, loaded):
        assert "pip install 'micronet-toolkit[data]'" in str(error.value)
        assert "\n" not in str(error.value)


# ------------------------------------------------------------------ the split


def test_split_sizes_and_stratification(sklearn):
    labels = torch.tensor(sklearn.load_digits().target)
    per_class = torch.bincount(labels, minlength=10)  # 174 .. 183 images per class
    assert DIGITS_SIZES == {"train": 1077, "calibration": 180, "test": 540}  # 60/10/30 of 1,797
    together = torch.zeros(10, dtype=torch.long)
    for split, size in DIGITS_SIZES.items():
        counts = torch.bincount(torch.tensor(Digits(split).targets), minlength=10)
        assert counts.sum() == size and (counts > 0).all()
        assert ((counts - per_class * size / 1797).abs() <= 1).all(), split
        together += counts
    assert torch.equal(together, per_class)  # the three splits partition the data set


def test_splits_are_deterministic_and_disjoint(sklearn):
    first = {split: Digits(split) for split in DIGITS_SIZES}
    digits_module._digits_split.cache_clear()  # recomputed from scikit-learn, not the cache
    for split, dataset in first.items():
        again = Digits(split)
        assert torch.equal(dataset.images, again.images) and dataset.targets == again.targets
    rows = {tuple(x.flatten().tolist()) + (y,) for d in first.values() for x, y in zip(d.images, d.targets)}
    assert len(rows) >= 1797 - 10  # (a few images of the data set are exact duplicates)


def test_images_are_normalised_by_the_train_split(sklearn):
    train = Digits("train")
    x, label = train[0]
    assert x.shape == (1, 8, 8) and x.dtype == torch.float32 and isinstance(label, int)
    assert set(train.targets) == set(range(10)) and train.classes == [str(c) for c in range(10)]
    assert abs(float(train.images.mean())) < 1e-5 and abs(float(train.images.std()) - 1) < 1e-4
    for split in DIGITS_SIZES:
        pixels = Digits(split).images * train.std + train.mean  # back to [0, 1]: the 0..16 values / 16
        assert pixels.min() > -1e-5 and pixels.max() < 1 + 1e-5
        assert torch.allclose(pixels * 16, (pixels * 16).round(), atol=1e-4)
        assert Digits(split).mean == train.mean and Digits(split).std == train.std


def test_upsampling_nearest_and_bilinear(sklearn):
    small = load_dataset("digits", False).images
    nearest = load_dataset("digits:size=32", False).images
    assert nearest.shape == (540, 1, 32, 32)
    assert torch.equal(nearest, small.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3))
    bilinear = load_dataset("digits:size=32,mode=bilinear", False).images
    assert bilinear.shape == (540, 1, 32, 32) and not torch.equal(bilinear, nearest)
    assert small.min() - 1e-6 <= bilinear.min() and bilinear.max() <= small.max() + 1e-6  # blends neighbours
    assert load_dataset("digits", False, input_shape=(1, 3, 16, 16))[0][0].shape == (3, 16, 16)
    with pytest.raises(UsageError, match="gives 32x32 images, the model takes input"):
        load_dataset("digits:size=32", False, input_shape=SHAPE)


def test_loaders_batches_and_splits(sklearn):
    train, test = loaders({"dataset": "digits", "batch_size": 64}, SHAPE, 10)
    assert (train.dataset.split, len(train.dataset), test.dataset.split, len(test.dataset)) == \
        ("train", 1077, "test", 540)
    # augmentation is off for digits: the train loader yields the split's images themselves
    x, _ = next(iter(train))
    stored = {tuple(row.flatten().tolist()) for row in train.dataset.images}
    assert all(tuple(row.flatten().tolist()) in stored for row in x)
    table = {"dataset": "digits", "batch_size": 64}
    calibration = batches(table, SHAPE, 10, split="calibration")
    assert [len(y) for _, y in calibration] == [64, 64, 52]  # all 180 calibration images
    assert len(batches(table, SHAPE, 1)[0][1]) == 64  # default: the train split
    with pytest.raises(UsageError, match="unknown split"):
        batches(table, SHAPE, 1, split="val")


# ------------------------------------------------------------------ the model and the track


def test_digits_cnn_parameters_by_hand():
    model = digits_cnn()
    counts = {name: sum(p.numel() for p in module.parameters()) for name, module in model.named_children()}
    assert counts["conv1"] == 1 * 16 * 3 * 3  # 144, no bias (BatchNorm follows)
    assert counts["conv2"] == 16 * 32 * 3 * 3  # 4,608
    assert counts["conv3"] == 32 * 64 * 3 * 3  # 18,432
    assert counts["fc"] == 64 * 10 + 10  # 650
    assert counts["bn1"] + counts["bn2"] + counts["bn3"] == 2 * (16 + 32 + 64)  # 224
    assert sum(p.numel() for p in model.parameters()) == 24_058
    assert "24,058 parameters" in " ".join(importlib.import_module("micronet.models.digits_cnn").__doc__.split())
    assert sum(p.numel() for p in digits_cnn(width=8, num_classes=3).parameters()) == \
        1 * 8 * 9 + 8 * 16 * 9 + 16 * 32 * 9 + 2 * (8 + 16 + 32) + 32 * 3 + 3


def test_the_reference_model_scores_exactly_2_on_its_track(capsys, tmp_path):
    code = main(["audit", "micronet:digits_cnn", "--track", "digits", "--no-freebie",
                 "--json", str(tmp_path / "r.json")])
    assert code == 0, capsys.readouterr().err
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["score"]["total"] == 2.0 and doc["track"] == "digits"
    totals = doc["totals"]
    # storage: weights 144 + 4,608 + 18,432 + 650, plus one shift per BatchNorm channel
    # (the scales fold into the convolutions)
    assert totals["storage"] == DIGITS.reference_params == 144 + 4608 + 18432 + 650 + (16 + 32 + 64)
    # mults: conv1, relu, conv2, relu, conv3, relu, mean, fc (one per output, activations included)
    mults = 16 * 64 * 9 + 16 * 64 + 32 * 64 * 144 + 32 * 64 + 64 * 16 * 288 + 64 * 16 + 64 + 640
    # adds: convs (k - 1 per output, no bias), BatchNorm shifts, max pool (3 per output), mean, fc
    adds = (16 * 64 * 8 + 16 * 64 + 32 * 64 * 143 + 32 * 64 + 32 * 16 * 3 + 64 * 16 * 287 + 64 * 16
            + 64 * 15 + 10 * 64)
    assert (totals["mults"], totals["adds"]) == (mults, adds) == (603_840, 602_176)
    assert totals["ops"] == DIGITS.reference_ops == mults + adds
    assert (DIGITS.input_shape, DIGITS.num_classes, DIGITS.quality_bar) == (SHAPE, 10, 97.0)


def test_trained_on_real_digits_it_reaches_the_bar(sklearn):
    """8 epochs of SGD on the 1,077 training images: 99.4% top-1 on the 540 test
    images, about 1 s of training on 2 CPU cores (2.5 s with scikit-learn's import)."""
    torch.manual_seed(0)
    model = digits_cnn()
    started = time.perf_counter()
    history = fit(model, {"dataset": "digits", "batch_size": 64},
                  TrainConfig(epochs=8, lr=0.1, device="cpu", progress=False, evaluate=False),
                  input_shape=SHAPE, num_classes=10, log=lambda line: None)
    seconds = time.perf_counter() - started
    accuracy = evaluate(model, "digits", input_shape=SHAPE, num_classes=10, device="cpu")
    assert history["loss"][-1] < 0.05
    assert DIGITS.meets_bar(accuracy), f"top-1 {accuracy:.2f}% is under the digits bar of 97%"
    assert seconds < 60, f"training took {seconds:.1f} s"
