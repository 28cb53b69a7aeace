"""The ``finetune`` and ``distill`` steps through ``compress``: training on the
recipe's data, the notes they leave, teachers, masks, option errors."""
import pytest
import torch
from torch import nn

from micronet.training.data import evaluate
from micronet.errors import CompressionError, UsageError
from micronet.pipeline import compress
from micronet.plugins.finetune import DISTILL, FINETUNE
from micronet.steps import check_options

SHAPE = [1, 3, 8, 8]


class Net(nn.Module):
    """conv -> BN -> ReLU -> max pool -> linear on 8x8 inputs: traceable, and
    learns the fake problem in an epoch."""

    def __init__(self, width: int = 8):
        super().__init__()
        self.conv, self.bn, self.relu = nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()
        self.pool, self.fc = nn.MaxPool2d(2), nn.Linear(width * 16, 10)

    def forward(self, x):
        return self.fc(self.pool(self.relu(self.bn(self.conv(x)))).flatten(1))


def recipe(*steps, data=None):
    document = {"model": {"spec": "unused", "input": SHAPE}, "score": {"track": "cifar10", "freebie": False},
                "step": [dict(step) for step in steps]}
    if data is not None:
        document["data"] = data
    return document


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_finetune_trains_on_the_recipes_data_and_notes_it(registries):
    model = Net()
    before = weights(model)
    history = compress(recipe({"use": "finetune", "epochs": 2, "lr": 0.05, "max_batches": 8},
                              data={"dataset": "fake", "batch_size": 32}), model=model, registries=registries)
    notes = history.steps[0].notes
    assert notes["data"] == "fake"
    assert len(notes["loss"]) == 2 and notes["loss"][1] < notes["loss"][0]
    top1 = evaluate(history.model, {"dataset": "fake", "batch_size": 32}, input_shape=SHAPE, num_classes=10,
                    max_batches=8)
    assert notes["top1"] == pytest.approx(top1, abs=1e-4) and top1 > 50
    assert history.final.score.total == pytest.approx(history.input.score.total)  # same architecture
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # the input is untouched
    assert not any(m.training for m in history.model.modules())


def test_finetune_without_data_uses_the_fake_problem_and_says_so(registries, tmp_path):
    history = compress(recipe({"use": "finetune", "max_batches": 2, "checkpoint_dir": str(tmp_path)}),
                       model=Net(), registries=registries)
    notes = history.steps[0].notes
    assert notes["data"] == "fake (the recipe has no [data] table)"
    assert len(notes["loss"]) == 1 and "top1" not in notes
    assert (tmp_path / "epoch-001.pt").is_file()


def test_distill_from_the_original_model(registries):
    teacher = Net()
    history = compress(recipe({"use": "half"}, {"use": "distill", "epochs": 1, "max_batches": 4, "alpha": 0.5,
                                                "temperature": 2.0}, data={"dataset": "fake"}),
                       model=teacher, registries=registries)
    notes = history.steps[1].notes
    assert notes["teacher"] == "original" and len(notes["loss"]) == 1 and "top1" in notes
    assert history.steps[1].options["alpha"] == 0.5
    assert next(history.model.parameters()).dtype == torch.float16  # the half student stays half


def test_distill_from_a_spec_with_weights(registries, tmp_path):
    (tmp_path / "teachers.py").write_text("from torch import nn\n\n\ndef wide():\n"
                                          "    return nn.Sequential(nn.Flatten(), nn.Linear(192, 10))\n")
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(192, 10))
    torch.save(teacher.state_dict(), tmp_path / "teacher.pt")
    step = {"use": "distill", "teacher": f"{tmp_path / 'teachers.py'}:wide",
            "teacher_weights": str(tmp_path / "teacher.pt"), "max_batches": 2}
    with pytest.raises(CompressionError, match="SpecError: .*--trust"):  # teachers.py: code a recipe names
        compress(recipe(step, data={"dataset": "fake"}), model=Net(), registries=registries)
    history = compress(recipe(step, data={"dataset": "fake"}), model=Net(), registries=registries, trust=True)
    assert history.steps[0].notes["teacher"].endswith("teachers.py:wide")


def test_distill_refuses_a_teacher_of_other_classes(registries, tmp_path):
    (tmp_path / "teachers.py").write_text("from torch import nn\n\n\ndef narrow():\n"
                                          "    return nn.Sequential(nn.Flatten(), nn.Linear(192, 4))\n")
    step = {"use": "distill", "teacher": f"{tmp_path / 'teachers.py'}:narrow", "max_batches": 1}
    with pytest.raises(CompressionError, match="the teacher outputs 4 classes, the student 10"):
        compress(recipe(step), model=Net(), registries=registries, trust=True)
    with pytest.raises(CompressionError, match="teacher_weights applies to a teacher spec"):
        compress(recipe({"use": "distill", "teacher_weights": "x.pt"}), model=Net(), registries=registries)


def test_masks_stay_in_force_through_the_pipeline(registries):
    from micronet import masks

    model = Net()
    masks.set_mask(model.conv, "weight", torch.rand(model.conv.weight.shape) < 0.5)
    zeros = int((model.conv.weight == 0).sum())
    history = compress(recipe({"use": "finetune", "lr": 0.1, "max_batches": 4}, data={"dataset": "fake"}),
                       model=model, registries=registries)
    trained = history.model.get_submodule("conv").weight
    assert int((trained == 0).sum()) == zeros
    assert not torch.equal(trained, model.conv.weight)


@pytest.mark.parametrize("step, given, message", [
    (FINETUNE, {"epochs": -1}, "'epochs': expected an integer >= 0, got -1"),
    (FINETUNE, {"optimizer": "rmsprop"}, "must be one of 'sgd', 'adam', 'adamw'"),
    (FINETUNE, {"schedule": "linear"}, "must be one of 'cosine', 'step', 'none'"),
    (FINETUNE, {"label_smoothing": 1.0}, "expected a number in \\[0, 1\\), got 1.0"),
    (FINETUNE, {"lr": 0}, "expected a number > 0.0, got 0"),
    (FINETUNE, {"weight_decay": float("nan")}, "expected a number >= 0.0, got nan"),
    (DISTILL, {"alpha": 1.5}, "expected a number in \\[0, 1\\], got 1.5"),
    (DISTILL, {"temperature": 0}, "expected a number > 0.0, got 0"),
    (FINETUNE, {"teacher": "original"}, "unknown option 'teacher'"),
])
def test_option_errors(step, given, message):
    with pytest.raises(UsageError, match=message):
        check_options(step, given, "step 1")


def test_defaults():
    options = check_options(DISTILL, {}, "step 1")
    assert options["epochs"] == 1 and options["optimizer"] == "sgd" and options["schedule"] == "cosine"
    assert options["teacher"] == "original" and options["temperature"] == 4.0 and options["alpha"] == 0.9
    assert options["batch_size"] == 0 and options["checkpoint_dir"] == "" and options["resume"] is False


# ------------------------------------------------------------------ until a bar

DIGITS = {"dataset": "digits", "batch_size": 64}


def digits_recipe(*steps):
    return {"model": {"spec": "micronet:digits_cnn", "input": [1, 1, 8, 8]},
            "score": {"track": "digits", "freebie": False}, "data": DIGITS, "step": [dict(s) for s in steps]}


def epoch_top1(lines):
    """The top-1 of each epoch line the trainer logged."""
    return [float(line.split("top-1 ")[1].split("%")[0]) for line in lines if line.startswith("epoch ")]


def test_finetune_from_scratch_stops_at_the_first_epoch_reaching_until_accuracy(registries):
    lines = []
    history = compress(digits_recipe({"use": "finetune", "epochs": 20, "lr": 0.1, "until_accuracy": 90}),
                       registries=registries, log=lines.append)
    notes = history.steps[0].notes
    measured = epoch_top1(lines)
    assert notes["epochs_run"] == len(measured) == len(notes["loss"]) <= 5  # 2 epochs measured, of 20
    assert notes["stopped_early"] is True
    assert measured[-1] >= 90 and all(top1 < 90 for top1 in measured[:-1])
    assert notes["accuracy"] == notes["top1"] == pytest.approx(measured[-1], abs=0.01)
    assert notes["until"] == "top-1 >= 90% on the test split"
    assert history.final.accuracy == pytest.approx(notes["accuracy"], abs=1e-4)  # the pipeline's own measure
    assert any(line.startswith("top-1 ") and "reached the target 90%" in line for line in lines)


def test_an_unreached_until_accuracy_runs_every_epoch(registries):
    from conftest import trained_digits_cnn

    history = compress(digits_recipe({"use": "finetune", "epochs": 2, "lr": 0.001, "until_accuracy": 99.9}),
                       model=trained_digits_cnn(), registries=registries)
    notes = history.steps[0].notes
    assert (notes["epochs_run"], notes["stopped_early"]) == (2, False)
    assert 97 <= notes["accuracy"] < 99.9  # 540 test images: 99.9% needs all of them


@pytest.mark.parametrize("step", [{"use": "finetune", "lr": 0.001}, {"use": "distill", "lr": 0.001}])
def test_until_bar_stops_at_the_tracks_quality_bar(registries, step):
    from conftest import trained_digits_cnn

    history = compress(digits_recipe({**step, "epochs": 5, "until_bar": True}), model=trained_digits_cnn(),
                       registries=registries)
    notes = history.steps[0].notes
    assert notes["until"] == "top-1 >= 97% on the test split (the digits track's bar)"
    # the trained model is above 97% already: one epoch at a small rate keeps it there
    assert (notes["epochs_run"], notes["stopped_early"]) == (1, True) and notes["accuracy"] >= 97
    assert history.final.meets_bar


@pytest.mark.parametrize("given, message", [
    ({"until_accuracy": 101}, r"'until_accuracy': expected a top-1 in percent in \(0, 100\], or 0 for off, "
                              r"got 101"),
    ({"until_accuracy": -1}, r"got -1"),
    ({"until_accuracy": 90, "until_bar": True}, "until_accuracy = 90 and until_bar = true both set a target"),
    ({"until_bar": 1}, "option 'until_bar' must be bool, got int"),
])
@pytest.mark.parametrize("step", [FINETUNE, DISTILL])
def test_until_option_errors(step, given, message):
    with pytest.raises(UsageError, match=message):
        check_options(step, given, "step 1")


def test_until_without_data_is_refused(registries):
    with pytest.raises(CompressionError, match=r"until_accuracy / until_bar need the recipe's \[data\] table"):
        compress(recipe({"use": "finetune", "until_accuracy": 50}), model=Net(), registries=registries)
