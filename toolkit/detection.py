"""Capturing torchvision's detectors (Faster R-CNN, RetinaNet, FCOS, SSD).

A detector's ``forward`` takes a list of images and keeps a data-dependent
number of boxes: torch.fx cannot iterate the list, torch.export stops at the
first box count (``batched_nms``). fvcore gets a count by jit-tracing one
real run, which prices the boxes that one image happened to keep and gives
no per-layer records. This module instead builds, at capture time, a
*bounded graph* of the detector: a small ``nn.Module`` whose children are the
detector's own submodules under their own names (``backbone.body...``,
``rpn.head.conv...``, ``roi_heads.box_head.fc6``, ``head.classification_head...``),
so the fx walk records the backbone, FPN and heads layer by layer with the
paths of ``model.named_modules()``, and the parameters are the model's own.

Choice (over jit tracing, which needs real data, and torch.export, which
stops at the box counts): everything stays shape-only. The sizes a
detector's Python code needs are taken before tracing, on meta tensors:
its own ``transform`` is run on empty meta images (the size it resizes and
pads to is the size scored, as the model would), then its backbone, for the
feature-map sizes. The graph then runs, per stage:

==========================  ==============================================  ======================
stage (record names)        what is counted                                 how
==========================  ==============================================  ======================
``transform.*``             normalisation (1 add + 1 mult a value), the     exact (traced ops)
                            bilinear resize to the transformed size, the
                            padding to ``size_divisible`` (free)
backbone, FPN, heads        every layer                                     exact (traced layers)
``*.anchor_generator``      the model's own anchor / default-box            exact: its aten ops,
                            generator for these feature sizes               on meta tensors
``*.box_coder``             the model's own box decoding                    exact (aten ops, meta)
``rpn.filter_proposals``,   per-level ``topk`` (``pre_nms_top_n``,          upper bound
``roi_heads.postprocess_``  ``topk_candidates``), sigmoid / softmax,
``detections``,             clipping, the small-box and score-threshold
``postprocess_detections``  tests, ``batched_nms``, the gathers of what
                            is kept
``roi_heads.box_roi_pool``  the FPN level of each box (LevelMapper's        exact for
                            arithmetic) and ``roi_align`` of every box      ``sampling_ratio > 0``
``transform.postprocess``   boxes scaled back to the input size (4 mults    exact for the bound's
                            a box)                                          box count
==========================  ==============================================  ======================

The upper bounds (what a count depends on is data only through these):

- a score threshold (``score_thresh``, ``box_score_thresh``) and
  ``remove_small_boxes`` keep every candidate: their comparisons are counted,
  nothing is dropped;
- ``topk`` keeps ``min(limit, candidates)`` per level (``pre_nms_top_n`` for
  the RPN, ``topk_candidates`` for RetinaNet / FCOS per level and for SSD per
  class): exact given the thresholds keep everything;
- ``batched_nms`` is priced as torchvision's coordinate trick (one ``max``,
  the offsets, one ``nms`` over all ``n`` candidates), whose ``nms`` over all
  ``n`` boxes with nothing suppressed bounds the per-class form torchvision
  uses for large ``n`` (``counters/vision_ops.py``: ``n (n - 1) / 2`` IoUs);
- what survives NMS is ``min(n, post_nms_top_n)`` proposals per image for the
  RPN, ``min(n, detections_per_img)`` detections per image at the end;
- ``roi_align`` of FPN models: torchvision pools each box on the level its
  size selects; with ``sampling_ratio > 0`` the cost does not depend on the
  level, so all boxes are priced as one ``roi_align`` (on the finest level,
  which is also the bound for adaptive sampling).

These bounds are loose by design (Faster R-CNN's second-stage NMS over
``proposals x (classes - 1)`` candidates dominates such a count): they are
what the model's configured limits allow, never what one image happened to
keep. Nothing is left uncounted; ``docs/detection.md`` has the figures.

Mask R-CNN's mask branch runs on the detections kept (``detections_per_img``
a image): its RoI pooling, head and predictor layer by layer, the sigmoid of
every class's mask, and the paste into the image priced at the bound of
:class:`PasteMasks`. Keypoint R-CNN is refused with a one-line error.

The input is a batch ``[N, 3, H, W]`` (``--input 1x3x320x320``): N images of
one size, each transformed as the model would; or, as the detector's forward
takes it, a list of images ``[3, H_i, W_i]`` of any sizes
(:func:`capture_detector` with ``[(3, 320, 320), (3, 240, 400)]`` or a list
of tensors). Then what the model does per image is counted per image, at
that image's size: the normalisation, the resize to its own transformed size
(``transform.sub``, ``transform.sub_1``, ``transform.interpolate_1``...), its
proposals' and detections' clipping, the scaling of its boxes back to its
input size; the batch is padded to the largest resized image (rounded up to
``size_divisible``; free) and the backbone, FPN and heads run on it, as in
torchvision. The graph's one input is ``plan.stacked``: the images in the
top-left corner of one zero batch of the largest height and width (slicing
each out is free). A list of images of one size is the batch of them.
"""
from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .capture import Capture, MicronetTracer
from .detection_plan import DetectorPlan, detection_module, detector_plan, is_detector
from .errors import UsageError
from .registry import CounterRegistry

__all__ = ["is_detector", "capture_detector", "DetectorPlan"]


# ------------------------------------------------------ stages kept whole

class _Whole(nn.Module):
    """A stage the tracer keeps as one node: it runs on meta tensors under
    the aten counter (shape-static code of the model's own)."""


class Anchors(_Whole):
    """The model's anchor (or SSD default-box) generator, a private copy
    (it caches its anchors on the device it runs on): ``[N, A, 4]``."""

    def __init__(self, generator: nn.Module, plan: DetectorPlan):
        super().__init__()
        self.generator = copy.deepcopy(generator)
        self.sizes = [tuple(size) for size in plan.resized_sizes]

    def forward(self, images: torch.Tensor, *features: torch.Tensor) -> torch.Tensor:
        from torchvision.models.detection.image_list import ImageList

        return torch.stack(self.generator(ImageList(images, self.sizes), list(features)))


class Decode(_Whole):
    """The model's box coder: ``deltas [K, C x 4]`` applied to ``boxes [K, 4]``
    (``BoxCoder.decode_single``, or ``BoxLinearCoder.decode`` for FCOS)."""

    def __init__(self, coder: Any):
        super().__init__()
        self.coder = coder

    def forward(self, deltas: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        if hasattr(self.coder, "decode_single"):
            return self.coder.decode_single(deltas, boxes)
        return self.coder.decode(deltas, boxes)


class Stage(nn.Module):
    """A named group of stages (``rpn``, ``roi_heads``): children only."""

    def __init__(self, **children: nn.Module):
        super().__init__()
        for name, child in children.items():
            self.add_module(name, child)


# ------------------------------------------------------- traced helpers

def clip_boxes(boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """torchvision's ``clip_boxes_to_image``: x clamped to [0, w], y to [0, h]."""
    height, width = size
    x = boxes[..., 0::2].clamp(min=0, max=width)
    y = boxes[..., 1::2].clamp(min=0, max=height)
    return torch.stack((x, y), dim=-1).reshape(boxes.shape)


def small_box_test(boxes: torch.Tensor, min_size: float) -> torch.Tensor:
    """``remove_small_boxes``' test (2 subs, 2 comparisons, 1 and a box);
    the bound keeps every box, so its result is not applied."""
    ws, hs = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    return torch.logical_and(ws >= min_size, hs >= min_size)


def batched_nms_bound(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor,
                      iou_threshold: float) -> torch.Tensor:
    """torchvision's ``batched_nms`` by its coordinate trick: the boxes of
    each class offset apart, one ``nms`` over all of them (priced by its
    no-suppression upper bound; the kept indices are all ``n``)."""
    max_coordinate = boxes.max()
    offsets = idxs.to(boxes.dtype) * (max_coordinate + 1)
    return torch.ops.torchvision.nms(boxes + offsets[:, None], scores, iou_threshold)


class Transform(nn.Module):
    """``GeneralizedRCNNTransform`` at the planned sizes: normalise, resize
    (bilinear, as torchvision), pad to the batch size (free). Images of one
    size run as one batch; a list of sizes runs per image, as torchvision
    does: each image (the top-left ``3 x H x W`` of the input) normalised and
    resized to its own size, padded to the batch's and concatenated (free)."""

    def __init__(self, transform: nn.Module, plan: DetectorPlan):
        super().__init__()
        self.register_buffer("mean", torch.tensor(transform.image_mean)[:, None, None], persistent=False)
        self.register_buffer("std", torch.tensor(transform.image_std)[:, None, None], persistent=False)
        self.sizes, self.resized, self.padded = plan.input_sizes, plan.resized_sizes, plan.padded
        self.uniform = plan.uniform

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.uniform:
            return self._pad(F.interpolate((images - self.mean) / self.std, size=self.resized[0], mode="bilinear",
                                           align_corners=False), self.resized[0])
        batch = []
        for i, ((h, w), size) in enumerate(zip(self.sizes, self.resized)):
            x = (images[i:i + 1, :, :h, :w] - self.mean) / self.std
            batch.append(self._pad(F.interpolate(x, size=size, mode="bilinear", align_corners=False), size))
        return torch.cat(batch)

    def _pad(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        (h, w), (ph, pw) = size, self.padded
        return x if (ph, pw) == (h, w) else F.pad(x, (0, pw - w, 0, ph - h))


class ResizeBack(nn.Module):
    """``transform.postprocess``: each image's boxes scaled from its resized
    to its input size (``resize_boxes``: 4 mults a box)."""

    def __init__(self, plan: DetectorPlan):
        super().__init__()
        ratio = torch.tensor([[[ow / w, oh / h, ow / w, oh / h]]
                              for (h, w), (oh, ow) in zip(plan.resized_sizes, plan.input_sizes)])
        self.register_buffer("ratio", ratio, persistent=False)  # [N, 1, 4]

    def forward(self, boxes: torch.Tensor) -> torch.Tensor:
        return boxes * self.ratio


# ------------------------------------------------------------ R-CNN

class ProposalFilter(nn.Module):
    """``RegionProposalNetwork.filter_proposals`` within its bounds: top
    ``pre_nms_top_n`` a level, sigmoid, clip, tests, NMS, keep
    ``post_nms_top_n``."""

    def __init__(self, rpn: nn.Module, plan: DetectorPlan):
        super().__init__()
        self.plan = plan
        self.pre, self.post = rpn.pre_nms_top_n(), rpn.post_nms_top_n()
        self.nms_thresh, self.score_thresh, self.min_size = rpn.nms_thresh, rpn.score_thresh, rpn.min_size
        #: proposals kept per image (the bound)
        self.kept = min(self.post, sum(min(self.pre, count) for count in plan.per_level))

    def forward(self, proposals: torch.Tensor, objectness: torch.Tensor) -> torch.Tensor:
        n = self.plan.batch
        objectness = objectness.reshape(n, -1)
        tops, offset, levels = [], 0, []
        for level, count in enumerate(self.plan.per_level):
            k = min(self.pre, count)
            _, top = objectness[:, offset:offset + count].topk(k, dim=1)
            tops.append(top + offset)
            levels.append(torch.full((k,), level, dtype=torch.int64))
            offset += count
        top_n = torch.cat(tops, dim=1)
        rows = torch.arange(n)[:, None]
        scores = torch.sigmoid(objectness[rows, top_n])
        proposals = proposals[rows, top_n]
        lvl = torch.cat(levels)
        kept = []
        for i in range(n):
            boxes = clip_boxes(proposals[i], self.plan.resized_sizes[i])
            small_box_test(boxes, self.min_size)
            scores[i] >= self.score_thresh
            keep = batched_nms_bound(boxes, scores[i], lvl, self.nms_thresh)[:self.post]
            kept.append(boxes[keep])
        return torch.stack(kept)


class RoIPool(nn.Module):
    """``MultiScaleRoIAlign`` for the bounded proposals: the level of each box
    (``LevelMapper``) and ``roi_align`` of every box (see the module's docstring)."""

    def __init__(self, pool: nn.Module, plan: DetectorPlan, proposals: int):
        super().__init__()
        self.batch, self.proposals = plan.batch, proposals
        self.index = [plan.names.index(name) for name in pool.featmap_names if name in plan.names]
        self.output_size, self.sampling_ratio = tuple(pool.output_size), pool.sampling_ratio
        self.canonical_scale, self.canonical_level = pool.canonical_scale, pool.canonical_level
        height = max(h for h, _ in plan.resized_sizes)  # torchvision: the largest image's height
        scales = [2.0 ** round(math.log2(plan.features[i][0] / height)) for i in self.index]
        self.scale = scales[0]
        self.k_min, self.k_max = -math.log2(scales[0]), -math.log2(scales[-1])

    def forward(self, features: list[torch.Tensor], boxes: torch.Tensor) -> torch.Tensor:
        n, p = self.batch, self.proposals
        flat = boxes.reshape(-1, 4)
        ids = torch.arange(n, dtype=torch.float32).repeat_interleave(p)[:, None]
        rois = torch.cat([ids, flat], dim=1)
        maps = [features[i] for i in self.index]
        if len(maps) > 1:  # LevelMapper: floor(k0 + log2(sqrt(area) / s0) + eps), clamped
            area = (flat[:, 2] - flat[:, 0]) * (flat[:, 3] - flat[:, 1])
            level = torch.floor(self.canonical_level + torch.log2(torch.sqrt(area) / self.canonical_scale) + 1e-6)
            torch.clamp(level, min=self.k_min, max=self.k_max) - self.k_min
        return torch.ops.torchvision.roi_align(maps[0], rois, self.scale, self.output_size[0], self.output_size[1],
                                               self.sampling_ratio, False)


class BoxDetections(nn.Module):
    """``RoIHeads.postprocess_detections`` within its bounds."""

    def __init__(self, heads: nn.Module, plan: DetectorPlan, proposals: int):
        super().__init__()
        self.plan, self.proposals = plan, proposals
        self.box_coder = Decode(heads.box_coder)
        self.score_thresh, self.nms_thresh = heads.score_thresh, heads.nms_thresh
        self.detections = heads.detections_per_img

    def forward(self, logits: torch.Tensor, deltas: torch.Tensor, proposals: torch.Tensor):
        n, p = self.plan.batch, self.proposals
        classes = logits.shape[-1]
        boxes = self.box_coder(deltas, proposals.reshape(-1, 4)).reshape(n, p, classes, 4)
        scores = F.softmax(logits, -1).reshape(n, p, classes)
        labels = torch.arange(classes).view(1, -1).expand(p, classes)[:, 1:].reshape(-1)
        out_boxes, out_scores, out_labels = [], [], []
        for i in range(n):
            b = clip_boxes(boxes[i], self.plan.resized_sizes[i])[:, 1:].reshape(-1, 4)
            s = scores[i][:, 1:].reshape(-1)
            s > self.score_thresh
            small_box_test(b, 1e-2)
            keep_best(b, s, labels, self.nms_thresh, self.detections, (out_boxes, out_scores, out_labels))
        return torch.stack(out_boxes), torch.stack(out_scores), torch.stack(out_labels)


def keep_best(boxes, scores, labels, iou: float, limit: int, outs: tuple[list, list, list]) -> None:
    """The ``limit`` best boxes after NMS (its bound: none suppressed), with
    their scores and labels, appended to ``outs``."""
    keep = batched_nms_bound(boxes, scores, labels, iou)[:limit]
    for out, values in zip(outs, (boxes, scores, labels)):
        out.append(values[keep])


class RCNNGraph(nn.Module):
    """Faster R-CNN (``GeneralizedRCNN`` with an RPN and box RoI heads), bounded."""

    def __init__(self, model: nn.Module, plan: DetectorPlan):
        super().__init__()
        heads = model.roi_heads
        if heads.has_keypoint() or heads.has_mask() and not hasattr(heads.mask_predictor, "conv5_mask"):
            raise UsageError(f"{type(model).__name__}: keypoint heads and custom mask predictors are not "
                             "audited yet (their post-processing sizes follow each kept box)",
                             hint="audit the box detector (fasterrcnn_*, maskrcnn_*), or its backbone alone")
        self.plan = plan
        self.transform = Transform(model.transform, plan)
        self.transform.add_module("postprocess", ResizeBack(plan))
        self.backbone = model.backbone
        proposals = ProposalFilter(model.rpn, plan)
        self.rpn = Stage(head=model.rpn.head, anchor_generator=Anchors(model.rpn.anchor_generator, plan),
                         box_coder=Decode(model.rpn.box_coder), filter_proposals=proposals)
        self.roi_heads = Stage(box_roi_pool=RoIPool(heads.box_roi_pool, plan, proposals.kept), box_head=heads.box_head,
                               box_predictor=heads.box_predictor,
                               postprocess_detections=BoxDetections(heads, plan, proposals.kept))
        if heads.has_mask():  # Mask R-CNN: the mask branch runs on the kept detections
            kept = min(heads.detections_per_img, proposals.kept * (heads.box_predictor.cls_score.out_features - 1))
            side = heads.mask_predictor.conv5_mask.stride[0] * heads.mask_roi_pool.output_size[0]
            for name, child in (("mask_roi_pool", RoIPool(heads.mask_roi_pool, plan, kept)),
                                ("mask_head", heads.mask_head), ("mask_predictor", heads.mask_predictor),
                                ("maskrcnn_inference", MaskInference())):
                self.roi_heads.add_module(name, child)
            self.transform.add_module("paste_masks_in_image", PasteMasks(plan, side, kept))

    def forward(self, images: torch.Tensor):
        from torchvision.models.detection.rpn import concat_box_prediction_layers

        x = self.transform(images)
        features = _as_list(self.backbone(x))
        objectness, deltas = self.rpn.head(features)
        anchors = self.rpn.anchor_generator(x, *features)
        objectness, deltas = concat_box_prediction_layers(objectness, deltas)
        proposals = self.rpn.box_coder(deltas, anchors.reshape(-1, 4)).reshape(self.plan.batch, -1, 4)
        proposals = self.rpn.filter_proposals(proposals, objectness)
        pooled = self.roi_heads.box_head(self.roi_heads.box_roi_pool(features, proposals))
        predictor = self.roi_heads.box_predictor
        if hasattr(predictor, "cls_score") and hasattr(predictor, "bbox_pred"):  # FastRCNNPredictor, layer by layer
            flat = pooled.flatten(start_dim=1)
            logits, box_deltas = predictor.cls_score(flat), predictor.bbox_pred(flat)
        else:
            logits, box_deltas = predictor(pooled)
        boxes, scores, labels = self.roi_heads.postprocess_detections(logits, box_deltas, proposals)
        if not hasattr(self.roi_heads, "mask_head"):
            return self.transform.postprocess(boxes), scores, labels
        masks = self.roi_heads.mask_predictor(self.roi_heads.mask_head(self.roi_heads.mask_roi_pool(features, boxes)))
        masks = self.roi_heads.maskrcnn_inference(masks, labels)
        boxes = self.transform.postprocess(boxes)
        return boxes, scores, labels, self.transform.paste_masks_in_image(masks, boxes)


class MaskInference(nn.Module):
    """``maskrcnn_inference``: the sigmoid of every class's mask logits, then
    the mask of each detection's label (a gather)."""

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        labels = labels.reshape(-1)
        return torch.sigmoid(logits)[torch.arange(labels.shape[0]), labels][:, None]


class PasteMasks(nn.Module):
    """``paste_masks_in_image`` within its bound: each ``side x side`` mask,
    padded by one pixel, is resized (bilinear) to its box expanded by
    ``(side + 2) / side``; a box inside the image is at most the expanded
    image, ``floor(H (side + 2) / side) + 1`` by the same for W (each image's
    own H, W), which is what each mask is priced at; pasting it into the
    image is a copy (free). The masks of a list of sizes are pasted per image."""

    def __init__(self, plan: DetectorPlan, side: int, per_image: int):
        super().__init__()
        self.scale, self.per_image = (side + 2) / side, per_image
        self.sizes, self.uniform = plan.input_sizes, plan.uniform
        self.bounds = [tuple(math.floor(d * self.scale) + 1 for d in size) for size in plan.input_sizes]

    def forward(self, masks: torch.Tensor, boxes: torch.Tensor):
        boxes = boxes.reshape(-1, 4)
        half_w, half_h = (boxes[:, 2] - boxes[:, 0]) * 0.5 * self.scale, (boxes[:, 3] - boxes[:, 1]) * 0.5 * self.scale
        x_c, y_c = (boxes[:, 2] + boxes[:, 0]) * 0.5, (boxes[:, 3] + boxes[:, 1]) * 0.5
        torch.stack((x_c - half_w, y_c - half_h, x_c + half_w, y_c + half_h), dim=1)  # expand_boxes
        padded = F.pad(masks, (1, 1, 1, 1))
        if self.uniform:
            pasted = F.interpolate(padded, size=self.bounds[0], mode="bilinear", align_corners=False)
            return pasted[..., :self.sizes[0][0], :self.sizes[0][1]]
        k = self.per_image
        return tuple(F.interpolate(padded[i * k:(i + 1) * k], size=bound, mode="bilinear",
                                   align_corners=False)[..., :h, :w]
                     for i, (bound, (h, w)) in enumerate(zip(self.bounds, self.sizes)))


def _as_list(features: Any) -> list[torch.Tensor]:
    if isinstance(features, torch.Tensor):
        return [features]
    return list(features.values())


# ----------------------------------------------- RetinaNet, FCOS, SSD

class DenseDetections(nn.Module):
    """``postprocess_detections`` of RetinaNet / FCOS (per level: scores,
    top ``topk_candidates``, decoding of those, clipping) and of SSD (decode
    all, softmax, per class top ``topk_candidates``), then NMS and the
    ``detections_per_img`` kept, within the bounds."""

    def __init__(self, model: nn.Module, plan: DetectorPlan, kind: str):
        super().__init__()
        self.plan, self.kind = plan, kind
        self.box_coder = Decode(model.box_coder)
        self.score_thresh, self.nms_thresh = model.score_thresh, model.nms_thresh
        self.topk, self.detections = model.topk_candidates, model.detections_per_img
        head = model.head.classification_head
        self.classes = head.num_columns if kind == "ssd" else head.num_classes

    def forward(self, outputs: dict[str, torch.Tensor], anchors: torch.Tensor):
        if self.kind == "ssd":
            return self._ssd(outputs, anchors)
        logits, deltas = outputs["cls_logits"], outputs["bbox_regression"]
        ctrness = outputs.get("bbox_ctrness")
        classes = self.classes
        out_boxes, out_scores, out_labels = [], [], []
        for i in range(self.plan.batch):
            boxes, scores, labels, offset = [], [], [], 0
            for count in self.plan.per_level:
                level = slice(offset, offset + count)
                s = torch.sigmoid(logits[i, level])
                if ctrness is not None:  # FCOS: sqrt(class score x centerness)
                    s = torch.sqrt(s * torch.sigmoid(ctrness[i, level]))
                s = s.flatten()
                s > self.score_thresh
                s, idx = s.topk(min(self.topk, count * classes))
                anchor_idx = torch.div(idx, classes, rounding_mode="floor")
                labels.append(idx % classes)
                b = self.box_coder(deltas[i, level][anchor_idx], anchors[i, level][anchor_idx])
                boxes.append(clip_boxes(b, self.plan.resized_sizes[i]))
                scores.append(s)
                offset += count
            keep_best(torch.cat(boxes), torch.cat(scores), torch.cat(labels), self.nms_thresh, self.detections,
                      (out_boxes, out_scores, out_labels))
        return torch.stack(out_boxes), torch.stack(out_scores), torch.stack(out_labels)

    def _ssd(self, outputs: dict[str, torch.Tensor], anchors: torch.Tensor):
        scores = F.softmax(outputs["cls_logits"], dim=-1)
        classes, count = self.classes, sum(self.plan.per_level)
        out_boxes, out_scores, out_labels = [], [], []
        for i in range(self.plan.batch):
            boxes = clip_boxes(self.box_coder(outputs["bbox_regression"][i], anchors[i]),
                               self.plan.resized_sizes[i])
            kept_boxes, kept_scores, kept_labels = [], [], []
            for label in range(1, classes):
                s = scores[i][:, label]
                s > self.score_thresh
                s, idx = s.topk(min(self.topk, count))
                kept_boxes.append(boxes[idx])
                kept_scores.append(s)
                kept_labels.append(torch.full((min(self.topk, count),), label, dtype=torch.int64))
            keep_best(torch.cat(kept_boxes), torch.cat(kept_scores), torch.cat(kept_labels), self.nms_thresh,
                      self.detections, (out_boxes, out_scores, out_labels))
        return torch.stack(out_boxes), torch.stack(out_scores), torch.stack(out_labels)



class DenseGraph(nn.Module):
    """RetinaNet, FCOS and SSD (one-stage detectors), bounded."""

    def __init__(self, model: nn.Module, plan: DetectorPlan, kind: str):
        super().__init__()
        self.plan = plan
        self.transform = Transform(model.transform, plan)
        self.transform.add_module("postprocess", ResizeBack(plan))
        self.backbone = model.backbone
        self.head = model.head
        self.anchor_generator = Anchors(model.anchor_generator, plan)
        self.postprocess_detections = DenseDetections(model, plan, kind)

    def forward(self, images: torch.Tensor):
        x = self.transform(images)
        features = _as_list(self.backbone(x))
        outputs = self.head(features)
        anchors = self.anchor_generator(x, *features)
        boxes, scores, labels = self.postprocess_detections(outputs, anchors)
        return self.transform.postprocess(boxes), scores, labels


# --------------------------------------------------------------- capture

class DetectionTracer(MicronetTracer):
    """MicronetTracer that keeps the :class:`_Whole` stages as single nodes."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, _Whole) or super().is_leaf_module(m, module_qualified_name)


def bounded_graph(model: nn.Module, images: Any) -> nn.Module:
    """The bounded graph module of a torchvision detector for ``images``: a
    batch shape ``(N, 3, H, W)`` or a list of image shapes ``(3, H, W)`` (see
    :func:`image_shapes`); its children are the detector's own submodules.
    Its one input is ``graph.plan.stacked``."""
    det = detection_module()
    plan = detector_plan(model, images)
    if isinstance(model, det.retinanet.RetinaNet):
        return DenseGraph(model, plan, "retinanet")
    if isinstance(model, det.fcos.FCOS):
        return DenseGraph(model, plan, "fcos")
    if isinstance(model, det.ssd.SSD):
        return DenseGraph(model, plan, "ssd")
    return RCNNGraph(model, plan)


def _sizes(sizes: Any) -> str:
    return ", ".join(f"{h}x{w}" for h, w in sizes)


def capture_detector(model: nn.Module, registry: CounterRegistry, images: Any) -> Capture:
    """Capture a torchvision detector as its bounded graph (see the module's
    docstring), traced with fx. ``images``: the input batch's shape
    ``(N, 3, H, W)``, or a list of image shapes ``(3, H, W)`` or image tensors
    (what the detector's forward takes; sizes in pixels). The graph's input
    (what the walk is given) is ``capture.root.plan.stacked``."""
    graph_module = bounded_graph(model, images)
    graph = DetectionTracer(registry).trace(graph_module)
    plan = graph_module.plan
    scored = f"detector scored at {plan.padded[0]}x{plan.padded[1]}"
    if plan.uniform:
        scored += f" (its transform's size for {_sizes(plan.input_sizes[:1])})"
    else:
        scored += (f" (the batch its transform pads images {_sizes(plan.input_sizes)} to, resized to "
                   f"{_sizes(plan.resized_sizes)})")
    note = (f"{scored}; top-k, score thresholds and NMS counted at upper "
            "bounds from its configured limits, no box suppressed (docs/detection.md)")
    return Capture(graph, graph_module, "fx", modules=dict(graph_module.named_modules()), note=note)
