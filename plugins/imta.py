"""IMT Atlantique "Efficient Deep Learning" course rulebooks and the cifar10 track.

``imta-2021`` reproduces the course's hook-based ``profile.py`` (2021-2024)
exactly, quirks included, so students get the figure they were graded on:

- hooks on leaf modules only; a leaf's params are the numel of all its
  ``parameters()`` divided by the quant factor ``qf = 32 / bits`` (weights
  at 16 bits by default: qf = 2), so BatchNorm's weight and bias count;
- per output element, ``nn.Conv2d``: ``(k*k*cin/qf + k*k*cin - 1) / groups``,
  + 1 with a bias; ``nn.Linear``: ``in/qf + in - 1`` (its bias add is not
  counted); ``nn.AvgPool2d``: ``prod(kernel_size) - 1 + 1``, where an int
  kernel size gives ``k``, not ``k*k`` (the original's bug, kept);
- per input element, ``nn.BatchNorm2d``: 3; ``nn.ReLU`` modules: 1;
- functional calls (``F.relu``, ``F.avg_pool2d``, ``torch.cat``, ``x + y``)
  and every other module: 0;
- score = ops / 834,362,880 + params / 5,586,981 * (1 - unstructured
  sparsity): no bitmask, and sparsity does not reduce ops.

The exact counts are kept as fractions (``k*k*cin/qf`` need not be whole);
the original accumulated per-layer float32 tensors, so the figure it printed
is also given (``float32_ops`` / ``float32_params``). Choices where the
original is silent: bits come from each layer (min(weight bits, 16)); a
module called twice counts its ops twice and its params once; a module fx
keeps whole although it has children (nn.MultiheadAttention) counts as one
leaf; sparsity is the fraction of exact zeros among all counted params.
A layer's MACs are the multiplies the quant factor divides (conv and linear
dot products, before qf); they sum to the ``macs`` total.

``imta-lab4`` is the closed form that replaced the profiler::

    (1 - (ps + pu)) * (qw/32) * w / 5.6e6 + (1 - ps) * (max(qw, qa)/32) * f / 2.8e8

with w the parameters, f the MACs of the dot products (conv, linear,
matmul), qw / qa the widest weight / activation bits, pu the measured
fraction of zero parameters, and ps the structured pruning ratio. micronet
counts the model as it is, so channels already removed are gone from w and
f and ps defaults to 0; pass ``ScoreOptions(extra={"structured": r})`` to
score an unpruned model as if pruned by r. A layer's MACs are its f.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Sequence

import numpy as np

from micronet.errors import UsageError
from micronet.manager import hookimpl
from micronet.records import LayerRecord
from micronet.rules import LayerCost, Rulebook, Score, ScoreOptions, Scoring, Track

CIFAR10 = Track(
    name="cifar10", dataset="cifar10", reference_model="ResNet-18 (CIFAR), as the course profiled it",
    reference_params=5_586_981, reference_ops=834_362_880, quality_bar=90.0,
    input_shape=(1, 3, 32, 32), num_classes=10,
    description="IMT Atlantique course challenge on CIFAR-10: top-1 >= 90%",
    published=(("seeded course teams (DenseNet growth 4, int8, 65% sparse)", 0.017),),
)

LAB4_PARAMS, LAB4_MACS = 5.6e6, 2.8e8


@dataclass(frozen=True)
class _Layer:
    """One leaf call as the course profiler saw it (fractions, before qf)."""

    name: str
    params: int
    zeros: int
    bits: int
    quantized_ops: Fraction  # multiplies that the quant factor divides
    plain_ops: Fraction  # everything else


def _conv(r: LayerRecord) -> tuple[Fraction, Fraction]:
    kh, kw = r.attrs.get("kernel_size", (1, 1))
    cin, groups = r.attrs.get("in_channels", 1), r.attrs.get("groups", 1)
    elements = _numel(r.output_shapes[0])
    k = kh * kw * cin
    quantized = Fraction(k * elements, groups)
    plain = Fraction((k - 1) * elements, groups) + (elements if r.attrs.get("bias") else 0)
    return quantized, plain


def _linear(r: LayerRecord) -> tuple[Fraction, Fraction]:
    fan_in, elements = r.attrs.get("in_features", 1), _numel(r.output_shapes[0])
    return Fraction(fan_in * elements), Fraction((fan_in - 1) * elements)


def _avg_pool(r: LayerRecord) -> tuple[Fraction, Fraction]:
    kernel = r.attrs.get("kernel_size", 1)
    window = kernel if isinstance(kernel, int) else int(np.prod(kernel))  # the original's quirk
    return Fraction(0), Fraction(window * _numel(r.output_shapes[0]))


def _per_input(ops: int):
    return lambda r: (Fraction(0), Fraction(ops * _numel(r.input_shapes[0])))


_RULES = (
    ("torch.nn.Conv2d", _conv),
    ("torch.nn.Linear", _linear),
    ("torch.nn.AvgPool2d", _avg_pool),
    ("torch.nn.BatchNorm2d", _per_input(3)),
    ("torch.nn.ReLU", _per_input(1)),
)


def _numel(shape) -> int:
    return int(np.prod(shape)) if shape else 1


def _profile(records: Sequence[LayerRecord]) -> list[_Layer]:
    if any(r.via == "export" for r in records):
        raise UsageError("imta-2021 counts module calls as the course's hooks did, but this model "
                         "was captured with torch.export (aten ops, no module calls)",
                         hint="audit a model torch.fx can trace (a spec or module, not a .pt2 archive)")
    layers = []
    for r in records:
        leaf_params = r.call_kind == "module" or (r.call_kind == "get_attr" and r.params)
        if not leaf_params:
            continue
        quantized = plain = Fraction(0)
        if r.call_kind == "module":
            rule = next((fn for name, fn in _RULES if r.is_module(name)), None)
            if rule is not None:
                quantized, plain = rule(r)
        layers.append(_Layer(r.name, r.params, r.params - r.nonzero_params, r.weight_bits, quantized, plain))
    return layers


def _qf(bits: int) -> Fraction:
    return Fraction(32, min(bits, 16))


def _evaluate_2021(layers: list[_Layer], track: Track, options: ScoreOptions, per_layer: bool) -> Scoring:
    costs, float_ops, float_params = [], np.float32(0), np.float32(0)
    total_ops = total_params = Fraction(0)
    for layer in layers:
        qf = _qf(options.weight_bits or layer.bits)
        ops = layer.quantized_ops / qf + layer.plain_ops
        params = Fraction(layer.params) / qf
        total_ops += ops
        total_params += params
        float_ops = np.float32(float_ops + np.float32(float(ops)))
        float_params = np.float32(float_params + np.float32(float(params)))
        if per_layer:
            costs.append(LayerCost(layer.name, float(params), float(layer.quantized_ops / qf),
                                   float(layer.plain_ops), 0.0, float(ops), int(32 / qf), int(32 / qf), 32,
                                   float(layer.quantized_ops)))
    counted = sum(l.params for l in layers)
    sparsity = options.sparsity if options.sparsity is not None else (
        sum(l.zeros for l in layers) / counted if counted else 0.0)
    ops_term = float(total_ops) / track.reference_ops
    storage_term = float(total_params) / track.reference_params * (1 - sparsity)
    notes = (f"course profiler figures (float32): ops {float(float_ops):.8g}, params {float(float_params):.8g}",
             f"unstructured sparsity {sparsity:.4f} scales params only; no bitmask")
    score = Score(storage_term + ops_term, storage_term, ops_term, float(total_params) * (1 - sparsity),
                  float(total_ops), track.reference_params, track.reference_ops, False, IMTA_2021.name,
                  track.name, notes)
    totals = {
        "params": counted, "nonzero_params": counted - sum(l.zeros for l in layers),
        "storage": float(total_params) * (1 - sparsity),
        "mults": float(sum(l.quantized_ops / _qf(options.weight_bits or l.bits) for l in layers)),
        "adds": float(sum(l.plain_ops for l in layers)), "other_ops": 0.0, "ops": float(total_ops),
        "macs": float(sum(l.quantized_ops for l in layers)),
        "exact_ops": str(total_ops), "exact_params": str(total_params),
        "float32_ops": float(float_ops), "float32_params": float(float_params),
        "unstructured_sparsity": sparsity,
    }
    return Scoring(score, tuple(costs), totals)


def _prepare_2021(records: Sequence[LayerRecord]):
    return records, _profile(records)


def _evaluate_2021_records(prepared, track: Track, options: ScoreOptions, per_layer: bool) -> Scoring:
    records, layers = prepared
    scoring = _evaluate_2021(layers, track, options, per_layer)
    if not per_layer:
        return scoring
    by_name = {c.name: c for c in scoring.layers}
    zero = lambda r: LayerCost(r.name, 0.0, 0.0, 0.0, 0.0, 0.0, 32, 32, 32)  # noqa: E731
    costs = tuple(by_name.pop(r.name) if r.name in by_name else zero(r) for r in records)
    return Scoring(scoring.score, costs, scoring.totals)


IMTA_2021 = Rulebook(
    name="imta-2021",
    description="IMT Atlantique course profiler (2021-2024), quirks included",
    prepare=_prepare_2021,
    evaluate=_evaluate_2021_records,
)


# ------------------------------------------------------------------ lab 4


def _prepare_lab4(records: Sequence[LayerRecord]):
    return tuple(records)


def _evaluate_lab4(records, track: Track, options: ScoreOptions, per_layer: bool) -> Scoring:
    params = sum(r.params for r in records)
    zeros = sum(r.params - r.nonzero_params for r in records)
    macs = sum(r.counts.macs for r in records)
    weighted = [r.weight_bits for r in records if r.params]
    active = [r.input_bits for r in records if r.counts.dense_mults or r.counts.dense_adds]
    qw = options.weight_bits or (max(weighted) if weighted else 32)
    qa = options.act_bits or (max(active) if active else 32)
    pu = options.sparsity if options.sparsity is not None else (zeros / params if params else 0.0)
    ps = float(dict(options.extra).get("structured", 0.0))
    storage_term = (1 - (ps + pu)) * (qw / 32) * params / LAB4_PARAMS
    ops_term = (1 - ps) * (max(qw, qa) / 32) * macs / LAB4_MACS
    notes = (f"closed form: qw={qw}, qa={qa}, pu={pu:.4f}, ps={ps:.4f}, w={params}, f={macs} MACs",)
    score = Score(storage_term + ops_term, storage_term, ops_term, storage_term * LAB4_PARAMS,
                  ops_term * LAB4_MACS, LAB4_PARAMS, LAB4_MACS, False, IMTA_LAB4.name, track.name, notes)
    totals = {"params": params, "nonzero_params": params - zeros, "storage": storage_term * LAB4_PARAMS,
              "mults": float(macs), "adds": float(macs), "other_ops": 0.0, "ops": ops_term * LAB4_MACS,
              "macs": float(macs)}
    costs = ()
    if per_layer:
        costs = tuple(LayerCost(r.name, (1 - (ps + pu)) * (qw / 32) * r.params, float(r.counts.macs),
                                float(r.counts.macs), 0.0, (1 - ps) * (max(qw, qa) / 32) * r.counts.macs,
                                qw, max(qw, qa), max(qw, qa), float(r.counts.macs)) for r in records)
    return Scoring(score, costs, totals)


IMTA_LAB4 = Rulebook(
    name="imta-lab4",
    description="IMT Atlantique course closed form (lab 4): weights / 5.6M + MACs / 280M, scaled",
    prepare=_prepare_lab4,
    evaluate=_evaluate_lab4,
)


@hookimpl
def micronet_register_rulebooks():
    return [IMTA_2021, IMTA_LAB4]


@hookimpl
def micronet_register_tracks():
    return [CIFAR10]
