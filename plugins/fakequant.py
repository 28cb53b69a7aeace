"""Fake quantization: weights on a b-bit grid, activation quantizers, observers.

The ``quantize`` step (:mod:`micronet.plugins.quantize`) is built from these
pieces; they hold no knowledge of graphs, recipes or scoring.

Weights (:func:`fake_quant`, :class:`WeightQuant`): symmetric, per output
channel (dim 0) for weights, per tensor for biases. For ``b >= 2`` bits the
grid is ``k * scale`` with integer ``k`` in ``[-(2^(b-1) - 1), 2^(b-1) - 1]``
and ``scale = max|w| / (2^(b-1) - 1)``: ``2^b - 1`` values, zero included (so
pruned zeros stay zeros). For ``b = 1`` (binary) the value is
``sign(w) * mean|w|``, with ``sign(0) = +1`` so that a channel holds exactly
two values. Every result is a float tensor holding the dequantized values;
the gradient is the straight-through estimator (identity).

Activations (:class:`ActivationQuant`): affine, per tensor, unsigned grid
``0 .. 2^b - 1`` with a zero point, so that 0 is exact and post-ReLU inputs
use the whole grid. It first *calibrates* (observes the values passing
through, unchanged), then is *frozen* to a scale and zero point and fake
quantizes with ``torch.fake_quantize_per_tensor_affine`` (gradient: straight
through inside the range, zero outside).

Observers turn what was seen into a range ``(lo, hi)`` (always widened to
contain 0): ``minmax`` the exact extremes; ``percentile`` the ``p``-th and
``(100 - p)``-th percentiles (default ``p = 99.99``); ``mse`` the range, among
100 proportional shrinkings of the min-max range, whose quantization error
on a 2048-bin histogram is least (clipped values cost their squared clipping
error, values inside the range the uniform rounding noise ``scale^2 / 12``).
Percentile and MSE work on a uniform random sample of at most 65,536 values
per observed batch (seeded: calibration is reproducible); min and max are
exact.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch import nn
from torch.nn.utils import parametrize

from micronet.bits import bits_of

__all__ = ["fake_quant", "WeightQuant", "declared_grids", "ActivationQuant", "Observer", "MinMaxObserver",
           "PercentileObserver", "MseObserver", "OBSERVERS", "make_observer", "affine_qparams"]


# -------------------------------------------------------------------- weights


def symmetric_scale(tensor: torch.Tensor, bits: int, per_channel: bool) -> torch.Tensor:
    """The grid step of ``tensor`` at ``bits``: one per output channel (dim 0,
    shaped to broadcast) or one for the tensor. For 1 bit, the mean magnitude."""
    dims = tuple(range(1, tensor.dim())) if per_channel and tensor.dim() > 1 else tuple(range(tensor.dim()))
    magnitude = tensor.detach().abs()
    if bits == 1:
        return magnitude.mean(dim=dims, keepdim=True)
    return magnitude.amax(dim=dims, keepdim=True) / (2 ** (bits - 1) - 1)


def fake_quant(tensor: torch.Tensor, bits: int, per_channel: bool = True) -> torch.Tensor:
    """``tensor`` rounded to its symmetric ``bits``-bit grid (see the module
    docstring), with a straight-through gradient."""
    scale = symmetric_scale(tensor, bits, per_channel)
    if bits == 1:
        grid = torch.where(tensor >= 0, scale, -scale)
    else:
        top = 2 ** (bits - 1) - 1
        step = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero channel stays zero
        grid = torch.clamp(torch.round(tensor / step), -top, top) * step
    return tensor + (grid - tensor).detach()


class WeightQuant(nn.Module):
    """A parametrization (``torch.nn.utils.parametrize``): the parameter as
    seen by the forward is its fake-quantized value; the stored latent value
    stays float and keeps learning through the straight-through gradient.
    With a ``mask`` (bool, True = kept) the masked values are zero before
    rounding, so pruned weights stay pruned however the latent ones move."""

    def __init__(self, bits: int, per_channel: bool = True, mask: torch.Tensor | None = None):
        super().__init__()
        self.bits = bits
        self.per_channel = per_channel
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.mask is not None:
            tensor = tensor * self.mask
        return fake_quant(tensor, self.bits, self.per_channel)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, per_channel={self.per_channel}"


FLOAT_WEIGHT_BITS = 32


@contextmanager
def declared_grids(model: nn.Module) -> Iterator[list[str]]:
    """Train ``model`` with every parameter of a layer that declares weight
    bits below 32 (:func:`micronet.bits.set_bits`) on its ``b``-bit grid.

    Inside the block each such parameter not parametrized yet gets a
    :class:`WeightQuant` (per output channel for tensors of two or more
    dimensions, per tensor otherwise; the ``<name>_mask`` buffer of
    :mod:`micronet.masks` kept, except at 1 bit, which has no zero), so the
    forward sees grid values and the latent float values learn through the
    straight-through gradient. On leaving, the grid values are stored and
    those parametrizations removed: a fine-tuned quantized layer holds what
    its declared bits can hold. A parameter already on its grid is left as
    it is (the grid of a grid is itself). Yields the parameters' names
    (``layer.weight``)."""
    added: list[tuple[nn.Module, str, str]] = []
    for module_name, module in model.named_modules():
        bits = bits_of(module).get("weight")
        if bits is None or bits >= FLOAT_WEIGHT_BITS:
            continue
        for name, param in list(module._parameters.items()):
            if param is None or not param.is_floating_point() or parametrize.is_parametrized(module, name):
                continue
            mask = module._buffers.get(f"{name}_mask")
            mask = mask if bits > 1 and mask is not None and mask.dtype == torch.bool else None
            parametrize.register_parametrization(module, name, WeightQuant(bits, param.dim() > 1, mask))
            added.append((module, name, f"{module_name}.{name}" if module_name else name))
    try:
        yield [full for _, _, full in added]
    finally:
        with torch.no_grad():
            for module, name, _ in added:
                parametrize.remove_parametrizations(module, name, leave_parametrized=True)


# ------------------------------------------------------------------ observers


def affine_qparams(lo: float, hi: float, bits: int) -> tuple[float, int]:
    """Scale and zero point of the unsigned ``bits``-bit grid covering
    ``[min(lo, 0), max(hi, 0)]``. A zero-width range (all zeros) gets scale 1."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    top = 2 ** bits - 1
    scale = (hi - lo) / top
    if not scale > 0 or not math.isfinite(scale):
        return 1.0, 0
    return scale, int(min(max(round(-lo / scale), 0), top))


class Observer:
    """Collects what flows through one activation quantizer during calibration;
    :meth:`range` gives the range to quantize. Subclasses choose the range."""

    name = ""
    SAMPLE = 1 << 16  # values kept per observed batch (percentile, mse)
    needs_sample = False

    def __init__(self, bits: int):
        self.bits = bits
        self.lo, self.hi = math.inf, -math.inf
        self.samples: list[torch.Tensor] = []
        self._generator = torch.Generator().manual_seed(0)

    def observe(self, x: torch.Tensor) -> None:
        flat = x.detach().reshape(-1).float()
        if flat.numel() == 0:
            return
        self.lo = min(self.lo, flat.min().item())
        self.hi = max(self.hi, flat.max().item())
        if self.needs_sample:
            if flat.numel() > self.SAMPLE:
                index = torch.randint(flat.numel(), (self.SAMPLE,), generator=self._generator)
                flat = flat[index.to(flat.device)]
            self.samples.append(flat.cpu())

    def range(self) -> tuple[float, float]:
        """``(lo, hi)`` to quantize; a RuntimeError when nothing was observed."""
        if self.lo > self.hi:
            raise RuntimeError(f"{self.name} observer saw no values: calibration did not reach it")
        if not (math.isfinite(self.lo) and math.isfinite(self.hi)):
            raise RuntimeError(f"{self.name} observer saw non-finite values ({self.lo}, {self.hi})")
        return self.choose()

    def choose(self) -> tuple[float, float]:
        raise NotImplementedError


class MinMaxObserver(Observer):
    """The exact extremes of every value seen."""

    name = "minmax"

    def choose(self) -> tuple[float, float]:
        return self.lo, self.hi


class PercentileObserver(Observer):
    """The ``(100 - p)``-th and ``p``-th percentiles of the sample: outliers are clipped."""

    name = "percentile"
    needs_sample = True

    def __init__(self, bits: int, percentile: float = 99.99):
        super().__init__(bits)
        self.percentile = percentile

    def choose(self) -> tuple[float, float]:
        sample = torch.cat(self.samples)
        q = torch.tensor([1 - self.percentile / 100, self.percentile / 100])
        lo, hi = torch.quantile(sample, q).tolist()
        return lo, hi


class MseObserver(Observer):
    """The proportional shrinking of the min-max range whose quantization
    error, estimated on a histogram of the sample, is least."""

    name = "mse"
    needs_sample = True
    BINS, CANDIDATES = 2048, 100

    def choose(self) -> tuple[float, float]:
        lo, hi = min(self.lo, 0.0), max(self.hi, 0.0)
        if hi == lo:
            return lo, hi
        sample = torch.cat(self.samples).double()
        counts = torch.histc(sample, bins=self.BINS, min=lo, max=hi)
        width = (hi - lo) / self.BINS
        centers = lo + (torch.arange(self.BINS, dtype=torch.float64) + 0.5) * width  # [B]
        shrink = torch.linspace(1.0 / self.CANDIDATES, 1.0, self.CANDIDATES, dtype=torch.float64)
        low, high = lo * shrink[:, None], hi * shrink[:, None]  # [C, 1]
        scale = (high - low) / (2 ** self.bits - 1)
        clipped = torch.clamp(centers[None, :], low, high)  # [C, B]
        inside = scale ** 2 / 12  # uniform rounding noise of values inside the range
        error = torch.where(clipped == centers[None, :], inside, (centers[None, :] - clipped) ** 2)
        best = int(torch.argmin((error * counts[None, :]).sum(dim=1)))
        return float(low[best, 0]), float(high[best, 0])


OBSERVERS: dict[str, type[Observer]] = {o.name: o for o in (MinMaxObserver, PercentileObserver, MseObserver)}


def make_observer(name: str, bits: int, percentile: float = 99.99) -> Observer:
    """The observer called ``name`` for a ``bits``-bit quantizer."""
    if name not in OBSERVERS:
        raise ValueError(f"unknown observer {name!r}; known: {', '.join(OBSERVERS)}")
    if name == PercentileObserver.name:
        return PercentileObserver(bits, percentile)
    return OBSERVERS[name](bits)


# --------------------------------------------------------------- activations


class ActivationQuant(nn.Module):
    """Per-tensor affine fake quantization of an activation to ``bits`` bits.

    Life cycle: :meth:`start_calibration` (the forward observes and passes
    values through), :meth:`freeze` (the observer's range becomes the
    ``scale`` and ``zero_point`` buffers), then the forward fake quantizes.
    The two buffers are in the state dict; loading them marks the module as
    calibrated. A forward before any calibration is an error.
    """

    def __init__(self, bits: int, observer: str = "minmax", percentile: float = 99.99):
        super().__init__()
        if not 2 <= bits <= 16:
            raise ValueError(f"activation bits must be 2 to 16, got {bits}")
        self.bits = bits
        self.observer = observer
        self.percentile = percentile
        self.calibrated = False
        self._observer: Observer | None = None
        self.register_buffer("scale", torch.ones(1))
        self.register_buffer("zero_point", torch.zeros(1, dtype=torch.int32))

    @property
    def calibrating(self) -> bool:
        return self._observer is not None

    def start_calibration(self) -> None:
        """Observe from now on, passing values through unchanged."""
        self._observer = make_observer(self.observer, self.bits, self.percentile)

    def freeze(self) -> tuple[float, float]:
        """Fix scale and zero point from what was observed; returns the range."""
        if self._observer is None:
            raise RuntimeError("freeze() without start_calibration()")
        lo, hi = self._observer.range()
        scale, zero_point = affine_qparams(lo, hi, self.bits)
        self.scale.fill_(scale)
        self.zero_point.fill_(zero_point)
        self._observer, self.calibrated = None, True
        return lo, hi

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._observer is not None:
            self._observer.observe(x)
            return x
        if not self.calibrated:
            raise RuntimeError("ActivationQuant used before calibration: call start_calibration(), "
                               "run some batches, then freeze()")
        y = x if x.dtype == torch.float32 else x.float()
        y = torch.fake_quantize_per_tensor_affine(y, self.scale, self.zero_point, 0, 2 ** self.bits - 1)
        return y if x.dtype == torch.float32 else y.to(x.dtype)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args)
        if prefix + "scale" in state_dict:
            self.calibrated = True

    def extra_repr(self) -> str:
        return f"bits={self.bits}, observer={self.observer!r}"
