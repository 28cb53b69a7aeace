"""The ``prune`` step: exact costs after pruning, the options, the zoo, errors,
and the layers Torch-Pruning cannot prune."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

from micronet.errors import CompressionError, UsageError
from micronet.models import densenet_cifar
from micronet.pipeline import compress
from micronet.plugins.prune import PRUNE, PruneWarning, output_layers
from micronet.steps import StepContext, check_options

import weighted_layer

CIFAR100_PARAMS, CIFAR100_OPS = 36.5e6, 10.49e9


class Tiny(nn.Module):
    """conv 3->a, BN, ReLU, conv a->b, BN, ReLU, global pool, linear b->10:
    two pruning groups (conv1 with bn1 and conv2's input; conv2 with bn2 and
    fc's input) whose costs are easy to write by hand."""

    def __init__(self, a: int = 8, b: int = 16):
        super().__init__()
        self.conv1, self.bn1, self.relu1 = nn.Conv2d(3, a, 3, padding=1), nn.BatchNorm2d(a), nn.ReLU()
        self.conv2, self.bn2, self.relu2 = nn.Conv2d(a, b, 3, padding=1), nn.BatchNorm2d(b), nn.ReLU()
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(b, 10)

    def forward(self, x):
        x = self.relu1(self.bn1(self.conv1(x)))
        return self.fc(self.pool(self.relu2(self.bn2(self.conv2(x)))).flatten(1))


class FullyConv(nn.Module):
    """Its output comes from a conv (then pooling and flatten), not a linear
    layer: the step must find that conv and keep its 10 channels."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Conv2d(8, 10, 1)

    def forward(self, x):
        return torch.flatten(nn.functional.adaptive_avg_pool2d(self.head(self.body(x)), 1), 1)


def tiny_params(a, b):
    # conv1 3*9*a + a, bn1 2a, conv2 a*9*b + b, bn2 2b, fc 10*b + 10
    return 27 * a + a + 2 * a + 9 * a * b + b + 2 * b + 10 * b + 10


def tiny_storage(a, b):
    # BatchNorm's scale folds into the conv before it: a + b parameters are not stored
    return tiny_params(a, b) - a - b


def tiny_ops(a, b):
    # 8x8 maps, fp32 without the freebie: every mult and add is one op
    conv1 = 64 * a * (27 + 26 + 1)  # 27 mults, 26 adds, 1 bias add per output
    bn1 = relu1 = 64 * a
    conv2 = 64 * b * (9 * a + 9 * a - 1 + 1)
    bn2 = relu2 = 64 * b
    pool = b + 63 * b  # one division (a mult) and 63 adds per channel
    fc = 10 * (b + b - 1 + 1)
    return conv1 + bn1 + relu1 + conv2 + bn2 + relu2 + pool + fc


def recipe(*steps, shape=(1, 3, 8, 8), spec="unused", track="cifar100"):
    return {"model": {"spec": spec, "input": list(shape)}, "score": {"track": track, "freebie": False},
            "step": [{"use": "prune", **step} for step in steps]}


def widths(model):
    return model.conv1.out_channels, model.conv2.out_channels


def test_hand_costs_of_the_tiny_model():
    assert tiny_params(8, 16) == 1610 and tiny_ops(8, 16) == 179520  # as audited before pruning


@pytest.mark.parametrize("ratio, a, b", [
    ({"conv1": 0.5}, 4, 16),   # conv1 keeps 8 * (1 - 0.5) = 4; conv2 loses 4 inputs
    (0.5, 4, 8),               # every group halves; fc keeps its 10 outputs
    ({"conv2": 0.25}, 8, 12),  # 16 * 0.75 = 12
    ({"conv*": 0.5, "conv2": 0.25}, 4, 12),  # the last matching glob wins
])
def test_the_score_falls_by_the_hand_computed_amount(registries, ratio, a, b):
    history = compress(recipe({"ratio": ratio}), model=Tiny(), registries=registries)
    before, after = history.input, history.final
    assert (before.totals["params"], before.score.ops) == (tiny_params(8, 16), tiny_ops(8, 16))
    assert widths(history.model) == (a, b)
    assert history.model.conv2.in_channels == a and history.model.fc.in_features == b
    assert after.totals["params"] == tiny_params(a, b)
    assert after.score.storage == tiny_storage(a, b)
    assert after.score.ops == tiny_ops(a, b)
    expected = tiny_storage(a, b) / CIFAR100_PARAMS + tiny_ops(a, b) / CIFAR100_OPS
    assert after.score.total == pytest.approx(expected)
    assert after.records[-1].output_shapes == ((1, 10),)
    assert history.model(torch.randn(2, 3, 8, 8)).shape == (2, 10)
    step = history.steps[0]
    assert (step.name, step.plugin, step.error) == ("prune", "micronet.plugins.prune", None)
    assert step.notes["params"] == {"before": tiny_params(8, 16), "after": tiny_params(a, b)}
    assert step.notes["kept_whole"]["output_layers"] == ["fc"]
    assert step.notes["importance"].startswith("magnitude")


@pytest.mark.parametrize("round_to, a, b", [(0, 5, 11), (4, 4, 8)])
def test_round_to(registries, round_to, a, b):
    # ratio 0.3 keeps int(8 * 0.7) = 5 and int(16 * 0.7) = 11; round_to 4 rounds down to 4 and 8
    history = compress(recipe({"ratio": 0.3, "round_to": round_to}), model=Tiny(), registries=registries)
    assert widths(history.model) == (a, b)
    assert history.final.totals["params"] == tiny_params(a, b)


def test_iterative_steps_follow_a_linear_schedule(registries):
    history = compress(recipe({"ratio": 0.5, "iterative_steps": 2}), model=Tiny(), registries=registries)
    # step 1 at ratio 0.25: (6, 12); step 2 at 0.5: (4, 8)
    assert history.steps[0].notes["params_per_step"] == [tiny_params(8, 16), tiny_params(6, 12),
                                                         tiny_params(4, 8)]
    assert widths(history.model) == (4, 8)


def test_global_pruning_ranks_channels_across_layers(registries):
    history = compress(recipe({"ratio": 0.5, "global": True}), model=Tiny(), registries=registries)
    a, b = widths(history.model)
    assert a + b == 12  # 24 channels, half of them kept, wherever they rank
    assert history.final.totals["params"] == tiny_params(a, b)


def test_ignored_layers_keep_their_channels(registries):
    history = compress(recipe({"ratio": 0.5, "ignore": ["conv1"]}), model=Tiny(), registries=registries)
    assert widths(history.model) == (8, 8)
    assert history.steps[0].notes["kept_whole"] == {"output_layers": ["fc"], "ignore": {"conv1": 1}}


def test_a_conv_producing_the_output_keeps_its_channels(registries):
    assert output_layers(fx.symbolic_trace(FullyConv())) == ["head"]
    history = compress(recipe({"ratio": 0.5}), model=FullyConv(), registries=registries)
    assert history.model.get_submodule("body.0").out_channels == 4
    assert history.model.head.out_channels == 10
    assert history.final.records[-1].output_shapes == ((1, 10),)


# ------------------------------------------------------------------ importances


def small_densenet():
    return densenet_cifar(growth_rate=4, nblocks=(2, 2, 2, 2))


@pytest.mark.parametrize("importance", ["magnitude", "taylor", "hessian", "lamp", "bn-scale", "random"])
def test_each_importance_prunes_a_densenet(registries, importance):
    history = compress(recipe({"importance": importance}, shape=(1, 3, 32, 32)), model=small_densenet(),
                       registries=registries)
    before, after = history.input, history.final
    assert after.totals["params"] < 0.5 * before.totals["params"]
    assert after.score.ops < 0.5 * before.score.ops
    assert history.model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    notes = history.steps[0].notes
    assert notes["importance"].startswith(importance)
    assert ("importance_data" in notes) == (importance in ("taylor", "hessian"))


def test_taylor_says_its_batches_are_synthetic(registries):
    history = compress(recipe({"importance": "taylor"}), model=Tiny(), registries=registries)
    assert history.steps[0].notes["importance_data"].startswith("synthetic")
    assert history.steps[0].notes["importance_data"].endswith("4 batches of 8")
    assert all(p.grad is None for p in history.model.parameters())


def run_step(model, options, data=None, shape=(1, 3, 8, 8)):
    """The step on a traced copy, outside the pipeline; returns (model, notes)."""
    context = StepContext(shape, None, data=data)
    pruned = PRUNE.run(fx.symbolic_trace(model), check_options(PRUNE, options, "test"), context)
    return pruned, context.notes


def test_taylor_takes_the_recipes_batches_from_micronet_data(monkeypatch):
    calls = []

    def batches(data, input_shape, n, **kwargs):
        calls.append((dict(data), tuple(input_shape), n, kwargs))
        return [(torch.randn(5, *input_shape[1:]), torch.randint(10, (5,))) for _ in range(3)]

    monkeypatch.setattr("micronet.training.data.batches", batches)  # a real dataset, stood in for
    model, notes = run_step(Tiny(), {"importance": "taylor"}, data={"dataset": "cifar10:/data"})
    assert calls == [({"dataset": "cifar10:/data"}, (1, 3, 8, 8), None, {"num_classes": 10, "split": "calibration"})]
    assert notes["importance_data"] == ("dataset 'cifar10:/data' (micronet.training.data.batches, calibration split): "
                                        "3 batches of 5")
    assert widths(model) == (4, 8)


def test_taylor_on_the_fake_dataset_recomputes_gradients_each_step():
    data = {"dataset": "fake", "calibration_batches": 2, "batch_size": 4}
    model, notes = run_step(Tiny(), {"importance": "taylor", "iterative_steps": 2}, data=data)
    assert notes["importance_data"] == "synthetic: dataset 'fake' (micronet.training.data.batches): 2 batches of 4"
    assert notes["params_per_step"] == [tiny_params(8, 16), tiny_params(6, 12), tiny_params(4, 8)]
    assert all(p.grad is None and p.requires_grad for p in model.parameters())


# ------------------------------------------------------------------ hessian (OBD)

DIGITS = {"dataset": "digits", "batch_size": 32, "calibration_batches": 2}  # 64 real calibration images


class DeadAndAlive(nn.Module):
    """conv 1 -> 4 (3x3), ReLU, global pool, linear 4 -> 10 on 8x8 digits.
    Channels 0 and 2 have large conv weights but the linear layer reads them
    with zero weights: removing them changes nothing. Channels 1 and 3 have
    small conv weights that the linear layer reads: removing them changes
    the loss (the model is untrained: either way). Magnitude keeps 0 and 2; Taylor and Hessian keep 1 and 3."""

    def __init__(self):
        super().__init__()
        self.conv, self.pool, self.fc = nn.Conv2d(1, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Linear(4, 10)
        with torch.no_grad():
            scale = torch.tensor([3.0, 0.1, 3.0, 0.1]).reshape(4, 1, 1, 1)
            self.conv.weight.copy_(torch.randn(4, 1, 3, 3).sign() * scale)
            self.conv.bias.fill_(0.5)  # every channel passes the ReLU on some pixels
            self.fc.weight.copy_(torch.randn(10, 4) * torch.tensor([0.0, 1.0, 0.0, 1.0]))

    def forward(self, x):
        return self.fc(self.pool(torch.relu(self.conv(x))).flatten(1))


def ablation(model, batches, channel):
    """How much the cross-entropy (summed over ``batches``) rises when the
    model's conv channel ``channel`` is zeroed (negative: falls)."""
    with torch.no_grad():
        base = sum(float(F.cross_entropy(model(x), y, reduction="sum")) for x, y in batches)
        cut = DeadAndAlive()
        cut.load_state_dict(model.state_dict())
        cut.conv.weight[channel] = 0
        cut.conv.bias[channel] = 0
        return sum(float(F.cross_entropy(cut(x), y, reduction="sum")) for x, y in batches) - base


def kept_rows(before, after):
    """Which rows of ``before`` the rows of ``after`` are (in order)."""
    return [next(i for i in range(len(before)) if torch.equal(before[i], row)) for row in after]


@pytest.mark.parametrize("importance, kept", [("magnitude", [0, 2]), ("taylor", [1, 3]), ("hessian", [1, 3])])
def test_gradient_importances_keep_the_channels_the_loss_needs(importance, kept):
    from micronet.training.data import batches
    model = DeadAndAlive()
    calibration = batches(DIGITS, (1, 1, 8, 8), num_classes=10, split="calibration")
    # the construction: removing channel 0 or 2 changes nothing, removing 1 or 3 changes the loss
    effects = [abs(ablation(model, calibration, channel)) for channel in range(4)]
    assert effects[0] == effects[2] == 0 and min(effects[1], effects[3]) > 1
    before = model.conv.weight.detach().clone()
    pruned, notes = run_step(model, {"ratio": 0.5, "importance": importance}, data=DIGITS, shape=(1, 1, 8, 8))
    assert (pruned.conv.out_channels, pruned.fc.in_features) == (2, 2)
    assert kept_rows(before, pruned.conv.weight.detach()) == kept
    class_name = {"magnitude": "MagnitudeImportance(p=2)", "taylor": "TaylorImportance()",
                  "hessian": "HessianImportance()"}[importance]
    assert notes["importance"] == f"{importance}: tp.importance.{class_name}"
    if importance != "magnitude":
        assert notes["importance_data"] == ("dataset 'digits' (micronet.training.data.batches, calibration "
                                            "split): 2 batches of 32")
    assert all(p.grad is None for p in pruned.parameters())


class TwoLinear(nn.Module):
    """flatten, linear 64 -> 4, ReLU, linear 4 -> 10 on 8x8 digits."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(64, 4), nn.Linear(4, 10)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


def obd_scores(model, samples):
    """Each hidden channel's OBD score by hand: the mean over its two layers
    (fc1's row, fc2's column) of sum(w^2 x F), F the mean over ``samples``
    of the squared per-sample gradient of the cross-entropy, written out:
    d loss / d logits = softmax - one-hot, d / d fc2 = that x hidden,
    d / d fc1 = (fc2^T that, where fc1's output > 0) x input."""
    w1, b1, w2, b2 = (t.detach().double() for t in (model.fc1.weight, model.fc1.bias,
                                                     model.fc2.weight, model.fc2.bias))
    f1, f2 = torch.zeros_like(w1), torch.zeros_like(w2)
    for x, y in samples:
        x = x.double().flatten()
        z = w1 @ x + b1
        h = z.clamp(min=0)
        error = torch.softmax(w2 @ h + b2, 0) - F.one_hot(y, 10).double()
        f2 += torch.outer(error, h) ** 2
        f1 += torch.outer((w2.T @ error) * (z > 0), x) ** 2
    f1, f2 = f1 / len(samples), f2 / len(samples)
    return ((w1 ** 2 * f1).sum(1) + (w2 ** 2 * f2).sum(0)) / 2


def test_hessian_keeps_the_channels_with_the_highest_obd_scores_over_every_sample():
    from micronet.training.data import batches
    torch.manual_seed(6)  # weights for which the last sample alone ranks the channels differently
    model = TwoLinear()
    calibration = batches(DIGITS, (1, 1, 8, 8), num_classes=10, split="calibration")
    samples = [(x, y) for xs, ys in calibration for x, y in zip(xs, ys)]
    assert len(samples) == 64
    scores = obd_scores(model, samples)
    top = sorted(scores.argsort(descending=True)[:2].tolist())
    ranked = scores.sort(descending=True).values
    assert ranked[1] > 2 * ranked[2]  # no near-tie at the cut
    # Torch-Pruning 1.6.1's accumulate_grad keeps the last sample only: it would keep other channels
    assert sorted(obd_scores(model, samples[-1:]).argsort(descending=True)[:2].tolist()) != top
    before = model.fc1.weight.detach().clone()
    pruned, notes = run_step(model, {"ratio": 0.5, "importance": "hessian"}, data=DIGITS, shape=(1, 1, 8, 8))
    assert kept_rows(before, pruned.fc1.weight.detach()) == top
    assert (pruned.fc1.out_features, pruned.fc2.in_features) == (2, 2)


def test_hessian_without_data_says_its_batches_are_synthetic(registries):
    history = compress(recipe({"importance": "hessian", "iterative_steps": 2}), model=Tiny(), registries=registries)
    notes = history.steps[0].notes
    assert notes["importance_data"].startswith("synthetic") and notes["importance_data"].endswith("4 batches of 8")
    assert notes["params_per_step"] == [tiny_params(8, 16), tiny_params(6, 12), tiny_params(4, 8)]
    assert all(p.grad is None for p in history.model.parameters())


def smoke(registries, spec, shape, **options):
    history = compress(recipe(options, shape=shape, spec=spec, track="cifar10"), registries=registries)
    before, after = history.input, history.final
    assert after.totals["params"] < before.totals["params"]
    assert after.score.ops < before.score.ops
    assert after.uncounted == ()
    assert after.records[-1].output_shapes == before.records[-1].output_shapes
    assert history.steps[0].notes["params"]["after"] == after.totals["params"]  # channels are gone
    output = history.model(torch.randn(shape))
    assert tuple(output.shape) == before.records[-1].output_shapes[0]
    return history


@pytest.mark.parametrize("spec", ["micronet:densenet_cifar?growth_rate=4", "micronet:resnet18_cifar",
                                  "micronet:mobilenet_v2_cifar"])
def test_builtin_models_prune(registries, spec):
    history = smoke(registries, spec, (1, 3, 32, 32))
    # ratio 0.5 halves both sides of most convs: about a quarter of their weights is left
    assert history.final.totals["params"] < 0.3 * history.input.totals["params"]


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["resnet18", "densenet121"])
def test_torchvision_models_prune(registries, spec):
    smoke(registries, spec, (1, 3, 64, 64))


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize("options, message", [
    ({"ratio": 1.5}, r"option 'ratio': expected a fraction of channels in \[0, 1\), got 1.5"),
    ({"ratio": -0.1}, r"option 'ratio': expected a fraction of channels in \[0, 1\), got -0.1"),
    ({"ratio": {"conv1": 1.0}}, r"glob 'conv1': expected a fraction of channels in \[0, 1\), got 1.0"),
    ({"ratio": {}}, "an empty mapping prunes nothing"),
    ({"ratio": "half"}, "option 'ratio' must be float or dict, got str"),
    ({"importance": "l1"}, "option 'importance' must be one of 'magnitude', 'taylor', 'hessian', 'lamp', "
                           "'bn-scale', 'random', got 'l1'"),
    ({"importance": "obdc"}, "option 'importance' must be one of .*, got 'obdc'"),
    ({"iterative_steps": 0}, "expected an integer >= 1, got 0"),
    ({"round_to": -8}, "expected an integer >= 0, got -8"),
    ({"ignore": ["conv1", 2]}, "expected a list of layer-name globs"),
    ({"global": 1}, "option 'global' must be bool, got int"),
])
def test_bad_options_fail_before_any_work(registries, monkeypatch, options, message):
    def no_work(*args, **kwargs):
        raise AssertionError("audited before validating")

    monkeypatch.setattr("micronet.pipeline.audit", no_work)
    with pytest.raises(UsageError, match=message):
        compress(recipe(options), model=Tiny(), registries=registries)


def test_nested_toml_keys_are_dotted_layer_names(registries):
    # TOML reads the unquoted key body.0 = 0.5 as nested tables: {"body": {"0": 0.5}}
    history = compress(recipe({"ratio": {"body": {"0": 0.5}}}), model=FullyConv(), registries=registries)
    assert history.model.get_submodule("body.0").out_channels == 4


def test_a_glob_matching_nothing_warns_and_is_noted(registries):
    with pytest.warns(PruneWarning, match="ignore glob 'classifier.*' matches no layer"):
        history = compress(recipe({"ignore": ["classifier.*"]}), model=Tiny(), registries=registries)
    assert history.steps[0].notes["unmatched_ignore_globs"] == ["classifier.*"]
    assert widths(history.model) == (4, 8)  # the rest of the step still ran
    with pytest.warns(PruneWarning) as caught:
        history = compress(recipe({"ratio": {"layer9": 0.5}}), model=Tiny(), registries=registries)
    assert [str(w.message) for w in caught] == [
        "prune: ratio glob 'layer9' matches no layer; it has no effect",
        "prune: no channel was removed (ratio too small for the layers' widths, or every group kept whole)"]
    assert widths(history.model) == (8, 16)


# ---------------------------------------------- layers Torch-Pruning cannot prune

# A residual token stream around a plugin's linear layer: Torch-Pruning took the
# layer's F.linear for an elementwise op and looped in get_all_groups for good
# (over ten minutes, whatever `ignore` said). Run in a child process with a
# deadline, so that a regression fails instead of hanging the test run.
RESIDUAL_TOKENS = '''
import json, sys, warnings
import torch
from torch import fx, nn
import weighted_layer
from micronet.plugins.prune import PRUNE
from micronet.steps import StepContext, check_options


class Tokens(nn.Module):
    """conv 3 -> 8, BN, ReLU; 4x4 patches 8 -> 16 as 4 tokens; two residual Mix
    blocks (16 -> 32 -> 16, a plugin's layer); mean over tokens; linear 16 -> 10."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.relu = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()
        self.embed = nn.Conv2d(8, 16, 4, 4)
        self.blocks = nn.ModuleList(nn.Sequential(nn.LayerNorm(16), weighted_layer.Mix(16, 32), nn.GELU(),
                                                  weighted_layer.Mix(32, 16)) for _ in range(2))
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        x = self.embed(self.relu(self.bn(self.conv(x)))).flatten(2).transpose(1, 2)
        for block in self.blocks:
            x = x + block(x)
        return self.head(x.mean(1))


found = weighted_layer.registries()
report = {}
for declared in (True, False):
    model = Tokens().eval()
    context = StepContext((1, 3, 8, 8), None, registries=found if declared else None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        options = check_options(PRUNE, {"ratio": 0.5, "ignore": ["blocks.*"]}, "test")  # ignore did not help
        pruned = PRUNE.run(weighted_layer.traced(model, found), options, context)
    report[str(declared)] = {"notes": context.notes, "output": list(pruned(torch.randn(1, 3, 8, 8)).shape),
                             "warnings": [str(w.message) for w in caught if "prune" in str(w.message)]}
print(json.dumps(report))
'''


def test_prune_around_a_plugins_layer_in_a_residual_stream_finishes():
    directory = Path(__file__).parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(directory), os.environ.get("PYTHONPATH", "")])}
    try:
        done = subprocess.run([sys.executable, "-c", RESIDUAL_TOKENS], capture_output=True, text=True,
                              timeout=180, env=env, cwd=directory)
    except subprocess.TimeoutExpired:
        pytest.fail("prune did not finish in 180 s: Torch-Pruning hangs on the plugin's layer again")
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    blocks = [f"blocks.{b}.{i}" for b in (0, 1) for i in (1, 3)]
    for declared, why in (("True", "a weighted layer a plugin declared"),
                          ("False", "a weighted module Torch-Pruning has no pruner for")):
        notes = report[declared]["notes"]
        assert notes["kept_whole"]["cannot_prune"] == {name: f"Mix ({why})" for name in blocks}
        # the conv before the patches still loses half its channels; the stream and the layers stay
        assert notes["channels"] == {"conv": {"in": [3, 3], "out": [8, 4]}, "embed": {"in": [8, 4], "out": [16, 16]}}
        assert report[declared]["output"] == [1, 10]
        assert report[declared]["warnings"] == [
            f"prune: 4 layer(s) Torch-Pruning cannot prune are kept whole, with the channels entering and "
            f"leaving them: {', '.join(f'{name} (Mix ({why}))' for name in blocks)}"]


class MixInTheMiddle(nn.Module):
    """linear 12 -> 16, ReLU, the plugin's Mix 16 -> 8, ReLU, linear 8 -> 10:
    Torch-Pruning passed the 16 indices of the first group through Mix into
    the last linear (8 inputs) and raised a raw IndexError."""

    def __init__(self):
        super().__init__()
        self.fc1, self.mix, self.fc2 = nn.Linear(12, 16), weighted_layer.Mix(16, 8), nn.Linear(8, 10)

    def forward(self, x):
        return self.fc2(torch.relu(self.mix(torch.relu(self.fc1(x)))))


def test_a_plugins_layer_between_linears_is_kept_whole_with_its_neighbours_channels():
    found = weighted_layer.registries()
    model = weighted_layer.traced(MixInTheMiddle(), found)
    context = StepContext((1, 12), None, registries=found)
    with pytest.warns(PruneWarning) as caught:
        pruned = PRUNE.run(model, check_options(PRUNE, {"ratio": 0.5}, "test"), context)
    assert [str(w.message) for w in caught] == [
        "prune: 1 layer(s) Torch-Pruning cannot prune are kept whole, with the channels entering and leaving "
        "them: mix (Mix (a weighted layer a plugin declared))",
        "prune: no channel was removed (ratio too small for the layers' widths, or every group kept whole)"]
    assert context.notes["kept_whole"]["cannot_prune"] == {"mix": "Mix (a weighted layer a plugin declared)"}
    assert (pruned.fc1.out_features, pruned.mix.weight.shape) == (16, (8, 16))
    assert pruned(torch.randn(2, 12)).shape == (2, 10)


class KernelConv(nn.Module):
    """A plugin's 3x3 convolution through F.conv2d (no counter: traced through)."""

    def __init__(self, cin, cout):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, 3, 3))

    def forward(self, x):
        return F.conv2d(x, self.weight, padding=1)


class CatWithKernelConv(nn.Module):
    """cat([KernelConv b (3 -> 8), conv a (3 -> 8)]) -> conv c (16 -> 16) -> pool -> linear:
    pruning a's channels must remove some of c's inputs 8..15, the ones after b's 8."""

    def __init__(self):
        super().__init__()
        self.b = KernelConv(3, 8)
        self.a, self.c, self.fc = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1), nn.Linear(16, 10)

    def forward(self, x):
        return self.fc(self.c(torch.cat([self.b(x), self.a(x)], 1)).mean((2, 3)))


def test_a_kept_layer_in_a_concatenation_keeps_the_offsets_of_the_others():
    model = CatWithKernelConv()
    before = model.c.weight.detach().clone()
    with pytest.warns(PruneWarning, match=r"kept whole, .*: b \(KernelConv \(a weighted module Torch-Pruning"):
        pruned = PRUNE.run(model, check_options(PRUNE, {"ratio": 0.5}, "test"), StepContext((1, 3, 8, 8), None))
    rows = [int((before[:, 0] == row[0]).all(dim=(1, 2)).nonzero()[0]) for row in pruned.c.weight.detach()]
    kept = [int(next(i for i in range(16) if torch.equal(before[rows, i], column)))
            for column in pruned.c.weight.detach().transpose(0, 1)]
    assert kept[:8] == list(range(8)) and len(kept) == 12 and all(i >= 8 for i in kept[8:])  # b's 8 inputs stay
    assert (pruned.a.out_channels, pruned.b.weight.shape) == (4, (8, 3, 3, 3))


def test_a_kept_layer_the_traced_model_does_not_call_is_refused_in_one_line():
    model = fx.symbolic_trace(nn.Sequential(nn.Conv2d(3, 8, 3), KernelConv(8, 8), nn.Flatten(), nn.LazyLinear(10)))
    model(torch.randn(1, 3, 8, 8))  # the lazy linear takes its width
    with pytest.raises(CompressionError, match=r"prune cannot work on this model: layer '1' \(Module\) is not "
                       r"called as a module: the model computes with its parameter '1.weight' directly"), \
            pytest.warns(PruneWarning, match="kept whole"):
        PRUNE.run(model, check_options(PRUNE, {"ratio": 0.5}, "test"), StepContext((1, 3, 8, 8), None))


class LooseProjection(nn.Module):
    """A model holding a projection matrix it multiplies by itself."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(12, 16)
        self.projection = nn.Parameter(torch.randn(16, 10))

    def forward(self, x):
        return torch.relu(self.fc(x)) @ self.projection


def test_a_loose_matrix_feeding_a_product_is_refused_in_one_line():
    with pytest.raises(CompressionError, match=r"parameter 'projection' of LooseProjection feeds a convolution "
                       r"or matrix product outside any layer Torch-Pruning knows \(hint: declare LooseProjection"):
        PRUNE.run(LooseProjection(), check_options(PRUNE, {"ratio": 0.5}, "test"), StepContext((1, 12), None))
