"""The torchvision classification zoo: every model audits with nothing
uncounted, and conv/linear MACs agree with thop where conventions agree."""
import pytest
import torch
import torchvision
from torch import nn

import micronet
from micronet.resolve import resolve_model

ZOO = sorted(torchvision.models.list_models(module=torchvision.models))


@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO)
def test_every_zoo_model_audits_with_nothing_uncounted(name, registries):
    result = micronet.audit(f"torchvision:{name}", (1, 3, 224, 224), track="imagenet",
                            registries=registries)
    assert not result.uncounted, [(r.name, r.reason) for r in result.uncounted]
    assert result.captured_via == "fx"
    model = resolve_model(f"torchvision:{name}").model  # on meta, as the audit built it
    reached = result.totals["params"] + result.unused_params
    assert reached == sum(p.numel() for p in model.parameters())
    assert result.score.total > 0


def _thop_layer_macs(model, x):
    """thop's per-module MACs for Conv2d and Linear, keyed by module name."""
    import thop

    *_, tree = thop.profile(model, inputs=(x,), verbose=False, ret_layer_info=True)
    flat = {}

    def visit(prefix, node):
        for name, (ops, _params, children) in node.items():
            path = f"{prefix}{name}"
            flat[path] = ops
            visit(f"{path}.", children)

    visit("", tree)
    modules = dict(model.named_modules())
    return {name: ops for name, ops in flat.items() if isinstance(modules.get(name), (nn.Conv2d, nn.Linear))}


THOP_MODELS = ["resnet18", "mobilenet_v2", "densenet121", "shufflenet_v2_x0_5", "squeezenet1_1",
               "efficientnet_b0", "regnet_x_400mf", "mnasnet0_5", "googlenet", "alexnet"]


@pytest.mark.slow
@pytest.mark.parametrize("name", THOP_MODELS)
def test_conv_and_linear_macs_agree_with_thop(name):
    model = torchvision.models.get_model(name).eval()
    for module in model.modules():  # thop counts a bias add as a MAC: compare weights only
        if isinstance(module, (nn.Conv2d, nn.Linear)) and module.bias is not None:
            module.bias = None
    result = micronet.audit(model, (1, 3, 224, 224), track="imagenet")
    ours = {}
    for record in result.records:
        if record.op in ("conv2d", "linear"):
            ours[record.name] = ours.get(record.name, 0) + record.counts.macs
    theirs = _thop_layer_macs(model, torch.randn(1, 3, 224, 224))
    theirs = {k: v for k, v in theirs.items() if v}  # thop lists modules eval never calls (aux heads)
    assert set(ours) == set(theirs)
    for layer, macs in ours.items():
        assert macs == theirs[layer], layer


@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO)
def test_params_and_macs_match_torchvision_published_figures(name, registries):
    """torchvision publishes each model's parameters and GFLOPS (multiply-accumulates,
    attention's activation products included, at the weights' crop size, three
    decimals) in its weights' metadata: no download needed. Every model agrees
    exactly on parameters and within the rounding on MACs."""
    weights = torchvision.models.get_model_weights(name).DEFAULT
    published_params, published_gmacs = weights.meta["num_params"], weights.meta["_ops"]
    size = weights.transforms().crop_size[0]
    spec = f"torchvision:{name}"
    if name.startswith("vit_") and size != 224:  # the SWAG ViT weights are for a larger image
        spec += f"?image_size={size}"
    result = micronet.audit(spec, (1, 3, size, size), track="imagenet", registries=registries)
    # auxiliary heads are never called in eval: torchvision's figure includes inception_v3's
    # (kept with its weights) and not googlenet's (dropped when its weights load)
    unused = {"inception_v3": result.unused_params}.get(name, 0)
    assert result.totals["params"] + unused == published_params
    assert abs(result.totals["macs"] / 1e9 - published_gmacs) <= 0.0005 + 1e-3 * published_gmacs
