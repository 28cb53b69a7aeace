"""The shipped recipes that rebuild published MicroNet pipelines run end to end.

Each recipe in ``examples/`` is read as shipped, then only its dataset is
pointed at a tiny CIFAR folder in the real python-pickle layout (written here,
read by torchvision's own loader) and its epochs cut to one, so every step
(training, distillation from a trained teacher, repeat schedules, pruning,
quantization) runs for real in seconds. The published final scores of the
course teams depend only on the architecture, the pruned fraction and the
bits, so they are reached exactly: 0.01678 and 0.0357.
"""
from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import torch
from torchvision.datasets import CIFAR10, CIFAR100

from cifar_files import trust_checksums, write_cifar10, write_cifar100
from micronet.pipeline import compress
from micronet.recipe import parse_recipe

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
EPOCH_KEYS = ("epochs", "qat_epochs")


def shrunk(name: str, dataset: str, base: Path, spec: str | None = None, **data):
    """The shipped recipe ``name`` with its dataset replaced, one epoch per
    training, and relative paths taken from ``base`` instead of examples/
    (``spec``: a smaller model of the same family)."""
    document = tomllib.loads((EXAMPLES / name).read_text())
    document["data"] = {**document["data"], "dataset": dataset, **data}
    if spec is not None:
        document["model"]["spec"] = spec

    def cut(steps):
        for step in steps:
            for key in EPOCH_KEYS:
                if key in step:
                    step[key] = 1
            cut(step.get("steps", []))

    cut(document["step"])
    return parse_recipe(document, name, base=base)


def names(history):
    return [s.name for s in history.steps]


@pytest.fixture
def cifar10(tmp_path, monkeypatch):
    """A CIFAR-10 folder: 5 train batches of 2 images, a test batch of 10."""
    labels = [[2 * b, 2 * b + 1] for b in range(5)]
    folder = write_cifar10(tmp_path / "data", train_labels=labels)
    trust_checksums(monkeypatch, CIFAR10, folder)
    return f"cifar10:{folder.parent}"


@pytest.fixture
def cifar100(tmp_path, monkeypatch):
    folder = write_cifar100(tmp_path / "data", train_labels=range(0, 100, 10))
    trust_checksums(monkeypatch, CIFAR100, folder)
    return f"cifar100:{folder.parent}"


def teacher(name: str, dataset: str, base: Path, folder: str) -> Path:
    """Train a teacher recipe and write it where the student recipe looks."""
    out = base / "teachers" / folder
    history = compress(shrunk(name, dataset, base), out=out)
    assert names(history) == ["finetune"]
    assert history.steps[0].data["mixup"] == 0.2  # mixup on for training
    return out / "state_dict.pt"


@pytest.mark.slow
def test_course_densenet_growth4_team(cifar10, tmp_path):
    weights = teacher("course-densenet-g8-teacher.toml", cifar10, tmp_path, "densenet-g8")
    recipe = shrunk("course-densenet-g4.toml", cifar10, tmp_path)
    history = compress(recipe, out=tmp_path / "run")
    assert names(history) == ["finetune", "distill"] + ["sparsify", "distill"] * 10 + ["quantize"]
    steps = history.steps
    assert steps[0].data["mixup"] == 0.2 and steps[1].data["mixup"] == 0.0  # per-step data
    assert steps[1].options["teacher_weights"] == str(weights)
    assert [s.round for s in steps[2:22:2]] == list(range(1, 11)) and steps[21].notes["until_met"] is True
    final = history.final
    zeros, weights_total = final.totals["pruned_weight_zeros"], final.totals["pruned_weights"]
    assert weights_total == 60_472 and zeros == 39_386  # ten rounds of 10% of what was left
    assert round(final.score.total, 5) == 0.01678  # the team's published figure
    assert all(s.result.accuracy is not None for s in steps)  # top-1 at every step
    assert (tmp_path / "run" / "history.json").is_file()


@pytest.mark.slow
def test_course_group9(cifar10, tmp_path):
    teacher("course-densenet-g12-teacher.toml", cifar10, tmp_path, "densenet-g12")
    history = compress(shrunk("course-group9.toml", cifar10, tmp_path))
    assert names(history) == ["distill", "sparsify", "distill", "half"]
    final = history.final
    assert final.totals["pruned_weight_zeros"] == round(0.197 * 108_696) == 21_413
    assert round(final.score.total, 4) == 0.0357  # the group's published figure
    assert next(history.model.parameters()).dtype == torch.float16


@pytest.mark.slow
def test_wave_computing_pyramidnet(cifar100, tmp_path):
    # the recipe's steps on PyramidNet-20 (alpha 24): the 110-layer one takes minutes on 2 cores
    recipe = shrunk("wave-pyramidnet-cifar100.toml", cifar100, tmp_path,
                    spec="micronet:pyramidnet_cifar?depth=20&alpha=24&num_classes=100",
                    calibration_batches=1, batch_size=5)
    history = compress(recipe)
    assert names(history) == ["finetune"] + ["prune", "finetune"] * 4 + ["sparsify", "finetune"] * 3 + ["quantize"]
    params = [s.result.totals["params"] for s in history.steps]
    pruned = params[1:9:2]
    assert all(later < earlier for earlier, later in zip([params[0]] + pruned, pruned))  # each stage removes
    assert history.steps[1].notes["importance"].startswith("hessian")
    assert history.steps[-2].notes["until_met"] is True
    quantized = history.final
    assert quantized.score.total < history.steps[-2].result.score.total
