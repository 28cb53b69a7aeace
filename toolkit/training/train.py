"""One trainer for fine-tuning, distillation and quantization-aware training.

:func:`fit` trains a model in place on a ``[data]`` table (see
:mod:`micronet.training.data`) with the settings of a frozen :class:`TrainConfig`:
SGD (momentum, Nesterov), Adam or AdamW; a cosine or step schedule stepped
once per epoch; label smoothing; mixup / CutMix from the table; a
checkpoint per epoch, written atomically, and ``resume``.

What a compressed model carries stays in force: after every optimizer step
``micronet.masks.apply_masks(model)`` (the mask convention of the core)
re-zeroes each parameter that has a ``<name>_mask`` buffer, and fake-quant
modules train through their straight-through estimators. The model's dtype
is left alone (inputs are cast to it), so a half model trains in half.

Distillation (``teacher=``) minimises, with student logits ``s``, teacher
logits ``t``, temperature ``T`` and weight ``alpha``::

    loss = alpha * T**2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * CE(s, y)

the KL divergence of the student's softened distribution from the
teacher's (Hinton et al. 2015; ``T**2`` keeps the soft gradients' scale
independent of ``T``), averaged over the batch, plus the usual cross-entropy
with the (smoothed, mixed) labels. The teacher runs in eval mode under
``torch.no_grad``.

Data-parallel (DDP): inside a torch.distributed process group of two or
more processes (``torchrun``; :mod:`micronet.training.distributed`) every
rank calls :func:`fit` alike and the model trains as
``torch.nn.parallel.DistributedDataParallel`` (gradients averaged over the
ranks during the backward pass). ``batch_size`` is the *global* batch: the
loaders draw the batches one process would draw and each rank trains on its
share (:class:`~micronet.training.data.RankBatches`); each rank's loss is
weighted by its share of the batch, so the averaged gradient is the global
batch's and the run follows one process with the same batch up to float
summation order. What does not follow exactly: BatchNorm normalises with
each rank's share (its running statistics are rank 0's, given to all ranks
after each epoch), mixup / CutMix pair examples within a share, and a last
batch too small to give every rank two examples is skipped. The loss is
summed over the ranks (the history's loss is the global mean), the
per-epoch top-1 is counted on sharded test batches and summed, rank 0
alone logs and writes checkpoints (the whole model and optimizer, resumable
under any number of processes: rank 0 reads them and hands them to all),
and every rank ends with rank 0's weights and buffers.
"""
from __future__ import annotations

import io
import math
import re
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import MicronetError, UsageError
from ..fileio import atomic_write_bytes
from ..masks import apply_masks
from ..progress import progress_bar
from ..steps import model_device, model_dtype
from . import distributed
from .data import eval_mode, loaders, logits_of, mix_batch, resolve_device, top1, top1_counts

__all__ = ["TrainConfig", "fit", "distillation_loss", "latest_checkpoint", "OPTIMIZERS", "SCHEDULES"]

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("cosine", "step", "none")
CHECKPOINT = re.compile(r"epoch-(\d{3,})\.pt")


@dataclass(frozen=True)
class TrainConfig:
    """How :func:`fit` trains.

    ``epochs``: epochs in all (with ``resume``, counting those already run);
    ``batch_size``: None = the ``[data]`` table's (128); ``optimizer``: sgd,
    adam or adamw, with ``lr``, ``weight_decay`` (L2 for sgd/adam, decoupled
    for adamw), ``momentum`` and ``nesterov`` (sgd only; Nesterov
    only with momentum > 0); ``schedule``:
    cosine (to 0 over ``epochs``), step (``lr *= gamma`` every ``step_size``
    epochs; 0 = a third of the epochs) or none, stepped after each epoch;
    ``label_smoothing`` for the cross-entropy; ``device``: auto (CUDA when
    available), cpu, cuda, cuda:N; ``checkpoint_dir``: where ``epoch-NNN.pt``
    goes after each epoch (None = nowhere); ``resume``: continue from the
    newest checkpoint there (weights, optimizer, schedule, RNG states and
    data order, so an interrupted run ends as an uninterrupted one would;
    a larger ``epochs`` extends it, recomputing the schedule's remaining
    rates for the new length); ``max_batches_per_epoch``: cut epochs (and
    evaluations) short, for tests and smoke runs; ``progress``: a bar per
    epoch over its batches, with the running loss, on the terminal (stderr,
    when it is a terminal and tqdm is installed:
    :func:`micronet.progress.progress_bar`; rank 0 only under DDP; default
    off, steps pass their context's ``progress``); ``seed``: the data order; ``evaluate``: top-1 on
    the test split after each epoch; ``target_accuracy``: stop after the
    first epoch whose evaluated top-1 (percent, that test split, cut to
    ``max_batches_per_epoch`` batches) reaches it, at most ``epochs`` in all
    (None: run them all; needs ``evaluate``; the schedule still spans
    ``epochs``, so a run that stops early ends above the schedule's last rate).
    """

    epochs: int = 1
    batch_size: int | None = None
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    step_size: int = 0
    gamma: float = 0.1
    label_smoothing: float = 0.0
    device: str = "auto"
    checkpoint_dir: str | Path | None = None
    resume: bool = False
    max_batches_per_epoch: int | None = None
    progress: bool = False
    seed: int = 0
    evaluate: bool = True
    target_accuracy: float | None = None

    def __post_init__(self):
        problem = self.problem()
        if problem:
            raise UsageError(f"training: {problem}")

    def problem(self) -> str | None:
        """What is wrong with these settings (None when nothing)."""
        numbers = {"lr": self.lr, "momentum": self.momentum, "weight_decay": self.weight_decay,
                   "gamma": self.gamma, "label_smoothing": self.label_smoothing}
        checks = [
            *((math.isfinite(value), f"{name} must be a finite number, got {value}")
              for name, value in numbers.items()),
            (self.epochs >= 0, f"epochs must be >= 0, got {self.epochs}"),
            (self.batch_size is None or self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"),
            (self.schedule in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (self.step_size >= 0 and self.gamma > 0, "step_size must be >= 0 and gamma > 0"),
            (0 <= self.label_smoothing < 1, f"label_smoothing must be in [0, 1), got {self.label_smoothing}"),
            (not self.resume or self.checkpoint_dir, "resume needs a checkpoint_dir"),
            (self.max_batches_per_epoch is None or self.max_batches_per_epoch >= 1,
             f"max_batches_per_epoch must be >= 1 or None, got {self.max_batches_per_epoch}"),
            (self.target_accuracy is None or 0 < self.target_accuracy <= 100,
             f"target_accuracy must be a top-1 in percent, in (0, 100], or None, got {self.target_accuracy}"),
            (self.target_accuracy is None or self.evaluate,
             "target_accuracy needs evaluate = True (top-1 is measured after each epoch)"),
        ]
        return next((message for ok, message in checks if not ok), None)


# ------------------------------------------------------------------ losses


def distillation_loss(student: Tensor, teacher: Tensor, target: Tensor, *, temperature: float,
                      alpha: float, label_smoothing: float = 0.0) -> Tensor:
    """``alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, target)``.

    ``student``, ``teacher``: logits [N, classes]; ``target``: class indices
    [N] or class probabilities [N, classes] (mixup). The KL term is summed
    over classes and averaged over the batch (``reduction="batchmean"``).
    """
    soft = F.kl_div(F.log_softmax(student / temperature, dim=1), F.log_softmax(teacher / temperature, dim=1),
                    reduction="batchmean", log_target=True)
    hard = F.cross_entropy(student, target, label_smoothing=label_smoothing)
    return alpha * temperature ** 2 * soft + (1 - alpha) * hard


# ------------------------------------------------------------------ building blocks


def _optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise UsageError("the model has no trainable parameters", hint="nothing to fine-tune")
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                               nesterov=config.nesterov and config.momentum > 0,
                               weight_decay=config.weight_decay)
    kind = torch.optim.Adam if config.optimizer == "adam" else torch.optim.AdamW
    return kind(params, lr=config.lr, weight_decay=config.weight_decay)


def _lr_factor(config: TrainConfig) -> Callable[[int], float]:
    """The schedule in closed form: the learning rate of the epoch after
    ``done`` epochs, as a fraction of ``lr``."""
    if config.schedule == "cosine":
        epochs = max(config.epochs, 1)
        return lambda done: 0.5 * (1 + math.cos(math.pi * min(done, epochs) / epochs))
    if config.schedule == "step":
        step = config.step_size or max(config.epochs // 3, 1)
        return lambda done: config.gamma ** (done // step)
    return lambda done: 1.0


def _scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig):
    if config.schedule == "none":
        return None
    return torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(config))


def latest_checkpoint(folder: str | Path) -> Path | None:
    """The ``epoch-NNN.pt`` with the highest epoch in ``folder`` (None when none)."""
    path = Path(folder)
    found = [(int(m.group(1)), f) for f in path.glob("epoch-*.pt") if (m := CHECKPOINT.fullmatch(f.name))]
    return max(found)[1] if found else None


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class _Run:
    """Everything one :func:`fit` call trains with."""

    model: nn.Module
    config: TrainConfig
    optimizer: torch.optim.Optimizer
    scheduler: Any
    train: Any
    test: Any
    data: Mapping[str, Any]
    input_shape: Sequence[int]
    num_classes: int
    device: torch.device
    teacher: nn.Module | None
    temperature: float
    alpha: float
    log: Callable[[str], None]
    history: dict[str, Any]
    world: distributed.World | None = None
    forward: nn.Module | None = None  # the model, or its DistributedDataParallel wrapper

    @property
    def main(self) -> bool:
        """Whether this process logs and writes (rank 0, or the only process)."""
        return self.world is None or self.world.main


def _save_checkpoint(run: _Run, epoch: int) -> Path:
    state = {"epoch": epoch, "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
             "scheduler": run.scheduler.state_dict() if run.scheduler is not None else None,
             "rng": _rng_state(), "data_rng": run.train.generator.get_state(),
             "history": run.history, "config": {k: str(v) if isinstance(v, Path) else v
                                                for k, v in asdict(run.config).items()}}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return atomic_write_bytes(Path(run.config.checkpoint_dir) / f"epoch-{epoch:03d}.pt", buffer.getvalue())


def _reschedule(run: _Run, done: int) -> None:
    """The learning rate of epoch ``done + 1`` under this run's schedule (a
    resumed run may have more epochs, hence another cosine, than the saved one)."""
    factor = _lr_factor(run.config)(done)
    for group, base in zip(run.optimizer.param_groups, run.scheduler.base_lrs):
        group["lr"] = base * factor


def _read_checkpoint(folder: str | Path) -> tuple[Path | None, dict[str, Any] | None]:
    """The newest checkpoint in ``folder`` and its contents ((None, None) when none)."""
    path = latest_checkpoint(folder)
    if path is None:
        return None, None
    try:
        return path, torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, ValueError, KeyError, TypeError, OSError, EOFError) as error:
        raise UsageError(f"cannot resume from {path}: {type(error).__name__}: {error}",
                         hint="empty the checkpoint folder, or remove the damaged file") from error


def _resume(run: _Run) -> int:
    """Load the newest checkpoint; the epoch it ended (0 when there is none).
    Under DDP rank 0 reads it and every rank loads what rank 0 read."""
    path, state = distributed.on_main(lambda: _read_checkpoint(run.config.checkpoint_dir))
    if path is None:
        run.log(f"no checkpoint in {run.config.checkpoint_dir}: starting from epoch 1")
        return 0
    failed = None
    try:
        run.model.load_state_dict(state["model"])
        run.optimizer.load_state_dict(state["optimizer"])
        if run.scheduler is not None and state["scheduler"] is not None:
            run.scheduler.load_state_dict(state["scheduler"])
            _reschedule(run, int(state["epoch"]))
    except (RuntimeError, ValueError, KeyError, TypeError) as error:
        failed = UsageError(f"cannot resume from {path}: {type(error).__name__}: {error}",
                            hint="resume with the model, optimizer and schedule that wrote it, "
                                 "or empty the checkpoint folder")
        failed.__cause__ = error
    distributed.together(failed)
    _set_rng_state(state["rng"])
    run.train.generator.set_state(state["data_rng"])
    run.history.update(state["history"])
    run.log(f"resumed from {path} (epoch {state['epoch']})")
    return int(state["epoch"])


# ------------------------------------------------------------------ the loop


def _loss(run: _Run, x: Tensor, target: Tensor) -> Tensor:
    student = logits_of(run.forward(x)).float()
    if run.teacher is None:
        return F.cross_entropy(student, target, label_smoothing=run.config.label_smoothing)
    with torch.no_grad():
        teacher = logits_of(run.teacher(x.to(model_dtype(run.teacher)))).float()
    return distillation_loss(student, teacher, target, temperature=run.temperature, alpha=run.alpha,
                             label_smoothing=run.config.label_smoothing)


def _train_epoch(run: _Run, epoch: int) -> float:
    limit = run.config.max_batches_per_epoch
    batches = len(run.train) if limit is None else min(limit, len(run.train))
    shown = run.config.progress and run.main  # under DDP: rank 0's bar alone
    with progress_bar(batches, f"epoch {epoch}/{run.config.epochs}", shown, unit="batch") as bar:
        return _train_batches(run, epoch, batches, bar)


def _train_batches(run: _Run, epoch: int, batches: int, bar) -> float:
    """The mean loss over the epoch's first ``batches`` batches, ``bar`` updated after each."""
    total, count = 0.0, 0
    dtype = model_dtype(run.model)
    mixup, cutmix = float(run.data.get("mixup", 0.0)), float(run.data.get("cutmix", 0.0))
    for index, batch in enumerate(_batches(run)):
        if index >= batches:
            break
        loss, failed = None, None
        try:  # under DDP an error here is raised at the next meeting point, on every rank
            if isinstance(batch, Exception):
                raise batch
            x, y = batch[0].to(run.device), batch[1].to(run.device)
            x, target = mix_batch(x, y, run.num_classes, mixup=mixup, cutmix=cutmix)
            loss = _loss(run, x.to(dtype), target)
        except Exception as error:
            if run.world is None:
                raise
            failed = error
        mine = len(batch[1]) if loss is not None else 0
        summed, size = _batch_sum(run, float(loss.detach()) if loss is not None else 0.0, mine, failed)
        if not math.isfinite(summed):  # the same sum on every rank: they all stop here
            raise distributed.agreed(MicronetError(f"training diverged: the loss is {summed / size} at epoch "
                                                   f"{epoch}, batch {index + 1}", hint="lower the learning rate"))
        run.optimizer.zero_grad(set_to_none=True)
        share = mine * run.world.size / size if run.world is not None else 1.0
        (loss if share == 1.0 else loss * share).backward()  # DDP averages: the global batch's mean
        run.optimizer.step()
        apply_masks(run.model)
        total, count = total + summed, count + size
        bar.set_postfix_str(f"loss {total / count:.4f}", refresh=False)
        bar.update(1)
    return total / count if count else float("nan")


def _batches(run: _Run):
    """The train loader's batches; under DDP an error while loading one is
    yielded in its place (to be raised at the next meeting point)."""
    iterator = iter(run.train)
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except Exception as error:
            if run.world is None:
                raise
            yield error
            return
        yield batch


def _batch_sum(run: _Run, loss: float, size: int, failed: Exception | None = None) -> tuple[float, int]:
    """(loss x examples, examples) of the global batch: this process's, summed
    over the ranks under DDP (so every rank sees a divergence, or another
    rank's ``failed``, at once)."""
    if run.world is None:
        return loss * size, size
    summed, count = distributed.sum_across([loss * size, float(size)], run.device, failed=failed)
    return summed, int(count)


def _evaluate(run: _Run) -> float:
    """Top-1 (percent) on the test split, cut to ``max_batches_per_epoch``
    batches; under DDP each rank counts its shares and the counts are summed."""
    if run.world is None:
        return top1(run.model, run.test, device=run.device, max_batches=run.config.max_batches_per_epoch)
    counts, failed = (0, 0), None
    try:
        counts = top1_counts(run.model, run.test, device=run.device)  # the loader holds the cut
    except Exception as error:
        failed = error
    correct, total = distributed.sum_across([float(n) for n in counts], run.device, failed=failed)
    if total == 0:
        raise distributed.agreed(UsageError("no test examples to evaluate on"))
    return 100.0 * correct / total


def _epoch(run: _Run, epoch: int) -> None:
    started = time.perf_counter()
    lr = run.optimizer.param_groups[0]["lr"]
    with ExitStack() as stack:
        for module in (run.model, run.teacher):
            if module is not None:  # the student trains, the teacher is evaluated
                stack.enter_context(eval_mode(module))
        run.model.train()
        loss = _train_epoch(run, epoch)
    if run.scheduler is not None:
        run.scheduler.step()
    distributed.broadcast_state(run.model)  # BatchNorm's running statistics: rank 0's, everywhere
    line = f"epoch {epoch}/{run.config.epochs}  loss {loss:.4f}  lr {lr:.3g}"
    run.history["epochs"].append(epoch)
    run.history["loss"].append(loss)
    run.history["lr"].append(lr)
    if run.config.evaluate:
        accuracy = _evaluate(run)
        run.history["accuracy"].append(accuracy)
        line += f"  top-1 {accuracy:.2f}%"
    if run.config.checkpoint_dir is not None:
        distributed.on_main(lambda: _save_checkpoint(run, epoch))
    run.log(f"{line}  {time.perf_counter() - started:.1f} s")


def _reached(run: _Run) -> bool:
    """Whether the last evaluated top-1 reaches ``config.target_accuracy``."""
    target, measured = run.config.target_accuracy, run.history["accuracy"]
    return target is not None and bool(measured) and measured[-1] >= target


def fit(model: nn.Module, data: Mapping[str, Any] | None, config: TrainConfig = TrainConfig(), *,
        input_shape: Sequence[int], num_classes: int, teacher: nn.Module | None = None,
        temperature: float = 4.0, alpha: float = 0.9,
        log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train ``model`` in place; return its history.

    :param data: a ``[data]`` table (``dataset`` and optional ``batch_size``,
        ``workers``, ``augment``, ``mixup``, ``cutmix``); None = ``fake``.
    :param input_shape: the model's input (batch first), for the dataset's
        image size; ``num_classes``: the model's outputs.
    :param teacher: distil from this model (see the module docstring for the
        loss, ``temperature`` and ``alpha``); it is not trained or modified.
    :param log: receives one line per epoch (loss, learning rate, top-1, time).
    :returns: ``{"epochs": [...], "loss": [...], "lr": [...], "accuracy": [...],
        "engine": ..., "world_size": ...}``: one entry per epoch, those before
        a resume included; ``loss`` is the mean training loss, ``lr`` the rate
        the epoch ran with and ``accuracy`` the top-1 (percent) on the test
        split (empty when ``config.evaluate`` is false); ``engine`` is
        ``"ddp"`` (data-parallel over ``world_size`` processes) or
        ``"local"`` (``world_size`` 1). With ``config.target_accuracy`` it
        stops after the first epoch reaching it (also when a resumed run
        already had): the lists are then shorter than ``config.epochs``.

    Runs on ``config.device`` (auto: CUDA when available; under DDP a bare
    ``cuda`` is this process's GPU, ``cuda:LOCAL_RANK``); the model and the
    teacher go back to their devices, and every module to its training flag,
    at the end (also on errors). Under DDP (see the module docstring) every
    rank must call it alike; only rank 0 calls ``log``. An error on some
    ranks only is raised on all of them at the next meeting point (the
    loss's all-reduce after each forward pass, the top-1 counts, a
    checkpoint, a log line); one inside the backward pass or the optimizer
    step, where the other ranks wait for this one, is raised as
    :class:`~micronet.training.distributed.RanksOutOfStep` and must end the
    process.
    """
    if not 0 <= alpha <= 1 or temperature <= 0:
        raise UsageError(f"distillation needs 0 <= alpha <= 1 and temperature > 0, got {alpha} and {temperature}")
    world = distributed.current()
    data = dict(data) if data is not None else {"dataset": "fake"}
    homes = [(m, model_device(m)) for m in (model, teacher) if m is not None]
    run = None
    try:
        run = _prepare(model, data, config, world, homes, input_shape=input_shape, num_classes=num_classes,
                       teacher=teacher, temperature=temperature, alpha=alpha, log=log)
        _train(run)
    except Exception as error:
        if world is not None and not getattr(error, distributed.AGREED, False):
            raise distributed.RanksOutOfStep(
                f"{world} failed inside data-parallel training, where the other ranks cannot learn it: "
                f"{type(error).__name__}: {error}", hint="the run stops (torchrun stops the other ranks); "
                "--out keeps the previous run") from error
        raise
    finally:
        if run is not None:
            run.forward = None  # the DDP wrapper's gradient hooks go with it
        for module, home in homes:
            module.to(home)
    return run.history


def _prepare(model: nn.Module, data: Mapping[str, Any], config: TrainConfig, world: distributed.World | None,
             homes: list, *, log: Callable[[str], None], **run: Any) -> _Run:
    """Loaders, device, optimizer and schedule; under DDP a meeting point (a
    rank that cannot start fails every rank), and ``log`` on rank 0 only."""
    prepared, failed = None, None
    try:
        shard = {} if world is None else {"rank": world.rank, "world_size": world.size,
                                          "test_batches": config.max_batches_per_epoch}
        train, test = loaders(data, run["input_shape"], run["num_classes"], batch_size=config.batch_size,
                              seed=config.seed, **shard)
        device = _device(config, world)
        for module, _ in homes:
            module.to(device)
        optimizer = _optimizer(model, config)
        if world is not None:
            log = partial(_log_on_main, log)
        prepared = _Run(model, config, optimizer, _scheduler(optimizer, config), train, test, data,
                        run["input_shape"], run["num_classes"], device, run["teacher"], run["temperature"],
                        run["alpha"], log, {"epochs": [], "loss": [], "lr": [], "accuracy": []}, world, model)
    except Exception as error:
        failed = error
    distributed.together(failed)
    return prepared


def _log_on_main(log: Callable[[str], None], line: str) -> None:
    distributed.on_main(lambda: log(line))


def _train(run: _Run) -> None:
    """Resume, wrap in DDP under a group, and run the epochs."""
    config, world = run.config, run.world
    start = _resume(run) if config.resume else 0
    run.history.update(engine="local" if world is None else "ddp", world_size=1 if world is None else world.size)
    if world is not None:  # after the resume: it starts from rank 0's weights, whatever the others held
        from torch.nn.parallel import DistributedDataParallel

        run.forward = DistributedDataParallel(run.model, static_graph=True,
                                              device_ids=[run.device.index] if run.device.type == "cuda" else None)
    for epoch in range(start + 1, config.epochs + 1):
        if _reached(run):
            break
        _epoch(run, epoch)
    if _reached(run) and run.history["epochs"][-1] < config.epochs:
        run.log(f"top-1 {run.history['accuracy'][-1]:.2f}% reached the target {config.target_accuracy:g}% "
                f"after epoch {run.history['epochs'][-1]}: stopping before epoch {config.epochs}")


def _device(config: TrainConfig, world: distributed.World | None) -> torch.device:
    """``config.device`` resolved; under DDP a bare ``cuda`` is ``cuda:LOCAL_RANK``."""
    device = resolve_device(config.device)
    if world is None or device.type != "cuda" or device.index is not None:
        return device
    visible = torch.cuda.device_count()
    if world.local_rank >= visible:
        raise UsageError(f"{world}: LOCAL_RANK {world.local_rank} has no GPU of its own ({visible} visible)",
                         hint=f"start at most {visible} processes per node (torchrun --nproc_per_node {visible})")
    return torch.device("cuda", world.local_rank)
