"""Models from timm, the largest zoo outside torchvision: one per feature the
audit needs beyond torchvision (TF 'same' padding subclasses, norm+activation
subclasses, notrace functions, optional forward arguments, cumulative sums and
bitwise masks, fold/unfold, RNN mixers, variance-based norms, export-only
models). Built on the meta device: no weights, no download."""
import pytest
import torch

import micronet

timm = pytest.importorskip("timm")

MODELS = [
    "resnet50", "efficientnet_b0", "tf_efficientnet_b0", "dm_nfnet_f0", "maxvit_tiny_tf_224",
    "hiera_tiny_224", "edgenext_xx_small", "tnt_s_patch16_224", "volo_d1_224", "sequencer2d_s",
    "mobilevit_xxs", "regnetz_c16_evos", "convnext_zepto_rms_ols", "samvit_base_patch16",
    "halonet26t", "convit_tiny", "efficientvit_b0", "swin_tiny_patch4_window7_224", "vit_small_patch16_224",
    "levit_128", "coatnet_0_rw_224", "pnasnet5large", "mixer_b16_224", "eva02_tiny_patch14_224",
]


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_timm_models_audit_with_nothing_uncounted(name, registries):
    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False)
    shape = (1,) + tuple(model.pretrained_cfg.get("input_size", (3, 224, 224)))
    result = micronet.audit(model, shape, track="imagenet", registries=registries)
    assert not result.uncounted, [(r.name, r.reason) for r in result.uncounted]
    assert result.captured_via == "fx", result.warnings
    assert result.totals["params"] + result.unused_params == sum(p.numel() for p in model.parameters())
    assert result.totals["macs"] > 0
