"""compress(): steps on copies, re-scoring, history, failures, observers."""
import json

import pytest
import torch
from torch import nn

import micronet
from micronet import hookimpl
from micronet.errors import CompressionError, UsageError
from micronet.manager import Registries, get_plugin_manager
from micronet.pipeline import compress
from micronet.steps import CompressionStep, StepOption


def recipe(*steps, freebie=False, track="cifar100"):
    return {"model": {"spec": "unused", "input": [1, 3, 16, 16]},
            "score": {"track": track, "freebie": freebie},
            "step": [dict(step) for step in steps]}


class Recorder:
    """A plugin: an observer of every pipeline event, and two steps."""

    def __init__(self):
        self.events = []

    @hookimpl
    def micronet_register_steps(self):
        def explode(model, options, context):
            for p in model.parameters():  # vandalise the copy, then fail
                p.data.zero_()
            raise RuntimeError("boom")

        def widen(model, options, context):
            model.fc = nn.Linear(8, options["classes"])
            context.note("new_classifier", [8, options["classes"]])
            return model

        return [CompressionStep("explode", "always fails", explode),
                CompressionStep("widen", "a new classifier", widen,
                                (StepOption("classes", (int,), 10, "classes"),))]

    @hookimpl
    def micronet_pipeline_started(self, recipe, result):
        self.events.append(("started", round(result.score.total, 6)))

    @hookimpl
    def micronet_step_started(self, index, step):
        self.events.append(("step", index, step.name))

    @hookimpl
    def micronet_step_finished(self, index, result, error):
        self.events.append(("done", index, error is None))

    @hookimpl
    def micronet_pipeline_finished(self, history):
        self.events.append(("finished", len(history.steps)))


@pytest.fixture
def recorder():
    plugin = Recorder()
    return plugin, Registries.from_manager(get_plugin_manager(entry_points=False, extra=[plugin]))


def test_half_changes_the_score_exactly_as_the_rules_say(recorder, small_model, tmp_path):
    _, registries = recorder
    model = small_model
    history = compress(recipe({"use": "half"}), model=model, registries=registries, out=tmp_path)
    before, after = history.input, history.final
    # fp16: every parameter and every multiply costs 16/32; additions stay at 32 bits
    assert after.score.storage == pytest.approx(before.score.storage / 2)
    assert after.score.ops == pytest.approx(before.score.ops - before.totals["mults"] / 2)
    assert after.totals["mults"] == before.totals["mults"]
    assert next(model.parameters()).dtype == torch.float32  # the input is untouched
    with_freebie = compress(recipe({"use": "half"}, freebie=True), model=model, registries=registries)
    assert with_freebie.final.score.total == pytest.approx(with_freebie.input.score.total)


def test_outputs_history_tables_and_final_model(recorder, small_model, tmp_path):
    _, registries = recorder
    history = compress(recipe({"use": "half"}, {"use": "widen", "classes": 4}), model=small_model,
                       registries=registries, out=tmp_path)
    entries = json.loads((tmp_path / "history.json").read_text())
    assert [e["step"] and e["step"]["name"] for e in entries] == [None, "half", "widen"]
    assert entries[2]["step"]["options"] == {"classes": 4}
    assert entries[2]["step"]["notes"] == {"new_classifier": [8, 4]}
    # outside a repeat, without a data table of its own
    assert [(e["step"]["round"], e["step"]["repeat"], e["step"]["data"]) for e in entries[1:]] == [
        (None, None, None)] * 2
    assert entries[2]["step"]["plugin"] != ""
    assert entries[1]["score"]["total"] == pytest.approx(history.steps[0].result.score.total)
    assert {p.name for p in tmp_path.iterdir()} >= {"00-input.txt", "01-half.txt", "02-widen.txt",
                                                     "history.json", "model.pt2", "state_dict.pt"}
    reloaded = micronet.audit(str(tmp_path / "model.pt2"), freebie=False)
    assert reloaded.score.total == pytest.approx(history.final.score.total)
    assert history.final.records[-1].output_shapes == ((1, 4),)


def test_a_failing_step_names_itself_keeps_history_and_the_input(recorder, small_model, tmp_path):
    plugin, registries = recorder
    model = small_model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CompressionError, match=r"step 2 \('explode', plugin '.*'\) failed: RuntimeError: boom"):
        compress(recipe({"use": "half"}, {"use": "explode"}, {"use": "half"}), model=model,
                 registries=registries, out=tmp_path)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    entries = json.loads((tmp_path / "history.json").read_text())
    assert len(entries) == 3 and entries[2]["step"]["error"] == "RuntimeError: boom"
    assert not (tmp_path / "model.pt2").exists()  # no final model from a failed run
    assert plugin.events[-2:] == [("done", 2, False), ("finished", 2)]


def test_observers_see_every_event_in_order(recorder, small_model):
    plugin, registries = recorder
    compress(recipe({"use": "half"}, {"use": "widen"}), model=small_model, registries=registries)
    kinds = [event[0] for event in plugin.events]
    assert kinds == ["started", "step", "done", "step", "done", "finished"]


@pytest.mark.parametrize("step, message", [
    ({"use": "shrink"}, "unknown step 'shrink'; steps available: .*half"),
    ({"use": "widen", "classes": "four"}, r"step 2 \(widen\): option 'classes' must be int, got str"),
    ({"use": "widen", "colour": 1}, r"unknown option 'colour'; it takes: classes"),
    ({"use": "widen", "classes": True}, "must be int, got bool"),
])
def test_bad_steps_fail_before_any_work(recorder, small_model, step, message, monkeypatch):
    _, registries = recorder

    def no_work(*args, **kwargs):
        raise AssertionError("audited before validating")

    monkeypatch.setattr("micronet.pipeline.audit", no_work)
    with pytest.raises(UsageError, match=message):
        compress(recipe({"use": "half"}, step), model=small_model, registries=registries)


def test_compress_from_a_recipe_file_on_the_command_line(tmp_path, capsys):
    from micronet.cli import main

    path = tmp_path / "r.toml"
    path.write_text('[model]\nspec = "micronet:resnet18_cifar"\n[score]\ntrack = "cifar10"\n'
                    'freebie = false\n[[step]]\nuse = "half"\n')
    assert main(["compress", str(path), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "1. half" in out and (tmp_path / "out" / "history.json").exists()
    path.write_text('[model]\nspec = "micronet:resnet18_cifar"\n[[step]]\nuse = "nope"\n')
    assert main(["compress", str(path)]) == 2
    assert "unknown step 'nope'" in capsys.readouterr().err


def test_a_pipeline_model_pickles_and_loads_back():
    # torch rebuilds a GraphModule's tracer class without arguments when unpickling
    # (Ray workers, torch.save of the module): MicronetTracer() takes the installed counters
    import io

    import torch
    from torch import nn

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10)).eval()
    history = compress({"model": {"spec": "unused", "input": [1, 3, 8, 8]}, "step": [{"use": "half"}]},
                       model=model)
    buffer = io.BytesIO()
    torch.save(history.model, buffer)
    buffer.seek(0)
    again = torch.load(buffer, weights_only=False)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float16)
    assert torch.equal(again(x), history.model(x))
    assert type(again).__name__ == type(history.model).__name__
