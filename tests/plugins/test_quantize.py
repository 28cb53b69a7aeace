"""The quantize step: grids, prices, freebie, overrides, observers, accuracy, QAT, BatchNorm."""
import math
import warnings

import conftest
import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.utils import parametrize

import micronet
from micronet.bits import bits_of, storage_of
from micronet.errors import UsageError
from micronet.pipeline import compress
from micronet.plugins.fakequant import ActivationQuant, fake_quant
from micronet.plugins.quantize import QuantConfig, quantize_model

import weighted_layer


class Small(conftest.Small):
    """conftest's conv(3->8, k3, bias) -> BN -> ReLU -> pool -> linear(8->10),
    at 16x16: two quantizable layers around unquantized ones, small enough to
    price by hand. Weights are drawn away from zero (0.6 to 1 times the
    largest magnitude), so no grid of 2 bits or more rounds one to zero and
    the dot products stay dense."""

    def __init__(self):
        super().__init__()
        with torch.no_grad():
            for layer in (self.conv, self.fc):
                w = layer.weight
                w.copy_(torch.sign(torch.randn_like(w)) * torch.empty_like(w).uniform_(0.6, 1.0) * 0.3)


def recipe(*steps, freebie=False, data=None, shape=(1, 3, 16, 16)):
    document = {"model": {"spec": "unused", "input": list(shape)},
                "score": {"track": "cifar100", "freebie": freebie},
                "step": [{"use": "quantize", **step} for step in steps]}
    if data is not None:
        document["data"] = data
    return document


def channel_values(weight):
    return [torch.unique(channel).numel() for channel in weight.detach().flatten(1)]


def graph(model):
    return fx.symbolic_trace(model)


# ------------------------------------------------------------------ weight grids


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_weights_take_at_most_2_to_the_b_values_per_channel(bits):
    model = nn.Sequential(nn.Conv2d(16, 32, 3), nn.Flatten(), nn.Linear(32 * 6 * 6, 20))
    original = [m.weight.detach().clone() for m in (model[0], model[2])]
    gm = graph(model)
    quantize_model(gm, QuantConfig(weight_bits=bits, activation_bits=32), [])
    for before, layer in zip(original, (gm.get_submodule("0"), gm.get_submodule("2"))):
        counts = channel_values(layer.weight)
        assert max(counts) <= 2 ** bits
        assert min(counts) >= min(2 ** (bits - 1), 64)  # and not a degenerate one
        step = before.abs().flatten(1).amax(1) / (2 ** (bits - 1) - 1)  # round to nearest:
        error = (layer.weight.detach() - before).abs().flatten(1).amax(1)  # at most half a step
        assert torch.all(error <= step / 2 * (1 + 1e-5))
        assert bits_of(layer)["weight"] == bits
        assert layer.weight.dtype == torch.float32  # still an ordinary float model


def test_binary_weights_are_plus_or_minus_the_mean_magnitude_per_channel():
    conv = nn.Conv2d(4, 6, 3)
    before = conv.weight.detach().clone()
    gm = graph(nn.Sequential(conv))
    quantize_model(gm, QuantConfig(weight_bits=1, activation_bits=32), [])
    after = gm.get_submodule("0").weight.detach()
    for w, q in zip(before.flatten(1), after.flatten(1)):
        mean = w.abs().mean()
        assert sorted(torch.unique(q).tolist()) == pytest.approx([-mean.item(), mean.item()])
        assert torch.equal(torch.sign(q), torch.where(w >= 0, 1.0, -1.0))


def test_the_bias_is_on_a_per_tensor_grid_of_the_layer_bits():
    gm = graph(nn.Sequential(nn.Linear(10, 300)))
    quantize_model(gm, QuantConfig(weight_bits=4, activation_bits=32), [])
    assert torch.unique(gm.get_submodule("0").bias).numel() <= 2 ** 4  # the rules charge it at 4 bits


def _on_grid(values: torch.Tensor, step: torch.Tensor, bits: int) -> bool:
    """Whether ``values`` are whole multiples k * step with |k| <= 2^(bits-1) - 1."""
    k = values.detach() / step
    return bool(torch.allclose(k, k.round(), atol=1e-4) and k.abs().max() <= 2 ** (bits - 1) - 1 + 1e-4)


def test_a_declared_weighted_layer_is_quantized_through_its_named_weight():
    found = weighted_layer.registries()
    mix = weighted_layer.Mix(8, 4)
    with torch.no_grad():
        mix.scale.uniform_(0.5, 2.0)
        mix.bias.uniform_(-1.0, 1.0)
    original = {name: p.detach().clone() for name, p in mix.named_parameters()}
    gm = weighted_layer.traced(nn.Sequential(nn.Linear(6, 8), nn.ReLU(), mix), found)
    plans = quantize_model(gm, QuantConfig(weight_bits=4, activation_bits=8), [torch.randn(2, 6)],
                           weighted=tuple(found.weighted_layers.values()))
    assert list(plans) == ["0", "2"] and plans["2"].weight == "weight"
    layer = gm.get_submodule("2")
    assert _on_grid(layer.weight, original["weight"].abs().amax(1, keepdim=True) / 7, 4)  # per output
    for name in ("scale", "bias"):  # the layer's other parameters: per tensor
        assert _on_grid(getattr(layer, name), original[name].abs().max() / 7, 4), name
    assert bits_of(layer) == {"weight": 4, "input": 8, "accumulator": 32}
    # the grids' float32 scales: one per output of the weight, one per other tensor, the input's
    assert storage_of(layer) == {"weight_scales": (4, 32), "scale_scales": (1, 32), "bias_scales": (1, 32),
                                 "input_scale": (1, 32)}
    assert isinstance(gm.get_submodule("2_input_quant"), ActivationQuant)


def test_an_undeclared_layer_is_left_in_float_and_globs_matching_nothing_warn():
    found = weighted_layer.registries(declare=False)
    gm = weighted_layer.traced(nn.Sequential(nn.Linear(6, 8), nn.ReLU(), weighted_layer.Mix(8, 4)), found)
    config = QuantConfig(weight_bits=4, activation_bits=32, layers=("*", "mix*"), overrides={"2": 8})
    with pytest.warns(UserWarning) as caught:
        plans = quantize_model(gm, config, [])
    assert [str(w.message) for w in caught] == [
        "quantize: layers glob 'mix*' matches no Conv/Linear layer the graph calls",
        "quantize: overrides glob '2' matches no selected layer"]
    assert list(plans) == ["0"] and bits_of(gm.get_submodule("2")) == {}
    with pytest.warns(UserWarning, match="layers is empty: no Conv/Linear layer the graph calls is selected"):
        assert quantize_model(gm, QuantConfig(layers=()), []) == {}

def test_fake_quant_passes_gradients_straight_through():
    w = torch.randn(4, 5, requires_grad=True)
    (fake_quant(w, 3) * torch.arange(20.0).view(4, 5)).sum().backward()
    assert torch.equal(w.grad, torch.arange(20.0).view(4, 5))


# ---------------------------------------------------------------------- prices


@pytest.mark.parametrize("wb, ab, acc", [(4, 8, 32), (8, 8, 16), (1, 4, 32), (2, 16, 24)])
def test_score_is_the_hand_computation(wb, ab, acc):
    history = compress(recipe({"weight_bits": wb, "activation_bits": ab, "accumulator_bits": acc}),
                       model=Small())
    score = history.final.score
    # storage: conv 8*3*3*3 = 216 weights + 8 biases, fc 8*10 = 80 weights + 10 biases, all at wb;
    # BN: 16 params, its 8 scales fold into the conv (free), its 8 biases stay 32-bit;
    # the grids' float32 scales: conv 8 (per channel) + 1 (bias) + 1 (input), fc 10 + 1 + 1
    scales = (8 + 1 + 1) + (10 + 1 + 1) if ab < 32 else (8 + 1) + (10 + 1)
    assert score.storage == pytest.approx((216 + 8 + 80 + 10) * wb / 32 + 8 + scales, rel=1e-12)
    # conv: E = 8*16*16 = 2048 outputs of L = 27: 27*2048 = 55296 mults at max(wb, ab),
    #       (26 + 1 bias) * 2048 = 55296 adds at the accumulator
    # BN 2048 adds, ReLU 2048 mults, pool 8 divisions + 8*255 adds: 3 * 2048 at 32 bits
    # fc: 80 mults at max(wb, ab), (7 + 1 bias) * 10 = 80 adds at the accumulator
    mult_bits = max(wb, ab)
    expected = 55296 * mult_bits / 32 + 55296 * acc / 32 + 3 * 2048 + 80 * mult_bits / 32 + 80 * acc / 32
    assert score.ops == pytest.approx(expected, rel=1e-12)
    if (wb, ab, acc) == (4, 8, 32):
        # 28 + 8 + 11.25 + 22 scales; 13824 + 55296 + 6144 + 20 + 80
        assert (score.storage, score.ops) == (69.25, 75364.0)
    assert not score.freebie
    layers = {r.name: r for r in history.final.records}
    assert (layers["conv"].weight_bits, layers["conv"].input_bits, layers["conv"].accumulator_bits) == (wb, ab, acc)
    assert (layers["bn"].weight_bits, layers["relu"].input_bits) == (32, 32)  # float ops stay at 32


def test_freebie_off_below_16_bits_and_kept_at_16():
    model = Small()
    eight = compress(recipe({"weight_bits": 8, "activation_bits": 8}, freebie=True), model=model)
    assert not eight.final.score.freebie
    assert eight.input.score.freebie
    sixteen = compress(recipe({"weight_bits": 16, "activation_bits": 16}, freebie=True), model=model)
    assert sixteen.final.score.freebie
    # 16-bit weights and inputs cost what the freebie gives a float model, plus the grids'
    # float32 scales: conv 8 + 1 + 1, fc 10 + 1 + 1 = 22 values
    assert sixteen.final.score.ops == pytest.approx(sixteen.input.score.ops, rel=1e-12)
    assert sixteen.final.score.storage == pytest.approx(sixteen.input.score.storage + 22, rel=1e-12)
    moved = (sixteen.model.conv.weight - model.conv.weight).abs()  # onto a 16-bit grid:
    assert 0 < moved.max() <= model.conv.weight.abs().max() / 32767 / 2  # half a step at most


def test_overrides_keep_named_layers_at_16_bits():
    step = {"weight_bits": 4, "activation_bits": 8, "overrides": {"conv": 16, "f*": {"activation_bits": 16}}}
    history = compress(recipe(step), model=Small())
    layers = {r.name: r for r in history.final.records}
    assert (layers["conv"].weight_bits, layers["conv"].input_bits) == (16, 16)
    assert (layers["fc"].weight_bits, layers["fc"].input_bits) == (4, 16)
    assert history.steps[0].notes["mixed_precision"] == {"conv": [16, 16], "fc": [4, 16]}
    assert max(channel_values(history.model.conv.weight)) > 2 ** 4


def test_layers_ignore_and_float_activations():
    history = compress(recipe({"weight_bits": 8, "activation_bits": 32, "ignore": ["fc"]}), model=Small())
    layers = {r.name: r for r in history.final.records}
    assert (layers["conv"].weight_bits, layers["conv"].input_bits) == (8, 32)
    assert (layers["fc"].weight_bits, layers["fc"].input_bits) == (32, 32)
    assert not any(isinstance(m, ActivationQuant) for m in history.model.modules())


def test_quantized_graph_audits_with_no_uncounted_nodes(tmp_path):
    history = compress(recipe({}), model=Small(), out=tmp_path)
    final = history.final
    assert final.uncounted == ()
    quantizers = [r for r in final.records if r.op == "fake_quant"]
    assert [r.name for r in quantizers] == ["conv_input_quant", "fc_input_quant"]
    assert all(r.status == "free" for r in quantizers)
    strict = micronet.audit(history.model, (1, 3, 16, 16), freebie=False, strict=True)
    assert strict.score.total == pytest.approx(final.score.total)
    assert micronet.audit(str(tmp_path / "model.pt2"), freebie=False).uncounted == ()  # the archive too


def test_running_twice_replaces_the_quantizers():
    history = compress(recipe({"activation_bits": 8}, {"activation_bits": 6}), model=Small())
    quantizers = [m for m in history.model.modules() if isinstance(m, ActivationQuant)]
    assert [q.bits for q in quantizers] == [6, 6]
    assert history.final.uncounted == ()


@pytest.mark.parametrize("step, key", [({"weight_bits": 0}, "weight_bits"), ({"weight_bits": 17}, "weight_bits"),
                                       ({"activation_bits": 1}, "activation_bits"),
                                       ({"activation_bits": 20}, "activation_bits"),
                                       ({"accumulator_bits": 4}, "accumulator_bits"),
                                       ({"observer": "median"}, "observer"),
                                       ({"overrides": {"fc": 40}}, "overrides"),
                                       ({"overrides": {"fc": {"bits": 4}}}, "overrides"),
                                       ({"ignore": [3]}, "ignore")])
def test_bad_options_fail_before_any_work(step, key):
    with pytest.raises(UsageError, match=rf"option '{key}'"):
        compress(recipe(step), model=Small())


# ------------------------------------------------------------------- observers


def test_every_observer_calibrates():
    heavy = torch.randn(2, 50_000)
    heavy[0, :3] = 50.0  # 3 outliers in 100,000 values: beyond the 99.99th percentile
    ranges = {}
    for observer in ("minmax", "percentile", "mse"):
        quantizer = ActivationQuant(8, observer)
        quantizer.start_calibration()
        for batch in heavy:
            assert torch.equal(quantizer(batch), batch)  # calibration passes values through
        ranges[observer] = quantizer.freeze()
        scale = quantizer.scale.item()
        assert scale > 0 and math.isfinite(scale)
        assert torch.unique(quantizer(heavy)).numel() <= 2 ** 8
    assert ranges["minmax"] == (heavy.min().item(), 50.0)
    assert ranges["percentile"][1] < 10 and ranges["mse"][1] < 50  # outliers clipped
    assert ranges["percentile"][0] < -3 and ranges["mse"][0] < 0


def test_a_quantizer_must_be_calibrated_before_use():
    with pytest.raises(RuntimeError, match="before calibration"):
        ActivationQuant(8)(torch.zeros(3))


# -------------------------------------------------------------------- accuracy


class Tiny(nn.Module):
    """A small CNN for the accuracy test (4 classes at 3x8x8)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.bn2 = nn.BatchNorm2d(32)
        self.fc = nn.Linear(32, 4)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def problem(n, seed):
    """Four fixed 3x8x8 class patterns plus unit noise: Tiny learns 88% of it."""
    patterns = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(123)) * 0.4
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(4, (n,), generator=g)
    return patterns[y] + torch.randn(n, 3, 8, 8, generator=g), y


def accuracy(model, x, y):
    with torch.no_grad():
        return (model.eval()(x).argmax(1) == y).float().mean().item() * 100


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    model, (x, y) = Tiny(), problem(2048, 1)
    optimizer = torch.optim.Adam(model.parameters(), 3e-3)
    for epoch in range(4):
        for i in range(0, len(x), 128):
            optimizer.zero_grad()
            F.cross_entropy(model.train()(x[i:i + 128]), y[i:i + 128]).backward()
            optimizer.step()
    return model.eval(), x


def test_eight_bit_accuracy_stays_within_one_point_of_float(trained):
    model, train_x = trained
    test_x, test_y = problem(4000, 2)
    before = accuracy(model, test_x, test_y)
    assert before > 80  # the problem was learned
    gm = graph(model)
    quantize_model(gm, QuantConfig(weight_bits=8, activation_bits=8),
                   [train_x[i:i + 256] for i in range(0, 1024, 256)])
    after = accuracy(gm, test_x, test_y)
    assert abs(after - before) <= 1.0
    with torch.no_grad():
        assert not torch.equal(gm(test_x[:8]), model(test_x[:8]))  # it really is quantized
    two = graph(model)
    quantize_model(two, QuantConfig(weight_bits=2, activation_bits=2), [train_x[:256]])
    assert accuracy(two, test_x, test_y) < before - 5  # ... and the test can tell a coarse grid


# ------------------------------------------------------------------------ QAT


def test_qat_trains_latent_weights_through_the_grid_and_keeps_masks():
    model = Small()
    keep = torch.rand_like(model.conv.weight) > 0.5
    model.conv.register_buffer("weight_mask", keep, persistent=False)  # micronet.masks convention
    with torch.no_grad():
        model.conv.weight.mul_(keep)
    gm = graph(model)
    x, target = torch.randn(16, 3, 16, 16), torch.randn(16, 10)
    losses = []

    def train(module):
        optimizer = torch.optim.SGD(module.parameters(), lr=0.05)
        for _ in range(20):
            optimizer.zero_grad()
            loss = F.mse_loss(module.train()(x), target)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())

    quantize_model(gm, QuantConfig(weight_bits=4, activation_bits=8), [x], train=train)
    assert losses[-1] < losses[0]
    conv = gm.get_submodule("conv")
    assert type(conv) is nn.Conv2d  # the parametrization is gone, the weights baked
    assert max(channel_values(conv.weight)) <= 2 ** 4
    assert torch.all(conv.weight[~keep] == 0)  # pruned weights stayed pruned


def test_qat_through_the_trainer():
    data = {"dataset": "fake", "batch_size": 128, "calibration_batches": 2}
    history = compress(recipe({"weight_bits": 4, "activation_bits": 8, "qat": True, "qat_epochs": 1},
                              data=data, shape=(1, 3, 8, 8)), model=Small())
    notes = history.steps[0].notes
    assert notes["qat"]["epochs"] == 1 and len(notes["qat"]["loss"]) == 1
    assert notes["calibration"] == "2 batches of fake"
    assert max(channel_values(history.model.conv.weight)) <= 2 ** 4
    assert not history.final.score.freebie


# ----------------------------------------------------------------- torchvision


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_torchvision_models_through_compress(name):
    import torchvision

    model = getattr(torchvision.models, name)(num_classes=10)
    history = compress(recipe({"weight_bits": 8, "activation_bits": 8}, shape=(1, 3, 64, 64)), model=model)
    before, after = history.input, history.final
    assert after.uncounted == ()
    layers = [r for r in after.records if r.op in ("conv2d", "linear")]
    assert layers and all((r.weight_bits, r.input_bits) == (8, 8) for r in layers)
    weights = sum(r.params for r in layers)
    assert after.score.storage < before.score.storage - weights * 0.74  # 8/32 instead of 32/32
    assert after.totals["mults"] <= before.totals["mults"]
    assert not after.score.freebie


def test_a_saved_archive_keeps_its_bit_widths(tmp_path):
    history = compress(recipe({"weight_bits": 4, "activation_bits": 8}), model=Small(), out=tmp_path)
    reloaded = micronet.audit(str(tmp_path / "model.pt2"), freebie=True)
    assert reloaded.captured_via == "export"
    conv = next(r for r in reloaded.records if r.name == "conv")
    assert (conv.weight_bits, conv.input_bits) == (4, 8)
    assert reloaded.score.storage == pytest.approx(history.final.score.storage, rel=1e-9)
    assert not reloaded.score.freebie


# ------------------------------------------------------------------- BatchNorm


def _with_batchnorm_values(model):
    """Give the BN non-trivial gamma, beta and running statistics (the defaults 1, 0 are on every grid)."""
    with torch.no_grad():
        model.bn.weight.uniform_(0.5, 1.5)
        model.bn.bias.copy_(torch.randn(8) * 0.5)
        model.bn.running_mean.copy_(torch.randn(8) * 0.1)
        model.bn.running_var.uniform_(0.5, 2.0)
    return model


@pytest.mark.parametrize("wb, without, with_bn", [(8, 108.5, 104.5), (4, 69.25, 64.25)])
def test_batchnorm_storage_is_the_hand_computation(wb, without, with_bn):
    # float model: conv 216 + 8, fc 80 + 10, BN 16 of which 8 folded scales are free: 322
    # off (today): 314 params at wb + the BN's 8 biases at 32 bits (8) + 22 float32 scales
    #   8 bits: 78.5 + 8 + 22 = 108.5;  4 bits: 39.25 + 8 + 22 = 69.25
    # on: the BN's 8 biases at wb (8 * wb / 32) + its 2 per-tensor scales (gamma's, beta's)
    #   8 bits: 78.5 + 2 + 22 + 2 = 104.5;  4 bits: 39.25 + 1 + 22 + 2 = 64.25
    step = {"weight_bits": wb, "activation_bits": 8}
    off = compress(recipe(step), model=_with_batchnorm_values(Small()))
    on = compress(recipe({**step, "batchnorm": True}), model=_with_batchnorm_values(Small()))
    assert on.input.score.storage == off.input.score.storage == 322
    assert off.final.score.storage == pytest.approx(without, rel=1e-12)
    assert on.final.score.storage == pytest.approx(with_bn, rel=1e-12)
    assert on.final.score.ops == pytest.approx(off.final.score.ops, rel=1e-12)  # BN's adds stay as they were
    records = {r.name: r for r in on.final.records}
    assert records["bn"].weight_bits == wb and records["bn"].input_bits == 32
    assert {r.name: r for r in off.final.records}["bn"].weight_bits == 32
    bn = on.model.bn
    assert bits_of(bn) == {"weight": wb}
    assert storage_of(bn) == {"weight_scales": (1, 32), "bias_scales": (1, 32)}
    assert on.steps[0].notes["batchnorm"] == {"bn": {
        "bits": wb, "follows": "conv", "quantized": ["weight", "bias"], "grid": "per-tensor",
        "float": ["running_mean", "running_var"]}}
    assert "batchnorm" not in off.steps[0].notes
    assert not on.final.score.freebie


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_batchnorm_values_lie_on_a_per_tensor_grid_and_running_statistics_stay_float(bits):
    model = _with_batchnorm_values(Small()).eval()
    before = {k: v.clone() for k, v in model.bn.state_dict().items()}
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        expected = model(x)
    gm = graph(model)
    plans = {}
    quantize_model(gm, QuantConfig(weight_bits=bits, activation_bits=32, batchnorm=True), [], batchnorms=plans)
    assert list(plans) == ["bn"] and plans["bn"].follows == "conv"
    bn = gm.get_submodule("bn")
    assert type(bn) is nn.BatchNorm2d  # parametrization removed, values baked
    for name in ("weight", "bias"):
        values = getattr(bn, name)
        assert torch.unique(values).numel() <= 2 ** bits
        assert _on_grid(values, before[name].abs().max() / (2 ** (bits - 1) - 1), bits), name
        assert not torch.equal(values, before[name])  # really moved onto the grid
    for name in ("running_mean", "running_var"):
        assert torch.equal(getattr(bn, name), before[name])  # float: folded away at inference
    with torch.no_grad():
        out = gm.eval()(x)
    assert out.shape == (4, 10) and torch.isfinite(out).all()
    if bits == 8:
        assert torch.allclose(out, expected, atol=0.05)  # still the same model, near enough


def test_batchnorm_off_by_default_leaves_it_float():
    model = _with_batchnorm_values(Small())
    before = model.bn.weight.detach().clone()
    gm = graph(model)
    quantize_model(gm, QuantConfig(weight_bits=4, activation_bits=8), [torch.randn(2, 3, 16, 16)])
    assert torch.equal(gm.get_submodule("bn").weight, before)
    assert bits_of(gm.get_submodule("bn")) == {} and storage_of(gm.get_submodule("bn")) == {}


def test_freebie_with_batchnorm_kept_at_16_bits_and_lost_when_the_bn_alone_is_below():
    model = _with_batchnorm_values(Small())
    sixteen = compress(recipe({"weight_bits": 16, "activation_bits": 16, "batchnorm": True}, freebie=True),
                       model=model)
    assert sixteen.final.score.freebie
    # 322 params at 16 bits (161) as the freebie counts the float model, plus 22 + 2 float32 scales
    assert sixteen.input.score.storage == 161
    assert sixteen.final.score.storage == pytest.approx(161 + 24, rel=1e-12)
    only_bn = compress(recipe({"weight_bits": 16, "activation_bits": 16, "batchnorm": True,
                               "overrides": {"bn": 8}}, freebie=True), model=model)
    records = {r.name: r for r in only_bn.final.records}
    assert (records["conv"].weight_bits, records["bn"].weight_bits) == (16, 8)
    assert not only_bn.final.score.freebie  # the BN's 8 bits turn it off


class PreActivation(nn.Module):
    """BN -> ReLU -> conv (DenseNet style): the first BN follows no quantized layer."""

    def __init__(self):
        super().__init__()
        self.bn0 = nn.BatchNorm2d(3)
        self.conv = nn.Conv2d(3, 8, 3)
        self.bn1 = nn.BatchNorm2d(8)
        self.head = nn.BatchNorm2d(8)

    def forward(self, x):
        return self.head(torch.relu(self.bn1(self.conv(torch.relu(self.bn0(x))))))


def test_batchnorm_choice_follows_layers_globs_ignore_and_the_layer_it_follows():
    def plan(**options):
        chosen = {}
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a glob naming a BN is not a glob matching nothing
            quantize_model(graph(PreActivation()), QuantConfig(activation_bits=32, batchnorm=True, **options), [],
                           batchnorms=chosen)
        return {name: (p.weight_bits, p.follows) for name, p in chosen.items()}

    # "*": every BN; bn1 follows the conv, the others by glob at weight_bits
    assert plan(weight_bits=4) == {"bn0": (4, None), "bn1": (4, "conv"), "head": (4, None)}
    # a BN after a quantized layer takes that layer's bits unless an override names the BN
    assert plan(weight_bits=4, overrides={"conv": 8}) == {"bn0": (4, None), "bn1": (8, "conv"), "head": (4, None)}
    assert plan(weight_bits=4, overrides={"conv": 8, "bn1": 6})["bn1"] == (6, "conv")
    # layers picks the conv only: its BN follows it, the others are not selected
    assert plan(weight_bits=4, layers=("conv",)) == {"bn1": (4, "conv")}
    # a glob selects a BN without a quantized layer before it; ignore keeps one float
    assert plan(weight_bits=4, layers=("conv", "bn0")) == {"bn0": (4, None), "bn1": (4, "conv")}
    assert plan(weight_bits=4, ignore=("bn*",)) == {"head": (4, None)}
    with pytest.warns(UserWarning, match="layers glob 'nothing' matches no"):  # still warned
        quantize_model(graph(PreActivation()), QuantConfig(activation_bits=32, batchnorm=True, layers=("conv", "nothing")), [])


def test_batchnorm_trains_through_its_grid_in_qat():
    model = _with_batchnorm_values(Small())
    gm = graph(model)
    x, target = torch.randn(16, 3, 16, 16), torch.randn(16, 10)

    def train(module):
        assert parametrize.is_parametrized(module.get_submodule("bn"), "bias")
        optimizer = torch.optim.SGD(module.parameters(), lr=0.05)
        for _ in range(5):
            optimizer.zero_grad()
            F.mse_loss(module.train()(x), target).backward()
            optimizer.step()

    quantize_model(gm, QuantConfig(weight_bits=4, activation_bits=8, batchnorm=True), [x], train=train)
    bn = gm.get_submodule("bn")
    assert type(bn) is nn.BatchNorm2d
    assert torch.unique(bn.weight).numel() <= 16 and torch.unique(bn.bias).numel() <= 16


def test_batchnorm_option_must_be_a_bool():
    with pytest.raises(UsageError, match=r"option 'batchnorm'"):
        compress(recipe({"batchnorm": "yes"}), model=Small())
