"""Repeat schedules and per-step data tables, run by compress() (micronet.schedule)."""
import json

import pytest
import torch
from torch import nn

from conftest import trained_digits_cnn
from micronet import hookimpl
from micronet.errors import CompressionError, UsageError
from micronet.manager import Registries, get_plugin_manager
from micronet.pipeline import compress
from micronet.schedule import ShadowedStepWarning, weight_sparsity
from micronet.steps import CompressionStep, StepOption

#: Weight elements of :func:`two_linears`: 100*100 + 100*10.
WEIGHTS = 11_000
#: Bias elements of :func:`two_linears` (never zeroed): 100 + 10.
BIASES = 110


def two_linears() -> nn.Module:
    """100 -> 100 -> 10: two weights whose zeros the thinning counts exactly."""
    return nn.Sequential(nn.Linear(100, 100), nn.ReLU(), nn.Linear(100, 10))


def thin(model, options, context):
    """Zero a further ``fraction`` of the nonzero elements of every Linear
    weight, the smallest in magnitude: ``round(fraction * nonzero)`` per weight."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            weight = module.weight.data.view(-1)
            alive = weight != 0
            count = round(options["fraction"] * int(alive.sum()))
            magnitude = torch.where(alive, weight.abs(), torch.full_like(weight, float("inf")))
            weight[magnitude.topk(count, largest=False).indices] = 0
    return model


def look(model, options, context):
    """Note the data table the step received; change nothing."""
    context.note("data", None if context.data is None else dict(context.data))
    return model


def fragile(model, options, context):
    """Fail once the zeros exceed ``most`` of the weights."""
    reached = weight_sparsity(context.result)
    if reached > options["most"]:
        raise RuntimeError(f"sparsity {reached:.4f} is over {options['most']}")
    return model


class Steps:
    """A plugin with the test steps (``needy`` is ``look`` that needs data)."""

    @hookimpl
    def micronet_register_steps(self):
        return [CompressionStep("thin", "zero a further fraction of the nonzero weights", thin,
                                (StepOption("fraction", (float,), 0.1),)),
                CompressionStep("look", "note the data", look),
                CompressionStep("needy", "note the data, which it needs", look, needs_data=True),
                CompressionStep("fragile", "fail over a sparsity", fragile, (StepOption("most", (float,), 1.0),))]


class Shadow:
    """A plugin registering a step under the reserved name ``repeat``."""

    @hookimpl
    def micronet_register_steps(self):
        return [CompressionStep("repeat", "a name recipes keep", look)]


@pytest.fixture
def registries():
    return Registries.from_manager(get_plugin_manager(entry_points=False, extra=[Steps()]))


def recipe(*steps, data=None, input_shape=(1, 100)):
    document = {"model": {"spec": "unused", "input": list(input_shape)}, "score": {"freebie": False},
                "step": list(steps)}
    return document if data is None else {**document, "data": data}


def repeat(*inner, times, **keys):
    return {"use": "repeat", "times": times, **keys, "steps": list(inner)}


def zeros(result) -> float:
    """Zero fraction of the weights from the audit's nonzero parameter total
    (the biases all nonzero)."""
    return 1 - (result.totals["nonzero_params"] - BIASES) / WEIGHTS


def test_each_round_removes_a_tenth_of_what_is_left(registries):
    lines = []
    history = compress(recipe(repeat({"use": "thin"}, times=5)), model=two_linears(), registries=registries,
                       log=lines.append)
    assert [(s.index, s.name, s.round, s.repeat) for s in history.steps] == [
        (k, "thin", k, 1) for k in range(1, 6)]
    for k, step in enumerate(history.steps, start=1):
        # 1 - 0.9**k: 0.1, 0.19, 0.271, 0.3439, 0.40951; each round rounds each weight's cut to
        # a whole element (at most half an element per weight and round)
        assert zeros(step.result) == pytest.approx(1 - 0.9 ** k, abs=k * 2 * 0.5 / WEIGHTS)
        assert weight_sparsity(step.result) == pytest.approx(zeros(step.result), abs=1e-12)
    assert "step 3/5: thin (round 3/5 of step 1) {'fraction': 0.1}" in lines


def test_until_stops_after_the_first_round_that_meets_it(registries, tmp_path):
    lines = []
    steps = recipe(repeat({"use": "thin"}, {"use": "look"}, times=10, until={"sparsity": 0.5}), {"use": "look"})
    history = compress(steps, model=two_linears(), registries=registries, log=lines.append, out=tmp_path)
    # 1 - 0.9**6 = 0.469 < 0.5 <= 1 - 0.9**7 = 0.522: seven rounds of two steps, then the last step
    assert len(history.steps) == 7 * 2 + 1
    assert [s.index for s in history.steps] == list(range(1, 16))
    assert [s.round for s in history.steps] == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, None]
    assert [s.repeat for s in history.steps] == [1] * 14 + [None]
    assert zeros(history.steps[11].result) < 0.5 <= zeros(history.steps[13].result)
    assert history.steps[13].notes == {"data": None, "until_met": True}
    assert "step 13/?: thin (round 7/10 of step 1) {'fraction': 0.1}" in lines
    assert any(line.startswith("step 1 (repeat): until met after round 7 (sparsity 0.52") and
               line.endswith("3 remaining rounds skipped") for line in lines)
    entries = json.loads((tmp_path / "history.json").read_text())
    assert len(entries) == 16 and entries[0]["step"] is None
    assert [(e["step"]["index"], e["step"]["name"], e["step"]["round"], e["step"]["repeat"], e["step"]["data"])
            for e in entries[13:]] == [(13, "thin", 7, 1, None), (14, "look", 7, 1, None),
                                       (15, "look", None, None, None)]
    assert entries[14]["step"]["notes"]["until_met"] is True
    assert (tmp_path / "14-look.txt").exists() and (tmp_path / "15-look.txt").exists()


def test_until_unmet_after_every_round_is_noted_not_an_error(registries):
    lines = []
    history = compress(recipe(repeat({"use": "thin"}, times=3, until={"sparsity": 0.5, "score": 10.0})),
                       model=two_linears(), registries=registries, log=lines.append)
    assert [s.round for s in history.steps] == [1, 2, 3] and history.model is not None
    assert [s.notes for s in history.steps] == [{}, {}, {"until_met": False}]
    # 1 - 0.9**3 = 0.271; the score bound alone is met (the model scores far below 10)
    assert any(line.startswith("step 1 (repeat): until not met after all 3 rounds (score ") and
               "sparsity 0.27" in line and "< 0.5); going on with the next step" in line for line in lines)


def test_a_failing_round_keeps_the_history_and_the_input(registries, tmp_path):
    model = two_linears()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    steps = recipe(repeat({"use": "thin"}, {"use": "fragile", "most": 0.3}, times=10))
    # thin reaches 1 - 0.9**4 = 0.344 > 0.3 in round 4: its fragile step is the 8th
    with pytest.raises(CompressionError, match=r"step 8 \('fragile', plugin '.*'\) in round 4/10 of step 1 "
                                               r"failed: RuntimeError: sparsity 0.34"):
        compress(steps, model=model, registries=registries, out=tmp_path)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    entries = json.loads((tmp_path / "history.json").read_text())
    assert len(entries) == 9 and entries[8]["step"]["round"] == 4 and entries[8]["step"]["error"].startswith(
        "RuntimeError: sparsity 0.34")
    assert not (tmp_path / "model.pt2").exists()


def digits_recipe(*steps, data):
    document = recipe(*steps, data=data, input_shape=(1, 1, 8, 8))
    return {**document, "score": {"track": "digits", "freebie": False}}


def tiny_digits_model() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))


def test_each_step_gets_the_recipe_data_with_its_own_keys(registries, tmp_path):
    data = {"dataset": "digits", "batch_size": 64, "mixup": 0.2}
    steps = digits_recipe({"use": "look"}, {"use": "look", "data": {"mixup": 0.0}},
                          repeat({"use": "look", "data": {"batch_size": 16, "mixup": 0}}, times=1), data=data)
    history = compress(steps, model=tiny_digits_model(), registries=registries, out=tmp_path)
    assert [s.notes["data"] for s in history.steps] == [
        {"dataset": "digits", "batch_size": 64, "mixup": 0.2},
        {"dataset": "digits", "batch_size": 64, "mixup": 0.0},
        {"dataset": "digits", "batch_size": 16, "mixup": 0}]
    entries = json.loads((tmp_path / "history.json").read_text())
    assert [e["step"]["data"] for e in entries[1:]] == [
        None, {"dataset": "digits", "batch_size": 64, "mixup": 0.0},
        {"dataset": "digits", "batch_size": 16, "mixup": 0}]
    assert all("data" not in e["step"]["options"] for e in entries[1:])  # not an option of the step


def test_a_step_naming_its_own_dataset_needs_no_recipe_data(registries):
    steps = digits_recipe({"use": "needy", "data": {"dataset": "digits"}}, data=None)
    history = compress(steps, model=tiny_digits_model(), registries=registries)
    assert history.steps[0].notes["data"] == {"dataset": "digits"}
    assert history.final.accuracy is None  # top-1 is measured on the recipe's [data] only


def test_until_the_bar_or_an_accuracy_on_real_digits(registries):
    data = {"dataset": "digits", "batch_size": 64}
    lines = []
    # the trained digits model measures 99.4% top-1: the digits bar (97%) holds after round 1
    history = compress(digits_recipe(repeat({"use": "look"}, times=3, until={"bar": True}), data=data),
                       model=trained_digits_cnn(), registries=registries, log=lines.append)
    assert [s.round for s in history.steps] == [1] and history.steps[0].notes["until_met"] is True
    assert any("until met after round 1 (the digits bar (97%) met); 2 remaining rounds skipped" in line
               for line in lines)
    history = compress(digits_recipe(repeat({"use": "look"}, times=2, until={"accuracy": 99.9}), data=data),
                       model=trained_digits_cnn(), registries=registries)
    assert [s.round for s in history.steps] == [1, 2] and history.steps[1].notes["until_met"] is False
    assert history.final.accuracy == pytest.approx(99.4, abs=0.05)


@pytest.mark.parametrize("steps, data, message", [
    ([repeat({"use": "thin"}, {"use": "shrink"}, times=2)], None,
     r"^<dict>: step 1 \(repeat\) > step 2 \(shrink\): unknown step 'shrink'; steps available: .*thin"),
    ([{"use": "look"}, repeat({"use": "thin", "fraction": "a tenth"}, times=2)], None,
     r"^<dict>: step 2 \(repeat\) > step 1 \(thin\): option 'fraction' must be float, got str"),
    ([repeat({"use": "thin", "data": {"mixup": 0.0}, "colour": 1}, times=2)], {"dataset": "digits"},
     r"step 1 \(repeat\) > step 1 \(thin\): unknown option 'colour'; it takes: fraction$"),
    ([repeat({"use": "needy"}, times=2)], None,
     r"step 1 \(repeat\) > step 1 \(needy\): 'needy' measures the model on data, and the recipe has no \[data\]"),
    ([repeat({"use": "repeat"}, times=2)], None, r"a repeat cannot hold another repeat"),
])
def test_bad_inner_steps_fail_before_any_work(registries, monkeypatch, steps, data, message):
    def no_work(*args, **kwargs):
        raise AssertionError("audited before validating")

    monkeypatch.setattr("micronet.pipeline.audit", no_work)
    with pytest.raises(UsageError, match=message):
        compress(recipe(*steps, data=data), model=two_linears(), registries=registries)


def test_a_plugin_step_named_repeat_is_shadowed_with_a_warning():
    registries = Registries.from_manager(get_plugin_manager(entry_points=False, extra=[Steps(), Shadow()]))
    with pytest.warns(ShadowedStepWarning, match=r"plugin '.*' registers a step named 'repeat', a name recipes "
                                                 r"keep for schedules"):
        history = compress(recipe(repeat({"use": "thin"}, times=2)), model=two_linears(), registries=registries)
    assert [(s.name, s.round) for s in history.steps] == [("thin", 1), ("thin", 2)]


def test_the_builtin_sparsify_of_remaining_as_a_schedule(registries):
    steps = recipe(repeat({"use": "sparsify", "amount": 0.1, "of": "remaining"}, times=12, until={"sparsity": 0.65}))
    history = compress(steps, model=two_linears(), registries=registries)
    # 1 - 0.9**9 = 0.6126 < 0.65 <= 1 - 0.9**10 = 0.6513: ten rounds of ten percent of what is left
    assert [s.round for s in history.steps] == list(range(1, 11))
    for k, step in enumerate(history.steps, start=1):
        assert zeros(step.result) == pytest.approx(1 - 0.9 ** k, abs=k * 2 * 0.5 / WEIGHTS)
    assert history.steps[-1].notes["until_met"] is True


def test_rounds_are_labelled_in_the_terminal_table_and_on_the_page(registries, tmp_path):
    from micronet.reports.html import render_pipeline_html

    history = compress(recipe({"use": "look"}, repeat({"use": "thin"}, times=2)), model=two_linears(),
                       registries=registries)
    assert [s.label for s in history.steps] == ["1. look", "2. thin (round 1 of step 2)",
                                                "3. thin (round 2 of step 2)"]
    page = render_pipeline_html(history)
    assert '<span class="round">round 2 of step 2</span>' in page
    assert "3. thin (round 2 of step 2)" in page  # the navigation and the table
