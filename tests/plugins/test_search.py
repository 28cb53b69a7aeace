"""The search step on real digits: budgets met by the pipeline's own score, the
settings in history.json, an unreachable budget named, accuracy kept, and the
per-layer re-score equal to a fresh audit; the per-layer ScoreOptions overrides."""
import json
import random

import pytest
from conftest import trained_digits_cnn
import torch
from torch import nn

from micronet import audit
from micronet.bits import bits_of
from micronet.errors import CompressionError, UsageError
from micronet.pipeline import compress
from micronet.plugins.search import allocate, make_plan
from micronet.plugins.sparsify import PRUNABLE
from micronet.rules import ScoreOptions
from micronet.selection import Candidate

SHAPE = (1, 1, 8, 8)
DATA = {"dataset": "digits", "batch_size": 64, "calibration_batches": 3}
LAYERS = ["conv1", "conv2", "conv3", "fc"]


def recipe(*steps):
    return {"model": {"spec": "unused", "input": list(SHAPE)},
            "score": {"track": "digits", "rulebook": "micronet-2019", "freebie": False},
            "data": dict(DATA), "step": [dict(step) for step in steps]}


@pytest.fixture(scope="module")
def trained():
    """micronet:digits_cnn after 8 epochs of SGD on the digits train split (as
    tests/plugins/test_sensitivity.py trains it: >= 97% top-1)."""
    return trained_digits_cnn()


@pytest.fixture(scope="module")
def runs(trained, tmp_path_factory):
    """One search per budget, each written to a folder: (history, history.json)."""
    found = {}
    for target in (1.0, 0.5):
        out = tmp_path_factory.mktemp("run") / "out"
        history = compress(recipe({"use": "search", "target_score": target}), model=trained, out=out,
                           log=lambda line: None)
        found[target] = history, json.loads((out / "history.json").read_text())
    return found


@pytest.mark.parametrize("target", [1.0, 0.5])
def test_the_budget_is_met_by_the_pipelines_own_score(runs, target):
    history, _ = runs[target]
    assert history.failed is None
    assert history.results[0].score.total == pytest.approx(2.0)  # the digits reference itself
    assert history.final.score.total <= target
    notes = history.steps[0].notes
    assert notes["score"] == pytest.approx(history.final.score.total, rel=1e-12)
    assert notes["score"] <= notes["predicted_score"] <= target  # grid rounding only adds zeros


@pytest.mark.parametrize("target", [1.0, 0.5])
def test_the_chosen_settings_are_in_history_json_and_applied(runs, target):
    history, document = runs[target]
    settings = document[-1]["step"]["notes"]["settings"]
    assert sorted(settings) == LAYERS
    modules = dict(history.model.named_modules())
    for layer, chosen in settings.items():
        assert chosen["weight_bits"] in (8, 6, 4, 2) and chosen["sparsity"] in (0, 0.5, 0.75, 0.9)
        assert bits_of(modules[layer])["weight"] == chosen["weight_bits"]
        weight = modules[layer].weight
        assert 1 - int(torch.count_nonzero(weight)) / weight.numel() >= chosen["sparsity"] - 1e-9
        # on the per-channel grid: every row a multiple of its own step
        step = weight.detach().abs().flatten(1).amax(1) / (2 ** (chosen["weight_bits"] - 1) - 1)
        units = weight.detach().flatten(1) / step[:, None]
        assert torch.allclose(units, units.round(), atol=1e-4)


def test_accuracy_at_target_one_without_fine_tuning(runs):
    history, _ = runs[1.0]
    # measured: 97.4% on the test split (the input model: 99.4%); the bar here leaves noise room
    assert history.results[0].accuracy >= 97
    assert history.final.accuracy >= 95


def test_an_unreachable_target_fails_naming_the_nearest_reachable_score(trained):
    with pytest.raises(CompressionError, match=r"no allocation reaches target_score 1e-06: the nearest "
                                               r"reachable score is 0\.\d+ \(every layer at its cheapest") as error:
        compress(recipe({"use": "search", "target_score": 1e-6}), model=trained, log=lambda line: None)
    assert "\n" not in str(error.value)


def test_per_layer_rescore_equals_a_fresh_audit_of_the_applied_model(runs):
    history, _ = runs[0.5]
    model, before = history.model, history.results[0]
    modules = dict(model.named_modules())
    bits, sparsity, storage = [], [], []
    for record in before.records:
        module = modules[record.name] if record.name in LAYERS else None
        if module is None:
            bits.append(None), sparsity.append(None), storage.append(None)
            continue
        weight = module.weight
        bits.append(bits_of(module)["weight"])
        sparsity.append(1 - int(torch.count_nonzero(weight)) / weight.numel())
        # float32 scales: one per output channel of the weight, one for a bias
        storage.append(32 * (weight.shape[0] + (module.bias is not None)))
    options = ScoreOptions(freebie=False, layer_weight_bits=tuple(bits), layer_sparsity=tuple(sparsity),
                           layer_storage_bits=tuple(storage))
    fresh = audit(model, SHAPE, track="digits", freebie=False)
    assert before.rescore(options).score.total == pytest.approx(fresh.score.total, rel=1e-12)
    assert fresh.score.total == pytest.approx(history.final.score.total, rel=1e-12)


def test_fine_tuning_with_distillation_keeps_the_budget(trained):
    history = compress(recipe({"use": "search", "target_score": 0.5, "epochs": 1, "lr": 0.01}), model=trained,
                       log=lambda line: None)
    notes = history.steps[0].notes
    assert history.final.score.total <= 0.5 and len(notes["loss"]) == 1
    assert history.final.accuracy >= 90


def test_allocations_never_exceed_random_budgets(trained):
    """Random drop tables and budgets: the allocation's exact score is within
    the budget, or the budget is below the all-cheapest score and refused."""
    result = audit(trained, SHAPE, track="digits", freebie=False)
    targets = {n: Candidate(m) for n, m in trained.named_modules() if isinstance(m, PRUNABLE)}
    settings = [(b, s) for b in (8, 4, 2) for s in (0, 0.5, 0.9)]
    plan = make_plan(result, targets, settings)
    rng = random.Random(0)
    for _ in range(20):
        drops = {layer: {s: rng.uniform(0, 10) for s in settings} for layer in plan.layers}
        target = rng.uniform(0.05, 2.5)
        try:
            found = allocate(plan, drops, target)
        except CompressionError as error:
            assert "nearest reachable score" in str(error)
            continue
        assert found.score <= target and plan.score(found.choice) == found.score


def test_per_layer_overrides_agree_with_uniform_ones_and_keep_the_rest(trained):
    result = audit(trained, SHAPE, track="digits", freebie=False)
    n = len(result.records)
    uniform = result.rescore(ScoreOptions(freebie=False, weight_bits=4, sparsity=0.5)).score.total
    layered = ScoreOptions(freebie=False, layer_weight_bits=(4,) * n, layer_sparsity=(0.5,) * n)
    assert result.rescore(layered).score.total == pytest.approx(uniform, rel=1e-12)
    unchanged = ScoreOptions(freebie=False, layer_weight_bits=(None,) * n, layer_sparsity=(None,) * n,
                             layer_storage_bits=(None,) * n)
    assert result.rescore(unchanged).score.total == result.score.total == pytest.approx(2.0)
    # fc alone at 8 bits: its 650 params (640 weight + 10 bias) cost 650 * 8/32 instead of 650
    fc = [8 if r.name == "fc" else None for r in result.records]
    cheaper = result.rescore(ScoreOptions(freebie=False, layer_weight_bits=tuple(fc))).score
    assert cheaper.storage == pytest.approx(result.score.storage - 650 + 650 * 8 / 32)
    with pytest.raises(UsageError, match="layer_sparsity has 1 entries, expected one per record"):
        result.rescore(ScoreOptions(layer_sparsity=(0.5,)))


@pytest.mark.parametrize("step, says", [({}, "'target_score' is required"),
                                        ({"target_score": 0}, "score > 0"),
                                        ({"target_score": 1, "weight_bits": []}, "at least one level"),
                                        ({"target_score": 1, "sparsity": [1.0]}, r"\[0, 1\)")])
def test_bad_options_are_refused_before_work(step, says):
    with pytest.raises(UsageError, match=says):
        compress(recipe({"use": "search", **step}), model=nn.Linear(1, 1))


def test_search_measures_again_when_a_step_changed_the_model_after_sensitivity(trained):
    """A sensitivity table describes the model it measured: after a step that
    changed the model (half), search measures its own."""
    steps = [{"use": "sensitivity", "bits": [8, 6, 4, 2], "sparsity": [0.5, 0.75, 0.9]},
             {"use": "search", "target_score": 1.0}]
    reused = compress(recipe(*steps), model=trained)
    assert reused.steps[1].notes["sensitivity_from"] == "step 1"
    steps.insert(1, {"use": "half"})
    fresh = compress(recipe(*steps), model=trained)
    assert "sensitivity_from" not in fresh.steps[2].notes
