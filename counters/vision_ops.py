"""torchvision's compiled vision ops (``torch.ops.torchvision.*``), as a
captured graph calls them.

So far: ``roi_align`` (``torchvision.ops.roi_align``, ``RoIAlign``,
``MultiScaleRoIAlign``: the box head of Faster R-CNN and Mask R-CNN) and
``nms`` (``torchvision.ops.nms``, ``batched_nms``: every detector's
post-processing). RULES
section 1 does not cover it; the counts below follow its spirit (every
multiply and addition of the computation, divisions booked as multiplies,
``floor`` / clamping of sample positions free as index arithmetic) and are
a named choice.

``roi_align(input [N, C, H, W], rois [K, 5], spatial_scale, ph, pw,
sampling_ratio, aligned) -> [K, C, ph, pw]``: each output is the mean of
``G = gh x gw`` bilinear samples in its bin. With ``P = ph x pw`` bins and
``S = K x P x G`` sample positions:

==============================  ======================  =====================
step                            mults                   adds
==============================  ======================  =====================
box to map, per roi             4 (coords x scale)      2 (width, height)
                                + 2 (bin sizes)         + 4 if ``aligned``
                                                        (the -0.5 offsets)
sample coordinates              K x (ph x gh + pw x gw)  same as mults
bilinear weights, per position  4 x S                   4 x S (offsets,
                                                        complements)
weighted sums, per channel      4 x S x C               3 x S x C
bin means                       K x C x P               K x C x P x (G - 1)
==============================  ======================  =====================

``sampling_ratio > 0`` fixes ``gh = gw = sampling_ratio``: the count is
exact. ``sampling_ratio <= 0`` makes torchvision take ``ceil(roi size / bin
count)`` samples per bin, which depends on the boxes (data): the count is
then the documented upper bound for boxes inside the feature map,
``gh = ceil(H / ph)``, ``gw = ceil(W / pw)`` (torchvision's detectors clip
their boxes to the image, so their rois never exceed the map).

``nms(boxes [n, 4], scores [n], iou_threshold) -> keep [k]``: how many boxes
survive, and so how many IoUs are computed, depends on the data; the count is
the documented upper bound where nothing is suppressed, so every one of the
``p = n (n - 1) / 2`` pairs gets its IoU (torchvision's kernel compares each
kept box with every later one):

==============================  ======================  =====================
step                            mults                   adds
==============================  ======================  =====================
box areas                       n                       2 n (width, height)
sort by score                   -                       n x ceil(log2 n)
                                                        comparisons
IoU of a pair, p times          2 (intersection area,   11 (4 max / min, 2
                                division)               widths, 2 clamps, 2
                                                        for the union, 1
                                                        threshold comparison)
==============================  ======================  =====================

Comparisons are booked as adds, as max pooling's are.

``nms``'s output (the kept indices) has a data-dependent length: its shape
rule gives the same upper bound, ``[n]`` (every box kept), so a detector's
``keep[:detections_per_img]`` and the gathers after it are priced for the
most boxes its configured limits allow (:mod:`micronet.detection`).

``topk(input, k, dim)`` (what every detector uses to keep its best
candidates; not a torchvision op, counted here with them): over ``R`` rows
of ``n`` values, ``R x n x ceil(log2(k + 1))`` comparisons (booked as adds):
each value is compared along the depth of a binary heap of the ``k`` best,
a documented upper bound of heap selection (the heap's final ordering
included, as ``k <= n``). ``k = 0``: free.
"""
from __future__ import annotations

import math
import sys

import torch

from micronet.manager import hookimpl
from micronet.records import Counts, TensorInfo
from micronet.registry import Lazy, Method, OpCall, collect, counter, shape_rule

__all__ = ["TorchvisionOp", "ROI_ALIGN", "NMS", "TOPK", "nms_counts", "count_nms", "shape_nms", "roi_align_counts",
           "count_roi_align", "topk_counts", "count_topk"]

class TorchvisionOp(Lazy):
    """``torch.ops.torchvision.<name>``, taken once ``torchvision`` is imported
    (importing it registers its ops); never imports torchvision itself, so
    ``import micronet`` stays light (tests/test_imports.py)."""

    def resolve(self):
        """The op packet, or None while torchvision is not imported."""
        if "torchvision" not in sys.modules:
            return None
        return getattr(torch.ops.torchvision, self.name)

    def __str__(self) -> str:
        return f"torch.ops.torchvision.{self.name}"


#: ``torch.ops.torchvision.roi_align``.
ROI_ALIGN = TorchvisionOp("torchvision", "roi_align")
#: ``torch.ops.torchvision.nms``.
NMS = TorchvisionOp("torchvision", "nms")


def roi_align_counts(rois: int, channels: int, height: int, width: int, pooled: tuple[int, int],
                     sampling_ratio: int, aligned: bool) -> Counts:
    """Counts of one ``roi_align`` over ``rois`` boxes on a ``channels x height
    x width`` map, ``pooled = (ph, pw)`` bins per box (see the module's table;
    ``sampling_ratio <= 0`` gives the upper bound for boxes inside the map)."""
    ph, pw = pooled
    if sampling_ratio > 0:
        gh = gw = sampling_ratio
    else:
        gh, gw = math.ceil(height / ph), math.ceil(width / pw)
    k, c, bins, grid = rois, channels, ph * pw, gh * gw
    samples = k * bins * grid
    coords = k * (ph * gh + pw * gw)
    mults = 6 * k + coords + 4 * samples + 4 * samples * c + k * c * bins
    adds = (2 + 4 * bool(aligned)) * k + coords + 4 * samples + 3 * samples * c + k * c * bins * (grid - 1)
    return Counts(mults=mults, adds=adds)


@counter(ROI_ALIGN, op="roi_align")
def count_roi_align(call: OpCall) -> Counts:
    """``torchvision::roi_align`` (schema order: input, rois, spatial_scale,
    pooled_height, pooled_width, sampling_ratio, aligned)."""
    x, rois = call.arg(0, "input"), call.arg(1, "rois")
    if not (isinstance(x, TensorInfo) and isinstance(rois, TensorInfo)) or x.ndim != 4 or rois.ndim != 2:
        raise ValueError("roi_align needs a [N, C, H, W] input and [K, 5] rois")
    ph, pw = call.arg(3, "pooled_height"), call.arg(4, "pooled_width")
    return roi_align_counts(rois.shape[0], x.shape[1], x.shape[2], x.shape[3], (ph, pw),
                            call.arg(5, "sampling_ratio"), call.arg(6, "aligned"))



def nms_counts(boxes: int) -> Counts:
    """Upper-bound counts of ``nms`` over ``boxes`` candidates (nothing
    suppressed: every pair's IoU computed; see the module's table)."""
    n = boxes
    pairs = n * (n - 1) // 2
    sort = n * math.ceil(math.log2(n)) if n > 1 else 0
    return Counts(mults=n + 2 * pairs, adds=2 * n + sort + 11 * pairs)


@counter(NMS, op="nms")
def count_nms(call: OpCall) -> Counts:
    """``torchvision::nms(boxes [n, 4], scores [n], iou_threshold)``: the upper bound of :func:`nms_counts`."""
    boxes = call.arg(0, "dets")
    if not isinstance(boxes, TensorInfo) or boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError("nms needs [n, 4] boxes")
    return nms_counts(boxes.shape[0])


@shape_rule(NMS)
def shape_nms(call: OpCall) -> TensorInfo:
    """``nms`` keeps a data-dependent number of boxes: the upper bound, all
    ``n`` of them (int64 indices)."""
    boxes = call.arg(0, "dets")
    if not isinstance(boxes, TensorInfo) or boxes.ndim != 2:
        raise ValueError("nms needs [n, 4] boxes")
    return TensorInfo((boxes.shape[0],), torch.int64)


#: ``torch.topk``, ``Tensor.topk`` and ``aten.topk``.
TOPK = (torch.topk, Method("topk"), torch.ops.aten.topk)


def topk_counts(rows: int, n: int, k: int) -> Counts:
    """Upper-bound counts of keeping the ``k`` largest of ``n`` values in
    each of ``rows`` rows (heap selection, see the module's docstring)."""
    if k <= 0 or n <= 0:
        return Counts()
    return Counts(adds=rows * n * math.ceil(math.log2(k + 1)))


@counter(*TOPK, op="topk")
def count_topk(call: OpCall) -> Counts:
    """``topk(input, k, dim=-1, largest=True, sorted=True)``: :func:`topk_counts`."""
    x = call.arg(0, "input" if call.kind != "aten" else "self")
    k = call.arg(1, "k")
    dim = call.arg(2, "dim", -1)
    if not isinstance(x, TensorInfo) or not isinstance(k, int):
        raise ValueError("topk needs a tensor and an integer k")
    if x.ndim == 0:
        return Counts()
    dim = dim % x.ndim
    n = x.shape[dim]
    return topk_counts(math.prod(x.shape) // max(n, 1), n, k)


@hookimpl
def micronet_register_counters():
    return collect(sys.modules[__name__])
