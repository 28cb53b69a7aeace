"""Data-parallel plumbing: the process group ``torchrun`` asks for, and the few
collectives the trainer and the pipeline need.

``torchrun`` (``python -m torch.distributed.run``) starts one process per slot
and tells each who it is in environment variables: ``RANK`` (0 ..
``WORLD_SIZE - 1``, over all nodes), ``WORLD_SIZE``, ``LOCAL_RANK`` (its slot
on its node) and ``MASTER_ADDR`` / ``MASTER_PORT`` (where rank 0 listens).
:func:`launched` reads them; :func:`process_group` joins the group for the
length of a ``with`` block and leaves it after: gloo on a machine without
CUDA, else ``cpu:gloo,cuda:nccl`` (collectives on CUDA tensors go through
NCCL, those on CPU tensors through gloo) with the process's GPU set to
``cuda:LOCAL_RANK``. A world of one process (no torchrun, or
``--nproc_per_node 1`` on one node) is no group: everything runs as before.

Inside the group every process runs the same deterministic pipeline; what
differs is who does what: :func:`current` says which process this is (None
outside a group of two or more), :func:`on_main` runs a function on rank 0
alone and hands its value, or its exception, to every rank, and
:func:`first_failure` lets the ranks agree whether a step failed anywhere.

Failures. The ranks must meet at the same collectives in the same order,
so an error on one rank is made known at the next meeting point: every
rank hands in its error, or None, and when any rank failed every rank
raises (its own error, else :class:`PeerFailure`): :func:`together`,
:func:`sum_across` with ``failed``, :func:`on_main`. An error raised on
every rank alike is marked :data:`AGREED` (by :func:`agreed`); one that rank
0 reports for all (it holds the failing rank's message) is also marked
:data:`REPORTED` (by :func:`reported`), so the other ranks need not print
it: a step's failure (:func:`first_failure`), an error of :func:`on_main`,
of :func:`all_or_none` (reading the recipe, claiming ``--out``). An error
where no meeting can follow (one rank failing inside a data-parallel
backward pass, while the others wait in its all-reduce) becomes
:class:`RanksOutOfStep`: it ends the run on that rank, whose exit makes
torchrun stop the others (an NCCL rank waiting on a dead peer ends at the
process group's timeout).

The loaders of a rank (:func:`shard_loaders`) draw the batches one process
would draw and yield this rank's share of each (:class:`RankBatches`).

Nothing here imports more than the standard library at import time:
``import micronet`` does not pay for it.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence, TypeVar

from ..errors import MicronetError, UsageError

__all__ = ["World", "Failure", "PeerFailure", "RanksOutOfStep", "launched", "process_group", "current",
           "is_main", "on_main", "agreed", "reported", "together", "all_or_none", "first_failure",
           "sum_across", "broadcast_state", "share_random_state", "RankBatches", "shard_loaders", "AGREED",
           "REPORTED"]

T = TypeVar("T")

#: The attribute set (to True) on an exception every rank raised alike, at
#: the same meeting point: the ranks are still in step.
AGREED = "micronet_agreed"
#: The attribute set (to True) on an exception rank 0 reports for every rank
#: (it holds the failing rank's message): the other ranks need not print it.
REPORTED = "micronet_reported"

#: The environment variables torchrun sets for each process.
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
_LAUNCH_HINT = ("start it with torchrun, e.g. torchrun --standalone --nproc_per_node 2 -m micronet "
                "compress recipe.toml --out results/")


@dataclass(frozen=True)
class World:
    """Who this process is among ``size`` processes: ``rank`` (0 .. size - 1,
    over all nodes) and ``local_rank`` (its slot on its node: the GPU it uses)."""

    rank: int
    size: int
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the process that reads checkpoints, evaluates, prints and writes."""
        return self.rank == 0

    def __str__(self) -> str:
        return f"rank {self.rank} of {self.size}"


@dataclass(frozen=True)
class Failure:
    """A step's failure as the ranks agreed on it: the lowest failing
    ``rank``, its ``message`` (``"Type: text"``), whether it was a
    UsageError (exit 2) and ``everywhere`` (every rank failed with that message)."""

    rank: int
    message: str
    usage: bool
    everywhere: bool


class PeerFailure(MicronetError):
    """Raised on the ranks that did not fail when a meeting point learns that
    another rank failed (that rank raises its own error)."""


class RanksOutOfStep(MicronetError):
    """This rank failed where the other ranks cannot learn it (they wait in a
    collective it will not join): the run cannot go on, the process must end
    (torchrun then stops the others)."""


def launched(environ: Mapping[str, str] | None = None) -> World | None:
    """The world torchrun describes in ``environ`` (default ``os.environ``);
    None when it names none (no ``WORLD_SIZE``) or a world of one process.

    :raises UsageError: a variable that is not a whole number, a rank
        outside ``0 .. WORLD_SIZE - 1``, or ``WORLD_SIZE`` without ``RANK``.
    """
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env:
        return None
    values = {}
    for name in TORCHRUN_VARIABLES:
        text = env.get(name, "0" if name == "LOCAL_RANK" else None)
        if text is None:
            raise UsageError(f"WORLD_SIZE={env['WORLD_SIZE']} is set but {name} is not", hint=_LAUNCH_HINT)
        try:
            values[name] = int(text)
        except ValueError:
            raise UsageError(f"{name}={text!r} is not a whole number", hint=_LAUNCH_HINT) from None
    rank, size, local = values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"]
    if size < 1 or not 0 <= rank < size or local < 0:
        raise UsageError(f"RANK={rank} WORLD_SIZE={size} LOCAL_RANK={local} do not describe a process "
                         "group (0 <= RANK < WORLD_SIZE, LOCAL_RANK >= 0)", hint=_LAUNCH_HINT)
    return World(rank, size, local) if size > 1 else None


@contextmanager
def process_group(world: World | None, *, timeout_s: float | None = None) -> Iterator[World | None]:
    """Join the process group of ``world`` for the ``with`` block, leave it after.

    ``world`` None: nothing happens (yields None). A group some caller has
    already initialised is used as it is and left alone. Otherwise the
    backend is ``gloo`` without CUDA, ``cpu:gloo,cuda:nccl`` with it (and
    the current CUDA device becomes ``cuda:LOCAL_RANK`` when the node has
    that many GPUs); ``MASTER_ADDR`` and ``MASTER_PORT`` come from the
    environment (torchrun sets them). ``timeout_s``: how long a collective
    waits for a missing rank (None: torch's default, 30 min for gloo and
    10 min for NCCL).

    :raises MicronetError: when the group cannot be joined (a missing
        ``MASTER_ADDR``, an unreachable rank 0).
    """
    if world is None:
        yield None
        return
    import torch
    import torch.distributed as dist

    if not dist.is_available():
        raise MicronetError("this torch has no torch.distributed: it cannot run on several processes",
                            hint="install a torch build with distributed support, or run one process")
    if dist.is_initialized():
        yield current()
        return
    cuda = torch.cuda.is_available()
    if cuda and world.local_rank < torch.cuda.device_count():
        torch.cuda.set_device(world.local_rank)
    from datetime import timedelta

    options: dict[str, Any] = {"timeout": timedelta(seconds=timeout_s)} if timeout_s else {}
    try:
        dist.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo", init_method="env://",
                                rank=world.rank, world_size=world.size, **options)
    except (RuntimeError, ValueError) as error:
        raise MicronetError(f"{world}: cannot join the process group at "
                            f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}: "
                            f"{type(error).__name__}: {error}", hint=_LAUNCH_HINT) from error
    try:
        yield world
    except RanksOutOfStep:
        raise  # the others wait in a collective this rank left: the process's exit ends the group
    except BaseException:
        dist.destroy_process_group()
        raise
    dist.destroy_process_group()


def current() -> World | None:
    """This process's place in the initialised process group; None outside one
    or in a group of one process."""
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized() or dist.get_world_size() < 2:
        return None
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0") or 0))


def is_main() -> bool:
    """Whether this process is rank 0 (also when there is no group)."""
    world = current()
    return world is None or world.main


def on_main(work: Callable[[], T]) -> T:
    """``work()`` on rank 0 only; every rank returns its value (which must
    pickle) or raises its exception, marked :data:`AGREED` and
    :data:`REPORTED`. Without a group it is just ``work()``."""
    if current() is None:
        return work()
    import torch.distributed as dist

    box: list[Any] = [None]
    if dist.get_rank() == 0:
        try:
            box[0] = ("value", work())
        except Exception as error:
            reported(error)
            box[0] = ("error", _portable(error))
            dist.broadcast_object_list(box, src=0)
            raise
    dist.broadcast_object_list(box, src=0)
    kind, value = box[0]
    if kind == "error":
        raise reported(value)
    return value


def _portable(error: BaseException) -> BaseException:
    """``error`` when it pickles and unpickles, else a MicronetError with its text."""
    import pickle

    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        stand_in = MicronetError(f"{type(error).__name__}: {error}")
        stand_in.exit_code = getattr(error, "exit_code", 1)
        return stand_in


def agreed(error: BaseException) -> BaseException:
    """``error``, marked :data:`AGREED`: every rank raises it alike."""
    setattr(error, AGREED, True)
    return error


def reported(error: BaseException) -> BaseException:
    """``error``, marked :data:`AGREED` and :data:`REPORTED`: rank 0 reports it."""
    setattr(error, REPORTED, True)
    return agreed(error)


@contextmanager
def all_or_none() -> Iterator[None]:
    """A block every rank runs before the others depend on it (reading the
    recipe, claiming ``--out``): when it fails on any rank, every rank raises
    when it ends, :data:`REPORTED`: rank 0 its own error, else one naming the
    lowest failing rank and its message; the others their own, or
    :class:`PeerFailure`. Without a group: the block as it is."""
    if current() is None:
        yield
        return
    failed = None
    try:
        yield
    except Exception as error:
        failed = error
    found = first_failure(failed)
    if found is None:
        return
    if failed is None and is_main():
        failed = MicronetError(f"rank {found.rank} of {current().size}: {found.message}")
        failed.exit_code = UsageError.exit_code if found.usage else MicronetError.exit_code
    raise reported(failed if failed is not None else PeerFailure(f"rank {found.rank} failed: {found.message}"))


def first_failure(error: BaseException | None) -> Failure | None:
    """Agree on a step's outcome: every rank hands in its own error (None when
    the step ran), every rank gets the failure of the lowest failing rank
    (None when none failed); a :class:`PeerFailure` counts only when no
    rank has an error of its own. Without a group: this process's error,
    if any. A :class:`RanksOutOfStep` is raised at once: the others are not
    here to meet."""
    if isinstance(error, RanksOutOfStep):
        raise error
    mine = None if error is None else (f"{type(error).__name__}: {error}", isinstance(error, UsageError),
                                       isinstance(error, PeerFailure))
    world = current()
    if world is None:
        return None if mine is None else Failure(0, mine[0], mine[1], True)
    import torch.distributed as dist

    everyone: list[Any] = [None] * world.size
    dist.all_gather_object(everyone, mine)
    failed = sorted((found[2], rank, found) for rank, found in enumerate(everyone) if found is not None)
    if not failed:
        return None
    _, rank, (message, usage, _) = failed[0]
    return Failure(rank, message, usage, all(found is not None and found[0] == message for found in everyone))


def together(failed: BaseException | None) -> None:
    """A meeting point: raise on every rank when any rank hands in an error
    (this rank's own, else :class:`PeerFailure`; both :data:`AGREED`).
    Without a group: raise ``failed``, if any."""
    sum_across([], failed=failed)


def sum_across(values: list[float], device: Any = "cpu", *, failed: BaseException | None = None) -> list[float]:
    """The element-wise sum of ``values`` over every rank (float64 on
    ``device``: the CPU under gloo, the process's GPU under NCCL), and a
    meeting point: when some rank hands in ``failed``, every rank raises
    (see :func:`together`). Without a group: ``values``, or ``failed`` raised."""
    if current() is None:
        if failed is not None:
            raise failed
        return list(values)
    import torch
    import torch.distributed as dist

    tensor = torch.tensor([*values, float(failed is not None)], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    *sums, failures = tensor.tolist()
    if failed is not None:
        raise agreed(failed)
    if failures:
        raise reported(PeerFailure(f"{int(failures)} other rank(s) failed; {current()} stops with them"))
    return sums


def broadcast_state(module: Any) -> None:
    """Give every rank rank 0's parameters and buffers (in place; on the
    module's device). Nothing without a group."""
    if current() is None:
        return
    import torch
    import torch.distributed as dist

    with torch.no_grad():
        for tensor in module.state_dict(keep_vars=True).values():
            if not isinstance(tensor, torch.Tensor) or tensor.is_meta:
                continue
            if tensor.is_contiguous():
                dist.broadcast(tensor.data, src=0)
            else:  # collectives take contiguous tensors
                copy = tensor.detach().contiguous()
                dist.broadcast(copy, src=0)
                tensor.data.copy_(copy)


def share_random_state() -> None:
    """Give every rank rank 0's global random state (the CPU generator's,
    and the current CUDA device's when there is one), so that what they
    draw from now on (a random initialisation, dropout, a random choice in
    a step) is the same everywhere. Nothing without a group."""
    if current() is None:
        return
    import torch

    cuda = torch.cuda.is_available()
    cpu_state, cuda_state = on_main(lambda: (torch.get_rng_state(), torch.cuda.get_rng_state() if cuda else None))
    torch.set_rng_state(cpu_state)
    if cuda and cuda_state is not None:
        torch.cuda.set_rng_state(cuda_state)


# ------------------------------------------------------------------ this rank's share of the data


class RankBatches:
    """A batch sampler: rank ``rank``'s share of each global batch of
    ``batches`` (a ``torch.utils.data.BatchSampler`` over the whole dataset,
    drawing the same batches on every rank).

    A global batch of ``m`` examples is cut into ``world_size`` contiguous
    shares whose sizes differ by at most one (the first ``m mod world_size``
    ranks get one more): the shares of all ranks are the global batch.
    ``train``: a last global batch smaller than the others and than
    ``2 * world_size`` (it would leave some process fewer than two examples;
    BatchNorm cannot train on one) is skipped on every rank, so all ranks
    run the same number of steps (for one process: a lone last example is
    skipped, as ``loaders`` does). Otherwise (evaluation) every example is
    kept and an empty share is left out. ``limit``: the first ``limit``
    global batches only (None: all).
    """

    def __init__(self, batches: Any, rank: int, world_size: int, *, train: bool, limit: int | None = None):
        if not 0 <= rank < world_size:
            raise UsageError(f"rank {rank} is not in a world of {world_size} processes")
        self.batches, self.rank, self.world_size, self.train, self.limit = batches, rank, world_size, train, limit

    def share(self, batch: Sequence[int]) -> Sequence[int]:
        """This rank's contiguous share of one global batch."""
        base, extra = divmod(len(batch), self.world_size)
        start = self.rank * base + min(self.rank, extra)
        return batch[start:start + base + (self.rank < extra)]

    def _kept(self, size: int) -> bool:
        if self.train:
            return size >= self.batches.batch_size or size >= 2 * self.world_size
        return len(self.share(range(size))) > 0

    def __iter__(self) -> Iterator[list[int]]:
        for number, batch in enumerate(self.batches):
            if self.limit is not None and number >= self.limit:
                break
            if self._kept(len(batch)):
                yield list(self.share(batch))

    def __len__(self) -> int:
        total, size = len(self.batches.sampler), self.batches.batch_size
        sizes = [size] * (total // size) + ([total % size] if total % size else [])
        return sum(self._kept(m) for m in sizes[:self.limit])


def shard_loaders(train: Any, test: Any, rank: int, world_size: int, *, batch_size: int, seed: int = 0,
                  test_batches: int | None = None, **loader: Any) -> tuple[Any, Any]:
    """(train, test) DataLoaders of rank ``rank`` for two datasets, ``batch_size``
    being the global batch.

    The train loader draws its global batches exactly as
    ``DataLoader(train, shuffle=True, batch_size=batch_size,
    generator=torch.Generator().manual_seed(seed))`` does (the same sampler
    on the same generator, which ``loader.generator`` is, so a checkpoint
    of it resumes under any number of processes) and yields this rank's
    share (:class:`RankBatches`); the test loader does so for the test
    split in order, stopping after ``test_batches`` global batches. Other
    keyword arguments go to both DataLoaders (``num_workers``, ...).

    :raises UsageError: ``batch_size < 2 * world_size`` (every process needs
        at least two examples of each batch).
    """
    import torch
    from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler

    if batch_size < 2 * world_size:
        raise UsageError(f"batch_size {batch_size} is the global batch, split over {world_size} processes: "
                         "each needs at least two examples", hint=f"give batch_size >= {2 * world_size}")
    generator = torch.Generator().manual_seed(seed)
    order = BatchSampler(RandomSampler(train, generator=generator), batch_size, drop_last=False)
    in_order = BatchSampler(SequentialSampler(test), batch_size, drop_last=False)
    return (DataLoader(train, batch_sampler=RankBatches(order, rank, world_size, train=True), generator=generator,
                       **loader),
            DataLoader(test, batch_sampler=RankBatches(in_order, rank, world_size, train=False, limit=test_batches),
                       generator=torch.Generator().manual_seed(seed), **loader))
