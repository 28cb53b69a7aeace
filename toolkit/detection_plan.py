"""The sizes a torchvision detector's Python code works with, for one input.

:func:`detector_plan` runs the detector's own ``transform`` on empty meta
images (it resizes each image, then pads the batch) and its backbone on the
padded meta batch, so that :mod:`micronet.detection` can build the bounded
graph for exactly those sizes; :func:`is_detector` says which models take
that path. Nothing here computes on data.
"""
from __future__ import annotations

import copy
import sys
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .errors import UsageError
from .values import meta_state

__all__ = ["DetectorPlan", "detection_module", "detector_plan", "image_shapes", "is_detector"]


def detection_module():
    return sys.modules.get("torchvision.models.detection")


def is_detector(model: nn.Module) -> bool:
    """Whether ``model`` is a torchvision detector this module captures
    (never imports torchvision: a model from it has imported it already)."""
    det = detection_module()
    if det is None:
        return False
    from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN

    return isinstance(model, (GeneralizedRCNN, det.retinanet.RetinaNet, det.fcos.FCOS, det.ssd.SSD))


@dataclass(frozen=True)
class DetectorPlan:
    """The sizes a detector's Python code works with, for one input.

    ``batch``: N images; ``input_sizes``: (H, W) of each image given;
    ``resized_sizes``: (h, w) each image is resized to by the model's
    transform; ``padded``: (h, w) of the batch it scores (the largest resized
    image, padded to ``size_divisible``); ``features``: (H, W) of each
    feature map; ``anchors``: anchors per location, per map; ``listed``:
    whether the input is a list of images (else one ``[N, 3, H, W]`` batch)."""

    batch: int
    input_sizes: tuple[tuple[int, int], ...]
    resized_sizes: tuple[tuple[int, int], ...]
    padded: tuple[int, int]
    features: tuple[tuple[int, int], ...]
    anchors: tuple[int, ...]
    names: tuple[str, ...] = ()
    listed: bool = False

    @property
    def per_level(self) -> tuple[int, ...]:
        """Anchors of each feature map (H x W x anchors per location)."""
        return tuple(h * w * a for (h, w), a in zip(self.features, self.anchors))

    @property
    def uniform(self) -> bool:
        """Whether every image has one input size: then the per-image steps run
        batched (a list of images of one size is the batch of them)."""
        return len(set(self.input_sizes)) == 1

    @property
    def stacked(self) -> tuple[int, int, int, int]:
        """The graph's input ``[N, 3, H, W]``: the batch, or a list's images in the
        top-left corner of one zero batch of the largest height and width."""
        return (self.batch, 3, max(h for h, _ in self.input_sizes), max(w for _, w in self.input_sizes))


# ------------------------------------------------------------------ plan

def image_shapes(images: Any) -> tuple[tuple[tuple[int, int], ...], bool]:
    """The (H, W) of each image of a detector's input, and whether it is a
    list: ``images`` is a batch shape ``(N, 3, H, W)`` or a sequence of image
    shapes ``(3, H, W)`` (tensors are read for their shapes only). A
    malformed input is a one-line :class:`UsageError`."""
    if isinstance(images, torch.Tensor):
        images = tuple(images.shape)
    if isinstance(images, (tuple, list, torch.Size)) and images and \
            all(isinstance(s, int) and not isinstance(s, bool) for s in images):
        if len(images) != 4 or images[1] != 3 or min(images) < 1:
            raise UsageError(f"a detector takes a batch of RGB images [N, 3, H, W] or a list of images "
                             f"[3, H, W]; got input {'x'.join(map(str, images))}",
                             hint="pass --input Nx3xHxW (e.g. 1x3x320x320), or a list of images: "
                             "--input images=3x320x320,3x240x400")
        return ((images[2], images[3]),) * images[0], False
    shapes = [tuple(i.shape) if isinstance(i, torch.Tensor) else i for i in images] \
        if isinstance(images, (tuple, list)) else []
    bad = [s for s in shapes if not (isinstance(s, (tuple, list, torch.Size)) and len(s) == 3 and s[0] == 3 and
                                     all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in s))]
    if not shapes or bad:
        what = f"{bad[0]!r} is not an image shape (3, H, W)" if bad else "no image given"
        raise UsageError(f"a detector's list of images: {what}",
                         hint="give each image as (3, H, W), e.g. inputs=[[(3, 320, 320), (3, 240, 400)]] "
                         "or --input images=3x320x320,3x240x400")
    return tuple((s[1], s[2]) for s in shapes), True


def detector_plan(model: nn.Module, images: Any) -> DetectorPlan:
    sizes, listed = image_shapes(images)
    with torch.no_grad():
        meta = [torch.empty(3, h, w, device="meta") for h, w in sizes]
        image_list, _ = copy.deepcopy(model.transform)(meta)
        x = image_list.tensors
        features = torch.func.functional_call(model.backbone, meta_state(model.backbone), (x,))
    if isinstance(features, torch.Tensor):
        features = {"0": features}
    feature_sizes = tuple(tuple(f.shape[-2:]) for f in features.values())
    generator = model.anchor_generator if hasattr(model, "anchor_generator") else model.rpn.anchor_generator
    per_location = tuple(generator.num_anchors_per_location())
    resized = tuple(tuple(s) for s in image_list.image_sizes)
    return DetectorPlan(len(sizes), sizes, resized, tuple(x.shape[-2:]), feature_sizes, per_location,
                        tuple(features), listed)
