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

Options (the course profiler's own switches), as ``ScoreOptions.extra``
pairs or as registered rulebook names, which is what ``--rulebook`` takes
(a name is looked up as is, so each combination is its own rulebook)::

    imta-2021               quant 16, sparsity over all counted params
    imta-2021-fp32          ("quant", 32): the course's ``our_quant = 32``
    imta-2021-pruned        ("sparsity", "pruned")
    imta-2021-fp32-pruned   both

- ``quant``: the course set ``our_quant`` in {1, 8, 16, 32} and used
  ``quant_factor = {1: 32, 8: 4, 16: 2, 32: 1}[our_quant]``; that one qf
  divides the conv/linear multiplies (``kernel_mul / qf``) and every leaf's
  parameter count. 16 (the default here, and what gives the reference
  ResNet-18 its 5,586,981 params) caps a layer's bits at 16, so a float32
  layer still gets qf 2. 32 caps them at 32: a float32 layer gets qf 1, so its
  multiplies are no longer halved and its params no longer halved either
  (the reference ResNet-18 then counts 11,173,962 params, score 2 + its
  extra multiplies / 834,362,880); layers quantized below 16 bits keep
  their qf (8 bits: 4) either way.
- ``sparsity``: ``"all"`` (default) takes the fraction of exact zeros among
  all counted params, BatchNorm and biases included; ``"pruned"`` takes
  the zero fraction of the pruned weights only (the ``weight`` of each
  Conv2d and Linear, once however often the module is called), the ratio the course teams passed to the profiler
  after global unstructured pruning. Either way it scales all params
  (``params * (1 - sparsity)``) and no ops. ``ScoreOptions.sparsity``
  still replaces both.

Models captured with ``torch.export`` (a ``.pt2``) carry no module calls,
only aten ops grouped by the module that owns them, and no hyper-parameters;
the profile is rebuilt from those: a Conv2d / Linear is its aten dot
products (``dot_products`` outputs of ``dot_length = k*k*cin/groups``),
BatchNorm2d / AvgPool2d their aten op on its input and output shapes, a
ReLU module its counted elements (export merges a module's calls into one
record, and torchvision's blocks call one ReLU twice), every other op
nothing (as the hooks saw). Two things the graph no
longer says are inferred: a conv's ``groups`` (the smallest divisor g of
cin and cout with ``dot_length*g/cin`` a square kernel area, else an
integer one; it only moves the ``- 1`` term), and an AvgPool2d's kernel,
taken as given by an int ``k`` (the quirk: k per output, not k*k) when the
window is a square, else as a tuple. A note says so.

The exact counts are kept as fractions (``k*k*cin/qf`` need not be whole);
the original accumulated per-layer float32 tensors, so the figure it printed
is also given (``float32_ops`` / ``float32_params``). Choices where the
original is silent: bits come from each layer (min(weight bits, 16)); a
module called twice counts its ops twice and its params once; a module fx
keeps whole although it has children (nn.MultiheadAttention) counts as one
leaf; sparsity is the fraction of exact zeros among all counted params.
Activation bits are not part of the profile: ``ScoreOptions.act_bits`` and
``layer_act_bits`` change nothing (as in the course's profiler).
A layer's MACs are the multiplies the quant factor divides (conv and linear
dot products, before qf); they sum to the ``macs`` total.

Per-layer what-ifs (``ScoreOptions.layer_weight_bits`` / ``layer_sparsity``
/ ``layer_storage_bits``, one entry per record, None = as measured; how the
``search`` step prices its candidates), read as the course's semantics say:

- ``layer_weight_bits[i]`` replaces record i's bits (after the uniform
  ``weight_bits``) in its ``qf = 32 / min(bits, quant)``, which divides its
  params and its dot products' multiplies, as declared bits do;
- ``layer_sparsity[i]`` replaces the zero fraction of record i's
  sparsifiable weight (at the call that owns it): the weight then has
  ``round(s * elements)`` zeros (whole zeros, as ``sparsify`` and ``search``
  zero a weight, so the re-score equals the audit of the model so zeroed),
  its other params keep their measured zeros, and the one global sparsity is
  recomputed from those counts, over all counted params (``"all"``) or over
  the Conv2d / Linear weights (``"pruned"``). With a uniform
  ``ScoreOptions.sparsity`` as well, every counted param is at that fraction
  but the weights overridden;
- ``layer_storage_bits`` is checked (one entry per record) and ignored: the
  course profiler counted no scales or codebooks, so storage declared with
  :func:`micronet.bits.declare_storage` is not counted either.

A search prices the weights' zeros only: under ``"all"`` (and ``imta-lab4``)
zeros its bias grids make also count, so the audit may score lower than
predicted, never higher; under ``"pruned"`` the prediction is exact.

``imta-lab4`` is the closed form that replaced the profiler::

    (1 - (ps + pu)) * (qw/32) * w / 5.6e6 + (1 - ps) * (max(qw, qa)/32) * f / 2.8e8

with w the parameters, f the MACs of the dot products (conv, linear,
matmul), qw / qa the widest weight / activation bits (qa over the records
that compute: ``ScoreOptions.layer_act_bits`` replaces a record's input
bits before the maximum is taken), pu the measured
fraction of zero parameters, and ps the structured pruning ratio. micronet
counts the model as it is, so channels already removed are gone from w and
f and ps defaults to 0; pass ``ScoreOptions(extra={"structured": r})`` to
score an unpruned model as if pruned by r. A layer's MACs are its f.
Per-layer what-ifs: ``layer_weight_bits`` replaces a record's weight bits
before qw (the widest over the records that own params) is taken, so a
layer below the widest changes nothing; ``layer_sparsity`` replaces a
weight's zeros as under ``imta-2021`` (``round(s * elements)``) and pu is
recomputed from the zero counts; ``layer_storage_bits`` is checked and
ignored (w counts parameters only).
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
    pruned_params: int = 0  # the Conv2d / Linear weight's elements ("sparsity": "pruned")
    pruned_zeros: int = 0
    index: int = 0  # the record's position (per-layer ScoreOptions overrides)
    weight_params: int = 0  # the sparsifiable weight's elements, when this call owns it
    weight_zeros: int = 0


def _owned_weight(r: LayerRecord) -> tuple[int, int]:
    """The sparsifiable weight's elements and zeros when the record owns its
    parameters (a module's first call), else (0, 0): as ``micronet-2019``."""
    if r.params and r.weight_params:
        return r.weight_params, r.weight_params - r.weight_nonzero
    return 0, 0


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


_PRUNED = ("torch.nn.Conv2d", "torch.nn.Linear")


def _pruned(r: LayerRecord, classes) -> tuple[int, int]:
    """The Conv2d / Linear weight's elements and zeros, counted at the call that
    owns it (a module called twice counts its weight once)."""
    if any(c in classes for c in _PRUNED):
        return _owned_weight(r)
    return 0, 0


def _profile(records: Sequence[LayerRecord]) -> list[_Layer]:
    if any(r.via == "export" for r in records):
        return _profile_export(records)
    layers = []
    for index, r in enumerate(records):
        leaf_params = r.call_kind == "module" or (r.call_kind == "get_attr" and r.params)
        if not leaf_params:
            continue
        quantized = plain = Fraction(0)
        if r.call_kind == "module":
            rule = next((fn for name, fn in _RULES if r.is_module(name)), None)
            if rule is not None:
                quantized, plain = rule(r)
        layers.append(_Layer(r.name, r.params, r.params - r.nonzero_params, r.weight_bits, quantized, plain,
                             *_pruned(r, r.module_classes if r.call_kind == "module" else ()), index,
                             *_owned_weight(r)))
    return layers


# ------------------------------------------- torch.export captures (.pt2)

_PUBLIC = {"torch.nn.modules.conv.Conv2d": "torch.nn.Conv2d", "torch.nn.modules.linear.Linear": "torch.nn.Linear",
           "torch.nn.modules.batchnorm.BatchNorm2d": "torch.nn.BatchNorm2d",
           "torch.nn.modules.activation.ReLU": "torch.nn.ReLU",
           "torch.nn.modules.pooling.AvgPool2d": "torch.nn.AvgPool2d"}


def _export_classes(r: LayerRecord) -> set[str]:
    """The owning module's class names (export records name it in ``target``)."""
    names = {r.target, *r.module_classes}
    return names | {_PUBLIC[n] for n in names if n in _PUBLIC}


def _is_square(n: int) -> bool:
    return n >= 0 and int(round(n ** 0.5)) ** 2 == n


def _groups(cin: int, cout: int, dot_length: int) -> int:
    """A conv's groups from cin and ``dot_length = k*k*cin/groups``."""
    candidates = [g for g in range(1, cin + 1) if cin % g == 0 and cout % g == 0 and (dot_length * g) % cin == 0]
    square = [g for g in candidates if _is_square(dot_length * g // cin)]
    return (square or candidates or [1])[0]


def _export_conv(r: LayerRecord) -> tuple[Fraction, Fraction]:
    elements, length = r.counts.dot_products, r.counts.dot_length
    cin = r.input_shapes[0][1] if r.input_shapes and len(r.input_shapes[0]) > 1 else length
    cout = r.output_shapes[0][1] if r.output_shapes and len(r.output_shapes[0]) > 1 else 1
    groups = _groups(cin, cout, length)
    # (k*k*cin/qf + k*k*cin - 1) / groups per output, with k*k*cin/groups = dot_length
    plain = Fraction(length * elements) - Fraction(elements, groups) + (elements if r.attrs.get("bias") else 0)
    return Fraction(length * elements), plain


def _export_linear(r: LayerRecord) -> tuple[Fraction, Fraction]:
    elements, fan_in = r.counts.dot_products, r.counts.dot_length
    return Fraction(fan_in * elements), Fraction((fan_in - 1) * elements)


def _export_avg_pool(r: LayerRecord) -> tuple[Fraction, Fraction]:
    outputs = _numel(r.output_shapes[0])
    window = round(r.counts.adds / outputs) + 1 if outputs else 1  # adds = outputs * (window - 1)
    counted = int(round(window ** 0.5)) if _is_square(window) else window  # as nn.AvgPool2d(int k)
    return Fraction(0), Fraction(counted * outputs)


# (class, aten node name prefixes, rule): the record must be that op of that module
_EXPORT_RULES = (
    ("torch.nn.Conv2d", ("conv2d", "convolution", "_convolution"), _export_conv),
    ("torch.nn.Linear", ("linear", "addmm", "mm"), _export_linear),
    ("torch.nn.AvgPool2d", ("avg_pool2d",), _export_avg_pool),
    ("torch.nn.BatchNorm2d", ("batch_norm", "_native_batch_norm", "native_batch_norm", "cudnn_batch_norm"),
     _per_input(3)),
    ("torch.nn.ReLU", ("relu",), lambda r: (Fraction(0), Fraction(r.counts.mults + r.counts.adds + r.counts.other_ops))),
)


def _profile_export(records: Sequence[LayerRecord]) -> list[_Layer]:
    layers = []
    for index, r in enumerate(records):
        classes = _export_classes(r)
        quantized = plain = Fraction(0)
        for name, nodes, rule in _EXPORT_RULES:
            if name in classes and r.node.startswith(nodes):
                if rule in (_export_conv, _export_linear) and not r.counts.dot_products:
                    continue
                quantized, plain = rule(r)
                break
        if r.params or quantized or plain:
            layers.append(_Layer(r.name, r.params, r.params - r.nonzero_params, r.weight_bits, quantized, plain,
                                 *_pruned(r, classes), index, *_owned_weight(r)))
    return layers


def _qf(bits: int, quant: int = 16) -> Fraction:
    return Fraction(32, min(bits, quant))


# ------------------------------------------------ per-layer ScoreOptions


def _overrides(values, count: int, what: str) -> tuple:
    """``ScoreOptions.<what>`` as one entry per record (all None when not given)."""
    if values is None:
        return (None,) * count
    if len(values) != count:
        raise UsageError(f"ScoreOptions.{what} has {len(values)} entries, expected one per record ({count})")
    return tuple(values)


def _zeros(params: int, zeros: int, weight_params: int, weight_zeros: int, given: float | None,
           uniform: float | None) -> float:
    """Zero parameters among ``params`` (of which ``weight_params`` are the
    sparsifiable weight, ``weight_zeros`` of them zero, ``zeros`` in all):
    measured, or every parameter at the ``uniform`` fraction, then the
    weight's zeros replaced by ``round(given * weight_params)`` (whole zeros,
    as ``sparsify`` and the search zero a weight) when ``given``."""
    if given is None or not weight_params:
        return zeros if uniform is None else uniform * params
    rest = zeros - weight_zeros if uniform is None else uniform * (params - weight_params)
    return rest + round(given * weight_params)


def _sparsity(parts: list[tuple[int, int, int, int, float | None]], uniform: float | None) -> float:
    """The fraction of zeros over ``parts`` ((params, zeros, weight params,
    weight zeros, given weight sparsity) each, see :func:`_zeros`): measured,
    ``uniform`` itself when no part has a given sparsity, 0 over no params."""
    if uniform is not None and all(p[4] is None or not p[2] for p in parts):
        return uniform
    counted = sum(p[0] for p in parts)
    return sum(_zeros(*p, uniform) for p in parts) / counted if counted else (uniform or 0.0)


def _settings(defaults: tuple, options: ScoreOptions) -> tuple[int, str]:
    extra = {**dict(defaults), **dict(options.extra)}
    quant, sparsity = extra.get("quant", 16), extra.get("sparsity", "all")
    if quant not in (16, 32):
        raise UsageError(f"imta-2021 option quant={quant!r}: the course's float settings are 16 and 32",
                         hint="write quant=16 (float32 layers counted as fp16, the default) or quant=32")
    if sparsity not in ("all", "pruned"):
        raise UsageError(f"imta-2021 option sparsity={sparsity!r}: choose 'all' or 'pruned'")
    return int(quant), sparsity


def _evaluate_2021(layers: list[_Layer], count: int, track: Track, options: ScoreOptions, per_layer: bool,
                   book: Rulebook | None = None) -> Scoring:
    """The course score of ``layers`` (profiled from ``count`` records)."""
    book = book or IMTA_2021
    quant, sparsity_from = _settings(_DEFAULTS.get(book.name, ()), options)
    layer_bits = _overrides(options.layer_weight_bits, count, "layer_weight_bits")
    layer_sparsity = _overrides(options.layer_sparsity, count, "layer_sparsity")
    _overrides(options.layer_storage_bits, count, "layer_storage_bits")  # checked; the course counted none
    costs, float_ops, float_params = [], np.float32(0), np.float32(0)
    total_ops = total_params = mults = Fraction(0)
    for layer in layers:
        bits = layer_bits[layer.index]
        qf = _qf(options.weight_bits or layer.bits if bits is None else bits, quant)
        ops = layer.quantized_ops / qf + layer.plain_ops
        params = Fraction(layer.params) / qf
        total_ops += ops
        total_params += params
        mults += layer.quantized_ops / qf
        float_ops = np.float32(float_ops + np.float32(float(ops)))
        float_params = np.float32(float_params + np.float32(float(params)))
        if per_layer:
            costs.append(LayerCost(layer.name, float(params), float(layer.quantized_ops / qf),
                                   float(layer.plain_ops), 0.0, float(ops), int(32 / qf), int(32 / qf), 32,
                                   float(layer.quantized_ops)))
    counted = sum(l.params for l in layers)
    pruned = sum(l.pruned_params for l in layers)
    if sparsity_from == "pruned":
        sparsity = _sparsity([(l.pruned_params, l.pruned_zeros, l.pruned_params, l.pruned_zeros,
                               layer_sparsity[l.index]) for l in layers], options.sparsity)
    else:
        sparsity = _sparsity([(l.params, l.zeros, l.weight_params, l.weight_zeros, layer_sparsity[l.index])
                              for l in layers], options.sparsity)
    ops_term = float(total_ops) / track.reference_ops
    storage_term = float(total_params) / track.reference_params * (1 - sparsity)
    source = "given" if options.sparsity is not None else sparsity_from
    if any(s is not None for s in layer_sparsity):
        source += ", per-layer overrides"
    notes = (f"course profiler figures (float32): ops {float(float_ops):.8g}, params {float(float_params):.8g}",
             f"unstructured sparsity {sparsity:.4f} ({source}) "
             "scales params only; no bitmask", f"quant {quant}: float32 layers counted at {min(32, quant)} bits")
    score = Score(storage_term + ops_term, storage_term, ops_term, float(total_params) * (1 - sparsity),
                  float(total_ops), track.reference_params, track.reference_ops, False, book.name,
                  track.name, notes)
    totals = {
        "params": counted, "nonzero_params": counted - sum(l.zeros for l in layers),
        "storage": float(total_params) * (1 - sparsity),
        "mults": float(mults),
        "adds": float(sum(l.plain_ops for l in layers)), "other_ops": 0.0, "ops": float(total_ops),
        "macs": float(sum(l.quantized_ops for l in layers)),
        "exact_ops": str(total_ops), "exact_params": str(total_params),
        "float32_ops": float(float_ops), "float32_params": float(float_params),
        "unstructured_sparsity": sparsity,
        "pruned_weights": pruned, "pruned_weight_zeros": sum(l.pruned_zeros for l in layers),
    }
    return Scoring(score, tuple(costs), totals)


def _prepare_2021(records: Sequence[LayerRecord]):
    return records, _profile(records)


def _evaluate_2021_records(prepared, track: Track, options: ScoreOptions, per_layer: bool,
                           book: Rulebook | None = None) -> Scoring:
    records, layers = prepared
    scoring = _evaluate_2021(layers, len(records), track, options, per_layer, book)
    if not per_layer:
        return scoring
    by_name = {c.name: c for c in scoring.layers}
    zero = lambda r: LayerCost(r.name, 0.0, 0.0, 0.0, 0.0, 0.0, 32, 32, 32)  # noqa: E731
    costs = tuple(by_name.pop(r.name) if r.name in by_name else zero(r) for r in records)
    return Scoring(scoring.score, costs, scoring.totals)


def _variant(name: str, description: str, defaults: tuple) -> Rulebook:
    _DEFAULTS[name] = defaults
    book = Rulebook(name=name, description=description, prepare=_prepare_2021,
                    evaluate=lambda prepared, track, options, per_layer: _evaluate_2021_records(
                        prepared, track, options, per_layer, _BOOKS[name]))
    _BOOKS[name] = book
    return book


_DEFAULTS: dict[str, tuple] = {}
_BOOKS: dict[str, Rulebook] = {}
IMTA_2021 = _variant("imta-2021", "IMT Atlantique course profiler (2021-2024), quirks included", ())
IMTA_2021_FP32 = _variant("imta-2021-fp32", "imta-2021 with the course's 32-bit setting (quant 32: qf 1 "
                          "for float32 layers, multiplies and params not halved)", (("quant", 32),))
IMTA_2021_PRUNED = _variant("imta-2021-pruned", "imta-2021 with sparsity from the pruned Conv2d/Linear "
                            "weights' zeros", (("sparsity", "pruned"),))
IMTA_2021_FP32_PRUNED = _variant("imta-2021-fp32-pruned", "imta-2021 with quant 32 and sparsity from the "
                                 "pruned weights", (("quant", 32), ("sparsity", "pruned")))


# ------------------------------------------------------------------ lab 4


def _prepare_lab4(records: Sequence[LayerRecord]):
    return tuple(records)


def _act_bits(records, options: ScoreOptions) -> list[int]:
    """Each record's activation bits: ``layer_act_bits`` where given, else the
    uniform ``act_bits``, else as measured (qa is the widest of the active ones)."""
    given = _overrides(options.layer_act_bits, len(records), "layer_act_bits")
    return [(options.act_bits or r.input_bits) if g is None else g for r, g in zip(records, given)]


def _evaluate_lab4(records, track: Track, options: ScoreOptions, per_layer: bool) -> Scoring:
    params = sum(r.params for r in records)
    zeros = sum(r.params - r.nonzero_params for r in records)
    macs = sum(r.counts.macs for r in records)
    layer_bits = _overrides(options.layer_weight_bits, len(records), "layer_weight_bits")
    layer_sparsity = _overrides(options.layer_sparsity, len(records), "layer_sparsity")
    _overrides(options.layer_storage_bits, len(records), "layer_storage_bits")  # checked; not in the form
    weighted = [options.weight_bits or r.weight_bits if bits is None else bits
                for r, bits in zip(records, layer_bits) if r.params]
    active = [bits for r, bits in zip(records, _act_bits(records, options))
              if r.counts.dense_mults or r.counts.dense_adds]
    qw = max(weighted) if weighted else (options.weight_bits or 32)
    qa = max(active) if active else (options.act_bits or 32)
    pu = _sparsity([(r.params, r.params - r.nonzero_params, *_owned_weight(r), given)
                    for r, given in zip(records, layer_sparsity)], options.sparsity)
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
    return [IMTA_2021, IMTA_2021_FP32, IMTA_2021_PRUNED, IMTA_2021_FP32_PRUNED, IMTA_LAB4]


@hookimpl
def micronet_register_tracks():
    return [CIFAR10]
