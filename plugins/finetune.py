"""Built-in steps ``finetune`` and ``distill``: train the compressed model.

Both train the pipeline's copy in place with :func:`micronet.training.train.fit` on
the recipe's ``[data]`` table (without one: the synthetic ``fake`` problem,
said in a note), keeping pruning masks and fake quantization in force (a
layer that declares weight bits below 32 trains through its grid and ends on
it: :func:`micronet.plugins.fakequant.declared_grids`), and note the loss per epoch and, when the recipe names its data, the final
top-1 on its test split. ``distill`` adds a teacher: ``"original"`` (the
pipeline's input model, before any compression) or a model spec with
``teacher_weights`` (a spec importing code, ``module:factory`` or
``file.py:factory``, needs the recipe's ``trust = true`` or ``--trust``);
its loss is ``alpha * T^2 * KL(teacher || student) + (1 - alpha) * CE`` at
temperature ``T`` (see :mod:`micronet.training.train`).

Both can stop early at a bar: ``until_accuracy`` (a top-1 in percent) or
``until_bar = true`` (the track's quality bar, ``context.result.track``)
ends training after the first epoch whose top-1 reaches it, at most
``epochs`` epochs. The top-1 is the trainer's per-epoch evaluation: the
``[data]`` table's test split (cut to ``max_batches`` batches). Stopping on
the split the result is reported on is what the published MicroNet
pipelines did; it is optimistic (the stop is chosen on that split), so the
final top-1 is an upper estimate. It needs a ``[data]`` table. The notes
then say ``until``, ``epochs_run``, ``stopped_early`` and ``accuracy`` (the
top-1 at the stop).
"""
from __future__ import annotations

from typing import Any, Mapping

from torch import nn

from micronet.errors import UsageError
from micronet.manager import hookimpl
from micronet.plugins.fakequant import declared_grids
from micronet.steps import CompressionStep, StepContext, StepOption, at_least, within
from micronet.training.data import output_classes
from micronet.training.train import OPTIMIZERS, SCHEDULES, TrainConfig, fit


def _check_until_accuracy(value: float) -> str | None:
    return None if 0 <= value <= 100 else f"expected a top-1 in percent in (0, 100], or 0 for off, got {value!r}"


TRAIN_OPTIONS = (
    StepOption("epochs", (int,), 1, "epochs to train (0: none)", check=at_least(0)),
    StepOption("lr", (float,), 0.01, "learning rate at the start", check=at_least(0.0, strict=True)),
    StepOption("optimizer", (str,), "sgd", "sgd (momentum, nesterov), adam or adamw", choices=OPTIMIZERS),
    StepOption("momentum", (float,), 0.9, "sgd momentum", check=within(0, 1, closed=False)),
    StepOption("nesterov", (bool,), True, "Nesterov momentum (sgd)"),
    StepOption("weight_decay", (float,), 5e-4, "L2 (sgd, adam) or decoupled (adamw) decay",
               check=at_least(0.0)),
    StepOption("schedule", (str,), "cosine", "cosine, step or none (stepped once per epoch)",
               choices=SCHEDULES),
    StepOption("step_size", (int,), 0, "epochs between steps of the step schedule (0: a third of them)",
               check=at_least(0)),
    StepOption("gamma", (float,), 0.1, "factor of the step schedule", check=at_least(0.0, strict=True)),
    StepOption("label_smoothing", (float,), 0.0, "label smoothing of the cross-entropy",
               check=within(0, 1, closed=False)),
    StepOption("batch_size", (int,), 0, "0: the [data] table's (default 128)", check=at_least(0)),
    StepOption("max_batches", (int,), 0, "batches per epoch and per evaluation (0: all)",
               check=at_least(0)),
    StepOption("checkpoint_dir", (str,), "", "write epoch-NNN.pt there after each epoch (\"\": none; "
               "relative to the recipe's folder)", path=True),
    StepOption("resume", (bool,), False, "continue from the newest checkpoint in checkpoint_dir"),
    StepOption("until_accuracy", (float,), 0.0,
               "stop after the first epoch whose top-1 (percent, in (0, 100]; 0: off) reaches this, at most "
               "epochs; measured by the per-epoch evaluation on [data]'s test split, as the published "
               "pipelines did (optimistic: the stop is chosen on the split the result is reported on)",
               check=_check_until_accuracy),
    StepOption("until_bar", (bool,), False,
               "like until_accuracy, at the track's quality bar (e.g. 97 for digits, 80 for cifar100)"),
)

DISTILL_OPTIONS = (
    StepOption("teacher", (str,), "original",
               "\"original\" (the pipeline's input model) or a model spec"),
    StepOption("teacher_weights", (str,), "", "a state dict for a teacher spec (\"\": none; relative to "
               "the recipe's folder)", path=True),
    StepOption("temperature", (float,), 4.0, "softmax temperature T", check=at_least(0.0, strict=True)),
    StepOption("alpha", (float,), 0.9, "weight of the soft (teacher) loss; 1 - alpha goes to the labels",
               check=within(0, 1)),
)


def check_until(options: Mapping[str, Any]) -> None:
    """One target at most: ``until_accuracy`` or ``until_bar``."""
    if options["until_accuracy"] and options["until_bar"]:
        raise UsageError(f"until_accuracy = {options['until_accuracy']:g} and until_bar = true both set a "
                         "target", hint="keep one of them")


def _target(options: Mapping[str, Any], context: StepContext) -> float | None:
    """The top-1 (percent) to stop at, noted as ``until``; None when off."""
    if not options["until_accuracy"] and not options["until_bar"]:
        return None
    if context.data is None:
        raise UsageError("until_accuracy / until_bar need the recipe's [data] table: the top-1 is measured "
                         "on its test split after each epoch", hint="add a [data] table, or drop the option")
    if options["until_accuracy"]:
        target = float(options["until_accuracy"])
        context.note("until", f"top-1 >= {target:g}% on the test split")
        return target
    track = getattr(context.result, "track", None)
    if track is None:
        raise UsageError("until_bar needs the track of the pipeline's audit, and there is none",
                         hint="run the step in a pipeline, or give until_accuracy")
    if not track.higher_is_better:  # this step measures top-1, which says nothing of a perplexity
        raise UsageError(f"until_bar: the {track.name} track's bar is {track.bar_text()}, and finetune "
                         "measures top-1", hint="give until_accuracy (a top-1 in percent) instead")
    context.note("until", f"{track.bar_text()} on the test split (the {track.name} track's bar)")
    return float(track.quality_bar)


def _config(options: Mapping[str, Any], context: StepContext, evaluate: bool,
            target: float | None = None) -> TrainConfig:
    if options["resume"] and not options["checkpoint_dir"]:
        raise UsageError("resume = true needs a checkpoint_dir")
    return TrainConfig(
        epochs=options["epochs"], batch_size=options["batch_size"] or None, optimizer=options["optimizer"],
        lr=options["lr"], momentum=options["momentum"],
        nesterov=options["nesterov"],
        weight_decay=options["weight_decay"], schedule=options["schedule"], step_size=options["step_size"],
        gamma=options["gamma"], label_smoothing=options["label_smoothing"], device=context.device,
        checkpoint_dir=options["checkpoint_dir"] or None, resume=options["resume"],
        max_batches_per_epoch=options["max_batches"] or None, evaluate=evaluate, target_accuracy=target,
        progress=context.progress)


def _train(model: nn.Module, options: Mapping[str, Any], context: StepContext,
           teacher: nn.Module | None = None, **distill: float) -> nn.Module:
    data = context.data
    if data is None:
        context.note("data", "fake (the recipe has no [data] table)")
    else:
        context.note("data", data.get("dataset"))
    target = _target(options, context)
    config = _config(options, context, evaluate=data is not None, target=target)
    classes = output_classes(model, context.input_shape)
    with declared_grids(model) as held:  # quantized layers stay on their grids (fakequant.declared_grids)
        history = fit(model, data, config, input_shape=context.input_shape, num_classes=classes,
                      teacher=teacher, log=context.log, **distill)
    if held:
        context.note("kept_on_grids", len(held))
    context.note("engine", history["engine"])  # "ddp" under torchrun, else "local"
    context.note("world_size", history["world_size"])
    context.note("loss", [round(loss, 6) for loss in history["loss"]])
    if history["accuracy"]:
        context.note("top1", round(history["accuracy"][-1], 4))
    if target is not None:
        context.note("epochs_run", len(history["epochs"]))
        context.note("stopped_early", len(history["epochs"]) < options["epochs"])
        context.note("accuracy", round(history["accuracy"][-1], 4) if history["accuracy"] else None)
    model.eval()
    return model


def run_finetune(model: nn.Module, options: Mapping[str, Any], context: StepContext) -> nn.Module:
    """The ``finetune`` step: train the copy in place and return it."""
    return _train(model, options, context)


def _teacher(options: Mapping[str, Any], context: StepContext) -> nn.Module:
    spec, weights = options["teacher"], options["teacher_weights"]
    if spec == "original":
        if weights:
            raise UsageError("teacher_weights applies to a teacher spec, not to 'original'",
                             hint="drop teacher_weights, or name the teacher's spec")
        if context.original is None:
            raise UsageError("teacher = 'original' needs the pipeline's input model, and there is none")
        return context.original
    from micronet.resolve import resolve_model

    models = context.registries.models if context.registries is not None else None
    return resolve_model(spec, weights=weights or None, meta=False, trust=context.trust, models=models,
                         origin="the distill step's teacher option").model


def run_distill(model: nn.Module, options: Mapping[str, Any], context: StepContext) -> nn.Module:
    """The ``distill`` step: train the copy against a teacher and return it."""
    teacher = _teacher(options, context)
    student, taught = output_classes(model, context.input_shape), output_classes(teacher, context.input_shape)
    if student != taught:
        raise UsageError(f"the teacher outputs {taught} classes, the student {student}",
                         hint="distil from a teacher trained on the same classes")
    context.note("teacher", options["teacher"])
    return _train(model, options, context, teacher, temperature=options["temperature"],
                  alpha=options["alpha"])


FINETUNE = CompressionStep(
    name="finetune",
    description="train the model on the recipe's [data] (masks and fake quantization kept)",
    run=run_finetune,
    options=TRAIN_OPTIONS,
    validate=check_until,
)

DISTILL = CompressionStep(
    name="distill",
    description="knowledge distillation from a teacher (the original model or a spec)",
    run=run_distill,
    options=TRAIN_OPTIONS + DISTILL_OPTIONS,
    validate=check_until,
)


@hookimpl
def micronet_register_steps():
    return [FINETUNE, DISTILL]
