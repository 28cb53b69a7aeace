"""Every re-score is of the model as it now is; compress takes what audit takes;
audit() leaves the caller's model as it found it."""
import json

import pytest
import torch
from torch import nn

import micronet
from micronet import hookimpl
from micronet.errors import UsageError
from micronet.manager import Registries, get_plugin_manager
from micronet.pipeline import compress
from micronet.steps import CompressionStep

from conftest import Small


def recipe(*steps, spec="unused"):
    return {"model": {"spec": spec, "input": [1, 3, 16, 16]}, "score": {"freebie": False},
            "step": [dict(s) for s in steps]}


def split_conv() -> nn.Sequential:
    """conv (3->8, 3x3, padding 1) then a 1x1 conv (8->8) whose weight is half zeros."""
    second = nn.Conv2d(8, 8, 1, bias=False)
    with torch.no_grad():
        second.weight[:4] = 0  # 32 of 64 weights
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), second)


class Swapper:
    """A plugin whose step swaps a submodule of the GraphModule it is handed,
    leaving the graph as it was (it still calls ``conv`` as one module)."""

    @hookimpl
    def micronet_register_steps(self):
        def swap(model, options, context):
            model.conv = split_conv()
            return model

        return [CompressionStep("swap", "conv -> Sequential(conv, sparse 1x1 conv)", swap)]


@pytest.fixture
def registries():
    return Registries.from_manager(get_plugin_manager(entry_points=False, extra=[Swapper()]))


def test_a_swapped_submodule_is_counted_as_it_now_is(registries, small_model):
    history = compress(recipe({"use": "swap"}), model=small_model, registries=registries)
    layers = {record.name: cost for record, cost in history.final.layers}
    # the 3x3 conv: 16*16 outputs x 8 channels x 27 = 55,296 mults;
    # the 1x1 conv: 16*16*8 outputs x 8 inputs = 16,384 dense, half of its weights zero: 8,192
    assert layers["conv.0"].mults == 16 * 16 * 8 * 27 == 55_296
    assert layers["conv.1"].mults == 16 * 16 * 8 * 8 // 2 == 8_192
    assert "conv" not in layers  # not one opaque record for the whole Sequential
    plain = small_model
    plain.conv = split_conv()
    fresh = micronet.audit(plain, (1, 3, 16, 16), freebie=False)  # a plain module, never a GraphModule
    assert history.final.score.total == pytest.approx(fresh.score.total, rel=1e-12)
    assert history.final.totals["mults"] == fresh.totals["mults"]


@pytest.mark.parametrize("step", [
    {"use": "half"},
    {"use": "sparsify", "amount": 0.5},
    {"use": "factorise", "method": "low-rank", "rank": 2},
    {"use": "factorise", "method": "depthwise-separable"},
    {"use": "prune", "ratio": 0.5},
    {"use": "quantize", "weight_bits": 4, "activation_bits": 8},
    {"use": "finetune", "epochs": 1, "max_batches": 2},
    {"use": "distill", "epochs": 1, "max_batches": 2},
    {"use": "swap"},
])
def test_the_recorded_score_is_what_the_saved_model_re_scores_to(registries, small_model, tmp_path, step):
    """The pipeline's score (fx capture of the step's model) equals a fresh audit
    of that model and of its model.pt2 archive (torch.export capture, another path)."""
    out = tmp_path / "out"
    history = compress(recipe(step), model=small_model, registries=registries, out=out)
    recorded = json.loads((out / "history.json").read_text())[-1]["score"]["total"]
    assert recorded == pytest.approx(history.final.score.total, rel=1e-12)
    fresh = micronet.audit(history.model, (1, 3, 16, 16), freebie=False)
    assert fresh.score.total == pytest.approx(recorded, rel=1e-12)
    archived = micronet.audit(str(out / "model.pt2"), freebie=False)
    assert archived.score.total == pytest.approx(recorded, rel=1e-9)


def test_tables_and_history_name_the_model_by_its_spec(tmp_path):
    out = tmp_path / "out"
    document = recipe({"use": "half"}, spec="micronet:resnet18_cifar")
    document["model"]["input"] = [1, 3, 32, 32]
    compress(document, out=out)
    entries = json.loads((out / "history.json").read_text())
    assert [e["model"] for e in entries] == ["micronet:resnet18_cifar"] * 2
    assert "GraphModule" not in (out / "01-half.txt").read_text()
    assert "model      micronet:resnet18_cifar" in (out / "01-half.txt").read_text()


def test_compress_takes_its_own_model_pt2(tmp_path):
    first = tmp_path / "first"
    document = recipe({"use": "half"}, spec="micronet:resnet18_cifar")
    document["model"]["input"] = [1, 3, 32, 32]
    compress(document, out=first)
    archived = micronet.audit(str(first / "model.pt2"), freebie=False)
    second = recipe({"use": "sparsify", "amount": 0.5}, spec=str(first / "model.pt2"))
    del second["model"]["input"]  # the archive's own: 1x3x32x32
    again = compress(second, out=tmp_path / "second")
    assert again.input.score.total == pytest.approx(archived.score.total, rel=1e-12)
    assert again.input.model == str(first / "model.pt2")
    assert (tmp_path / "second" / "history.json").exists()


def test_compress_takes_a_module_name_holding_a_quote(tmp_path, capsys):
    class Quoted(nn.Module):
        def __init__(self):
            super().__init__()
            self.add_module('a"b', nn.Conv2d(3, 4, 3))
            self.add_module("c\\d", nn.ReLU())

        def forward(self, x):
            return getattr(self, "c\\d")(getattr(self, 'a"b')(x))

    notes = []
    history = compress(recipe({"use": "half"}), model=Quoted(), log=notes.append, out=tmp_path / "o")
    assert "'a\"b' -> 'a_b'" in notes[0] and "'c\\\\d' -> 'c_d'" in notes[0]
    layers = {record.name: cost for record, cost in history.final.layers if record.status == "counted"}
    assert list(layers) == ["a_b", "c_d"]
    assert layers["a_b"].mults == 14 * 14 * 4 * 27  # 14x14 outputs x 4 channels x 3*3*3 weights
    assert history.input.totals == micronet.audit(Quoted(), (1, 3, 16, 16), freebie=False).totals


def test_audit_leaves_the_callers_model_as_it_found_it():
    class NeedsExport(nn.Module):
        """fx cannot trace the shape test in forward; torch.export can."""

        def __init__(self):
            super().__init__()
            self.body = Small()

        def forward(self, x):
            if x.shape[0] > 1:
                x = x[:1]
            return self.body(x)

    for model in (Small(), NeedsExport()):
        model.train()
        model.conv.requires_grad_(False) if hasattr(model, "conv") else model.body.conv.requires_grad_(False)
        calls = []
        model.register_forward_hook(lambda *args: calls.append(1))
        state = {k: v.clone() for k, v in model.state_dict().items()}
        grads = [p.requires_grad for p in model.parameters()]
        result = micronet.audit(model, (1, 3, 16, 16))
        assert all(m.training for m in model.modules())
        assert [p.requires_grad for p in model.parameters()] == grads
        assert len(model._forward_hooks) == 1 and calls == []
        assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
        assert all(p.device.type == "cpu" for p in model.parameters())
        assert any("training mode: it was priced as in inference" in w for w in result.warnings)
    evaluated = Small().eval()
    assert not any("training mode" in w for w in micronet.audit(evaluated, (1, 3, 16, 16)).warnings)
    assert not evaluated.training


def test_an_input_that_does_not_fit_names_the_first_layer(capsys):
    from micronet.cli import main

    assert main(["audit", "micronet:resnet18_cifar", "--input", "1x1x32x32"]) == 2
    err = capsys.readouterr().err
    assert "the input 1x1x32x32 does not fit the model: node conv1" in err
    assert "its first layer conv1 (Conv2d) expects [N, 3, H, W]" in err
    assert "register a shape rule" not in err and err.count("\n") == 1
    with pytest.raises(UsageError, match=r"its first layer 0 \(Linear\) expects \[\.\.\., 8\]"):
        micronet.audit(nn.Sequential(nn.Linear(8, 10)), (1, 5))


def test_a_data_dependent_model_prints_no_graph_dump(tmp_path, capfd):
    from micronet.cli import main

    path = tmp_path / "dd.py"
    path.write_text("import torch\nfrom torch import nn\n"
                    "class DD(nn.Module):\n"
                    "    def __init__(self):\n        super().__init__()\n        self.fc = nn.Linear(4, 4)\n"
                    "    def forward(self, x):\n        return self.fc(x) if x.sum() > 0 else x\n"
                    "def make():\n    return DD()\n")
    assert main(["audit", f"{path}:make", "--input", "1x4"]) == 1
    err = capfd.readouterr().err
    assert "cannot capture DD" in err
    assert "def forward" not in err and "Unable to find user code" not in err


def test_compress_uses_the_models_own_input_shape():
    """micronet:resnet18_cifar knows its 1x3x32x32 input: the imagenet track's 224x224 is not used."""
    document = {"model": {"spec": "micronet:resnet18_cifar"}, "score": {"track": "imagenet"},
                "step": [{"use": "half"}]}
    history = compress(document)
    assert history.input.input_shape == history.final.input_shape == (1, 3, 32, 32)
    assert history.input.totals["macs"] == micronet.audit("micronet:resnet18_cifar").totals["macs"]


def test_a_plugins_module_counter_prices_its_layer_whichever_capture_saw_it(capfd):
    """The example plugin's ClippedReLU has a counter of its own (two comparisons per
    element). A model fx cannot trace is captured by torch.export, whose walk prices
    that layer with the same counter, not by its aten ops (one clamp)."""
    from micronet_example.layers import ClippedReLU

    class NeedsExport(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = Small()
            self.body.relu = ClippedReLU(6.0)

        def forward(self, x):
            if x.shape[0] > 1:  # fx cannot trace a branch on a size; export can
                x = x[:1]
            return self.body(x)

    traced = micronet.audit(NeedsExport().body, (1, 3, 16, 16))
    exported = micronet.audit(NeedsExport(), (1, 3, 16, 16))
    assert exported.captured_via == "export" and traced.captured_via == "fx"
    by_fx = next(r for r in traced.records if r.name == "relu")
    by_export = next(r for r in exported.records if r.name == "body.relu")
    assert by_fx.rule == by_export.rule == "micronet_example.layers:count_clipped_relu"
    assert by_fx.counts == by_export.counts
    assert exported.score.total == pytest.approx(traced.score.total, rel=1e-12)
