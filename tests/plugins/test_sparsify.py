"""The sparsify step: zeros, masks and how each rulebook charges them."""
import copy

import pytest
import torch
import torchvision
from torch import nn

import micronet
from micronet.errors import UsageError
from micronet.pipeline import compress
from micronet.masks import apply_masks, mask_zeros, masks, set_mask
from micronet.plugins.sparsify import schedule_targets, sparsify
from micronet.steps import StepContext

import weighted_layer


class Small(nn.Module):
    """conv(cin -> 8, k3, pad 1) -> ReLU -> global pool -> linear(8 -> 10):
    one conv and one linear weight, small enough to score by hand."""

    def __init__(self, cin=3):
        super().__init__()
        self.conv = nn.Conv2d(cin, 8, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(self.pool(self.relu(self.conv(x))).flatten(1))


def recipe(*steps, rulebook="micronet-2019", shape=(1, 3, 8, 8), track="cifar100"):
    return {"model": {"spec": "unused", "input": list(shape)},
            "score": {"track": track, "rulebook": rulebook, "freebie": False},
            "step": [dict(step) for step in steps]}


def zeros(tensor):
    return int((tensor == 0).sum())


def layer(result, name):
    return next((record, cost) for record, cost in result.layers if record.name == name)


def test_layer_scope_halves_every_weight_and_the_rules_charge_the_bitmask(registries, tmp_path):
    history = compress(recipe({"use": "sparsify", "amount": 0.5, "scope": "layer"}), model=Small(),
                       registries=registries, out=tmp_path)
    model, before, after = history.model, history.input, history.final
    assert zeros(model.conv.weight) == 108 and zeros(model.fc.weight) == 40  # 216 / 2, 80 / 2
    # storage: nonzeros + a bitmask of numel/32 per weight, plus the dense biases
    assert after.score.storage == pytest.approx((108 + 216 / 32 + 8) + (40 + 80 / 32 + 10))
    # dot products shrink to L*(1-s): conv L = 27 over E = 8*8*8 outputs, fc L = 8 over 10
    conv_mults = 27 * 0.5 * 512
    fc_mults = 8 * 0.5 * 10
    assert layer(after, "conv")[1].mults == conv_mults
    assert layer(after, "conv")[1].adds == (27 * 0.5 - 1) * 512 + 512  # + the bias adds
    assert layer(after, "fc")[1].mults == fc_mults
    assert before.totals["mults"] - after.totals["mults"] == 27 * 512 + 8 * 10 - conv_mults - fc_mults
    assert before.totals["adds"] - after.totals["adds"] == 27 * 0.5 * 512 + 8 * 0.5 * 10
    assert after.totals["params"] == before.totals["params"] == 314  # masks are not parameters
    assert history.steps[0].name == "sparsify"
    assert history.steps[0].notes["sparsity"] == {"conv": 0.5, "fc": 0.5}
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 10)
    saved = torch.load(tmp_path / "state_dict.pt", weights_only=True)
    assert zeros(saved["conv.weight"]) == 108 and zeros(saved["fc.weight"]) == 40  # real zeros
    assert not any(key.endswith("_mask") for key in saved)
    Small().load_state_dict(saved)  # strict: the saved weights fit the original architecture
    reloaded = micronet.audit(str(tmp_path / "model.pt2"), freebie=False, registries=registries)
    assert reloaded.score.total == pytest.approx(after.score.total)


def test_blocks_of_1x4_are_detected_and_charged_one_bit_per_block(registries):
    history = compress(recipe({"use": "sparsify", "amount": 0.5, "block": "1x4"}, shape=(1, 4, 8, 8)),
                       model=Small(cin=4), registries=registries)
    conv, conv_cost = layer(history.final, "conv")
    fc, fc_cost = layer(history.final, "fc")
    assert conv.weight_block == (1, 4) and fc.weight_block == (1, 4)
    weight = history.model.conv.weight.detach().reshape(8, 9, 4)  # [out, in*k*k / 4, 4]
    assert torch.equal((weight == 0).all(-1), (weight == 0).any(-1))  # whole blocks are zero
    assert conv_cost.storage == pytest.approx(288 / 2 + 288 / 4 / 32 + 8)  # 4*8*9 = 288 weights
    assert fc_cost.storage == pytest.approx(80 / 2 + 80 / 4 / 32 + 10)


def test_a_weight_that_blocks_do_not_tile_is_left_alone_with_a_warning(registries):
    with pytest.warns(UserWarning, match=r"conv: weight viewed as \[8, 27\] does not split into 1x4"):
        history = compress(recipe({"use": "sparsify", "amount": 0.5, "block": "1x4"}), model=Small(),
                           registries=registries)
    assert zeros(history.model.conv.weight) == 0 and zeros(history.model.fc.weight) == 40
    assert "conv" in history.steps[0].notes["skipped"]


def test_imta_2021_scales_params_only(registries):
    history = compress(recipe({"use": "sparsify", "amount": 0.5}, rulebook="imta-2021", track="cifar10"),
                       model=Small(), registries=registries)
    before, after = history.input.score, history.final.score
    assert after.ops == before.ops
    assert after.storage == pytest.approx(before.storage * (1 - 148 / 314))  # 108 + 40 zeros of 314 params


def test_global_scope_ranks_across_layers(registries):
    model = Small()
    with torch.no_grad():
        model.fc.weight.add_(model.fc.weight.sign())  # |w| >= 1: above every conv weight (< 0.2)
    history = compress(recipe({"use": "sparsify", "amount": 0.5, "scope": "global"}), model=model,
                       registries=registries)
    # 148 of 296 go, all from the conv (216 weights)
    assert zeros(history.model.conv.weight) == 148 and zeros(history.model.fc.weight) == 0
    assert history.steps[0].notes["sparsity"]["conv"] == pytest.approx(148 / 216, abs=1e-6)


def test_schedule_records_geometric_targets_and_ends_at_the_same_zeros(registries):
    model = Small()
    one = compress(recipe({"use": "sparsify", "amount": 0.75}), model=model, registries=registries)
    five = compress(recipe({"use": "sparsify", "amount": 0.75, "schedule": 5}), model=model,
                    registries=registries)
    assert five.steps[0].notes["schedule"] == pytest.approx([1 - 0.25 ** (t / 5) for t in range(1, 6)],
                                                            abs=1e-6)
    assert schedule_targets(0.75, 2) == [0.5, 0.75]
    assert torch.equal(one.model.conv.weight, five.model.conv.weight)


def test_ties_still_prune_exactly_the_amount(registries):
    model = Small()
    with torch.no_grad():
        model.conv.weight.fill_(0.5)  # every magnitude equal
    history = compress(recipe({"use": "sparsify", "amount": 0.25}), model=model, registries=registries)
    assert zeros(history.model.conv.weight) == 54  # 216 / 4


def test_masks_survive_an_optimizer_step(registries):
    history = compress(recipe({"use": "sparsify", "amount": 0.5}), model=Small(), registries=registries)
    model = copy.deepcopy(history.model)  # as the next step would receive it
    pruned = {entry.path: ~entry.mask.clone() for entry in masks(model)}
    assert set(pruned) == {"conv.weight", "fc.weight"}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.randn(4, 3, 8, 8)).square().sum().backward()
    optimizer.step()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)  # every value moves
    assert zeros(model.conv.weight) == 0
    assert apply_masks(model) == 2
    assert bool((model.conv.weight[pruned["conv.weight"]] == 0).all()) and zeros(model.conv.weight) == 108
    assert zeros(model.fc.weight) == 40
    assert [name for name, _ in model.named_parameters()] == ["conv.weight", "conv.bias", "fc.weight", "fc.bias"]


def test_mask_helpers():
    conv = nn.Conv2d(2, 2, 1)
    set_mask(conv, "weight", torch.tensor([True, False, False, True]).reshape(2, 2, 1, 1))
    assert zeros(conv.weight) == 2 and "weight_mask" not in conv.state_dict()
    fresh = nn.Conv2d(2, 2, 1)
    fresh.load_state_dict(conv.state_dict())
    mask_zeros(fresh)
    assert torch.equal(fresh.weight_mask, conv.weight_mask)
    with pytest.raises(ValueError, match=r"expected the parameter's \(2, 2, 1, 1\)"):
        set_mask(conv, "weight", torch.ones(3, dtype=torch.bool))


def test_a_second_pruning_keeps_the_first_masks(registries):
    history = compress(recipe({"use": "sparsify", "amount": 0.75}, {"use": "sparsify", "amount": 0.25}),
                       model=Small(), registries=registries)
    assert zeros(history.model.conv.weight) == 162  # 216 * 0.75 stay pruned
    assert history.steps[1].notes["sparsity"]["conv"] == 0.75


# ------------------------------------------------------ of = "remaining"


def ramp(n: int = 100) -> nn.Module:
    """Linear(n/10 -> 10) whose weights are 1, -2, 3, ..., +-n in a shuffled
    order: the k smallest magnitudes are exactly 1..k (the step selects it
    as layer "0" of a Sequential)."""
    model = nn.Linear(n // 10, 10)
    values = torch.arange(1, n + 1, dtype=torch.float32) * torch.tensor([1.0, -1.0]).repeat(n // 2)
    with torch.no_grad():
        model.weight.copy_(values[torch.randperm(n)].reshape(10, n // 10))
    return nn.Sequential(model)


def run(model, shape, **options):
    context = StepContext(shape, None)
    full = {"amount": 0.1, "of": "remaining", "scope": "layer", "schedule": 1, "block": "1x1", "layers": [],
            "ignore": [], "min_size": 0, **options}
    return sparsify(model, full, context)[0], context.notes


def test_one_round_of_remaining_from_dense_is_the_amount(registries):
    model = Small()
    total = compress(recipe({"use": "sparsify", "amount": 0.3}), model=model, registries=registries)
    remaining = compress(recipe({"use": "sparsify", "amount": 0.3, "of": "remaining"}), model=model,
                         registries=registries)
    # round(0.3 * 216) = 65 and round(0.3 * 80) = 24, as with of = "total"
    assert zeros(remaining.model.conv.weight) == 65 and zeros(remaining.model.fc.weight) == 24
    assert torch.equal(total.model.conv.weight, remaining.model.conv.weight)
    notes = remaining.steps[0].notes
    assert notes["of"] == "remaining" and notes["schedule"] == [0.3]
    assert notes["sparsity_before"] == {"conv": 0.0, "fc": 0.0}
    assert notes["sparsity"] == {"conv": round(65 / 216, 6), "fc": 0.3}


def test_two_rounds_of_a_tenth_of_the_remaining_weights_reach_0_19():
    sequential = ramp(100)
    original = sequential[0].weight.detach().clone()
    model, first = run(sequential, (1, 10))
    assert zeros(model.weight) == 10 and first["sparsity"] == {"0": 0.1}
    with torch.no_grad():  # a trainer that forgot the masks: the pruned values come back
        model.weight.copy_(torch.where(model.weight_mask, model.weight, torch.full_like(original, 1000.0)))
    model, second = run(sequential, (1, 10))
    # 10 of 100, then round(0.1 * 90) = 9 of the 90 left: 19 zeros, the 19 smallest magnitudes
    assert zeros(model.weight) == 19
    assert sorted(int(abs(v)) for v in original[~model.weight_mask].tolist()) == list(range(1, 20))
    assert second["sparsity_before"] == {"0": 0.1} and second["sparsity"] == {"0": 0.19}
    assert (second["zeros"], second["elements"]) == (19, 100)
    # of = "total": a second 0.1 adds nothing
    model, again = run(sequential, (1, 10), of="total")
    assert zeros(model.weight) == 19 and again["sparsity"] == {"0": 0.19}


def test_ten_rounds_of_a_tenth_reach_1_minus_0_9_to_the_10th(registries):
    steps = [{"use": "sparsify", "amount": 0.1, "of": "remaining"}] * 10
    history = compress({"model": {"spec": "unused", "input": [1, 100]}, "score": {"track": "cifar10"},
                        "step": steps}, model=nn.Sequential(nn.Linear(100, 10)), registries=registries)
    # 1000 weights; nonzeros after each round: 900, 810, 729, 656, 590, 531, 478, 430, 387, 348
    assert zeros(history.model.get_submodule("0").weight) == 652
    assert 652 / 1000 == pytest.approx(1 - 0.9 ** 10, abs=1e-3)  # 65.13%, up to rounding to whole weights
    assert [step.notes["zeros"] for step in history.steps] == [100, 190, 271, 344, 410, 469, 522, 570, 613, 652]


def test_a_schedule_of_remaining_splits_the_amount_geometrically():
    model, notes = run(ramp(100), (1, 10), amount=0.19, schedule=2)
    assert notes["schedule"] == pytest.approx([0.1, 0.1], abs=1e-6)  # 1 - 0.81 ** (1 / 2)
    assert zeros(model.weight) == 19  # 10, then 9 of the 90 left


def test_remaining_per_layer_counts_each_layers_own_nonzeros(registries):
    history = compress(recipe({"use": "sparsify", "amount": 0.5, "layers": ["conv"]},
                              {"use": "sparsify", "amount": 0.5, "of": "remaining"}),
                       model=Small(), registries=registries)
    # conv: 108 of 216, then 54 of the 108 left; fc: 40 of its 80
    assert zeros(history.model.conv.weight) == 162 and zeros(history.model.fc.weight) == 40
    assert history.steps[1].notes["sparsity_before"] == {"conv": 0.5, "fc": 0.0}
    assert history.steps[1].notes["sparsity"] == {"conv": 0.75, "fc": 0.5}


def test_remaining_in_global_scope_ranks_the_nonzeros_across_layers(registries):
    model = Small()
    with torch.no_grad():
        model.fc.weight.add_(model.fc.weight.sign())  # |w| >= 1: above every conv weight (< 0.2)
    history = compress(recipe({"use": "sparsify", "amount": 0.5, "scope": "global"},
                              {"use": "sparsify", "amount": 0.25, "scope": "global", "of": "remaining"}),
                       model=model, registries=registries)
    # first 148 of the 296, all conv; then round(0.25 * 148) = 37 of the 148 left (68 conv, 80 fc): conv again
    assert zeros(history.model.conv.weight) == 148 + 37 and zeros(history.model.fc.weight) == 0
    assert history.steps[1].notes["zeros"] == 185 and history.steps[1].notes["elements"] == 296
    assert history.steps[1].notes["sparsity"] == {"conv": round(185 / 216, 6), "fc": 0.0}


def test_remaining_counts_whole_blocks(registries):
    history = compress(recipe({"use": "sparsify", "amount": 0.5, "block": "1x4"},
                              {"use": "sparsify", "amount": 0.5, "block": "1x4", "of": "remaining"},
                              shape=(1, 4, 8, 8)), model=Small(cin=4), registries=registries)
    # conv: 72 tiles of 4; 36 zeroed, then 18 of the 36 left: 54 tiles, 216 weights
    weight = history.model.conv.weight.detach().reshape(8, 9, 4)
    assert int((weight == 0).all(-1).sum()) == 54 and zeros(weight) == 216


@pytest.mark.parametrize("options, message", [
    ({"amount": 1.0}, r"option 'amount': expected 0 <= amount < 1, got 1.0"),
    ({"amount": -0.1}, r"option 'amount': expected 0 <= amount < 1"),
    ({"amount": 0.5, "block": "4by1"}, r"option 'block': expected a block like '1x4'"),
    ({"amount": 0.5, "schedule": 0}, r"option 'schedule': expected an integer >= 1"),
    ({"amount": 0.5, "scope": "model"}, r"option 'scope' must be one of 'layer', 'global'"),
    ({"amount": 0.5, "of": "left"}, r"option 'of' must be one of 'total', 'remaining', got 'left'"),
    ({"amount": 0.5, "ignore": "fc"}, r"option 'ignore' must be list"),
    ({}, r"option 'amount' is required"),
])
def test_bad_options_fail_before_any_work(registries, options, message):
    with pytest.raises(UsageError, match=message):
        compress(recipe({"use": "sparsify", **options}), model=Small(), registries=registries)


def test_globs_select_and_a_glob_matching_nothing_warns(registries):
    with pytest.warns(UserWarning, match=r"ignore glob 'head\*' matches no Conv/Linear layer"):
        history = compress(recipe({"use": "sparsify", "amount": 0.5, "ignore": ["fc", "head*"]}),
                           model=Small(), registries=registries)
    assert zeros(history.model.fc.weight) == 0 and zeros(history.model.conv.weight) == 108
    assert "ignore glob 'head*' matches no Conv/Linear layer" in history.steps[0].notes["warnings"]
    small = compress(recipe({"use": "sparsify", "amount": 0.5, "min_size": 100}), model=Small(),
                     registries=registries)
    assert zeros(small.model.fc.weight) == 0 and small.steps[0].notes["skipped"] == {
        "fc": "weight smaller than min_size 100"}


def test_the_step_runs_on_a_plain_module_too():
    context = StepContext((1, 3, 8, 8), None)
    model = sparsify(Small(), {"amount": 0.5, "of": "total", "scope": "layer", "schedule": 1, "block": "1x1",
                               "layers": ["c*"], "ignore": [], "min_size": 0}, context)
    assert zeros(model.conv.weight) == 108 and zeros(model.fc.weight) == 0
    assert context.notes["zeros"] == 108 and context.notes["elements"] == 216



# ------------------------------------------------------ a plugin's weighted layer

OPTIONS = {"amount": 0.5, "of": "total", "scope": "layer", "schedule": 1, "block": "1x1", "layers": [],
           "ignore": [], "min_size": 0}


def mixed() -> nn.Module:
    """linear 6 -> 8, ReLU, the plugin's Mix 8 -> 4."""
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), weighted_layer.Mix(8, 4))


def test_a_declared_weighted_layer_is_sparsified_and_its_ops_shrink():
    found = weighted_layer.registries()
    context = StepContext((1, 6), None, registries=found)
    model = sparsify(mixed(), {**OPTIONS, "layers": ["2"]}, context)
    mix = model[2]
    assert zeros(mix.weight) == 16 and zeros(model[0].weight) == 0  # half of the 4 x 8 weight
    assert mix.weight_mask.dtype == torch.bool and int(mix.weight_mask.sum()) == 16
    assert context.notes["sparsity"] == {"2": 0.5} and context.notes["elements"] == 32
    result = micronet.audit(model, (1, 6), registries=found)
    (record, cost), = [(r, c) for r, c in result.layers if r.name == "2"]
    assert (record.op, record.weight_params, record.weight_nonzero) == ("mix", 32, 16)
    # 4 dot products of 8 * 0.5 = 4 terms + 4 scale mults; 4 * 3 adds + 4 bias adds
    assert (cost.mults, cost.adds) == (4 * 4 + 4, 4 * 3 + 4)


def test_by_default_every_conv_linear_and_declared_layer_is_selected():
    context = StepContext((1, 6), None, registries=weighted_layer.registries())
    model = sparsify(mixed(), OPTIONS, context)
    assert context.notes["sparsity"] == {"0": 0.5, "2": 0.5}
    assert zeros(model[0].weight) == 24 and zeros(model[2].weight) == 16


def test_an_undeclared_layer_is_not_selected_and_the_step_says_so():
    context = StepContext((1, 6), None, registries=weighted_layer.registries(declare=False))
    with pytest.warns(UserWarning) as caught:
        model = sparsify(mixed(), {**OPTIONS, "layers": ["2"]}, context)
    assert [str(w.message) for w in caught] == [
        "sparsify: layers glob '2' matches no Conv/Linear layer",
        "sparsify: no Conv/Linear layer is selected (layers ['2'], ignore [])"]
    assert zeros(model[2].weight) == 0
    assert context.notes["warnings"][0] == "layers glob '2' matches no Conv/Linear layer"


def test_a_model_without_weighted_layers_says_nothing_is_selected():
    context = StepContext((1, 6), None, registries=weighted_layer.registries())
    with pytest.warns(UserWarning) as caught:
        sparsify(nn.Sequential(nn.ReLU()), OPTIONS, context)
    assert [str(w.message) for w in caught] == [
        "sparsify: the model has no Conv/Linear or Mix layer: nothing is selected"]

@pytest.mark.slow
@pytest.mark.parametrize("name, scope", [("resnet18", "global"), ("mobilenet_v2", "layer"),
                                         ("densenet121", "layer")])
def test_zoo_smoke(registries, name, scope):
    model = getattr(torchvision.models, name)(weights=None)
    history = compress(recipe({"use": "sparsify", "amount": 0.9, "scope": scope}, shape=(1, 3, 64, 64),
                              track="imagenet"), model=model, registries=registries)
    final = history.final
    assert not final.uncounted
    assert final.score.total < history.input.score.total
    assert final.totals["nonzero_params"] < 0.2 * final.totals["params"]
    notes = history.steps[0].notes
    assert notes["zeros"] / notes["elements"] == pytest.approx(0.9, abs=1e-5)
    if scope == "layer":  # each weight rounds 0.9 * numel to whole zeros
        assert all(abs(s - 0.9) < 2e-3 for s in notes["sparsity"].values())
    with torch.no_grad():
        assert history.model(torch.randn(1, 3, 64, 64)).shape == (1, 1000)
