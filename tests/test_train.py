"""micronet.training.train.fit: learning, optimizers, schedules, label smoothing, masks,
checkpoints and resume, distillation, devices and dtypes."""
import io
import sys
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from micronet.training.data import batches, evaluate, loaders
from micronet.errors import UsageError
from micronet.training.train import TrainConfig, distillation_loss, fit, latest_checkpoint

SHAPE = (1, 3, 8, 8)
FAKE = {"dataset": "fake", "batch_size": 32}


def conv_net(width=8):
    """conv -> BN -> ReLU -> max pool -> linear on 8x8 inputs: learns the fake
    problem (class patterns are spatial) in a few epochs, in well under a second."""
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(width * 16, 10))


def mlp(hidden=16, dropout=0.0):
    """A two-layer perceptron on flattened 8x8 inputs (dropout: global RNG use)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 64, hidden), nn.ReLU(), nn.Dropout(dropout),
                         nn.Linear(hidden, 10))


def quiet(**changes):
    """A config for tests: no progress bar."""
    return TrainConfig(**{"progress": False, **changes})


def test_fit_learns_the_fake_problem():
    torch.manual_seed(0)
    model = conv_net().eval()
    before = evaluate(model, FAKE, input_shape=SHAPE, num_classes=10)
    lines = []
    started = time.perf_counter()
    history = fit(model, FAKE, quiet(epochs=3, lr=0.05), input_shape=SHAPE, num_classes=10, log=lines.append)
    seconds = time.perf_counter() - started
    assert before < 30  # 10 classes: chance is 10%
    assert history["epochs"] == [1, 2, 3]
    assert history["loss"][-1] < history["loss"][0] / 5
    assert history["accuracy"][-1] >= 95.0  # 99.6% measured (3 epochs of 32 batches)
    assert history["accuracy"][-1] == evaluate(model, FAKE, input_shape=SHAPE, num_classes=10)
    assert not model.training  # flags restored
    assert lines[0].startswith("epoch 1/3  loss ") and "top-1" in lines[0] and " s" in lines[0]
    print(f"fake problem: top-1 {before:.1f}% -> {history['accuracy'][-1]:.1f}% in {seconds:.1f} s")


@pytest.mark.parametrize("schedule, rates", [("cosine", [0.1, 0.075, 0.025]), ("step", [0.1, 0.01, 0.001]),
                                             ("none", [0.1, 0.1, 0.1])])
def test_schedules(schedule, rates):
    config = quiet(epochs=3, lr=0.1, schedule=schedule, step_size=1, max_batches_per_epoch=2, evaluate=False)
    history = fit(mlp(), FAKE, config, input_shape=SHAPE, num_classes=10, log=lambda line: None)
    assert history["lr"] == pytest.approx(rates)
    assert history["accuracy"] == []


def test_step_schedule_defaults_to_thirds():
    config = quiet(epochs=6, lr=1.0, schedule="step", max_batches_per_epoch=1, evaluate=False)
    history = fit(mlp(), FAKE, config, input_shape=SHAPE, num_classes=10, log=lambda line: None)
    assert history["lr"] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])


@pytest.mark.parametrize("optimizer, group", [("sgd", {"momentum": 0.9, "nesterov": True}),
                                              ("adam", {"decoupled_weight_decay": False}),
                                              ("adamw", {"decoupled_weight_decay": True})])
def test_optimizers(optimizer, group, tmp_path):
    model = mlp()
    before = [p.clone() for p in model.parameters()]
    config = quiet(epochs=1, optimizer=optimizer, lr=0.01, max_batches_per_epoch=3, evaluate=False,
                   checkpoint_dir=tmp_path)
    history = fit(model, FAKE, config, input_shape=SHAPE, num_classes=10, log=lambda line: None)
    saved = torch.load(tmp_path / "epoch-001.pt", weights_only=True)["optimizer"]["param_groups"][0]
    assert {key: saved[key] for key in group} == group and saved["weight_decay"] == 5e-4
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert history["loss"][0] == history["loss"][0]  # not nan


@pytest.mark.parametrize("smoothing", [0.0, 0.4])
def test_label_smoothing_is_the_loss_trained_on(smoothing):
    torch.manual_seed(0)
    model = mlp()
    train, _ = loaders(FAKE, SHAPE, 10)  # the same first batch as fit's (seed 0)
    x, y = next(iter(train))
    with torch.no_grad():
        expected = F.cross_entropy(model(x), y, label_smoothing=smoothing)
    config = quiet(epochs=1, label_smoothing=smoothing, max_batches_per_epoch=1, evaluate=False)
    history = fit(model, FAKE, config, input_shape=SHAPE, num_classes=10, log=lambda line: None)
    assert history["loss"][0] == pytest.approx(float(expected), rel=1e-5)


def test_config_errors():
    with pytest.raises(UsageError, match="optimizer must be one of sgd, adam, adamw"):
        TrainConfig(optimizer="lbfgs")
    with pytest.raises(UsageError, match="resume needs a checkpoint_dir"):
        TrainConfig(resume=True)
    with pytest.raises(UsageError, match="lr must be > 0"):
        TrainConfig(lr=0)
    with pytest.raises(UsageError, match="alpha"):
        fit(mlp(), FAKE, quiet(), input_shape=SHAPE, num_classes=10, teacher=mlp(), alpha=2)
    for bad in (0, 101, -5, float("nan")):
        with pytest.raises(UsageError, match=r"target_accuracy must be a top-1 in percent, in \(0, 100\]"):
            TrainConfig(target_accuracy=bad)
    with pytest.raises(UsageError, match="target_accuracy needs evaluate = True"):
        TrainConfig(target_accuracy=90, evaluate=False)


# ------------------------------------------------------------------ stopping at a target


def test_fit_stops_after_the_first_epoch_reaching_the_target():
    torch.manual_seed(0)
    lines = []
    config = quiet(epochs=10, lr=0.05, max_batches_per_epoch=4, target_accuracy=90)
    history = fit(conv_net(), FAKE, config, input_shape=SHAPE, num_classes=10, log=lines.append)
    stop = len(history["epochs"])
    assert 2 <= stop < 10 and history["epochs"] == list(range(1, stop + 1))  # 3 measured
    assert history["accuracy"][-1] >= 90 and all(a < 90 for a in history["accuracy"][:-1])
    assert len(history["loss"]) == len(history["lr"]) == stop and len(lines) == stop + 1
    assert lines[-1] == (f"top-1 {history['accuracy'][-1]:.2f}% reached the target 90% after epoch {stop}: "
                         f"stopping before epoch 10")


def test_an_unreached_target_runs_every_epoch():
    torch.manual_seed(0)
    lines = []
    config = quiet(epochs=2, lr=0.05, max_batches_per_epoch=2, target_accuracy=100)
    history = fit(mlp(), FAKE, config, input_shape=SHAPE, num_classes=10, log=lines.append)
    assert history["epochs"] == [1, 2] and max(history["accuracy"]) < 100
    assert len(lines) == 2 and all(line.startswith("epoch ") for line in lines)


def test_a_resumed_run_that_had_reached_the_target_trains_no_more(tmp_path):
    torch.manual_seed(0)
    config = quiet(epochs=10, lr=0.05, max_batches_per_epoch=4, target_accuracy=90, checkpoint_dir=tmp_path)
    first = fit(conv_net(), FAKE, config, input_shape=SHAPE, num_classes=10, log=lambda line: None)
    stop = len(first["epochs"])
    assert stop < 10 and latest_checkpoint(tmp_path).name == f"epoch-{stop:03d}.pt"
    lines = []
    again = fit(conv_net(), FAKE, quiet(**{**config.__dict__, "resume": True}), input_shape=SHAPE,
                num_classes=10, log=lines.append)
    assert again == first and lines[0].startswith("resumed from") and len(lines) == 2


# ------------------------------------------------------------------ masks


def masked_mlp():
    """An MLP whose first layer keeps every other weight: a ``weight_mask``
    bool buffer beside ``weight`` (the masks convention) and zeros there."""
    model = mlp()
    layer = model[1]
    mask = torch.arange(layer.weight.numel()).reshape(layer.weight.shape) % 2 == 0
    layer.register_buffer("weight_mask", mask, persistent=False)
    with torch.no_grad():
        layer.weight.masked_fill_(~mask, 0)
    return model


def test_masked_weights_stay_zero_while_training():
    model = masked_mlp()
    before = model[1].weight.clone()
    fit(model, FAKE, quiet(epochs=2, lr=0.1, max_batches_per_epoch=5, evaluate=False), input_shape=SHAPE,
        num_classes=10, log=lambda line: None)
    weight, mask = model[1].weight, model[1].weight_mask
    assert torch.count_nonzero(weight[~mask]) == 0
    assert not torch.equal(weight[mask], before[mask])  # the kept weights trained


# ------------------------------------------------------------------ checkpoints


class Interrupt(Exception):
    """Raised from ``log`` after epoch 2 is written: a run killed mid-way."""


def _interrupt_after_epoch_2(line):
    if line.startswith("epoch 2/"):
        raise Interrupt


def _seeded(make):
    torch.manual_seed(0)
    return make()


def test_resume_ends_exactly_as_an_uninterrupted_run(tmp_path):
    # dropout and mixup use the global RNG, the loader its own: all are saved and restored
    data = {**FAKE, "mixup": 0.2}
    config = quiet(epochs=4, lr=0.05, max_batches_per_epoch=4, evaluate=False)
    straight = _seeded(lambda: mlp(dropout=0.2))
    expected = fit(straight, data, config, input_shape=SHAPE, num_classes=10, log=lambda line: None)

    interrupted = _seeded(lambda: mlp(dropout=0.2))
    with pytest.raises(Interrupt):
        fit(interrupted, data, quiet(**{**config.__dict__, "checkpoint_dir": tmp_path}), input_shape=SHAPE,
            num_classes=10, log=_interrupt_after_epoch_2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch-001.pt", "epoch-002.pt"]  # no temp files
    saved = torch.load(latest_checkpoint(tmp_path), weights_only=True)
    assert saved["epoch"] == 2 and set(saved) >= {"model", "optimizer", "scheduler", "rng", "history"}
    assert saved["optimizer"]["state"]  # momentum buffers

    lines = []
    resumed = _seeded(lambda: mlp(dropout=0.2))
    torch.manual_seed(123)  # whatever the caller's RNG, the checkpoint's is restored
    history = fit(resumed, data, quiet(**{**config.__dict__, "checkpoint_dir": tmp_path, "resume": True}),
                  input_shape=SHAPE, num_classes=10, log=lines.append)
    assert lines[0].startswith("resumed from") and lines[1].startswith("epoch 3/4")
    assert len(lines) == 3
    assert history == expected
    assert all(torch.equal(a, b) for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()))


def test_resume_extends_a_finished_run_and_starts_fresh_without_checkpoints(tmp_path):
    config = quiet(epochs=2, lr=0.1, max_batches_per_epoch=2, evaluate=False, checkpoint_dir=tmp_path,
                   resume=True)
    lines = []
    fit(mlp(), FAKE, config, input_shape=SHAPE, num_classes=10, log=lines.append)
    assert lines[0].startswith("no checkpoint in") and len(lines) == 3
    longer = quiet(**{**config.__dict__, "epochs": 4})
    history = fit(mlp(), FAKE, longer, input_shape=SHAPE, num_classes=10, log=lambda line: None)
    assert history["epochs"] == [1, 2, 3, 4]
    # epochs 1-2 ran a cosine over 2 epochs; 3-4 follow the cosine over 4: 0.5 and (1 - cos(pi/4)) / 2
    assert history["lr"] == pytest.approx([0.1, 0.05, 0.05, 0.1 * 0.5 * (1 - 2 ** -0.5)])
    assert latest_checkpoint(tmp_path).name == "epoch-004.pt"


def test_resume_with_another_model_is_a_usage_error(tmp_path):
    fit(mlp(), FAKE, quiet(epochs=1, max_batches_per_epoch=1, evaluate=False, checkpoint_dir=tmp_path),
        input_shape=SHAPE, num_classes=10, log=lambda line: None)
    with pytest.raises(UsageError, match="cannot resume from .*epoch-001.pt"):
        fit(mlp(hidden=5), FAKE, quiet(epochs=2, checkpoint_dir=tmp_path, resume=True, evaluate=False),
            input_shape=SHAPE, num_classes=10, log=lambda line: None)


# ------------------------------------------------------------------ distillation


def test_distillation_loss_formula():
    student, teacher = torch.randn(5, 10), torch.randn(5, 10)
    y = torch.randint(10, (5,))
    T = 3.0
    p_teacher = F.softmax(teacher / T, dim=1)
    kl = (p_teacher * (p_teacher.log() - F.log_softmax(student / T, dim=1))).sum(1).mean()
    ce = F.cross_entropy(student, y)
    assert distillation_loss(student, teacher, y, temperature=T, alpha=1.0) == pytest.approx(float(T * T * kl))
    assert distillation_loss(student, teacher, y, temperature=T, alpha=0.0) == pytest.approx(float(ce))
    mixed = distillation_loss(student, teacher, y, temperature=T, alpha=0.25)
    assert mixed == pytest.approx(float(0.25 * T * T * kl + 0.75 * ce), rel=1e-5)


def _kl_to(teacher, student, inputs):
    with torch.no_grad():
        return float(F.kl_div(F.log_softmax(student(inputs), 1), F.log_softmax(teacher(inputs), 1),
                              reduction="batchmean", log_target=True))


def test_distillation_moves_the_student_toward_the_teacher():
    torch.manual_seed(0)
    teacher = mlp(hidden=64).eval()
    student = mlp(hidden=8).eval()
    teacher_state = {k: v.clone() for k, v in teacher.state_dict().items()}
    inputs = torch.cat([x for x, _ in batches({"dataset": "fake"}, SHAPE, 2, train=False)])
    before = _kl_to(teacher, student, inputs)
    history = fit(student, FAKE, quiet(epochs=3, optimizer="adam", lr=0.01, evaluate=False),
                  input_shape=SHAPE, num_classes=10, teacher=teacher, temperature=2.0, alpha=1.0,
                  log=lambda line: None)
    after = _kl_to(teacher, student, inputs)
    assert history["loss"][-1] < history["loss"][0]
    assert after < before / 3
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in teacher_state.items())
    assert not teacher.training


# ------------------------------------------------------------------ devices, dtypes, progress


def test_the_model_stays_where_and_what_it_was():
    model = mlp().half()
    fit(model, FAKE, quiet(epochs=1, lr=0.01, max_batches_per_epoch=2, device="auto"), input_shape=SHAPE,
        num_classes=10, log=lambda line: None)
    assert {p.dtype for p in model.parameters()} == {torch.float16}
    assert {p.device.type for p in model.parameters()} == {"cpu"}


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self):
        return True


def test_a_bar_per_epoch_only_when_asked_and_on_a_terminal(monkeypatch):
    screen, out = Terminal(), Terminal()
    monkeypatch.setattr(sys, "stderr", screen)
    monkeypatch.setattr(sys, "stdout", out)
    config = TrainConfig(epochs=2, max_batches_per_epoch=3, evaluate=False, progress=True)
    fit(mlp(), FAKE, config, input_shape=SHAPE, num_classes=10, log=lambda line: None)
    shown = screen.getvalue()
    assert "epoch 1/2" in shown and "epoch 2/2" in shown and "0/3" in shown and "batch" in shown  # tqdm's bars
    assert out.getvalue() == ""  # stdout is the log's
    monkeypatch.setattr(sys, "stderr", Terminal())
    fit(mlp(), FAKE, TrainConfig(epochs=1, max_batches_per_epoch=3, evaluate=False), input_shape=SHAPE,
        num_classes=10, log=lambda line: None)  # progress is off by default
    assert sys.stderr.getvalue() == "" and out.getvalue() == ""
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a terminal: a log file, CI
    fit(mlp(), FAKE, config, input_shape=SHAPE, num_classes=10, log=lambda line: None)
    assert sys.stderr.getvalue() == ""
