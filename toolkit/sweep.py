"""Sweeps of independent evaluations, in this process or as tasks on a Ray cluster.

A sweep is a list of tasks (for sensitivity: a layer and a setting) and one
``evaluate(shared, task) -> row`` applied to each, where ``shared`` is what
every evaluation reads (a model and its calibration batches). Two engines:

- ``local``: the tasks one after another in this process, on ``shared`` itself;
- ``ray``: ``shared`` is put once in Ray's object store (:func:`ray.put`), and
  so is the plan (``evaluate``, the task list and the thread count); each task
  is then a Ray task that receives its index and the two ObjectRefs. A worker
  process fetches and unpickles the two objects on its first task of the sweep
  and keeps them for its later ones, until a task of another sweep or the end
  of the driver's connection (a node's object store holds one copy for all
  its workers). ``address`` joins a running cluster (``"auto"``,
  ``"ray://HOST:PORT"`` with a Ray client server, or a GCS ``"HOST:PORT"``);
  without it a local Ray of ``num_cpus`` CPUs is started for the sweep and
  shut down after. A connection this module opened is closed after the sweep
  (which, for a cluster only joined, leaves the cluster running); a Ray the
  caller had already initialised is used as it is and left alone. Every node
  of a cluster needs ``micronet-toolkit`` installed (workers import
  ``evaluate`` by name).

Results are the same on both engines, row for row and bit for bit:

- rows come back in task order whatever order the tasks finish in (each
  result is stored at its task's index);
- every evaluation runs with ``threads`` torch threads (default 1) on both
  engines: a torch build may sum in another order with another thread count,
  so the local engine pins the same count for the sweep (and restores the
  caller's after). The tests compare the two engines' tables with ``==``.

Failures: a worker process that dies (killed, out of memory) is retried by
Ray up to ``max_retries`` times (the remote function's own option); an
exception raised by ``evaluate`` is not retried. Either way the sweep stops at
the first failed task and raises one line naming it, e.g. ``sensitivity on
ray: conv2 at 4 bits failed: RuntimeError: ...`` (a :class:`CompressionError`,
or the task's own :class:`MicronetError` class), chained to the original
error; no partial list is returned, and the tasks still queued are cancelled.

``evaluate`` must be a module-level function (Ray pickles it by reference), and
must leave ``shared`` as it found it (perturb and restore, or work on a
copy): the local engine hands every task the same object, and a Ray worker
reuses its copy for its next task (a copy whose task raised is dropped).

A progress bar (tqdm, when it is installed) counts finished evaluations on
the terminal, on stderr, when ``progress`` is true and stderr is a terminal
(:func:`micronet.progress.progress_bar`).

:func:`evaluate_setting` is the sensitivity-style evaluation: one layer's
weight replaced by a perturbed copy, top-1 and cross-entropy over the
batches, the weight restored bit for bit.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from micronet.errors import CompressionError, MicronetError, UsageError, first_line
from micronet.progress import progress_bar
from micronet.training.data import eval_mode, logits_of

__all__ = ["ENGINES", "RAY_INSTALL", "run_tasks", "check_sweep_options", "import_ray", "torch_threads",
           "progress_bar", "LayerSetting", "WeightSweep", "evaluate_setting", "describe_setting",
           "top1_and_loss"]

#: The engines a sweep can run on.
ENGINES = ("local", "ray")
#: What to install for ``engine = "ray"``.
RAY_INSTALL = "pip install 'micronet-toolkit[distributed]'"
_AUTH_MODE = "RAY_AUTH_MODE"
_ADDRESS = re.compile(r"(ray://)?[A-Za-z0-9._-]+:[0-9]{1,5}")

Batch = tuple[torch.Tensor, torch.Tensor]


# ------------------------------------------------------------------ options


def check_sweep_options(engine: Any = "local", address: Any = None, num_cpus: Any = None,
                        max_retries: Any = 3, threads: Any = 1) -> None:
    """Refuse, in one line (:class:`UsageError`), an engine not in
    :data:`ENGINES`, ``engine = "ray"`` without Ray installed, an address that
    is not ``"auto"``, ``"ray://HOST:PORT"`` or ``"HOST:PORT"``, ``address``
    or ``num_cpus`` with the local engine, ``num_cpus`` with an address (the
    cluster has its own), and counts that are not whole numbers (``num_cpus``
    and ``threads`` >= 1, ``max_retries`` >= 0)."""
    if engine not in ENGINES:
        raise UsageError(f"engine must be one of {', '.join(map(repr, ENGINES))}, got {engine!r}",
                         hint='engine = "ray" runs each evaluation as a Ray task')
    for name, value, least in (("num_cpus", num_cpus, 1), ("threads", threads, 1), ("max_retries", max_retries, 0)):
        whole = isinstance(value, int) and not isinstance(value, bool)
        if (value is not None or name == "max_retries") and not (whole and value >= least):
            raise UsageError(f"{name} must be a whole number >= {least}, got {value!r}")
    if engine == "local":
        for name, value in (("address", address), ("num_cpus", num_cpus)):
            if value is not None:
                raise UsageError(f"{name} is an option of the ray engine, got {name} = {value!r} with engine = 'local'",
                                 hint='set engine = "ray" or leave it out')
        return
    if address is not None:
        if not isinstance(address, str) or not (address == "auto" or _ADDRESS.fullmatch(address)):
            raise UsageError(f"address must be 'auto', 'ray://HOST:PORT' or 'HOST:PORT', got {address!r}",
                             hint="leave it out to start a local Ray on this machine")
        if num_cpus is not None:
            raise UsageError(f"num_cpus is for a local Ray, got num_cpus = {num_cpus!r} with address = {address!r}",
                             hint="a cluster joined by address has its own CPUs: leave num_cpus out")
    import_ray()


def import_ray():
    """The ``ray`` module, or a one-line :class:`UsageError` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise UsageError(f"engine = 'ray' needs Ray: {RAY_INSTALL}") from None
    return ray


# ------------------------------------------------------------------ engines


def run_tasks(evaluate: Callable[[Any, Any], Any], shared: Any, tasks: Sequence[Any], *, engine: str = "local",
              address: str | None = None, num_cpus: int | None = None, max_retries: int = 3, threads: int | None = 1,
              describe: Callable[[Any], str] = str, label: str = "sweep", progress: bool = False,
              on_start: Callable[[dict[str, Any]], None] | None = None) -> list:
    """``[evaluate(shared, task) for task in tasks]`` on ``engine`` (see the
    module docstring), in task order.

    ``address`` / ``num_cpus``: the Ray cluster to join, or the CPUs of the
    local Ray to start (default: all of this machine's). ``max_retries``:
    how many times Ray reruns a task whose worker died. ``threads``: torch
    threads per evaluation on both engines (``None``: leave each process's
    own setting; the engines' results may then differ in the last bits).
    ``describe(task)`` names a task in errors (``"conv2 at 4 bits"``) and
    ``label`` names the sweep in errors and on the progress bar.
    ``on_start``, when given, is called once before the first task with
    where the sweep runs: ``{"engine": "local", "threads": threads}``, or
    ``{"engine": "ray", "address": ..., "num_cpus": ...}`` with the address
    joined (``"local"`` for a Ray started here; the running Ray's GCS
    address when the caller had one open) and the CPUs of that Ray (all its
    nodes). Raises :class:`UsageError` for bad options, and the first failed
    task's error (one line, see the module docstring); returns nothing
    partial (and calls nothing for an empty ``tasks``)."""
    check_sweep_options(engine, address, num_cpus, max_retries, threads)
    tasks = list(tasks)
    if not tasks:
        return []
    with progress_bar(len(tasks), label, progress) as bar:
        if engine == "local":
            if on_start is not None:
                on_start({"engine": "local", "threads": threads})
            return _run_local(evaluate, shared, tasks, threads, describe, label, bar)
        ray = import_ray()
        with _ray_session(ray, address, num_cpus) as joined:
            if on_start is not None:
                on_start({"engine": "ray", "address": joined,
                          "num_cpus": int(ray.cluster_resources().get("CPU", 0))})
            return _run_ray(ray, evaluate, shared, tasks, max_retries, threads, describe, label, bar)


def _run_local(evaluate, shared, tasks, threads, describe, label, bar) -> list:
    rows = []
    with torch_threads(threads):
        for task in tasks:
            try:
                rows.append(evaluate(shared, task))
            except Exception as error:
                raise _failed(label, "local", describe(task), error) from error
            bar.update(1)
    return rows


@dataclass(frozen=True)
class _Plan:
    """What every task of one sweep reads besides ``shared``: put once."""
    evaluate: Callable[[Any, Any], Any]
    tasks: tuple
    threads: int | None


def _run_ray(ray, evaluate, shared, tasks, max_retries, threads, describe, label, bar) -> list:
    # Nested in a tuple, the two refs reach the worker unresolved: it gets them once (_held).
    refs = (ray.put(shared), ray.put(_Plan(evaluate, tuple(tasks), threads)))
    remote = ray.remote(_run_one).options(max_retries=max_retries, num_cpus=1)
    pending = [remote.remote(index, refs) for index in range(len(tasks))]
    index_of = {ref: index for index, ref in enumerate(pending)}
    rows: list = [None] * len(tasks)
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            if pending:  # every other finished one too, without waiting
                more, pending = ray.wait(pending, num_returns=len(pending), timeout=0)
                done += more
            for ref in done:
                index = index_of[ref]
                try:
                    rows[index] = ray.get(ref)
                except Exception as error:
                    raise _failed(label, "ray", describe(tasks[index]), _cause(error)) from error
                bar.update(1)
    finally:
        for ref in pending:
            ray.cancel(ref)
    return rows


#: Worker side only: the (shared, plan) of the sweep this Ray worker process
#: last ran a task of, by the two ObjectRefs' ids. Never set in the driver.
_HELD: dict[tuple[str, str], tuple[Any, _Plan]] = {}


def _run_one(index: int, refs: tuple) -> Any:
    """One Ray task: ``plan.evaluate(shared, plan.tasks[index])`` with the
    plan's torch threads, ``shared`` and ``plan`` fetched once per worker."""
    key = tuple(ref.hex() for ref in refs)
    if key not in _HELD:
        import ray

        _HELD.clear()
        _HELD[key] = tuple(ray.get(list(refs)))
    shared, plan = _HELD[key]
    try:
        with torch_threads(plan.threads):
            return plan.evaluate(shared, plan.tasks[index])
    except BaseException:
        _HELD.clear()  # evaluate may have left shared half changed
        raise


@contextlib.contextmanager
def _ray_session(ray, address: str | None, num_cpus: int | None) -> Iterator[str]:
    """Inside: a Ray connection, and the address it went to (``"local"`` for
    a Ray started here). One already open is used and left open (its GCS
    address); otherwise a local Ray is started (``address`` None) or the
    cluster at ``address`` is joined, and the connection is closed on
    leaving (which stops a local Ray, and only disconnects from a joined
    cluster)."""
    if ray.is_initialized():
        try:
            joined = ray.get_runtime_context().gcs_address
        except Exception:  # a Ray client connection may not say
            joined = "the Ray already connected"
        yield joined
        return
    options = {"address": "local", "num_cpus": num_cpus, "include_dashboard": False} if address is None \
        else {"address": address}
    auth_mode = os.environ.get(_AUTH_MODE)  # ray.init sets it for a local Ray it starts
    try:
        try:
            ray.init(**options, logging_level=logging.ERROR, log_to_driver=False)
        except Exception as error:
            where = f"the Ray cluster at {address!r}" if address else "a local Ray"
            raise UsageError(f"could not start or join {where}: {type(error).__name__}: {first_line(error)}",
                             hint="`ray status` on the head node says whether it runs; leave address out for "
                                  "a local Ray") from error
        try:
            yield address or "local"
        finally:
            ray.shutdown()
    finally:
        if auth_mode is None:
            os.environ.pop(_AUTH_MODE, None)
        else:
            os.environ[_AUTH_MODE] = auth_mode


def _cause(error: BaseException) -> BaseException:
    """The evaluation's own exception inside a Ray task error (else the error)."""
    cause = getattr(error, "cause", None)
    return cause if isinstance(cause, BaseException) else error


def _failed(label: str, engine: str, what: str, error: BaseException) -> MicronetError:
    """``{label} on {engine}: {what} failed: {Error}: {first line}``, of the
    error's own class when it is a MicronetError, else a CompressionError."""
    message = f"{label} on {engine}: {what} failed: {type(error).__name__}: {first_line(error)}"
    kind = type(error) if isinstance(error, MicronetError) else CompressionError
    try:
        return kind(message)
    except TypeError:  # a MicronetError subclass with its own signature
        return CompressionError(message)


# ------------------------------------------------------------------ helpers


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Inside: ``torch.set_num_threads(threads)`` (``None``: unchanged); the
    previous count is restored on leaving."""
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------- the sensitivity evaluation


@dataclass(frozen=True)
class LayerSetting:
    """One evaluation of a sensitivity sweep: module ``layer``'s weight
    (its parameter ``weight``) under setting ``kind`` at ``level`` (e.g.
    ``LayerSetting("conv2", "bits", 4)``)."""
    layer: str
    kind: str
    level: float
    weight: str = "weight"


@dataclass(frozen=True)
class WeightSweep:
    """What every :class:`LayerSetting` evaluation reads: the ``model``, the
    ``batches`` (inputs, labels) on its device and in its dtype, and
    ``perturb(weight, kind, level) -> tensor of the same shape``, a
    module-level function (e.g. :func:`micronet.plugins.sensitivity.perturbed`)."""
    model: nn.Module
    batches: tuple[Batch, ...]
    perturb: Callable[[torch.Tensor, str, float], torch.Tensor]


def top1_and_loss(model: nn.Module, batches: Sequence[Batch]) -> tuple[float, float]:
    """(top-1 in percent, mean cross-entropy in nats per example) of ``model``
    as it is over ``batches``, summed batch by batch in order."""
    correct, loss, total = 0, 0.0, 0
    for x, y in batches:
        logits = logits_of(model(x))
        correct += int((logits.argmax(dim=1) == y).sum())
        loss += float(F.cross_entropy(logits.float(), y, reduction="sum"))
        total += len(y)
    return 100.0 * correct / total, loss / total


def evaluate_setting(shared: WeightSweep, setting: LayerSetting) -> tuple[float, float]:
    """(top-1 in percent, mean cross-entropy in nats per example) of
    ``shared.model`` in eval mode, without gradients, over ``shared.batches``
    with ``setting.layer``'s weight replaced in place by ``shared.perturb(weight,
    setting.kind, setting.level)``; the weight and the training flags are
    restored bit for bit after, whatever happens."""
    weight = shared.model.get_submodule(setting.layer)._parameters[setting.weight]
    with eval_mode(shared.model), torch.no_grad():
        saved = weight.detach().clone()
        try:
            weight.copy_(shared.perturb(saved, setting.kind, setting.level))
            return top1_and_loss(shared.model, shared.batches)
        finally:
            weight.copy_(saved)


def describe_setting(setting: LayerSetting) -> str:
    """``conv2 at 4 bits``, ``conv2 at 50% sparsity``, ``conv2 at 8-bit input``,
    ``conv2 at 25% channels``; another kind as ``conv2 at KIND LEVEL``."""
    kind, level = setting.kind, setting.level
    words = {"bits": lambda: f"{level:g} bits", "sparsity": lambda: f"{100 * level:g}% sparsity",
             "act_bits": lambda: f"{level:g}-bit input", "channels": lambda: f"{100 * level:g}% channels"}
    return f"{setting.layer} at {words[kind]() if kind in words else f'{kind} {level}'}"
