"""How fast and how lean is ``micronet.audit`` next to the field's FLOP counters?

Run by hand (see benchmarks/README.md)::

    .venv/bin/python benchmarks/audit_speed.py                 # whole torchvision zoo
    .venv/bin/python benchmarks/audit_speed.py --quick         # 16 representative models
    .venv/bin/python benchmarks/audit_speed.py --models resnet18,vit_b_16 --repeat 5

Parts (each prints as it finishes; a PASS/FAIL summary closes the run):

1. zoo: per model, bare ``torch.fx.symbolic_trace`` versus ``micronet.audit`` versus
   thop, fvcore, ptflops and ``torch.utils.flop_counter.FlopCounterMode``.
2. input size: resnet50 and densenet121 at 1024x1024, micronet versus thop.
3. huge models (> 1e9 parameters, built on the meta device): audit time and peak memory,
   measured in a fresh subprocess so that nothing earlier pollutes the peak.
4. what-if: a 10 x 10 grid of bits x sparsity re-scored on densenet121's result.
5. peak memory of auditing densenet121 (real tensors) versus thop, each in a fresh
   subprocess.

Timing protocol: ``time.perf_counter``; ``gc.collect()`` before every run; best of
``--repeat`` runs, except that a measurement stops repeating once its runs have taken
``--budget`` seconds (so the 100+ GFLOP models do not take an hour); torch's thread
count is left at its default. In parts 1 and 2 the tools run round-robin (trace,
micronet, thop, fvcore, ptflops, FlopCounterMode, then again), so that load from other
processes on a shared machine hits every tool alike; ``--wait-idle`` also waits for
idle CPUs before each model. The plugin registry is warmed once per process by one
audit call (``micronet.audit.default_registries()`` is cached per process); no trace
or result is cached between timed runs. Models are built once each, in eval mode, on
the CPU. Weights are torchvision's default initialisation (real tensors, no file
download); ``--pretrained`` loads the published weights when they are in the torch
hub cache. Timings do not depend on the weights' values.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import io
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import tracemalloc
import traceback
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torchvision

QUICK = ("resnet18", "resnet50", "densenet121", "mobilenet_v2", "efficientnet_b0", "vit_b_16",
         "swin_t", "convnext_tiny", "regnet_y_400mf", "inception_v3", "googlenet", "squeezenet1_0",
         "shufflenet_v2_x1_0", "mnasnet1_0", "alexnet", "vgg11")
#: Models whose forward needs another input size than 224.
INPUT_SIZE = {"inception_v3": 299}
PEERS = ("thop", "fvcore", "ptflops", "fcm")
PEER_TITLES = {"thop": "thop", "fvcore": "fvcore", "ptflops": "ptflops", "fcm": "FlopCounterMode"}
GIB = 2 ** 30
MIB = 2 ** 20
CHILD_MARK = "@@child-result "

# Goals (see README).
GOAL_TRACE_RATIO = 1.3       # (1a) median audit / symbolic_trace at most this (issue 14; was 2)
GOAL_THOP_SPEEDUP = 1.0      # (1b) median thop / audit above this
GOAL_PEER_SPEEDUP = 3.0      # (1c) median fvcore, ptflops, FlopCounterMode / audit at least this
GOAL_BIG_INPUT_SPEEDUP = 20  # (2) thop / audit at 1024x1024 at least this
GOAL_HUGE_SECONDS = 2.0      # (3) audit of a > 1e9-parameter model below this
GOAL_HUGE_MEMORY = GIB       # (3) its peak RSS increase below this
GOAL_WHATIF_SECONDS = 0.1    # (4) a 100-cell what-if grid below this


# ----------------------------------------------------------------- measuring


def best_time(fn: Callable[[], Any], repeat: int, budget: float,
              setup: Callable[[], Any] | None = None) -> tuple[float, Any, int]:
    """Best wall time of ``fn(setup())`` in seconds, its last return value, the run count.

    ``setup`` (not timed) makes a fresh argument for each run. Repeats stop early once
    the timed runs add up to ``budget`` seconds; there is always at least one run.
    """
    best, value, spent, runs = float("inf"), None, 0.0, 0
    for _ in range(max(repeat, 1)):
        arg = setup() if setup is not None else None
        gc.collect()
        start = time.perf_counter()
        value = fn(arg) if setup is not None else fn()
        elapsed = time.perf_counter() - start
        best, spent, runs = min(best, elapsed), spent + elapsed, runs + 1
        del arg
        if spent >= budget:
            break
    return best, value, runs


@dataclass
class Job:
    """One tool to time: ``fn()``, or ``fn(setup())`` with an untimed fresh argument."""

    key: str
    fn: Callable[..., Any]
    setup: Callable[[], Any] | None = None


def interleaved(jobs: list[Job], repeat: int, budget: float, verbose: bool = False):
    """Time ``jobs`` round-robin: best seconds, first return value and error per key.

    Round r runs every job once, so a burst of load from other processes hits all tools
    alike instead of one tool's consecutive repeats. A job stops after its first error
    or once its runs add up to ``budget`` seconds; ``gc.collect()`` precedes every run.
    """
    best: dict[str, float] = {}
    spent: dict[str, float] = {job.key: 0.0 for job in jobs}
    values: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for round_ in range(max(repeat, 1)):
        for job in jobs:
            if job.key in errors or (round_ and spent[job.key] >= budget):
                continue
            try:
                arg = job.setup() if job.setup is not None else None
                gc.collect()
                start = time.perf_counter()
                value = job.fn(arg) if job.setup is not None else job.fn()
                elapsed = time.perf_counter() - start
            except Exception as error:
                errors[job.key] = short(error)
                if verbose:
                    traceback.print_exc()
                continue
            best[job.key] = min(best.get(job.key, float("inf")), elapsed)
            spent[job.key] += elapsed
            values.setdefault(job.key, value)
            del arg, value
    return best, values, errors


@contextlib.contextmanager
def quiet():
    """Silence the peers' prints and warnings (and micronet's UncountedWarning)."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM, and ru_maxrss with it) to the current RSS."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def hwm_bytes() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def peak_memory(fn: Callable[[], Any]) -> dict[str, Any]:
    """Peak memory of one call of ``fn`` (run it in a process that did little before).

    ``rss_increase``: peak RSS during the call minus RSS just before (kernel high-water
    mark, reset first through /proc/self/clear_refs). ``maxrss_increase``: the increase of
    ``getrusage().ru_maxrss`` across the call (equal to the former when the reset works,
    a lower bound otherwise). ``tracemalloc_peak``: Python allocations only, from a second
    call under tracemalloc (tensor storage is not a Python allocation).
    """
    gc.collect()
    reset = reset_peak()
    rss0, max0 = rss_bytes(), maxrss_bytes()
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    max1, hwm = maxrss_bytes(), hwm_bytes()
    gc.collect()
    tracemalloc.start()
    fn()
    traced_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {
        "seconds_first": seconds,
        "rss_before": rss0,
        "rss_increase": (hwm - rss0) if (reset and hwm is not None) else None,
        "maxrss_increase": max1 - max0,
        "tracemalloc_peak": traced_peak,
        "peak_reset": reset,
    }


def peak_increase(mem: dict[str, Any]) -> int:
    """The best available peak-RSS increase (bytes)."""
    return mem["rss_increase"] if mem["rss_increase"] is not None else mem["maxrss_increase"]


def cpu_idle(seconds: float = 0.5) -> float | None:
    """Fraction of all CPUs idle over ``seconds`` (from /proc/stat), None where unreadable."""
    def sample():
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        return fields[3] + fields[4], sum(fields)  # idle + iowait, total
    try:
        idle0, total0 = sample()
        time.sleep(seconds)
        idle1, total1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return (idle1 - idle0) / max(total1 - total0, 1)


def wait_quiet(max_wait: float, threshold: float = 0.9) -> bool:
    """Wait up to ``max_wait`` s for the CPUs to be idle; True when they are (or unknown)."""
    deadline = time.monotonic() + max_wait
    while True:
        idle = cpu_idle()
        if idle is None or idle >= threshold:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(2.0)


def median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


# ----------------------------------------------------------------- building and running


def build(name: str, pretrained: bool) -> torch.nn.Module:
    """A torchvision model in eval mode on the CPU (default init unless --pretrained)."""
    weights = None
    if pretrained:
        weights = "DEFAULT"
        try:
            with quiet():
                return torchvision.models.get_model(name, weights=weights).eval()
        except Exception as error:  # no network: fall back to the default init
            print(f"  ({name}: pretrained weights unavailable, {type(error).__name__}; default init)")
    with quiet():
        return torchvision.models.get_model(name, weights=None).eval()


def preload_peers() -> None:
    """Import the peers once, quietly (fvcore warns about torch.jit at import)."""
    with quiet():
        for module in ("thop", "fvcore.nn", "ptflops", "torch.utils.flop_counter"):
            try:
                __import__(module)
            except ImportError as error:
                print(f"  (peer {module} not importable: {error})", file=sys.__stdout__)


def warm(micronet) -> None:
    """One audit call so that plugin loading is not timed (the registry is cached)."""
    with quiet():
        micronet.audit(torchvision.models.resnet18().eval(), (1, 3, 224, 224), track="imagenet")


def run_audit(micronet, model, shape):
    with quiet(), torch.no_grad():
        return micronet.audit(model, shape, track="imagenet")


def run_thop(model, x):
    import thop

    with quiet():
        return thop.profile(model, inputs=(x,), verbose=False)


def run_fvcore(model, x):
    from fvcore.nn import FlopCountAnalysis

    with quiet(), torch.no_grad():
        analysis = FlopCountAnalysis(model, x).unsupported_ops_warnings(False)
        return analysis.uncalled_modules_warnings(False).total()


def run_ptflops(model, size):
    from ptflops import get_model_complexity_info

    with quiet(), torch.no_grad():
        macs, params = get_model_complexity_info(model, (3, size, size), as_strings=False,
                                                 print_per_layer_stat=False)
    if macs is None:  # ptflops catches its own errors and returns None
        raise RuntimeError("ptflops returned None (it caught an exception)")
    return macs


def run_fcm(model, x):
    from torch.utils.flop_counter import FlopCounterMode

    with quiet(), torch.no_grad():
        counter = FlopCounterMode(display=False)
        with counter:
            model(x)
        return counter.get_total_flops()


def short(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:240] if text else ''}"


# ----------------------------------------------------------------- part 1: the zoo


@dataclass
class Row:
    name: str
    size: int
    nodes: int | None = None
    records: int | None = None
    ms: dict[str, float | None] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    uncounted: list[tuple[str, str, str]] = field(default_factory=list)
    score: float | None = None
    captured_via: str = ""
    busy: bool = False  # the CPUs were not idle when this model's measurements started

    def ratio(self, key: str = "micronet") -> float | None:
        a, t = self.ms.get(key), self.ms.get("trace")
        return a / t if a and t else None

    def speedup(self, peer: str) -> float | None:
        a, p = self.ms.get("micronet"), self.ms.get(peer)
        return p / a if a and p else None


def measure_model(micronet, name: str, args) -> Row:
    size = INPUT_SIZE.get(name, 224)
    row = Row(name, size)
    model = build(name, args.pretrained)
    x = torch.randn(1, 3, size, size)
    shape = (1, 3, size, size)
    # the same model with its weights on meta: nothing to read for zeros, so its audit is
    # the per-node record path alone (what issue 14's 1.3x goal is about)
    on_meta = copy.deepcopy(model).to("meta")
    jobs = [
        Job("trace", lambda: torch.fx.symbolic_trace(model)),
        Job("micronet", lambda: run_audit(micronet, model, shape)),
        Job("meta", lambda: run_audit(micronet, on_meta, shape)),
        Job("thop", lambda m: run_thop(m, x), lambda: copy.deepcopy(model)),  # thop adds buffers
        Job("fvcore", lambda: run_fvcore(model, x)),
        Job("ptflops", lambda m: run_ptflops(m, size), lambda: copy.deepcopy(model)),
        Job("fcm", lambda: run_fcm(model, x)),
    ]
    best, values, row.errors = interleaved(jobs, args.repeat, args.budget, args.verbose)
    row.ms = {job.key: best[job.key] * 1e3 if job.key in best else None for job in jobs}
    if "trace" in values:
        row.nodes = len(values["trace"].graph.nodes)
    result = values.get("micronet")
    if result is not None:
        row.records = len(result.records)
        row.score = result.score.total
        row.captured_via = result.captured_via
        row.uncounted = [(r.name, str(r.target), r.reason) for r in result.uncounted]
    del values, result, jobs
    del model, on_meta, x
    gc.collect()
    return row


def fmt_ms(value: float | None) -> str:
    return "fail" if value is None else f"{value:.1f}"


def fmt_x(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}x"


HEADER = (f"{'model':<22}{'nodes':>6}{'unc':>4}{'micronet':>10}{'trace':>9}{'aud/tr':>9}{'meta/tr':>9}{'thop':>9}"
          f"{'fvcore':>9}{'ptflops':>9}{'FCM':>9}  {'vs thop':>8}{'vs fvc':>8}{'vs ptf':>8}{'vs FCM':>8}")


def print_row(row: Row) -> None:
    nodes = "-" if row.nodes is None else str(row.nodes)
    unc = "-" if row.records is None else str(len(row.uncounted))
    name = row.name + (" *" if row.busy else "")
    line = (f"{name:<22}{nodes:>6}{unc:>4}{fmt_ms(row.ms.get('micronet')):>10}{fmt_ms(row.ms.get('trace')):>9}"
            f"{fmt_x(row.ratio(), 2):>9}{fmt_x(row.ratio('meta'), 2):>9}")
    line += "".join(f"{fmt_ms(row.ms.get(p)):>9}" for p in PEERS) + "  "
    line += "".join(f"{fmt_x(row.speedup(p)):>8}" for p in PEERS)
    print(line, flush=True)


def zoo(micronet, names: list[str], args) -> tuple[list[Row], dict[str, Any]]:
    print(f"\n== 1. zoo: {len(names)} models, ms = best of {args.repeat} "
          f"(fewer once a tool has taken {args.budget:g} s), tools interleaved == {load()}")
    print("   input 1x3x224x224 (inception_v3: 299); unc = uncounted nodes; aud/tr = micronet ms / trace ms;\n"
          "   FCM = torch FlopCounterMode; 'vs X' = X ms / micronet ms (speed-up of micronet)")
    if args.wait_idle:
        print(f"   each model waits up to {args.wait_idle:g} s for idle CPUs; '*' marks one measured on busy CPUs")
    print(HEADER, flush=True)
    rows = []
    for name in names:
        quiet_cpus = wait_quiet(args.wait_idle) if args.wait_idle else True
        try:
            row = measure_model(micronet, name, args)
        except Exception as error:  # the model itself failed to build
            row = Row(name, INPUT_SIZE.get(name, 224), errors={"build": short(error)})
        row.busy = not quiet_cpus
        rows.append(row)
        print_row(row)
    med = {
        "ratio": median([r.ratio() for r in rows]),
        "meta_ratio": median([r.ratio("meta") for r in rows]),
        **{p: median([r.speedup(p) for r in rows]) for p in PEERS},
        "n_ratio": sum(r.ratio() is not None for r in rows),
        **{f"n_{p}": sum(r.speedup(p) is not None for r in rows) for p in PEERS},
        "micronet_ms": median([r.ms.get("micronet") for r in rows]),
        "models": len(rows),
        "audited": sum(r.ms.get("micronet") is not None for r in rows),
        "with_uncounted": sum(bool(r.uncounted) for r in rows),
        "busy": sum(r.busy for r in rows),
        "trace_ms": median([r.ms.get("trace") for r in rows]),
    }
    print("-" * len(HEADER))
    print(f"{'median':<22}{'':>10}{fmt_ms(med['micronet_ms']):>10}{fmt_ms(med['trace_ms']):>9}"
          f"{fmt_x(med['ratio'], 2):>9}{fmt_x(med['meta_ratio'], 2):>9}{'':>36}  " + "".join(f"{fmt_x(med[p]):>8}" for p in PEERS))
    print(f"  (a) audit within {GOAL_TRACE_RATIO:g}x of symbolic_trace: median {fmt_x(med['ratio'], 2)} "
          f"over {med['n_ratio']} models -> {verdict(med['ratio'] is not None and med['ratio'] <= GOAL_TRACE_RATIO)}")
    print(f"  (a') the per-node record path (weights on meta, none read for zeros) within {GOAL_TRACE_RATIO:g}x: "
          f"median {fmt_x(med['meta_ratio'], 2)} -> "
          f"{verdict(med['meta_ratio'] is not None and med['meta_ratio'] <= GOAL_TRACE_RATIO)}")
    print(f"  (b) faster than thop: median {fmt_x(med['thop'])} over {med['n_thop']} models -> "
          f"{verdict(med['thop'] is not None and med['thop'] > GOAL_THOP_SPEEDUP)}")
    for p in ("fvcore", "ptflops", "fcm"):
        print(f"  (c) >= {GOAL_PEER_SPEEDUP:g}x faster than {PEER_TITLES[p]}: median {fmt_x(med[p])} over "
              f"{med['n_' + p]} models -> {verdict(med[p] is not None and med[p] >= GOAL_PEER_SPEEDUP)}")
    report_failures(rows)
    return rows, med


def report_failures(rows: list[Row]) -> None:
    failed = [(r.name, k, e) for r in rows for k, e in r.errors.items()]
    if failed:
        print("\n  failures (model, tool, error):")
        for name, key, error in failed:
            print(f"    {name:<22} {key:<9} {error}")
    unc = [r for r in rows if r.uncounted]
    if unc:
        print("\n  micronet uncounted nodes, grouped (model: count x [target] reason, first node):")
        for r in unc:
            groups: dict[tuple[str, str], list[str]] = {}
            for node, target, reason in r.uncounted:
                groups.setdefault((target, reason), []).append(node)
            for (target, reason), nodes in groups.items():
                print(f"    {r.name}: {len(nodes)} x [{target}] {reason} (first: {nodes[0]})")
    export = [r for r in rows if r.captured_via and r.captured_via != "fx"]
    if export:
        print("\n  captured through torch.export (fx failed): " + ", ".join(r.name for r in export))
    ranked = sorted((r for r in rows if r.ratio() is not None), key=lambda r: r.ratio(), reverse=True)
    if ranked:
        print("\n  slowest relative to symbolic_trace (audit/trace, micronet ms, nodes, records):")
        for r in ranked[:10]:
            print(f"    {r.name:<22}{fmt_x(r.ratio(), 2):>8}{fmt_ms(r.ms['micronet']):>10} ms"
                  f"{r.nodes or 0:>7} nodes{r.records or 0:>7} records")


def micronet_revision() -> str:
    """The git commit of the checkout (and whether it has local changes), for the record."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "revision unknown"
    return f"at commit {head or '?'}" + (" with uncommitted changes" if dirty else "")


def load() -> str:
    try:
        return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "load average n/a"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


# ----------------------------------------------------------------- part 2: input size


def big_input(micronet, args) -> dict[str, dict[str, float | None]]:
    print(f"\n== 2. input-size independence: 1x3x1024x1024, micronet vs thop == {load()}")
    out = {}
    for name in ("resnet50", "densenet121"):
        model = build(name, args.pretrained)
        shape = (1, 3, 1024, 1024)
        x = torch.randn(shape)
        if args.wait_idle:
            wait_quiet(args.wait_idle)
        jobs = [
            Job("micronet_224", lambda: run_audit(micronet, model, (1, 3, 224, 224))),
            Job("micronet", lambda: run_audit(micronet, model, shape)),
            Job("thop", lambda m: run_thop(m, x), lambda: copy.deepcopy(model)),
        ]
        best, _, errors = interleaved(jobs, args.repeat, args.budget, args.verbose)
        entry: dict[str, float | None] = {job.key: best.get(job.key) for job in jobs}
        for key, error in errors.items():
            print(f"  {name}: {key} failed: {error}")
        a, t = entry["micronet"], entry["thop"]
        entry["speedup"] = t / a if a and t else None
        ok = entry["speedup"] is not None and entry["speedup"] >= GOAL_BIG_INPUT_SPEEDUP
        small = entry["micronet_224"]
        print(f"  {name:<12} micronet {fmt_ms(a and a * 1e3):>8} ms (at 224: {fmt_ms(small and small * 1e3)} ms)"
              f"   thop {fmt_ms(t and t * 1e3):>8} ms   speed-up {fmt_x(entry['speedup'])} "
              f"(goal >= {GOAL_BIG_INPUT_SPEEDUP}x) -> {verdict(ok)}", flush=True)
        out[name] = entry
        del model, x
        gc.collect()
    return out


# ----------------------------------------------------------------- part 3: huge models (child)


def huge_models() -> dict[str, Callable[[], torch.nn.Module]]:
    from torchvision.models.resnet import Bottleneck, ResNet

    return {
        "vit_1.8b (ViT-H/14 depth 48, width 1664)": lambda: torchvision.models.VisionTransformer(
            image_size=224, patch_size=14, num_layers=48, num_heads=16, hidden_dim=1664, mlp_dim=8192),
        "wide_resnet101_8 (width_per_group 512)": lambda: ResNet(Bottleneck, [3, 4, 23, 3],
                                                                 width_per_group=64 * 8),
    }


def child_huge(args) -> dict[str, Any]:
    import micronet

    warm(micronet)
    out = {}
    for label, factory in huge_models().items():
        with torch.device("meta"):
            model = factory().eval()
        params = sum(p.numel() for p in model.parameters())
        shape = (1, 3, 224, 224)
        entry: dict[str, Any] = {"params": params}
        if args.wait_idle:
            wait_quiet(args.wait_idle)
        try:
            mem = peak_memory(lambda: run_audit(micronet, model, shape))
            seconds, result, runs = best_time(lambda: run_audit(micronet, model, shape), args.repeat, args.budget)
            entry.update(mem, seconds=seconds, runs=runs, records=len(result.records),
                         uncounted=len(result.uncounted), score=result.score.total,
                         audited_params=result.totals.get("params"))
        except Exception as error:
            entry["error"] = short(error)
        out[label] = entry
        del model
        gc.collect()
    return out


def print_huge(res: dict[str, Any]) -> None:
    print("\n== 3. models over 1e9 parameters on the meta device (fresh subprocess) ==")
    if "error" in res:
        print(f"  subprocess failed: {res['error']}")
        return
    for label, e in res.items():
        print(f"  {label}: {e['params'] / 1e9:.3f}e9 params")
        if "error" in e:
            print(f"    micronet failed: {e['error']}")
            continue
        inc = peak_increase(e)
        print(f"    audit: first call {e['seconds_first'] * 1e3:.0f} ms, best of {e['runs']} "
              f"{e['seconds'] * 1e3:.0f} ms (goal < {GOAL_HUGE_SECONDS:g} s) -> {verdict(e['seconds'] < GOAL_HUGE_SECONDS)}")
        rss_inc = "n/a" if e["rss_increase"] is None else f"{e['rss_increase'] / MIB:.1f} MiB"
        print(f"    peak RSS increase {rss_inc} (VmHWM), ru_maxrss increase {e['maxrss_increase'] / MIB:.1f} MiB, "
              f"tracemalloc peak {e['tracemalloc_peak'] / MIB:.1f} MiB (goal < 1 GiB) -> {verdict(inc < GOAL_HUGE_MEMORY)}")
        print(f"    {e['records']} records, {e['uncounted']} uncounted, audited params {e['audited_params']:.4g}, "
              f"score {e['score']:.4g}")


# ----------------------------------------------------------------- part 4: what-if


def whatif(micronet, args) -> dict[str, Any]:
    print(f"\n== 4. what-if: 10 bit widths x 10 sparsity levels on densenet121 == {load()}")
    model = build("densenet121", args.pretrained)
    result = run_audit(micronet, model, (1, 3, 224, 224))
    if args.wait_idle:
        wait_quiet(args.wait_idle)
    bits = [32, 24, 16, 12, 10, 8, 6, 5, 4, 2]
    sparsity = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    seconds, grid, runs = best_time(lambda: result.what_if(bits=bits, sparsity=sparsity), args.repeat, args.budget)
    text = "bits=" + ",".join(map(str, bits)) + ";sparsity=" + ",".join(map(str, sparsity))
    seconds_text = best_time(lambda: result.what_if(text), args.repeat, args.budget)[0]
    ok = seconds < GOAL_WHATIF_SECONDS
    best = grid.best()
    print(f"  {len(grid.cells)} cells: best of {runs} {seconds * 1e3:.1f} ms "
          f"({seconds * 1e6 / len(grid.cells):.0f} us per cell; string form {seconds_text * 1e3:.1f} ms) "
          f"(goal < {GOAL_WHATIF_SECONDS * 1e3:.0f} ms) -> {verdict(ok)}")
    print(f"  best cell {dict(best.levels)}: score {best.total:.4g}; base score {result.score.total:.4g}", flush=True)
    return {"seconds": seconds, "cells": len(grid.cells), "seconds_text": seconds_text}


# ----------------------------------------------------------------- part 5: memory (children)


def child_memory(tool: str, args) -> dict[str, Any]:
    model = build("densenet121", args.pretrained)
    x = torch.randn(1, 3, 224, 224)
    if tool == "micronet":
        import micronet

        warm(micronet)
        fn = lambda: run_audit(micronet, model, (1, 3, 224, 224))  # noqa: E731
    else:
        with quiet():
            run_thop(copy.deepcopy(torchvision.models.resnet18().eval()), torch.randn(1, 3, 224, 224))
        copies = [copy.deepcopy(model), copy.deepcopy(model)]  # made before the measurement
        fn = lambda: run_thop(copies.pop(), x)  # noqa: E731
    if args.wait_idle:
        wait_quiet(args.wait_idle)
    return peak_memory(fn)


def print_memory(res: dict[str, Any]) -> None:
    print("\n== 5. peak memory auditing densenet121 (real tensors, 1x3x224x224), fresh subprocess each ==")
    for tool in ("micronet", "thop"):
        e = res.get(tool, {})
        if "error" in e:
            print(f"  {tool:<9} failed: {e['error']}")
            continue
        rss_inc = "n/a" if e["rss_increase"] is None else f"{e['rss_increase'] / MIB:7.1f} MiB"
        print(f"  {tool:<9} peak RSS increase {rss_inc}, ru_maxrss increase {e['maxrss_increase'] / MIB:7.1f} MiB, "
              f"tracemalloc peak {e['tracemalloc_peak'] / MIB:6.1f} MiB, time {e['seconds_first'] * 1e3:.0f} ms")
    if "error" not in res.get("micronet", {"error": 1}) and "error" not in res.get("thop", {"error": 1}):
        m, t = peak_increase(res["micronet"]), peak_increase(res["thop"])
        print(f"  micronet / thop peak RSS increase: {m / max(t, 1):.2f} -> {verdict(m < t)} (goal: below thop)")


# ----------------------------------------------------------------- subprocess plumbing


def run_child(kind: str, args) -> dict[str, Any]:
    command = [sys.executable, os.path.abspath(__file__), "--_child", kind, "--repeat", str(args.repeat),
               "--budget", str(args.budget), "--wait-idle", str(args.wait_idle)] + (["--pretrained"] if args.pretrained else [])
    proc = subprocess.run(command, capture_output=True, text=True)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(CHILD_MARK):
            return json.loads(line[len(CHILD_MARK):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {"error": f"exit {proc.returncode}: " + " | ".join(tail)}


def child_main(kind: str, args) -> None:
    try:
        if kind == "huge":
            out = child_huge(args)
        else:
            out = child_memory(kind, args)
    except Exception as error:
        traceback.print_exc()
        out = {"error": short(error)}
    print(CHILD_MARK + json.dumps(out), flush=True)


# ----------------------------------------------------------------- summary and main


def summary(med, big, huge, wif, mem) -> None:
    print("\n== summary ==")
    lines = []
    if med is not None:
        print(f"  zoo: micronet audited {med['audited']}/{med['models']} models, {med['with_uncounted']} with "
              f"uncounted nodes" + (f", {med['busy']} measured on busy CPUs" if med["busy"] else ""))
        lines.append((f"1a audit within {GOAL_TRACE_RATIO:g}x of symbolic_trace (median audit/trace)",
                      med["ratio"] is not None and med["ratio"] <= GOAL_TRACE_RATIO, fmt_x(med["ratio"], 2)))
        lines.append((f"1a' per-node path alone (weights on meta) within {GOAL_TRACE_RATIO:g}x of symbolic_trace",
                      med["meta_ratio"] is not None and med["meta_ratio"] <= GOAL_TRACE_RATIO,
                      fmt_x(med["meta_ratio"], 2)))
        lines.append(("1b faster than thop (median speed-up)",
                      med["thop"] is not None and med["thop"] > GOAL_THOP_SPEEDUP, fmt_x(med["thop"])))
        for p in ("fvcore", "ptflops", "fcm"):
            lines.append((f"1c >= 3x faster than {PEER_TITLES[p]} (median speed-up)",
                          med[p] is not None and med[p] >= GOAL_PEER_SPEEDUP, fmt_x(med[p])))
    for name, e in (big or {}).items():
        lines.append((f"2  {name} at 1024x1024 >= 20x faster than thop",
                      e["speedup"] is not None and e["speedup"] >= GOAL_BIG_INPUT_SPEEDUP,
                      f"{fmt_x(e['speedup'])} ({fmt_ms(e['micronet'] and e['micronet'] * 1e3)} vs "
                      f"{fmt_ms(e['thop'] and e['thop'] * 1e3)} ms)"))
    if huge is not None:
        if "error" in huge:
            lines.append(("3  huge-model subprocess", False, huge["error"]))
        for label, e in huge.items() if "error" not in huge else ():
            short_label = label.split(" ")[0]
            if "error" in e:
                lines.append((f"3  {short_label} audit", False, e["error"]))
                continue
            lines.append((f"3  {short_label} ({e['params'] / 1e9:.2f}e9 params) audit < 2 s",
                          e["seconds"] < GOAL_HUGE_SECONDS,
                          f"{e['seconds'] * 1e3:.0f} ms (first call {e['seconds_first'] * 1e3:.0f} ms)"))
            inc = peak_increase(e)
            lines.append((f"3  {short_label} peak RSS increase < 1 GiB", inc < GOAL_HUGE_MEMORY,
                          f"{inc / MIB:.1f} MiB (tracemalloc {e['tracemalloc_peak'] / MIB:.1f} MiB)"))
    if wif is not None:
        lines.append(("4  what-if 100-cell grid < 0.1 s", wif["seconds"] < GOAL_WHATIF_SECONDS,
                      f"{wif['seconds'] * 1e3:.1f} ms"))
    if mem is not None:
        m, t = mem.get("micronet", {}), mem.get("thop", {})
        if "error" in m or "error" in t:
            lines.append(("5  densenet121 peak memory below thop", False, m.get("error") or t.get("error")))
        else:
            lines.append(("5  densenet121 peak RSS increase below thop's", peak_increase(m) < peak_increase(t),
                          f"{peak_increase(m) / MIB:.1f} MiB vs {peak_increase(t) / MIB:.1f} MiB"))
    for text, ok, figure in lines:
        print(f"  {verdict(ok)}  {text:<58} {figure}")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", help="comma-separated torchvision names (default: the whole zoo)")
    parser.add_argument("--quick", action="store_true", help="16 representative models")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement, best kept (default 3)")
    parser.add_argument("--budget", type=float, default=20.0,
                        help="stop repeating a measurement after this many seconds (default 20)")
    parser.add_argument("--parts", default="1,2,3,4,5", help="which parts to run (default 1,2,3,4,5)")
    parser.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                        help="before each measurement group, wait up to this long for idle CPUs (default 0)")
    parser.add_argument("--pretrained", action="store_true", help="published weights if cached")
    parser.add_argument("--verbose", action="store_true", help="print tracebacks of failures")
    parser.add_argument("--_child", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args._child:
        child_main(args._child, args)
        return 0
    parts = {p.strip() for p in args.parts.split(",")}
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, {platform.processor() or platform.machine()}")
    print(f"micronet {micronet_revision()}")
    print(f"start: {load()} (other processes on these CPUs slow every column down, the small "
          "multi-threaded kernels most)", flush=True)
    # Memory parts first, each in a fresh subprocess, while this process is still small.
    huge = run_child("huge", args) if "3" in parts else None
    mem = {tool: run_child(tool, args) for tool in ("micronet", "thop")} if "5" in parts else None

    import micronet

    preload_peers()
    warm(micronet)
    med = big = wif = None
    if "1" in parts:
        if args.models:
            names = [n.strip() for n in args.models.split(",") if n.strip()]
        elif args.quick:
            names = list(QUICK)
        else:
            names = torchvision.models.list_models(module=torchvision.models)
        _, med = zoo(micronet, names, args)
    if "2" in parts:
        big = big_input(micronet, args)
    if huge is not None:
        print_huge(huge)
    if "4" in parts:
        wif = whatif(micronet, args)
    if mem is not None:
        print_memory(mem)
    summary(med, big, huge, wif, mem)
    print(f"end: {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
