"""The sensitivity step on real digits: a baseline that matches a hand evaluation,
a model returned bit for bit, harsher settings hurting more (weight bits,
sparsity, input bits, channels), the notes in history.json."""
import io
import json
import sys
import time
from pathlib import Path

import pytest
from conftest import ray_processes_under, trained_digits_cnn
import torch
import torch.nn.functional as F
from torch import nn

from micronet.errors import UsageError
from micronet.pipeline import compress
from micronet.plugins.sensitivity import channel_group, channel_keep, perturbed, rank
from micronet.selection import Candidate
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


#: Engine options that do not go together, and what the one-line error says (search takes the same).
SWEEP_ERRORS = [
    ({"engine": "dask"}, r"option 'engine' must be one of 'local', 'ray', got 'dask'"),
    ({"address": "auto"}, r"address is an option of the ray engine, got address = 'auto' with engine = 'local'"),
    ({"num_cpus": 2}, r"num_cpus is an option of the ray engine"),
    ({"engine": "ray", "address": "auto", "num_cpus": 2}, r"num_cpus is for a local Ray, got num_cpus = 2 with "
                                                          r"address = 'auto'"),
    ({"engine": "ray", "address": "http://head:10001"}, r"address must be 'auto', 'ray://HOST:PORT' or "
                                                        r"'HOST:PORT', got 'http://head:10001'"),
    ({"engine": "ray", "num_cpus": -1}, r"option 'num_cpus': expected an integer >= 0, got -1"),
]


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
                                        ({"act_bits": [1]}, "2 to 16"), ({"act_bits": [17]}, "2 to 16"),
                                        ({"act_bits": [32]}, "2 to 16"), ({"channels": [1.0]}, r"\[0, 1\)"),
                                        ({"channels": [-0.5]}, r"\[0, 1\)"),
                                        ({"bits": [], "sparsity": []}, "nothing to measure")] + SWEEP_ERRORS)
def test_bad_options_are_refused_before_work(step, says, monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("audited before refusing bad options")

    monkeypatch.setattr("micronet.pipeline.audit", no_work)
    with pytest.raises(UsageError, match=says) as error:
        compress(recipe({"use": "sensitivity", **step}), model=nn.Linear(1, 1))
    assert "\n" not in str(error.value)


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


@pytest.fixture(scope="module")
def inputs_and_channels(trained):
    """Input bits 16 and 2 and channels 25% and 75% on conv1 and conv3."""
    step = {"use": "sensitivity", "layers": ["conv1", "conv3"], "bits": [], "sparsity": [], "act_bits": [16, 2],
            "channels": [0.25, 0.75]}
    lines = []
    return compress(recipe(step), model=trained, log=lines.append), lines


def test_two_input_bits_hurt_the_first_conv_more_than_sixteen(inputs_and_channels):
    notes = inputs_and_channels[0].steps[0].notes
    acts = rows(notes, "conv1", "act_bits")
    assert sorted(acts) == [2, 16]
    # measured: 16 bits changes nothing (drop 0, loss +0.000), 2 bits raises the loss (+0.008) on 180 digits
    assert acts[16]["drop"] == 0 and abs(acts[16]["loss_increase"]) < 1e-4
    assert acts[2]["drop"] >= acts[16]["drop"] and acts[2]["loss_increase"] > acts[16]["loss_increase"] + 1e-3


def test_zeroing_more_channels_hurts_more(inputs_and_channels):
    history, lines = inputs_and_channels
    notes = history.steps[0].notes
    for layer in ("conv1", "conv3"):
        channels = rows(notes, layer, "channels")
        assert channels[0.75]["drop"] > channels[0.25]["drop"], layer
        assert channels[0.75]["loss_increase"] > channels[0.25]["loss_increase"], layer
    assert len(notes["table"]) == 2 * 4
    assert any(line.startswith("sensitivity: conv1: top-1 drop a16 ") and "ch 75%" in line for line in lines)


def test_inputs_and_channels_leave_the_model_bit_identical(trained, inputs_and_channels):
    history = inputs_and_channels[0]
    before, after = trained.state_dict(), history.model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert history.steps[0].changed is False
    assert not any(module._forward_pre_hooks for module in history.model.modules())


def test_channels_by_hand():
    weight = torch.tensor([[3.0, 4.0], [0.1, 0.0], [1.0, 1.0], [-2.0, 0.0]])  # row L2 norms 5, 0.1, 1.41, 2
    assert channel_keep(weight, 0.5).tolist() == [True, False, False, True]  # round(0.5 * 4) = 2 lowest
    assert channel_keep(weight, 0.9).tolist() == [True, False, False, False]  # round(3.6) = 4, capped at 3
    assert channel_keep(weight, 0.1).tolist() == [True, True, True, True]  # round(0.4) = 0
    zeroed = perturbed(weight, "channels", 0.25)
    assert torch.equal(zeroed, torch.tensor([[3.0, 4.0], [0.0, 0.0], [1.0, 1.0], [-2.0, 0.0]]))
    with pytest.raises(ValueError, match="not a perturbation of the weight"):
        perturbed(weight, "act_bits", 8)


def test_a_channel_is_its_weight_row_bias_and_the_batchnorm_reading_it(trained):
    from torch import fx

    graph = fx.symbolic_trace(trained)
    group = channel_group(graph, "conv2", Candidate(graph.conv2))
    assert [(type(m).__name__, p) for m, p in group] == [("Conv2d", "weight"), ("BatchNorm2d", "weight"),
                                                         ("BatchNorm2d", "bias")]
    fc = channel_group(graph, "fc", Candidate(graph.fc))  # its output is the model's: no BatchNorm
    assert [(type(m).__name__, p) for m, p in fc] == [("Linear", "weight"), ("Linear", "bias")]
    plain = channel_group(trained, "conv2", Candidate(trained.conv2))  # no graph to read: the layer alone
    assert [p for _, p in plain] == ["weight"]


# ------------------------------------------------------------- on Ray


SMALL = {"use": "sensitivity", "layers": ["conv2", "fc"], "bits": [8, 2], "sparsity": [0.5], "act_bits": [4],
         "channels": [0.25]}


def test_on_a_local_ray_the_notes_are_the_local_engines_and_ray_is_gone_after(trained, tmp_path_factory,
                                                                              monkeypatch):
    ray = pytest.importorskip("ray")  # the test extra installs it (CI fails on a skip)
    folder = str(tmp_path_factory.mktemp("ray"))  # short: Ray's socket paths have a length limit
    monkeypatch.setenv("RAY_TMPDIR", folder)  # Ray's sockets and logs here, to find its processes by
    local = compress(recipe(SMALL), model=trained).steps[0].notes
    on_ray = compress(recipe({**SMALL, "engine": "ray", "num_cpus": 2}), model=trained).steps[0].notes
    assert on_ray["table"] == local["table"]  # bit for bit: every evaluation at one torch thread
    assert [(r["layer"], r["kind"], r["level"]) for r in local["table"]] == [
        (layer, kind, level) for layer in ("conv2", "fc")
        for kind, level in (("bits", 8), ("bits", 2), ("sparsity", 0.5), ("act_bits", 4), ("channels", 0.25))]
    assert local["engine"] == "local" and "address" not in local and "num_cpus" not in local
    assert (on_ray["engine"], on_ray["address"], on_ray["num_cpus"]) == ("ray", "local", 2)
    timing = {"engine", "address", "num_cpus", "evaluations_per_second"}
    assert {k: v for k, v in on_ray.items() if k not in timing} == {k: v for k, v in local.items() if k not in timing}
    drops = rows(local, "conv2", "bits")
    assert drops[2]["drop"] > drops[8]["drop"]  # a real sweep
    assert not ray.is_initialized()
    deadline = time.monotonic() + 20
    while ray_processes_under(folder) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not ray_processes_under(folder), "Ray processes left running"


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_bar_of_the_evaluations_only_when_the_pipeline_asks_for_progress(trained, monkeypatch):
    step = {"use": "sensitivity", "layers": ["fc"], "bits": [8, 2], "sparsity": []}
    monkeypatch.setattr(sys, "stderr", Terminal())
    compress(recipe(step), model=trained, progress=True)
    shown = sys.stderr.getvalue()
    assert "sensitivity" in shown and "0/2" in shown and "eval" in shown  # tqdm's bar of 2 evaluations
    monkeypatch.setattr(sys, "stderr", Terminal())
    compress(recipe(step), model=trained)  # progress is off by default
    assert sys.stderr.getvalue() == ""
