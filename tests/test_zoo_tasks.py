"""torchvision's segmentation, video and detection models: what the audit
makes of them today. Segmentation and video models audit with nothing
uncounted; each family gets one closed-form MAC check of a distinctive layer
(a conv's MACs = Cout x Cin/groups x prod(kernel) x prod(output spatial dims)).
Detection models audit through their bounded graph (micronet.detection):
params equal the model's own, closed forms for a backbone layer at the size
the model's transform scores, and the upper bounds of top-k and NMS from the
models' configured limits. The file ends with closed forms of the torchvision ops detectors use
(roi_align, nms: micronet.counters.vision_ops).
"""
import math
from types import SimpleNamespace

import pytest
import torch
import torchvision
from torch import nn

import micronet
from micronet.errors import UsageError

IMAGE = (1, 3, 64, 64)
CLIP = (1, 3, 4, 32, 32)  # N, C, T, H, W


def _audit(name, shape, registries):
    result = micronet.audit(f"torchvision:{name}", shape, registries=registries)
    assert not result.uncounted, [(r.name, r.reason) for r in result.uncounted]
    assert result.captured_via == "fx"
    return {r.name: r for r in result.records}


def _macs(records, name, op):
    assert records[name].op == op, (name, records[name].op)
    return records[name].counts.macs


# ----------------------------------------------------------- segmentation

def test_fcn_resnet50_head_conv(registries):
    records = _audit("fcn_resnet50", IMAGE, registries)
    # dilated ResNet-50: output stride 8, so a 64x64 image gives 8x8 features.
    # FCNHead: 3x3 conv 2048 -> 512, no bias; then a 1x1 conv 512 -> 21 with bias.
    assert _macs(records, "classifier.0", "conv2d") == 512 * 2048 * 3 * 3 * 8 * 8
    assert _macs(records, "classifier.4", "conv2d") == 21 * 512 * 8 * 8
    assert records["classifier.4"].counts.adds == 21 * 8 * 8  # the bias


def test_deeplabv3_aspp_branches(registries):
    records = _audit("deeplabv3_mobilenet_v3_large", IMAGE, registries)
    # MobileNetV3 backbone at output stride 16: 960 channels on 4x4.
    assert _macs(records, "classifier.0.convs.0.0", "conv2d") == 256 * 960 * 4 * 4  # ASPP 1x1 branch
    assert _macs(records, "classifier.0.convs.4.1", "conv2d") == 256 * 960 * 1 * 1  # image-pooling branch


def test_lraspp_head(registries):
    records = _audit("lraspp_mobilenet_v3_large", IMAGE, registries)
    # high-level features: 960 channels at stride 16 (4x4); low-level: 40 at stride 8 (8x8).
    assert _macs(records, "classifier.cbr.0", "conv2d") == 128 * 960 * 4 * 4
    assert _macs(records, "classifier.low_classifier", "conv2d") == 21 * 40 * 8 * 8


# ------------------------------------------------------------------ video

def test_r3d_18_full_3d_stem(registries):
    records = _audit("r3d_18", CLIP, registries)
    # Conv3d(3, 64, (3, 7, 7), stride (1, 2, 2), padding (1, 3, 3)): T'=4, H'=W'=16
    assert _macs(records, "stem.0", "conv3d") == 64 * 3 * (3 * 7 * 7) * (4 * 16 * 16)


def test_mc3_18_no_temporal_conv(registries):
    records = _audit("mc3_18", CLIP, registries)
    # layer2 on: Conv3DNoTemporal (1, 3, 3), stride (1, 2, 2): 64x4x16x16 -> 128x4x8x8
    assert _macs(records, "layer2.0.conv1.0", "conv3d") == 128 * 64 * (1 * 3 * 3) * (4 * 8 * 8)


def test_r2plus1d_18_factorised_stem(registries):
    records = _audit("r2plus1d_18", CLIP, registries)
    # (2+1)D stem: spatial Conv3d(3, 45, (1, 7, 7), stride (1, 2, 2)) then
    # temporal Conv3d(45, 64, (3, 1, 1), padding (1, 0, 0)), both to 4x16x16.
    assert _macs(records, "stem.0", "conv3d") == 45 * 3 * (1 * 7 * 7) * (4 * 16 * 16)
    assert _macs(records, "stem.3", "conv3d") == 64 * 45 * (3 * 1 * 1) * (4 * 16 * 16)


def test_s3d_separable_stem(registries):
    # S3D's final AvgPool3d((2, 7, 7)) needs 16 frames of 224x224.
    records = _audit("s3d", (1, 3, 16, 224, 224), registries)
    # TemporalSeparableConv: Conv3d(3, 64, (1, 7, 7), stride (1, 2, 2)) to 16x112x112,
    # then Conv3d(64, 64, (7, 1, 1), stride (2, 1, 1)) to 8x112x112.
    assert _macs(records, "features.0.0.0", "conv3d") == 64 * 3 * (1 * 7 * 7) * (16 * 112 * 112)
    assert _macs(records, "features.0.1.0", "conv3d") == 64 * 64 * (7 * 1 * 1) * (8 * 112 * 112)


def test_mvit_v2_s_cube_embedding(registries):
    # MViT's positional sizes fix the input at 16 frames of 224x224.
    records = _audit("mvit_v2_s", (1, 3, 16, 224, 224), registries)
    # conv_proj: Conv3d(3, 96, (3, 7, 7), stride (2, 4, 4), padding (1, 3, 3)) to 8x56x56, with bias
    assert _macs(records, "conv_proj", "conv3d") == 96 * 3 * (3 * 7 * 7) * (8 * 56 * 56)
    assert records["conv_proj"].counts.adds == 96 * 8 * 56 * 56


def test_swin3d_t_audits_whole(registries):
    """swin3d_t's ``_get_window_and_shift_size`` changes a list fx hands over as
    an immutable constant: the walk evaluates such size-only calls on plain
    copies. Everything counted; params equal the model's own count."""
    from torchvision.models.video import swin3d_t

    result = micronet.audit("torchvision:swin3d_t", CLIP, registries=registries)
    assert result.uncounted == ()
    assert result.totals["params"] == sum(p.numel() for p in swin3d_t().parameters()) == 28_158_070


# -------------------------------------------------------------- detection
# Detectors audit through their bounded graph (micronet.detection): the model's
# own transform sets the size scored, the backbone / FPN / heads are recorded
# layer by layer, and NMS, top-k and the thresholds are priced by the upper
# bounds their configured limits allow. Figures below are hand-computed from
# torchvision's configurations (docs/detection.md).

def _detector(name, shape, registries, inputs=None):
    from micronet.resolve import resolve_model

    result = micronet.audit(f"torchvision:{name}", shape, registries=registries, inputs=inputs)
    assert result.uncounted == (), [(r.name, r.reason) for r in result.uncounted]
    assert result.captured_via == "fx"
    model = resolve_model(f"torchvision:{name}").model
    assert result.totals["params"] == sum(p.numel() for p in model.parameters())
    assert result.unused_params == 0
    records = {}
    for r in result.records:  # a head shared by the levels keeps its first call's record
        records.setdefault(r.name, r)
    return result, records


def _nms(n):
    """nms over n boxes, nothing suppressed: (mults, adds) = (n + 2p, 2n + n ceil(log2 n) + 11p), p = n(n-1)/2."""
    p = n * (n - 1) // 2
    return n + 2 * p, 2 * n + n * math.ceil(math.log2(n)) + 11 * p


def _by_op(result, prefix, op):
    return [r for r in result.records if r.name.startswith(prefix) and r.op == op]


def test_faster_rcnn_mobilenet_320_bounds(registries):
    result, records = _detector("fasterrcnn_mobilenet_v3_large_320_fpn", (1, 3, 320, 320), registries)
    # the transform keeps 320x320 (min_size 320, max_size 640: scale 1), normalises
    # 3x320x320 values (1 sub + 1 div each) and resizes bilinearly to the same size
    assert records["transform.sub"].counts.adds == 3 * 320 * 320
    assert records["transform.interpolate"].output_shapes == ((1, 3, 320, 320),)
    # backbone stem: Conv2d(3, 16, 3, stride 2, padding 1) to 160x160
    assert _macs(records, "backbone.body.0.0", "conv2d") == 16 * 3 * 9 * 160 * 160
    # RPN: FPN maps 10x10, 10x10 and 5x5 ("pool"), 15 anchors a location:
    # 1500 + 1500 + 375 anchors; pre_nms_top_n (test) = 150 a level
    topks = _by_op(result, "rpn.filter_proposals", "topk")
    assert [(r.input_shapes[0], r.output_shapes[0]) for r in topks] == [
        ((1, 1500), (1, 150)), ((1, 1500), (1, 150)), ((1, 375), (1, 150))]
    # heap bound: n x ceil(log2(k + 1)) comparisons, ceil(log2 151) = 8
    assert [r.counts.adds for r in topks] == [1500 * 8, 1500 * 8, 375 * 8]
    (rpn_nms,) = _by_op(result, "rpn.filter_proposals", "nms")
    assert rpn_nms.input_shapes[0] == (450, 4)
    assert (rpn_nms.counts.mults, rpn_nms.counts.adds) == _nms(450) == (202_500, 1_116_225)
    # post_nms_top_n (test) = 150 proposals a image reach the box head:
    # roi_align to 150 x 256 x 7 x 7, then fc6: 12544 -> 1024
    assert records["roi_heads.box_roi_pool.roi_align"].output_shapes == ((150, 256, 7, 7),)
    # roi_align, sampling_ratio 2 (exact): K=150, C=256, P=49, G=4, S=29400 samples;
    # mults 6K + K(7x2 + 7x2) + 4S + 4SC + KCP = 900 + 4200 + 117600 + 30105600 + 1881600
    assert records["roi_heads.box_roi_pool.roi_align"].counts.mults == 32_109_900
    assert _macs(records, "roi_heads.box_head.fc6", "linear") == 150 * 256 * 7 * 7 * 1024
    assert _macs(records, "roi_heads.box_predictor.cls_score", "linear") == 150 * 1024 * 91
    # second stage: 150 proposals x 90 classes (background dropped) = 13500 candidates
    (box_nms,) = _by_op(result, "roi_heads.postprocess_detections", "nms")
    assert box_nms.input_shapes[0] == (13500, 4)
    assert (box_nms.counts.mults, box_nms.counts.adds) == _nms(13500)
    assert box_nms.counts.mults == 13500 ** 2
    # detections_per_img = 100 boxes scaled back to the input size: 4 mults a box
    (resize,) = _by_op(result, "transform.postprocess", "mul")
    assert resize.counts.mults == 100 * 4


def test_retinanet_scores_the_transformed_size(registries):
    # min_size 800: a 320x320 image is resized to 800x800 (divisible by 32: no padding)
    result, records = _detector("retinanet_resnet50_fpn", (1, 3, 320, 320), registries)
    assert records["transform.interpolate"].output_shapes == ((1, 3, 800, 800),)
    # ResNet-50 stem: Conv2d(3, 64, 7, stride 2, padding 3) to 400x400
    assert _macs(records, "backbone.body.conv1", "conv2d") == 64 * 3 * 49 * 400 * 400
    # P3-P7: 100, 50, 25, 13, 7 squared, 9 anchors a location
    per_level = [9 * s * s for s in (100, 50, 25, 13, 7)]
    assert records["anchor_generator"].output_shapes == ((1, sum(per_level), 4),) == ((1, 120_087, 4),)
    # topk_candidates = 1000 of each level's anchors x 91 classes; ceil(log2 1001) = 10
    topks = _by_op(result, "postprocess_detections", "topk")
    assert [r.input_shapes[0] for r in topks] == [(n * 91,) for n in per_level]
    assert [r.counts.adds for r in topks] == [n * 91 * 10 for n in per_level]
    (nms,) = _by_op(result, "postprocess_detections", "nms")
    assert (nms.counts.mults, nms.counts.adds) == _nms(5 * 1000)
    (resize,) = _by_op(result, "transform.postprocess", "mul")
    assert resize.counts.mults == 300 * 4  # detections_per_img = 300
    # the result says how it was counted, as the terminal and the page show it
    assert any(w.startswith("detector scored at 800x800 (its transform's size for 320x320); top-k, "
                            "score thresholds and NMS counted at upper bounds") for w in result.warnings)


def test_fcos_one_anchor_a_location(registries):
    result, records = _detector("fcos_resnet50_fpn", (1, 3, 320, 320), registries)
    assert _macs(records, "backbone.body.conv1", "conv2d") == 64 * 3 * 49 * 400 * 400
    per_level = [s * s for s in (100, 50, 25, 13, 7)]  # one anchor a location
    assert records["anchor_generator"].output_shapes == ((1, sum(per_level), 4),)
    topks = _by_op(result, "postprocess_detections", "topk")
    assert [r.input_shapes[0] for r in topks] == [(n * 91,) for n in per_level]
    (nms,) = _by_op(result, "postprocess_detections", "nms")
    assert (nms.counts.mults, nms.counts.adds) == _nms(5 * 1000)


def test_ssdlite_per_class_candidates(registries):
    # fixed_size 320x320: the 320 input is scored as it is
    result, records = _detector("ssdlite320_mobilenet_v3_large", (1, 3, 320, 320), registries)
    # default boxes: 20x20, 10x10, 5x5, 3x3, 2x2, 1x1 maps, 6 a location = 3234
    assert records["anchor_generator"].output_shapes == ((1, 3234, 4),)
    # topk_candidates = 300 of the 3234 boxes for each of the 90 classes; ceil(log2 301) = 9
    topks = _by_op(result, "postprocess_detections", "topk")
    assert len(topks) == 90 and {r.counts.adds for r in topks} == {3234 * 9}
    (nms,) = _by_op(result, "postprocess_detections", "nms")
    assert nms.input_shapes[0] == (90 * 300, 4)
    assert (nms.counts.mults, nms.counts.adds) == _nms(27_000)


def test_mask_rcnn_mask_branch_on_the_kept_detections(registries):
    result, records = _detector("maskrcnn_resnet50_fpn", (1, 3, 320, 320), registries)
    # detections_per_img = 100 boxes pooled to 14x14 (finest FPN level: 800 / 4 = 200)
    assert records["roi_heads.mask_roi_pool.roi_align_1"].output_shapes == ((100, 256, 14, 14),)
    # mask head: Conv2d(256, 256, 3, padding 1) on 100 x 14 x 14
    assert _macs(records, "roi_heads.mask_head.0.0", "conv2d") == 100 * 256 * 256 * 9 * 14 * 14
    # predictor: ConvTranspose2d(256, 256, 2, stride 2) to 28x28, then 1x1 to 91 classes
    assert _macs(records, "roi_heads.mask_predictor.mask_fcn_logits", "conv2d") == 100 * 256 * 91 * 28 * 28
    # paste bound: each 30x30 padded mask resized to the expanded image, floor(320 x 30 / 28) + 1 = 343
    (paste,) = _by_op(result, "transform.paste_masks_in_image", "interpolate")
    assert paste.input_shapes[0] == (100, 1, 30, 30) and paste.output_shapes[0] == (100, 1, 343, 343)


def test_keypoint_rcnn_is_refused_in_one_line(registries):
    with pytest.raises(UsageError, match="keypoint heads"):
        micronet.audit("torchvision:keypointrcnn_resnet50_fpn", (1, 3, 320, 320), registries=registries)


def test_detector_batch_of_images(registries):
    """Two images: each is post-processed on its own (two NMS a stage), the
    layers see a batch of two."""
    result, records = _detector("fasterrcnn_mobilenet_v3_large_320_fpn", (2, 3, 320, 320), registries)
    assert _macs(records, "backbone.body.0.0", "conv2d") == 2 * 16 * 3 * 9 * 160 * 160
    assert len(_by_op(result, "rpn.filter_proposals", "nms")) == 2
    assert records["roi_heads.box_roi_pool.roi_align"].output_shapes == ((300, 256, 7, 7),)


def test_detector_leaves_the_users_model_working(registries):
    """The bounded graph shares the model's submodules and copies what it
    would change (the anchor generator caches its anchors on the device it
    runs on): after the audit the model still detects, on real tensors."""
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_320_fpn

    model = fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None).eval()
    result = micronet.audit(model, (1, 3, 320, 320), registries=registries)
    assert result.totals["params"] == sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        (out,) = model([torch.rand(3, 320, 320)])
    assert set(out) == {"boxes", "scores", "labels"} and out["boxes"].shape[1] == 4
    assert out["boxes"].shape[0] <= model.roi_heads.detections_per_img


def test_detector_audit_cli():
    from micronet.cli import main

    assert main(["audit", "torchvision:fasterrcnn_mobilenet_v3_large_320_fpn",
                 "--input", "1x3x320x320", "--quiet"]) == 0


def test_detector_refuses_a_non_image_input(registries):
    with pytest.raises(UsageError, match="batch of RGB images"):
        micronet.audit("torchvision:fasterrcnn_mobilenet_v3_large_320_fpn", (1, 320, 320), registries=registries)


def _detector_list(name, images, registries):
    """A list of images, as the detector's forward takes it (``model([img1, img2])``):
    captured and walked from the model's own input form."""
    from micronet.capture import capture
    from micronet.records import UNCOUNTED, TensorInfo
    from micronet.resolve import resolve_model
    from micronet.walk import walk

    model = resolve_model(f"torchvision:{name}").model
    cap = capture(model, registries.counters, lambda: (images,))
    result = walk(cap, registries.counters, TensorInfo(cap.root.plan.stacked))
    assert [r.name for r in result if r.status == UNCOUNTED] == []
    assert sum(r.params for r in result) == sum(p.numel() for p in model.parameters())
    records = {r.name: r for r in reversed(result)}  # a shared head: its first call's record
    return model, cap, SimpleNamespace(records=tuple(result)), records


def test_detector_list_of_images_of_two_sizes(registries):
    """Two images of different sizes: each normalised and resized to its own
    size (per image), the backbone and heads on the padded batch."""
    images = [torch.zeros(3, 320, 320), torch.zeros(3, 240, 400)]
    model, cap, result, records = _detector_list("fasterrcnn_mobilenet_v3_large_320_fpn", images, registries)
    # min_size 320, max_size 640: 320x320 keeps scale 1; 240x400 scales by min(320/240, 640/400) = 4/3
    # to 320 x floor(400 x 4/3) = 320x533; the batch pads to the largest, width rounded up to
    # size_divisible 32: 320x544. torchvision's own transform, run on real tensors, agrees:
    image_list, _ = model.transform([torch.rand(3, 320, 320), torch.rand(3, 240, 400)])
    assert image_list.image_sizes == [(320, 320), (320, 533)]
    assert tuple(image_list.tensors.shape) == (2, 3, 320, 544)
    # the graph's input: both images in one zero batch of the largest height and width
    assert cap.root.plan.stacked == (2, 3, 320, 400)
    # per image: normalisation (1 sub + 1 div a value) at the image's own size ...
    assert (records["transform.sub"].counts.adds, records["transform.truediv"].counts.mults) == (3 * 320 * 320,) * 2
    assert (records["transform.sub_1"].counts.adds, records["transform.truediv_1"].counts.mults) == \
        (3 * 240 * 400,) * 2
    # ... the bilinear resize to its own size (4 mults + 3 adds an output value) ...
    assert records["transform.interpolate"].output_shapes == ((1, 3, 320, 320),)
    assert records["transform.interpolate_1"].input_shapes[0] == (1, 3, 240, 400)
    assert records["transform.interpolate_1"].output_shapes == ((1, 3, 320, 533),)
    assert (records["transform.interpolate_1"].counts.mults,
            records["transform.interpolate_1"].counts.adds) == (4 * 3 * 320 * 533, 3 * 3 * 320 * 533)
    # ... then padded to 320x544 (free) and batched
    assert records["transform.cat"].output_shapes == ((2, 3, 320, 544),)
    assert records["transform.cat"].counts.mults == records["transform.cat"].counts.adds == 0
    # batched: the backbone stem, Conv2d(3, 16, 3, stride 2, padding 1), on the padded batch to 160x272
    assert _macs(records, "backbone.body.0.0", "conv2d") == 2 * 16 * 3 * 9 * 160 * 272
    # FPN maps 10x17, 10x17 and 5x9 ("pool"), 15 anchors a location: 2550 + 2550 + 675 an image
    topks = _by_op(result, "rpn.filter_proposals", "topk")
    assert [(r.input_shapes[0], r.output_shapes[0]) for r in topks] == [
        ((2, 2550), (2, 150)), ((2, 2550), (2, 150)), ((2, 675), (2, 150))]
    assert len(_by_op(result, "rpn.filter_proposals", "nms")) == 2  # one an image
    # post-process: each image's 100 boxes scaled back from its resized to its input size
    ratio = cap.root.transform.postprocess.ratio
    assert torch.allclose(ratio, torch.tensor([[[1.0, 1.0, 1.0, 1.0]], [[400 / 533, 240 / 320, 400 / 533, 240 / 320]]]))
    (resize,) = _by_op(result, "transform.postprocess", "mul")
    assert resize.counts.mults == 2 * 100 * 4
    assert cap.note.startswith("detector scored at 320x544 (the batch its transform pads images 320x320, "
                               "240x400 to, resized to 320x320, 320x533)")


def test_detector_list_of_one_size_is_the_batch(registries):
    """A list of images of one size is the batch of them: the same graph, the same figures."""
    from micronet.detection import capture_detector

    model = torchvision.models.detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None).eval()
    listed = capture_detector(model, registries.counters, [(3, 200, 300), (3, 200, 300)])
    batch = capture_detector(model, registries.counters, (2, 3, 200, 300))
    assert listed.root.plan.stacked == batch.root.plan.stacked == (2, 3, 200, 300)
    assert [n.name for n in listed.graph.nodes] == [n.name for n in batch.graph.nodes]


@pytest.mark.parametrize("images, what", [
    ([(3, 320, 320), (320, 240)], r"\(320, 240\) is not an image shape \(3, H, W\)"),
    ([(3, 320, 320), (1, 320, 320)], r"\(1, 320, 320\) is not an image shape"),
    ([], "no image given"),
])
def test_detector_refuses_a_malformed_list_in_one_line(images, what, registries):
    from micronet.detection import capture_detector

    model = torchvision.models.detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None)
    with pytest.raises(UsageError, match=what) as error:
        capture_detector(model, registries.counters, images)
    assert "\n" not in str(error.value)


def test_detector_audit_takes_a_list_of_images(registries):
    """``micronet.audit`` with the forward's own input form: one input, a list of image shapes."""
    result, records = _detector("fasterrcnn_mobilenet_v3_large_320_fpn", None, registries,
                                inputs=[[(3, 320, 320), (3, 240, 400)]])
    assert result.inputs[0].images == ((3, 320, 320), (3, 240, 400))
    named = micronet.audit("torchvision:fasterrcnn_mobilenet_v3_large_320_fpn", registries=registries,
                           inputs={"images": "3x320x320,3x240x400"})
    assert named.totals == result.totals
    assert result.input_shape == (2, 3, 320, 400)  # the images stacked in the largest height and width
    assert result.input_text == "images [3x320x320, 3x240x400]"  # the header says the list, not the stack
    # 240x400 resized to 320 x floor(400 x 4/3) = 320x533; the batch padded to 320x544 for the backbone
    assert records["transform.interpolate_1"].output_shapes == ((1, 3, 320, 533),)
    assert records["transform.sub_1"].counts.adds == 3 * 240 * 400
    assert _macs(records, "backbone.body.0.0", "conv2d") == 2 * 16 * 3 * 9 * 160 * 272


def test_detector_audit_cli_list_of_images():
    from micronet.cli import main

    assert main(["audit", "torchvision:fasterrcnn_mobilenet_v3_large_320_fpn",
                 "--input", "images=3x320x320,3x240x400", "--quiet"]) == 0


@pytest.mark.parametrize("inputs, what", [
    ([[(3, 320, 320), (320, 240)]], r"input \[3x320x320, 320x240\]: a list of images needs shapes \(C, H, W\)"),
    ([[]], r"input \[\]: an empty list of images"),
    ({"images": "3x320x320,3x240"}, r"input \[3x320x320, 3x240\]: a list of images needs"),
])
def test_audit_refuses_a_malformed_list_of_images_in_one_line(inputs, what, registries):
    with pytest.raises(UsageError, match=what) as error:
        micronet.audit("torchvision:fasterrcnn_mobilenet_v3_large_320_fpn", inputs=inputs, registries=registries)
    assert "\n" not in str(error.value)


def test_a_list_of_images_is_for_detectors_only(registries):
    with pytest.raises(UsageError, match="only torchvision's detectors take one"):
        micronet.audit("torchvision:resnet18", inputs=[[(3, 32, 32), (3, 16, 16)]], registries=registries)


# ------------------------------------------- torchvision ops (counters/vision_ops.py)

class _RoIAlign(nn.Module):
    def __init__(self, sampling_ratio, aligned=False):
        super().__init__()
        self.sampling_ratio, self.aligned = sampling_ratio, aligned

    def forward(self, x, rois):
        return torchvision.ops.roi_align(x, rois, output_size=(7, 7), spatial_scale=0.5,
                                         sampling_ratio=self.sampling_ratio, aligned=self.aligned)


def test_roi_align_counts_in_closed_form(registries):
    # K=5 rois on an 8x16x16 map, 7x7 bins, 2x2 samples a bin: P=49, G=4, S=5*49*4=980.
    # mults: 6K=30, coords K*(7*2+7*2)=140, weights 4S=3920, sums 4*S*C=31360, means K*C*P=1960
    # adds:  2K=10, coords 140, weights 4S=3920, sums 3*S*C=23520, means K*C*P*(G-1)=5880
    result = micronet.audit(_RoIAlign(2), inputs=((1, 8, 16, 16), (5, 5)), registries=registries)
    assert not result.uncounted
    (record,) = [r for r in result.records if r.counts.mults]
    assert (record.counts.mults, record.counts.adds) == (37410, 33470)
    # aligned=True: 4 more adds a roi (the -0.5 offsets)
    result = micronet.audit(_RoIAlign(2, aligned=True), inputs=((1, 8, 16, 16), (5, 5)),
                            registries=registries)
    assert result.totals["adds"] == 33470 + 20


def test_roi_align_adaptive_sampling_is_an_upper_bound(registries):
    # sampling_ratio=-1: at most ceil(16/7)=3 samples a bin side, G=9 (boxes inside the map).
    # K=1, C=2, P=49: S=441; mults 6 + 42 + 1764 + 3528 + 98 = 5438;
    # adds 2 + 42 + 1764 + 2646 + 98*8 = 5238
    result = micronet.audit(_RoIAlign(-1), inputs=((1, 2, 16, 16), (1, 5)), registries=registries)
    assert not result.uncounted
    assert (result.totals["mults"], result.totals["adds"]) == (5438, 5238)


def test_nms_counts_the_no_suppression_upper_bound():
    from micronet.counters import vision_ops
    from micronet.records import TensorInfo
    from micronet.registry import CounterRegistry, OpCall, collect

    target = torch.ops.torchvision.nms.default
    call = OpCall("aten", target, (TensorInfo((6, 4)), TensorInfo((6,)), 0.5), {}, None,
                  TensorInfo((6,), torch.int64))
    counts = CounterRegistry(collect(vision_ops)).counter(target).fn(call)
    # n=6 boxes, 15 pairs: mults 6 areas + 15 x 2 = 36;
    # adds 6 x 2 (widths, heights) + 6 x ceil(log2 6)=18 sort comparisons + 15 x 11 = 195
    assert (counts.mults, counts.adds) == (36, 195)


class _Top3(nn.Module):
    """topk along the last dim, as a function and as a method."""

    def forward(self, x):
        return torch.topk(x, 3).values + x.topk(1, dim=0).values.sum()


def test_topk_counts_the_heap_bound(registries):
    result = micronet.audit(_Top3(), (2, 10), registries=registries)
    assert not result.uncounted
    topks = [r for r in result.records if r.op == "topk"]
    # 2 rows of 10, k=3: 2 x 10 x ceil(log2 4) = 40; 10 rows of 2, k=1: 10 x 2 x ceil(log2 2) = 20
    assert [r.counts.adds for r in topks] == [40, 20]
    assert [r.counts.mults for r in topks] == [0, 0]


class _KeepHalf(nn.Module):
    """nms, then the first half of what it keeps, scaled: a data-dependent length."""

    def __init__(self, export):
        super().__init__()
        self.export = export

    def forward(self, boxes, scores):
        n = int(boxes.shape[0]) if self.export else 6  # int() of an fx proxy fails: torch.export is used
        keep = torch.ops.torchvision.nms(boxes, scores, 0.5)[: n // 2]  # the op, as detectors call it
        return boxes[keep] * 2


@pytest.mark.parametrize("path", ["fx", "export"])
def test_nms_output_is_bounded_alike_on_both_paths(path, registries):
    """fx: nms's shape rule keeps all 6 boxes; export: its data-dependent length
    u0 is bounded by the same 6 (and the size check export adds is free), so
    the 3 boxes kept are scaled: 12 mults beside nms's 36 mults and 195 adds."""
    result = micronet.audit(_KeepHalf(path == "export"), inputs=((6, 4), (6,)), registries=registries)
    assert result.captured_via == path
    assert not result.uncounted
    assert (result.totals["mults"], result.totals["adds"]) == (36 + 12, 195)
