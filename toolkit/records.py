"""Frozen records that flow from the walker to the rulebooks and reports.

Units are in the field names: ``mults`` and ``adds`` are single arithmetic
operations, ``macs`` multiply-accumulates, ``params`` parameter elements,
``bits`` bit widths, ``storage`` and ``ops`` the MicroNet 32-bit equivalents.
Nothing here is formatted: K/M/G belong to :mod:`micronet.reports`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

__all__ = ["TensorInfo", "Counts", "LayerRecord", "COUNTED", "FREE", "UNCOUNTED"]

COUNTED = "counted"
FREE = "free"
UNCOUNTED = "uncounted"

Shape = tuple[int, ...]


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """Shape and dtype of a tensor flowing along a graph edge; never its data."""

    shape: Shape
    dtype: torch.dtype = torch.float32

    @property
    def numel(self) -> int:
        """Number of elements."""
        n = 1
        for size in self.shape:
            n *= size
        return n

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __repr__(self) -> str:
        return f"TensorInfo({list(self.shape)}, {str(self.dtype).removeprefix('torch.')})"


@dataclass(frozen=True, slots=True)
class Counts:
    """Dense operation counts of one call, before precision and sparsity apply.

    A counter returns one of these. The rulebook turns it into MicroNet ops.

    - ``dot_products`` weighted sums of ``dot_length`` terms each (a conv or
      linear output element is one). A dense dot product of length L costs L
      mults and L-1 adds; when ``sparse_weight`` is true the layer's measured
      weight density d shrinks L to d*L (rules: sparsity reduces both).
    - ``mults`` / ``adds``: every other multiply / addition (bias adds,
      activations booked as a multiply, pooling sums, elementwise ops;
      comparisons, as in max pooling, are booked as adds); always dense.
    - ``other_ops``: transcendental and bitwise operations (exp, sqrt, sign
      flips), which cost 1 each whatever their precision.
    - ``folded_params``: parameters the rules make free (BatchNorm's scale
      folds into the preceding conv).
    - ``extra_macs``: multiply-accumulates already booked in ``mults`` /
      ``adds`` (activation-by-activation products such as attention's
      ``Q K^T`` and ``attn @ V``, dot products of another length merged into
      one record). They change no MicroNet count; they make ``macs`` the MAC
      count thop, fvcore and torchvision's published GFLOPS report.
    """

    dot_products: int = 0
    dot_length: int = 0
    sparse_weight: bool = False
    mults: int = 0
    adds: int = 0
    other_ops: int = 0
    folded_params: int = 0
    extra_macs: int = 0

    @property
    def dense_mults(self) -> int:
        """Multiplies at full density."""
        return self.dot_products * self.dot_length + self.mults

    @property
    def dense_adds(self) -> int:
        """Additions at full density."""
        return self.dot_products * max(self.dot_length - 1, 0) + self.adds

    @property
    def macs(self) -> int:
        """Multiply-accumulates of every dot product, those booked in mults and
        adds included (thop / fvcore / torchvision convention)."""
        return self.dot_products * self.dot_length + self.extra_macs

    def __add__(self, other: "Counts") -> "Counts":
        if other.dot_length and self.dot_length and other.dot_length != self.dot_length:
            raise ValueError("cannot add Counts with different dot lengths")
        return Counts(
            dot_products=self.dot_products + other.dot_products,
            dot_length=self.dot_length or other.dot_length,
            sparse_weight=self.sparse_weight or other.sparse_weight,
            mults=self.mults + other.mults,
            adds=self.adds + other.adds,
            other_ops=self.other_ops + other.other_ops,
            folded_params=self.folded_params + other.folded_params,
            extra_macs=self.extra_macs + other.extra_macs,
        )


ZERO = Counts()


@dataclass(frozen=True, slots=True)
class LayerRecord:
    """One graph node as the walker saw it: what it is, its shapes and counts.

    ``name`` is the dotted module path for module calls (as in
    ``named_modules()``) and ``path.node_name`` for functions and methods;
    ``module_path`` is the owning module, ``""`` for the whole model.
    ``params`` counts every parameter element attributed to this node (a
    module's parameters go to its first call); ``weight_params`` /
    ``weight_nonzero`` are the sparsifiable weight's elements and nonzeros;
    ``weight_block`` is the block shape its zeros come in (``(1,)`` for
    unstructured, ``()`` when dense); ``owns_weight`` says whether that
    weight is among ``params`` (False for a second call of a module, or a
    tied output projection that reads the embedding's weight and owns only
    its bias; None: not known, taken as ``params > 0``). ``call_kind`` is ``"module"``,
    ``"function"``, ``"method"``, ``"get_attr"`` or ``"aten"``;
    ``module_classes`` names a called module's class and its bases, each as
    ``torch.nn.Conv2d`` (public path) and as its defining module's path.
    ``inputs`` are the ``node`` names of the records whose outputs this one
    reads (the graph's edges; the model's inputs are not records).
    ``declared_storage_bits`` is storage a compression declared beside the
    layer's parameters (:func:`micronet.bits.declare_storage`: a codebook,
    scales), in bits; the rules add it to the layer's storage.
    ``rule`` names the counter that produced ``counts`` as
    ``module:function`` (``"micronet.counters.conv:conv_module"``; the aten
    counters of a layer counted by its aten ops, joined by ``", "``),
    ``"free"`` for a free layer and ``""`` when nothing counted it;
    ``plugin`` is the plugin that registered that counter (or free op), so
    an override with ``replace=True`` shows.
    """

    name: str
    node: str
    op: str
    status: str
    target: str
    module_path: str
    input_shapes: tuple[Shape, ...]
    output_shapes: tuple[Shape, ...]
    counts: Counts = ZERO
    params: int = 0
    nonzero_params: int = 0
    weight_params: int = 0
    weight_nonzero: int = 0
    weight_block: Shape = ()
    owns_weight: bool | None = None
    weight_bits: int = 32
    input_bits: int = 32
    accumulator_bits: int = 32
    declared_storage_bits: int = 0
    attrs: Mapping[str, Any] = field(default_factory=dict)
    reason: str = ""
    via: str = "fx"
    call_kind: str = ""
    module_classes: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()
    rule: str = ""
    plugin: str = ""

    def is_module(self, qualname: str) -> bool:
        """Whether this is a call of a module of class ``qualname`` (e.g.
        ``"torch.nn.Conv2d"``) or a subclass of it."""
        return self.call_kind == "module" and qualname in self.module_classes

    @property
    def weight_density(self) -> float:
        """Fraction of the weight that is nonzero (1.0 without a weight)."""
        return self.weight_nonzero / self.weight_params if self.weight_params else 1.0
