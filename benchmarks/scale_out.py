"""A sensitivity sweep of a CIFAR-sized model: the local engine against Ray.

Run by hand (never by the tests; needs the ``distributed`` extra)::

    .venv/bin/python benchmarks/scale_out.py                 # resnet18_cifar, 21 layers x 3 bits (~3 min on 2 cores)
    .venv/bin/python benchmarks/scale_out.py --quick         # 8 layers x 2 bits, 1 batch (~1 min)
    .venv/bin/python benchmarks/scale_out.py --wait-idle 120     # wait for idle CPUs before each run
    .venv/bin/python benchmarks/scale_out.py --model "micronet:densenet_cifar?growth_rate=12" --workers 2

The sweep: every Conv/Linear layer of the model (``--model``, default
``micronet:resnet18_cifar``, 11.2M parameters) x each weight bits of
``--bits`` (default 8, 4, 2), each evaluation the weight fake-quantized
(:func:`micronet.plugins.sensitivity.perturbed`) and top-1 / cross-entropy
over ``--batches`` batches of ``--batch-size`` CIFAR-shaped inputs
(3x32x32 standard-normal, seeded, random labels: the timings do not depend
on the values), by :func:`micronet.sweep.evaluate_setting`, the weight
restored after.

Timed, each with ``time.perf_counter`` around :func:`micronet.sweep.run_tasks`:

1. ``local, 1 thread``: the local engine, one evaluation at a time, torch
   pinned to 1 thread (the sweep's default: what makes it bit-identical to Ray);
2. ``local, N threads``: the local engine with torch's own thread count
   (``threads=None``; N = ``torch.get_num_threads()``, the machine's cores);
3. ``ray, W workers``: ``--workers`` Ray workers of 1 CPU each, each
   evaluation pinned to 1 thread, on a local Ray started before the clock
   (``ray.init(num_cpus=W)``) with its workers warmed by a first small sweep
   (a running cluster's steady state);
4. ``ray, cold``: the same sweep on a Ray that ``run_tasks`` starts and shuts
   down itself (``engine="ray", num_cpus=W``): start-up, worker imports and
   shut-down included.

With ``--wait-idle``, each run waits for the cores to be 90% idle first
(what else runs on the machine takes cores from the workers: on a loaded
2-core machine two workers cannot run at twice the speed). Printed: each
time, the evaluations per second, the speed-up of 3 and 4 over 1 and over
2, whether Ray's rows equal the local engine's (they must: same
threads, same order), the bytes each task is sent (its index and two
ObjectRefs, pickled) and the bytes shared once (model and batches), then the
goal line: ray (warm) >= 1.6x the 1-thread local engine.

``--ddp``: then data-parallel training, one process against two under
``torchrun`` (gloo on CPU): the same ``finetune`` recipe of ``--ddp-model``
(default ``micronet:resnet18_cifar``) on the ``fake`` CIFAR-shaped problem,
``--ddp-batches`` batches of the global batch ``--ddp-batch-size`` per epoch,
2 epochs; the time per epoch is the step's own wall time (``history.json``)
divided by its epochs, so process start-up and the audits are left out.
Each process of the pair runs torch at ``cores / 2`` threads (torchrun's
``OMP_NUM_THREADS=1`` default is overridden so both runs use every core).
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from audit_speed import cpu_idle  # benchmarks/ is the script's folder: on sys.path
from micronet.plugins.sensitivity import perturbed
from micronet.resolve import resolve_model
from micronet.sweep import LayerSetting, WeightSweep, evaluate_setting, run_tasks

GOAL = 1.6


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="micronet:resnet18_cifar", help="a model spec (10 classes, 3x32x32)")
    parser.add_argument("--bits", default="8,4,2", help="weight bits to try per layer, comma-separated")
    parser.add_argument("--batches", type=int, default=2, help="batches per evaluation")
    parser.add_argument("--batch-size", type=int, default=32, help="inputs per batch")
    parser.add_argument("--workers", type=int, default=2, help="Ray workers (CPUs of the local Ray)")
    parser.add_argument("--layers", type=int, default=None, help="only the first N weighted layers")
    parser.add_argument("--quick", action="store_true", help="8 layers x bits 8,2, 1 batch")
    parser.add_argument("--skip-cold", action="store_true", help="leave out the cold Ray run")
    parser.add_argument("--ddp", action="store_true", help="also time DDP training: 1 process against 2")
    parser.add_argument("--ddp-only", action="store_true", help="only the DDP timing (no Ray needed)")
    parser.add_argument("--ddp-model", default="micronet:resnet18_cifar", help="model the DDP timing trains")
    parser.add_argument("--ddp-batches", type=int, default=8, help="batches per epoch of the DDP timing")
    parser.add_argument("--ddp-batch-size", type=int, default=64, help="global batch of the DDP timing")
    parser.add_argument("--wait-idle", type=float, default=0, metavar="SECONDS",
                        help="before each timed run, wait up to SECONDS for the CPUs to be 90%% idle")
    args = parser.parse_args(argv)
    if args.quick:
        args.layers, args.bits, args.batches = args.layers or 8, "8,2", 1
    return args


def sweep(args: argparse.Namespace) -> tuple[WeightSweep, list[LayerSetting]]:
    """The model, its fake CIFAR batches, and its layers x bits."""
    model = resolve_model(args.model, meta=False).model.eval()
    generator = torch.Generator().manual_seed(0)
    loaded = tuple((torch.randn(args.batch_size, 3, 32, 32, generator=generator),
                    torch.randint(10, (args.batch_size,), generator=generator)) for _ in range(args.batches))
    layers = [name for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))][:args.layers]
    bits = [int(b) for b in args.bits.split(",")]
    return WeightSweep(model, loaded, perturbed), [LayerSetting(n, "bits", b) for n in layers for b in bits]


def idle_cores(seconds: float = 1.0) -> float:
    """How many cores were idle over the next ``seconds`` (audit_speed's /proc/stat reading)."""
    return (os.cpu_count() or 1) * (cpu_idle(seconds) or 0.0)


def wait_for_idle(wait_idle: float) -> float:
    """Up to ``wait_idle`` seconds for 90% of the cores to be idle; the idle cores seen last."""
    deadline, idle = time.monotonic() + wait_idle, idle_cores()
    while idle < 0.9 * (os.cpu_count() or 1) and time.monotonic() < deadline:
        idle = idle_cores()
    return idle


def timed(label: str, run, wait_idle: float = 0) -> tuple[float, list]:
    """Seconds of ``run()`` and its result; first, up to ``wait_idle`` seconds
    for 90% of the cores to be idle. Prints the idle cores seen before."""
    idle = wait_for_idle(wait_idle)
    started = time.perf_counter()
    rows = run()
    seconds = time.perf_counter() - started
    print(f"  {label:<34} {seconds:8.2f} s   ({idle:.1f} of {os.cpu_count()} cores idle before)", flush=True)
    return seconds, rows


DDP_EPOCHS = 2


def ddp_epoch_seconds(args: argparse.Namespace, processes: int, folder: Path) -> float:
    """Seconds per epoch of the ``finetune`` step run by ``processes`` processes
    (``torchrun --standalone`` when more than one), from its ``history.json``."""
    recipe = folder / f"ddp{processes}.toml"
    recipe.write_text(f'[model]\nspec = "{args.ddp_model}"\n[data]\ndataset = "fake"\n'
                      f'batch_size = {args.ddp_batch_size}\n[[step]]\nuse = "finetune"\n'
                      f'epochs = {DDP_EPOCHS}\nmax_batches = {args.ddp_batches}\n')
    out = folder / f"run{processes}"
    command = [sys.executable, "-m", "micronet", "compress", str(recipe), "--out", str(out), "--quiet"]
    env = dict(os.environ)
    cores = os.cpu_count() or 1
    if processes > 1:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   f"--nproc_per_node={processes}", "-m"] + command[2:]
        env["OMP_NUM_THREADS"] = str(max(1, cores // processes))
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    entries = json.loads((out / "history.json").read_text())
    step = entries[1]["step"]
    assert step["notes"]["world_size"] == processes, step["notes"]
    return step["seconds"] / DDP_EPOCHS


def ddp(args: argparse.Namespace) -> None:
    """Print DDP's time per epoch, 1 process against 2."""
    with tempfile.TemporaryDirectory(prefix="micronet-ddp-") as scratch:
        wait_for_idle(args.wait_idle)
        one = ddp_epoch_seconds(args, 1, Path(scratch))
        wait_for_idle(args.wait_idle)
        two = ddp_epoch_seconds(args, 2, Path(scratch))
    images = args.ddp_batches * args.ddp_batch_size
    print(f"DDP, {args.ddp_model} on fake 3x32x32, {images} images per epoch (global batch "
          f"{args.ddp_batch_size}): 1 process {one:.2f} s per epoch, 2 processes (gloo) {two:.2f} s per epoch: "
          f"{one / two:.2f}x")


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.ddp_only:
        ddp(args)
        return 0
    import ray

    shared, tasks = sweep(args)
    cores = torch.get_num_threads()
    model_mb = sum(t.numel() * t.element_size() for t in shared.model.state_dict().values()) / 2**20
    batch_mb = sum(x.numel() * x.element_size() + y.numel() * y.element_size() for x, y in shared.batches) / 2**20
    print(f"{args.model}: {len(tasks)} evaluations ({len(tasks) // len(args.bits.split(','))} layers x bits "
          f"{args.bits}), {args.batches} x {args.batch_size} inputs each; torch {torch.__version__}, "
          f"{cores} threads by default; Ray {ray.__version__}, {args.workers} workers")
    print("load average (1 min) before: %.2f" % os.getloadavg()[0])
    print(f"shared once: model {model_mb:.1f} MiB + batches {batch_mb:.2f} MiB "
          f"(pickled {len(pickle.dumps(shared)) / 2**20:.1f} MiB)")

    wait = args.wait_idle
    local1, rows1 = timed("local, 1 thread", lambda: run_tasks(evaluate_setting, shared, tasks), wait)
    localn, _ = timed(f"local, {cores} threads (torch default)",
                      lambda: run_tasks(evaluate_setting, shared, tasks, threads=None), wait)

    ray.init(address="local", num_cpus=args.workers, include_dashboard=False, logging_level="ERROR",
             log_to_driver=False)
    try:
        run_tasks(evaluate_setting, shared, tasks[:args.workers], engine="ray")  # start and warm the workers
        refs = (ray.put(shared), ray.put(tuple(tasks)))
        sent = len(ray.cloudpickle.dumps((len(tasks) - 1, refs)))
        warm, rows_ray = timed(f"ray, {args.workers} workers (warm)",
                               lambda: run_tasks(evaluate_setting, shared, tasks, engine="ray"), wait)
    finally:
        ray.shutdown()
    cold = None
    if not args.skip_cold:
        cold, _ = timed(f"ray, {args.workers} workers (cold)",
                        lambda: run_tasks(evaluate_setting, shared, tasks, engine="ray", num_cpus=args.workers),
                        wait)

    print("load average (1 min) after: %.2f" % os.getloadavg()[0])
    print(f"per task: {sent} bytes sent (a task index and two ObjectRefs, pickled)")
    print(f"evaluations per second: local 1 thread {len(tasks) / local1:.2f}, local {cores} threads "
          f"{len(tasks) / localn:.2f}, ray warm {len(tasks) / warm:.2f}")
    print(f"speed-up of ray (warm) over local 1 thread: {local1 / warm:.2f}x; over local {cores} threads: "
          f"{localn / warm:.2f}x")
    if cold is not None:
        print(f"speed-up of ray (cold: start-up and shut-down included) over local 1 thread: {local1 / cold:.2f}x; "
              f"over local {cores} threads: {localn / cold:.2f}x")
    same = rows_ray == rows1
    print(f"ray's rows equal the local engine's (1 thread): {'yes' if same else 'NO'}")
    ok = local1 / warm >= GOAL and same
    if args.ddp:
        ddp(args)
    print(f"{'PASS' if ok else 'FAIL'}: ray with {args.workers} workers >= {GOAL}x the 1-thread local engine "
          f"({local1 / warm:.2f}x), identical rows")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
