"""The sensitivity step on real digits: a baseline that matches a hand evaluation,
a model returned bit for bit, harsher settings hurting more, the notes in history.json."""
import json

import pytest
from conftest import trained_digits_cnn
import torch
import torch.nn.functional as F
from torch import nn

from micronet.errors import UsageError
from micronet.pipeline import compress
from micronet.plugins.sensitivity import perturbed, rank
from micronet.training.data import batches

SHAPE = (1, 1, 8, 8)
DATA = {"dataset": "digits", "batch_size": 64, "calibration_batches": 3}


def recipe(*steps, data=DATA):
    table = {"model": {"spec": "unused", "input": list(SHAPE)},
             "score": {"track": "digits", "rulebook": "micronet-2019", "freebie": False},
             "step": [dict(step) for step in steps]}
    if data is not None:
        table["data"] = dict(data)
    return table


@pytest.fixture(scope="module")
def trained():
    """micronet:digits_cnn after 8 epochs of SGD on the digits train split (as
    tests/test_digits.py trains it: >= 97% top-1, about 1 s on 2 cores)."""
    return trained_digits_cnn()


@pytest.fixture(scope="module")
def run(trained, tmp_path_factory):
    """One sensitivity step with the default settings, written to a folder."""
    out = tmp_path_factory.mktemp("run") / "out"
    lines = []
    history = compress(recipe({"use": "sensitivity"}), model=trained, out=out, log=lines.append)
    return history, json.loads((out / "history.json").read_text()), lines


def weighted(model):
    return [name for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def rows(notes, layer, kind):
    return {row["level"]: row for row in notes["table"] if row["layer"] == layer and row["kind"] == kind}


def test_baseline_is_the_unchanged_model_on_the_same_calibration_batches(trained, run):
    history, _, _ = run
    found = batches(DATA, SHAPE, split="calibration")  # the table's 3 batches, seed 0
    x, y = torch.cat([b[0] for b in found]), torch.cat([b[1] for b in found])
    with torch.no_grad():
        logits = trained(x)
    top1 = 100.0 * float((logits.argmax(1) == y).float().mean())
    loss = float(F.cross_entropy(logits, y))
    baseline = history.steps[0].notes["baseline"]
    assert baseline["top1"] == pytest.approx(top1, abs=1e-3) and baseline["loss"] == pytest.approx(loss, abs=1e-5)
    assert history.steps[0].notes["examples"] == len(y) == 180  # 64 + 64 + 52: the whole split
    assert baseline["top1"] >= 95


def test_the_model_comes_back_bit_identical_and_unchanged(trained, run):
    history, _, lines = run
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    after = history.model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert history.steps[0].changed is False
    assert any("changed nothing" in line for line in lines)


def test_fewer_bits_and_more_zeros_hurt_more(trained, run):
    notes = run[0].steps[0].notes
    layers = weighted(trained)
    for layer in layers:
        bits = rows(notes, layer, "bits")
        assert abs(bits[8]["drop"]) <= 1.0, (layer, bits[8])
        assert bits[2]["drop"] > bits[8]["drop"] and bits[2]["loss_increase"] > bits[8]["loss_increase"], layer
    sparse = rows(notes, layers[0], "sparsity")
    assert sparse[0.9]["drop"] > sparse[0.5]["drop"]
    assert sparse[0.9]["loss_increase"] > sparse[0.5]["loss_increase"]


def test_table_size_ranking_and_history_json(trained, run):
    history, document, lines = run
    notes = history.steps[0].notes
    layers = weighted(trained)
    assert len(notes["table"]) == notes["evaluations"] == len(layers) * (3 + 3)  # bits 8/4/2, sparsity .5/.75/.9
    assert sorted(notes["ranking"]) == sorted(layers)
    worst = {name: max(r["drop"] for r in notes["table"] if r["layer"] == name) for name in layers}
    assert [worst[name] for name in notes["ranking"]] == sorted(worst.values(), reverse=True)
    assert notes["evaluations_per_second"] > 0
    step = document[-1]["step"]
    assert step["name"] == "sensitivity" and step["changed"] is False
    assert step["notes"]["table"] == notes["table"] and step["notes"]["baseline"] == notes["baseline"]
    assert sum(line.startswith("sensitivity: ") for line in lines) == len(layers)


def test_layers_and_settings_options(trained):
    step = {"use": "sensitivity", "layers": ["conv*"], "ignore": ["conv2"], "bits": [4], "sparsity": [],
            "batches": 1}
    notes = compress(recipe(step), model=trained).steps[0].notes
    chosen = [n for n in weighted(trained) if n.startswith("conv") and n != "conv2"]
    assert chosen and [(r["layer"], r["kind"], r["level"]) for r in notes["table"]] == \
        [(n, "bits", 4) for n in chosen]
    assert notes["batches"] == 1


def test_without_data_it_refuses_in_one_line_before_any_work(trained, monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("audited before refusing a recipe without [data]")

    monkeypatch.setattr("micronet.pipeline.audit", no_work)
    with pytest.raises(UsageError, match=r"'sensitivity' measures the model on data, and the recipe has "
                                         r"no \[data\] table \(hint: add \[data\] dataset = \"digits\"") as error:
        compress(recipe({"use": "sensitivity"}, data=None), model=trained)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("step, says", [({"bits": [0]}, "1 to 16"), ({"bits": [True]}, "1 to 16"),
                                        ({"sparsity": [1.0]}, r"\[0, 1\)"), ({"batches": 0}, ">= 1"),
                                        ({"bits": [], "sparsity": []}, "nothing to measure")])
def test_bad_options_are_refused_before_work(step, says):
    with pytest.raises(UsageError, match=says):
        compress(recipe({"use": "sensitivity", **step}), model=nn.Linear(1, 1))


def test_perturbed_weights_by_hand():
    weight = torch.tensor([[0.1, -0.4, 0.3, -0.2], [1.0, 0.5, -0.25, 0.0]])
    half = perturbed(weight, "sparsity", 0.5)  # round(0.5 * 8) = 4 smallest |w| zeroed: 0, .1, .2, .25
    assert torch.equal(half, torch.tensor([[0.0, -0.4, 0.3, 0.0], [1.0, 0.5, 0.0, 0.0]]))
    two = perturbed(weight, "bits", 2)  # grid {-1, 0, 1} * max|w| per row; halves round to even (0)
    # row 0: 0.1/0.4 -> 0, -0.4 -> -1, 0.3/0.4 -> 1, -0.2/0.4 = -0.5 -> 0; row 1: 0.5/1 = 0.5 -> 0
    assert torch.allclose(two, torch.tensor([[0.0, -0.4, 0.4, 0.0], [1.0, 0.0, 0.0, 0.0]]))


def test_rank_by_worst_drop_then_loss():
    table = [{"layer": "a", "drop": 1.0, "loss_increase": 0.1}, {"layer": "b", "drop": 5.0, "loss_increase": 0.0},
             {"layer": "c", "drop": 1.0, "loss_increase": 0.3}, {"layer": "a", "drop": 0.0, "loss_increase": 0.2}]
    assert rank(table) == ["b", "c", "a"]
