"""Rulebooks and tracks, and the official MicroNet 2019 rulebook.

A :class:`Track` holds a challenge track's reference constants and quality
bar; a :class:`Rulebook` turns layer records into storage and MicroNet ops.
Both are registered through hooks (this module is the built-in plugin that
registers ``micronet-2019`` and the ``cifar100`` / ``imagenet`` / ``wikitext103`` /
``digits`` tracks).

Units: ``storage`` is parameters in 32-bit equivalents (a b-bit value counts
b/32), ``ops`` is MicroNet math operations in 32-bit equivalents, ``mults``
and ``adds`` are plain operation counts after sparsity, before precision.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from .errors import UsageError
from .manager import hookimpl
from .records import LayerRecord
from .sparsity import block_elements

__all__ = ["Track", "TRACK_METRICS", "Rulebook", "ScoreOptions", "Score", "LayerCost", "Scoring", "MICRONET_2019"]


#: A track's quality metric -> whether higher is better.
TRACK_METRICS = {"top1": True, "perplexity": False}


@dataclass(frozen=True)
class Track:
    """A challenge track: reference model constants and the quality bar.

    ``reference_params`` (parameters) and ``reference_ops`` (MicroNet ops) are
    the published denominators of the score; ``quality_bar`` is the bar in
    the units of ``metric``: ``"top1"`` (accuracy in percent, higher is
    better: the bar is a minimum) or ``"perplexity"`` (test perplexity, lower
    is better: the bar is a maximum); ``input_shape`` is the default input
    (batch 1; token ids ``[1, 1]`` for a per-token language track);
    ``published`` lists (entry, score) of the best published results.
    """

    name: str
    dataset: str
    reference_model: str
    reference_params: float
    reference_ops: float
    quality_bar: float
    input_shape: tuple[int, ...]
    num_classes: int
    description: str = ""
    published: tuple[tuple[str, float], ...] = ()
    replace: bool = False
    metric: str = "top1"

    def __post_init__(self):
        if self.metric not in TRACK_METRICS:
            raise UsageError(f"track {self.name!r}: unknown metric {self.metric!r}; "
                             f"use one of {', '.join(map(repr, TRACK_METRICS))}")

    @property
    def higher_is_better(self) -> bool:
        """True when a larger quality figure is better (top-1), False when a
        smaller one is (perplexity)."""
        return TRACK_METRICS[self.metric]

    def meets_bar(self, accuracy: float | None) -> bool | None:
        """Whether a measured quality figure reaches the quality bar (None
        when it was not measured): a score only counts if so. ``accuracy``
        is in the units of ``metric``: top-1 percent must be at least the
        bar, a perplexity at most the bar."""
        if accuracy is None:
            return None
        return accuracy >= self.quality_bar if self.higher_is_better else accuracy <= self.quality_bar

    def bar_text(self, unicode: bool = False) -> str:
        """The quality bar in words: ``'top-1 >= 80%'`` (top-1, percent) or
        ``'perplexity <= 35'`` (perplexity, no unit); ``unicode`` writes
        ``≥`` / ``≤`` (HTML pages)."""
        ge, le = ("≥", "≤") if unicode else (">=", "<=")
        if self.metric == "perplexity":
            return f"perplexity {le} {self.quality_bar:g}"
        return f"top-1 {ge} {self.quality_bar:g}%"

    def compare_text(self, value: float) -> str:
        """A measured figure against the bar: ``'top-1 81.20% >= 80%'``,
        ``'perplexity 36.10 > 35'`` (the comparison says whether it is met)."""
        met = self.meets_bar(value)
        if self.metric == "perplexity":
            return f"perplexity {value:.2f} {'<=' if met else '>'} {self.quality_bar:g}"
        return f"top-1 {value:.2f}% {'>=' if met else '<'} {self.quality_bar:g}%"

    def rank(self, score: float) -> int | None:
        """1-based place ``score`` would take among the published results
        (lower wins), or None when the track has none."""
        if not self.published:
            return None
        return 1 + sum(1 for _, published in self.published if published < score)


@dataclass(frozen=True)
class ScoreOptions:
    """How to score: the freebie, and uniform or per-layer what-if assumptions.

    ``weight_bits`` / ``act_bits`` replace every layer's measured widths,
    ``sparsity`` replaces every sparsifiable weight's measured sparsity
    (unstructured); ``None`` keeps what was measured. ``extra`` holds
    rulebook-specific settings as (name, value) pairs.

    Per-layer overrides, each a tuple aligned with the records (one entry
    per record, ``None`` = that record as measured, or as the uniform
    setting says), applied after the uniform ones: ``layer_weight_bits``
    (bits), ``layer_act_bits`` (bits of the record's input activations, as
    :func:`micronet.bits.set_bits` ``input`` declares them: under
    ``micronet-2019`` a multiply of a layer with weights costs
    ``max(weight bits, act bits)/32``, one without weights ``act bits/32``,
    and act bits below 16 lose the freebie), ``layer_sparsity`` (fraction of
    zero weights, unstructured: a bitmask of one bit per weight) and
    ``layer_storage_bits`` (the bits a compression declares beside the
    parameters, e.g. quantization scales). A search re-scores thousands of
    per-layer choices with them, no re-trace. Each rulebook reads them as
    its rules say (``imta-2021`` counts no activation bits at all).
    """

    freebie: bool = True
    weight_bits: int | None = None
    act_bits: int | None = None
    sparsity: float | None = None
    extra: tuple[tuple[str, Any], ...] = ()
    layer_weight_bits: tuple[int | None, ...] | None = None
    layer_sparsity: tuple[float | None, ...] | None = None
    layer_storage_bits: tuple[float | None, ...] | None = None
    layer_act_bits: tuple[int | None, ...] | None = None


@dataclass(frozen=True)
class LayerCost:
    """What one record costs: ``storage`` and ``ops`` in 32-bit equivalents,
    ``mults`` / ``adds`` after sparsity, the bit widths that were charged,
    and ``macs``: the multiply-accumulates the rulebook counts for the layer
    (after sparsity for the official rules; they sum to the ``macs`` total).
    Reports show these numbers as they are: a rulebook is their one source."""

    name: str
    storage: float
    mults: float
    adds: float
    other_ops: float
    ops: float
    param_bits: int
    mult_bits: int
    add_bits: int
    macs: float = 0.0


@dataclass(frozen=True)
class Score:
    """The score and its two terms (lower is better)."""

    total: float
    storage_term: float
    ops_term: float
    storage: float
    ops: float
    reference_params: float
    reference_ops: float
    freebie: bool
    rulebook: str
    track: str
    notes: tuple[str, ...] = ()

    def parts(self, storage: float, ops: float) -> tuple[float, float]:
        """The fractions of the score that ``storage`` and ``ops`` (a layer's
        or a group's, in the rulebook's units) account for."""
        total = self.total or 1.0
        return (storage / (self.storage or 1.0) * self.storage_term / total,
                ops / (self.ops or 1.0) * self.ops_term / total)

    def share(self, storage: float, ops: float) -> float:
        """The fraction of the score that ``storage`` and ``ops`` account for."""
        return ((storage / (self.storage or 1.0) * self.storage_term
                 + ops / (self.ops or 1.0) * self.ops_term) / (self.total or 1.0))


@dataclass(frozen=True)
class Scoring:
    """A rulebook's answer: the score, per-layer costs (in record order;
    empty when not asked for) and totals (``mults``, ``adds``, ``ops``,
    ``storage``, ``params``, ``nonzero_params``, ``macs``)."""

    score: Score
    layers: tuple[LayerCost, ...]
    totals: dict[str, float]


@dataclass(frozen=True)
class Rulebook:
    """How records become a score.

    ``prepare(records)`` builds whatever the rulebook needs once (columns);
    ``evaluate(prepared, track, options, per_layer)`` scores it, cheaply
    enough to be called for every cell of a what-if grid.
    """

    name: str
    description: str
    prepare: Callable[[Sequence[LayerRecord]], Any]
    evaluate: Callable[[Any, Track, ScoreOptions, bool], Scoring]
    replace: bool = False

    def score(self, records: Sequence[LayerRecord], track: Track,
              options: ScoreOptions = ScoreOptions()) -> Scoring:
        """Score ``records`` on ``track`` with per-layer costs."""
        return self.evaluate(self.prepare(records), track, options, True)


# ----------------------------------------------------- micronet-2019 rules


@dataclass(frozen=True)
class _Columns:
    names: tuple[str, ...]
    dot_products: np.ndarray
    dot_length: np.ndarray
    sparse: np.ndarray  # bool: dot products run over the sparsifiable weight
    mults: np.ndarray
    adds: np.ndarray
    other_ops: np.ndarray
    extra_macs: np.ndarray  # multiply-accumulates inside mults and adds
    params: np.ndarray
    nonzero_params: np.ndarray
    folded: np.ndarray
    weight_params: np.ndarray
    weight_nonzero: np.ndarray
    block: np.ndarray
    has_weight: np.ndarray  # bool: the multiplies read stored parameters
    owns_weight: np.ndarray  # bool: the sparsifiable weight is among the record's params
    weight_bits: np.ndarray
    input_bits: np.ndarray
    acc_bits: np.ndarray
    declared_storage_bits: np.ndarray  # codebooks, scales: bits a compression stores beside the params
    costed: np.ndarray  # bool: the record has ops or params


def _columns(records: Sequence[LayerRecord]) -> _Columns:
    def col(values, dtype=np.float64):
        return np.fromiter(values, dtype=dtype, count=len(records))

    c = [r.counts for r in records]
    params = col((r.params for r in records))
    weight_params = col((r.weight_params for r in records))
    dot_products = col((x.dot_products for x in c))
    mults, adds, other = col((x.mults for x in c)), col((x.adds for x in c)), col((x.other_ops for x in c))
    return _Columns(
        names=tuple(r.name for r in records),
        dot_products=dot_products,
        dot_length=col((x.dot_length for x in c)),
        sparse=col((x.sparse_weight for x in c), bool),
        mults=mults, adds=adds, other_ops=other,
        extra_macs=col((x.extra_macs for x in c)),
        params=params,
        nonzero_params=col((r.nonzero_params for r in records)),
        folded=col((x.folded_params for x in c)),
        weight_params=weight_params,
        weight_nonzero=col((r.weight_nonzero for r in records)),
        block=col((block_elements(r.weight_block) for r in records)),
        has_weight=(params > 0) | (weight_params > 0),
        owns_weight=col(((r.params > 0) if r.owns_weight is None else r.owns_weight for r in records), bool),
        weight_bits=col((r.weight_bits for r in records)),
        input_bits=col((r.input_bits for r in records)),
        acc_bits=col((r.accumulator_bits for r in records)),
        declared_storage_bits=col((r.declared_storage_bits for r in records)),
        costed=(params > 0) | (dot_products > 0) | (mults > 0) | (adds > 0) | (other > 0),
    )


def _per_layer(column: np.ndarray, values: Sequence[float | None] | None, what: str) -> tuple[np.ndarray, np.ndarray]:
    """``column`` with the records' ``values`` put in where not None, and
    the bool column of where they were (all False without ``values``)."""
    if values is None:
        return column, np.zeros(len(column), dtype=bool)
    if len(values) != len(column):
        raise UsageError(f"ScoreOptions.{what} has {len(values)} entries, expected one per record ({len(column)})")
    given = np.fromiter((v is not None for v in values), dtype=bool, count=len(column))
    found = np.fromiter((np.nan if v is None else v for v in values), dtype=np.float64, count=len(column))
    return np.where(given, found, column), given


def _evaluate_2019(cols: _Columns, track: Track, options: ScoreOptions, per_layer: bool) -> Scoring:
    weight_bits = cols.weight_bits if options.weight_bits is None else np.full_like(cols.weight_bits, options.weight_bits)
    weight_bits, _ = _per_layer(weight_bits, options.layer_weight_bits, "layer_weight_bits")
    input_bits = cols.input_bits if options.act_bits is None else np.full_like(cols.input_bits, options.act_bits)
    input_bits, _ = _per_layer(input_bits, options.layer_act_bits, "layer_act_bits")
    sparsifiable = cols.weight_params > 0
    if options.sparsity is None:
        nonzero, block = cols.weight_nonzero, cols.block
    else:
        nonzero, block = cols.weight_params * (1.0 - options.sparsity), np.ones_like(cols.block)
    sparsity, given = _per_layer(np.zeros_like(nonzero), options.layer_sparsity, "layer_sparsity")
    nonzero = np.where(given, cols.weight_params * (1.0 - sparsity), nonzero)
    block = np.where(given, 1.0, block)
    declared, _ = _per_layer(cols.declared_storage_bits, options.layer_storage_bits, "layer_storage_bits")

    # Freebie: an entry that quantizes nothing below 16 bits may count its
    # parameters and multiplies at 16 bits; additions stay at their width.
    quantized = np.any((weight_bits < 16) & cols.has_weight) or np.any((input_bits < 16) & cols.costed)
    freebie = bool(options.freebie and not quantized)
    param_bits = np.minimum(weight_bits, 16) if freebie else weight_bits
    mult_bits = np.where(cols.has_weight, np.maximum(weight_bits, input_bits), input_bits)
    if freebie:
        mult_bits = np.minimum(mult_bits, 16)
    add_bits = cols.acc_bits

    density = np.where(sparsifiable & cols.sparse, nonzero / np.maximum(cols.weight_params, 1), 1.0)
    length = cols.dot_length * density
    mults = cols.dot_products * length + cols.mults
    adds = cols.dot_products * np.maximum(length - 1.0, 0.0) + cols.adds
    ops = mults * mult_bits / 32 + adds * add_bits / 32 + cols.other_ops

    # Storage: a sparse weight costs its nonzeros plus a bitmask (one bit per
    # block); a weight keeps the cheaper of dense and sparse encodings.
    dense_weight = cols.weight_params * param_bits / 32
    sparse_weight = nonzero * param_bits / 32 + cols.weight_params / np.maximum(block, 1) / 32
    weight_storage = np.where(nonzero < cols.weight_params, np.minimum(dense_weight, sparse_weight), dense_weight)
    owned_weight = np.where(cols.owns_weight, weight_storage, 0.0)  # a shared weight counts once
    rest = np.maximum(cols.params - np.where(cols.owns_weight, cols.weight_params, 0) - cols.folded, 0)
    # Storage a compression declared (a codebook, scales) at its own width, freebie or not.
    storage = owned_weight + rest * param_bits / 32 + declared / 32

    total_storage, total_ops = float(storage.sum()), float(ops.sum())
    storage_term = total_storage / track.reference_params
    ops_term = total_ops / track.reference_ops
    notes = ("freebie: parameters and multiplies of 32-bit layers counted at 16 bits",) if freebie else ()
    score = Score(storage_term + ops_term, storage_term, ops_term, total_storage, total_ops,
                  track.reference_params, track.reference_ops, freebie, MICRONET_2019.name,
                  track.name, notes)
    macs = cols.dot_products * length + cols.extra_macs
    totals = {
        "params": int(cols.params.sum()),
        "nonzero_params": int(cols.nonzero_params.sum()),
        "storage": total_storage,
        "mults": float(mults.sum()),
        "adds": float(adds.sum()),
        "other_ops": float(cols.other_ops.sum()),
        "ops": total_ops,
        "macs": float(macs.sum()),
    }
    layers: tuple[LayerCost, ...] = ()
    if per_layer:
        layers = tuple(
            LayerCost(name, float(s), float(m), float(a), float(o), float(x), int(pb), int(mb), int(ab), float(mac))
            for name, s, m, a, o, x, pb, mb, ab, mac in zip(
                cols.names, storage, mults, adds, cols.other_ops, ops, param_bits, mult_bits, add_bits, macs)
        )
    return Scoring(score, layers, totals)


MICRONET_2019 = Rulebook(
    name="micronet-2019",
    description="MicroNet Challenge 2019 official rules (NeurIPS 2019; reference counter conventions)",
    prepare=_columns,
    evaluate=_evaluate_2019,
)

CIFAR100 = Track(
    name="cifar100", dataset="cifar100", reference_model="WideResNet-28-10",
    reference_params=36.5e6, reference_ops=10.49e9, quality_bar=80.0,
    input_shape=(1, 3, 32, 32), num_classes=100,
    description="MicroNet 2019 CIFAR-100 track: top-1 >= 80%",
    # Final leaderboard (micronet-challenge.github.io, NeurIPS 2019): 1st RIAIR (0.0044, as issue 16
    # quotes it); 2nd and 3rd KAIST AI (Kim et al., "Efficient Model for Image Classification With
    # Regularization Tricks", PMLR 123:13-26, 2020: "won the second and third places", final 0.0054).
    # The 4th and 5th teams' names are not recorded here: they read as their place.
    published=(("RIAIR", 0.0044), ("KAIST AI", 0.0054), ("KAIST AI", 0.0056),
               ("4th-place team", 0.0058), ("5th-place team", 0.0108)),
)
IMAGENET = Track(
    name="imagenet", dataset="imagenet", reference_model="MobileNetV2 (width 1.4)",
    reference_params=6.9e6, reference_ops=1170e6, quality_bar=75.0,
    input_shape=(1, 3, 224, 224), num_classes=1000,
    description="MicroNet 2019 ImageNet track: top-1 >= 75%",
    # Final leaderboard (micronet-challenge.github.io, NeurIPS 2019): 1st RIAIR (0.1295, as issue 16
    # quotes it); the other teams' names are not recorded here: they read as their place.
    published=(("RIAIR", 0.1295), ("2nd-place team", 0.1887), ("3rd-place team", 0.2053),
               ("4th-place team", 0.2968)),
)

#: MicroNet 2019's language-modelling track: WikiText-103, test perplexity <= 35.
#: The reference (Rae et al. 2018, arXiv 1803.10049, an LSTM) is published at
#: 159M parameters and 318M math ops; ops are counted per token, online (batch 1,
#: one token at a time: input ``[1, 1]`` token ids). ``micronet:wikitext103_lstm``
#: rebuilds that model from its description (see micronet.models.lstm_lm).
#: The per-token figure scored is one decode step after T tokens of context (a
#: transformer's key/value cache of T, a recurrent model's carried state), not a
#: prefill of T divided by T, which assumes the window known in advance:
#: ``micronet audit --per-token T`` shows both (micronet.per_token, docs/language-models.md).
#: Perplexity is not measured by the toolkit (no WikiText offline): ``meets_bar``
#: gets None unless a perplexity is supplied.
WIKITEXT103 = Track(
    name="wikitext103", dataset="wikitext103", reference_model="LSTM (Rae et al. 2018)",
    reference_params=159e6, reference_ops=318e6, quality_bar=35.0,
    input_shape=(1, 1), num_classes=267_735, metric="perplexity",
    description="MicroNet 2019 WikiText-103 track: test perplexity <= 35; ops per token (online, batch 1)",
)

#: Not a MicroNet 2019 track: scikit-learn's 8x8 digits (the ``digits`` dataset),
#: so every score is measured on real data offline. The reference is
#: ``micronet:digits_cnn`` at fp32 as ``micronet audit --no-freebie`` counts it
#: (storage 23,946 = 24,058 params less 112 folded BatchNorm scales; 1,206,016 ops),
#: so that model scores exactly 2.0.
DIGITS = Track(
    name="digits", dataset="digits", reference_model="micronet:digits_cnn (fp32)",
    reference_params=23_946, reference_ops=1_206_016, quality_bar=97.0,
    input_shape=(1, 1, 8, 8), num_classes=10,
    description="scikit-learn digits (8x8, offline): top-1 >= 97%; reference micronet:digits_cnn at fp32",
)


@hookimpl
def micronet_register_rulebooks():
    return [MICRONET_2019]


@hookimpl
def micronet_register_tracks():
    return [CIFAR100, IMAGENET, WIKITEXT103, DIGITS]
