"""Does the search beat uniform settings? Score against test top-1 on real digits.

Run by hand (never by the tests)::

    .venv/bin/python benchmarks/compress_quality.py                  # the whole grid (~5-8 min on 2 cores)
    .venv/bin/python benchmarks/compress_quality.py --quick          # 6 uniform settings, 2 budgets
    .venv/bin/python benchmarks/compress_quality.py --epochs 4 --out quality.html

What runs, all through the pipeline (``micronet.compress`` with dict recipes),
so every figure is the product's own: track ``digits`` (reference score 2.0,
bar top-1 >= 97% on the test split), rulebook micronet-2019, freebie off.

1. ``micronet:digits_cnn`` trained once from scratch (``finetune``,
   ``--train-epochs`` epochs, lr 0.1, seed 0), as ``examples/digits.toml`` does.
2. Uniform: for every weight bits in 8/6/4/3/2 and every unstructured sparsity
   in 0/0.5/0.75/0.9, that one setting on every Conv/Linear layer. It is
   applied by the ``search`` step given that single candidate (so the same
   code zeroes, masks, puts weights on their per-channel grids, declares the
   grid scales and fine-tunes as for the searched models: the only difference
   is the allocation), then ``--epochs`` epochs of distillation from the
   trained model (lr ``--lr``).
3. Searched: the ``search`` step over the same candidates (weight bits x
   sparsity per layer) at several ``target_score`` budgets, each fine-tuned
   the same way. The budgets are fractions of the best uniform score that
   meets the bar (``--fractions``), so the ratio below is bracketed.

Printed: both lists (score, top-1, whether top-1 meets the bar, whether the
point is on its Pareto front: no other point of its list has a lower or equal
score and a higher top-1), then the goal line: at the quality bar, the best
searched score / the best uniform score (goal <= 0.7). Activations stay in
float (32 bits) everywhere, so weight bits lower the storage term only and
sparsity is the only lever on the ops term. Written: an HTML page (``--out``)
with both fronts as an SVG scatter plot (log score across, top-1 up, the bar
drawn) and the two tables.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from micronet.errors import CompressionError
from micronet.fileio import atomic_write_text
from micronet.pipeline import compress
from micronet.reports.page import document
from micronet.reports.svg import esc, svg_open

BITS = (8, 6, 4, 3, 2)
SPARSITY = (0.0, 0.5, 0.75, 0.9)
FRACTIONS = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.25)
QUICK_BITS, QUICK_SPARSITY, QUICK_FRACTIONS = (8, 4, 2), (0.0, 0.75), (0.5, 0.7)
GOAL = 0.7
SHAPE = [1, 1, 8, 8]


@dataclass(frozen=True)
class Point:
    """One compressed model: its label, score (score units), test top-1 (percent),
    seconds of its pipeline run, and for a failed budget the reason."""

    label: str
    score: float | None
    top1: float | None
    meets_bar: bool
    seconds: float
    failed: str | None = None


def recipe(*steps: dict) -> dict:
    return {"model": {"spec": "micronet:digits_cnn", "input": SHAPE},
            "score": {"track": "digits", "rulebook": "micronet-2019", "freebie": False},
            "data": {"dataset": "digits", "batch_size": 64}, "step": list(steps)}


def train(epochs: int):
    """The trained model (seed 0) and its result (score 2.0, top-1 on the test split)."""
    torch.manual_seed(0)
    history = compress(recipe({"use": "finetune", "epochs": epochs, "lr": 0.1}))
    return history.model, history.final


def sweep_speed(trained, bits: Sequence[int], sparsity: Sequence[float]) -> str:
    """One ``sensitivity`` step over the candidates on the calibration split:
    its evaluations (layer x setting) per second, as the step notes them."""
    step = {"use": "sensitivity", "bits": list(bits), "sparsity": [s for s in sparsity if s > 0]}
    notes = compress(recipe(step), model=trained).steps[0].notes
    return (f"sensitivity sweep: {notes['evaluations']} evaluations (layer x setting, "
            f"{notes['examples']} calibration digits each) at {notes['evaluations_per_second']:.0f} per second")


def run_search(trained, label: str, target: float, bits: Sequence[int], sparsity: Sequence[float],
               epochs: int, lr: float) -> Point:
    """One ``search`` step on ``trained`` (seed 0 for the fine-tuning's shuffles)."""
    step = {"use": "search", "target_score": float(target), "weight_bits": list(bits),
            "sparsity": list(sparsity), "epochs": epochs, "lr": lr}
    torch.manual_seed(0)
    started = time.perf_counter()
    try:
        final = compress(recipe(step), model=trained).final
    except CompressionError as error:
        reason = str(error.__cause__ or error).split(" (hint")[0]
        return Point(label, None, None, False, time.perf_counter() - started, reason)
    return Point(label, final.score.total, final.accuracy, bool(final.meets_bar), time.perf_counter() - started)


def front(points: Sequence[Point]) -> set[str]:
    """Labels of the Pareto front: no other point has a lower-or-equal score and a higher top-1."""
    done = [p for p in points if p.score is not None]
    return {p.label for p in done
            if not any(q is not p and q.score <= p.score and q.top1 > p.top1 for q in done)}


def describe(point) -> str:
    """A run's score and top-1, or why it failed."""
    return point.failed or f"score {point.score:.4f}, top-1 {point.top1:.2f}%"


def best_at_bar(points: Sequence[Point]) -> Point | None:
    """The lowest-scoring point that meets the quality bar."""
    return min((p for p in points if p.meets_bar), key=lambda p: p.score, default=None)


# ------------------------------------------------------------------ printing


def table(title: str, points: Sequence[Point], bar: float) -> list[str]:
    on_front = front(points)
    lines = [title, f"  {'setting':<26}{'score':>9}{'top-1':>9}  {'bar':<5}{'front':<7}{'time':>7}"]
    for p in sorted(points, key=lambda p: (p.score is None, p.score or 0.0)):
        if p.failed:
            lines.append(f"  {p.label:<26}{'-':>9}{'-':>9}  {'-':<5}{'':<7}{p.seconds:>6.1f}s  {p.failed}")
            continue
        lines.append(f"  {p.label:<26}{p.score:>9.4f}{p.top1:>8.2f}%  {'yes' if p.meets_bar else 'no':<5}"
                     f"{'*' if p.label in on_front else '':<7}{p.seconds:>6.1f}s")
    lines.append(f"  (* on the Pareto front; bar: top-1 >= {bar:g}% on the test split)")
    return lines


def verdict(uniform: Sequence[Point], searched: Sequence[Point]) -> tuple[float | None, str]:
    """(searched / uniform at the bar, the goal line)."""
    u, s = best_at_bar(uniform), best_at_bar(searched)
    if u is None or s is None:
        missing = "uniform" if u is None else "searched"
        return None, f"no {missing} model meets the bar: no ratio (FAIL)"
    ratio = s.score / u.score
    mark = "PASS" if ratio <= GOAL else "FAIL"
    return ratio, (f"at the bar: searched {s.score:.4f} ({s.label}, {s.top1:.2f}%) / uniform {u.score:.4f} "
                   f"({u.label}, {u.top1:.2f}%) = {ratio:.3f}, goal <= {GOAL}: {mark}")


# ------------------------------------------------------------------ the page


_W, _H, _L, _R, _T, _B = 760.0, 420.0, 58.0, 16.0, 16.0, 46.0
_COLOURS = {"uniform": "#e39b2d", "searched": "#3b6fd8"}


def scatter(series: dict[str, Sequence[Point]], bar: float) -> str:
    """Score (log, across) against top-1 (up) of each series, its Pareto front
    joined by a line, the bar drawn; a ``<title>`` per point."""
    done = [p for points in series.values() for p in points if p.score is not None]
    low, high = math.log10(min(p.score for p in done)) - 0.05, math.log10(max(p.score for p in done)) + 0.05
    bottom = min(min(p.top1 for p in done), bar - 2.0)
    bottom = math.floor(bottom / 5) * 5
    x = lambda score: _L + (_W - _L - _R) * (math.log10(score) - low) / (high - low)  # noqa: E731
    y = lambda top1: _T + (_H - _T - _B) * (100.0 - top1) / (100.0 - bottom)  # noqa: E731
    out = [svg_open(_W, _H, "chart quality", "test top-1 against score, uniform and searched", fluid=False)]
    for k in range(math.ceil(low * 4), math.floor(high * 4) + 1):  # ticks at 10^(k/4)
        score = 10 ** (k / 4)
        out.append(f'<line class="grid" x1="{x(score):.1f}" x2="{x(score):.1f}" y1="{_T}" y2="{_H - _B}" '
                   f'stroke="#e3e6ec"/><text class="axis" x="{x(score):.1f}" y="{_H - _B + 14}" '
                   f'text-anchor="middle" font-size="11">{score:.3g}</text>')
    for top1 in range(int(bottom), 101, 5 if 100 - bottom <= 40 else 10):
        out.append(f'<line x1="{_L}" x2="{_W - _R}" y1="{y(top1):.1f}" y2="{y(top1):.1f}" stroke="#eef0f4"/>'
                   f'<text x="{_L - 6}" y="{y(top1) + 4:.1f}" text-anchor="end" font-size="11">{top1}%</text>')
    out.append(f'<line x1="{_L}" x2="{_W - _R}" y1="{y(bar):.1f}" y2="{y(bar):.1f}" stroke="#d6455d" '
               f'stroke-dasharray="5 4"/><text x="{_W - _R}" y="{y(bar) - 5:.1f}" text-anchor="end" '
               f'font-size="11" fill="#d6455d">quality bar {bar:g}%</text>')
    out.append(f'<text x="{(_L + _W - _R) / 2:.0f}" y="{_H - 8}" text-anchor="middle" font-size="12">'
               f'MicroNet score (log scale, lower is better)</text>')
    for name, points in series.items():
        colour, on_front = _COLOURS[name], front(points)
        path = sorted((p for p in points if p.label in on_front), key=lambda p: p.score)
        out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="'
                   + " ".join(f"{x(p.score):.1f},{y(p.top1):.1f}" for p in path) + '"/>')
        for p in points:
            if p.score is None:
                continue
            tip = f"{name}: {p.label}\nscore {p.score:.4f}, top-1 {p.top1:.2f}%"
            shape = (f'<rect x="{x(p.score) - 4:.1f}" y="{y(p.top1) - 4:.1f}" width="8" height="8"'
                     if name == "uniform" else f'<circle cx="{x(p.score):.1f}" cy="{y(p.top1):.1f}" r="4.5"')
            filled = colour if p.label in on_front else "#ffffff"
            out.append(f'<g>{shape} fill="{filled}" stroke="{colour}" stroke-width="1.5"/>'
                       f'<title>{esc(tip)}</title></g>')
    out.append("</svg>")
    return "".join(out)


def page(series: dict[str, Sequence[Point]], bar: float, goal_line: str, facts: str) -> str:
    tables = "".join(f'<h2>{esc(name)}</h2><pre>{esc(chr(10).join(table(name, points, bar)[1:]))}</pre>'
                     for name, points in series.items())
    legend = " · ".join(f'<span style="color:{_COLOURS[n]}">{"■" if n == "uniform" else "●"} {n}</span>'
                        for n in series)
    body = (f'<section class="card" id="plot"><h1>Compression quality on digits</h1><p class="hint">{esc(facts)}'
            f'</p><p>{legend} · filled marks and the line: each list\'s Pareto front · hover a mark for its '
            f'figures</p>{scatter(series, bar)}<p><b>{esc(goal_line)}</b></p></section>'
            f'<section class="card" id="tables">{tables}</section>')
    return document("compression quality: uniform against searched (digits)", "benchmark", body,
                    [("plot", "Plot"), ("tables", "Tables")])


# ------------------------------------------------------------------ main


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=8,
                        help="fine-tuning epochs of every compressed model (8, as many as the training)")
    parser.add_argument("--lr", type=float, default=0.01, help="fine-tuning learning rate (0.01)")
    parser.add_argument("--train-epochs", type=int, default=8, help="epochs training the model once (8)")
    parser.add_argument("--fractions", default=None,
                        help="search budgets as fractions of the best uniform score at the bar, "
                             f"comma-separated (default {','.join(map(str, FRACTIONS))})")
    parser.add_argument("--out", default="compress_quality.html", help="the HTML page to write")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: bits 8/4/2 x sparsity 0/0.75, budgets 0.5 and 0.7, 2 epochs")
    return parser.parse_args(argv)


def say(line: str = "") -> None:
    print(line, flush=True)


def main(argv=None) -> int:
    args = parse(argv)
    bits, sparsity, fractions = (QUICK_BITS, QUICK_SPARSITY, QUICK_FRACTIONS) if args.quick else \
        (BITS, SPARSITY, FRACTIONS)
    if args.fractions:
        fractions = tuple(float(f) for f in args.fractions.split(","))
    epochs = 2 if args.quick and args.epochs == 8 else args.epochs
    started = time.perf_counter()
    trained, base = train(args.train_epochs)
    bar = base.track.quality_bar
    facts = (f"micronet:digits_cnn trained {args.train_epochs} epochs (lr 0.1, seed 0): score "
             f"{base.score.total:.4f}, test top-1 {base.accuracy:.2f}%; every compressed model fine-tuned "
             f"{epochs} epochs with distillation (lr {args.lr:g}); track digits, micronet-2019, freebie off; "
             f"candidates weight bits {'/'.join(map(str, bits))} x sparsity {'/'.join(f'{s:g}' for s in sparsity)}")
    say(facts)
    say(sweep_speed(trained, bits, sparsity))
    uniform = []
    for b in bits:
        for s in sparsity:
            point = run_search(trained, f"{b}b, sparsity {s:g}", 1e9, [b], [s], epochs, args.lr)
            say(f"  uniform {point.label}: {describe(point)} ({point.seconds:.1f} s)")
            uniform.append(point)
    anchor = best_at_bar(uniform)
    reference = anchor.score if anchor is not None else min(p.score for p in uniform if not p.failed)
    searched = []
    for fraction in sorted(set(fractions), reverse=True):
        target = round(fraction * reference, 6)
        point = run_search(trained, f"target {target:.4g} ({fraction:g}x)", target, bits, sparsity, epochs, args.lr)
        say(f"  search {point.label}: {describe(point)} ({point.seconds:.1f} s)")
        searched.append(point)
    say()
    for line in table("uniform (every layer at one setting)", uniform, bar):
        say(line)
    say()
    for line in table("searched (per-layer settings to a target_score)", searched, bar):
        say(line)
    say()
    ratio, goal_line = verdict(uniform, searched)
    say(goal_line)
    series = {"uniform": uniform, "searched": searched}
    atomic_write_text(args.out, page(series, bar, goal_line, facts))
    say(f"plot written to {args.out} ({time.perf_counter() - started:.0f} s in all)")
    return 0 if ratio is not None and ratio <= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
