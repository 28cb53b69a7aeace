"""The third-party path, end to end: the example package in tests/plugin_example
(the code of docs/writing-plugins.md) is pip-installed (``make test`` does it)
and found through its entry point. Not installed is a failure, not a skip."""
import json

import pytest
import torch
from conftest import add_entry_point
from torch import nn

import micronet
from micronet.cli import main
from micronet.manager import DISABLE_ENV, Registries, describe_plugins, get_plugin_manager
from micronet.masks import set_mask
from micronet.pipeline import compress

try:
    import micronet_example as example
except ImportError as error:  # pragma: no cover - the message is the point
    raise ImportError("the example plugin is not installed: `make test` installs it "
                      "(pip install -e tests/plugin_example)") from error

from micronet_example.layers import ScaledLinear

RECIPE = example.__file__.rsplit("/micronet_example/", 1)[0] + "/recipe.toml"


@pytest.fixture
def registries():
    """Registries of a fresh manager with the installed entry points."""
    return Registries.from_manager(get_plugin_manager())


def run(registries, *steps, out=None, input=(1, 3, 8, 8)):
    """compress() of the example's ExampleNet through ``steps``."""
    recipe = {"model": {"spec": "micronet:example_net", "input": list(input)},
              "score": {"track": "cifar100"}, "step": list(steps)}
    return compress(recipe, registries=registries, out=out)


# --------------------------------------------------------------- found, listed


def test_found_through_its_entry_point(registries):
    assert registries.pm.get_plugin("example") is example
    info = next(i for i in describe_plugins(registries.pm) if i.name == "example")
    assert info.version == "0.1.0" and info.origin == "entry point of micronet-example-plugin"
    assert info.registered["steps"] == ["swap-relu", "cluster"]
    assert info.registered["counters"] == ["micronet_example.layers.ClippedReLU",
                                           "micronet_example.layers.ScaledLinear"]
    assert info.registered["report_sections"] == ["clipped-relu", "codebooks"]
    assert info.registered["models"] == ["example_net"]


def test_plugins_command_lists_origin_and_registrations(capsys):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "example 0.1.0  [entry point of micronet-example-plugin]" in out
    assert "    steps (2): swap-relu, cluster" in out
    assert "micronet.plugins.imta" in out and "imta-2021" in out and "steps (1): half" in out


@pytest.mark.parametrize("name", ["example", "micronet-example-plugin", "micronet_example_plugin"])
def test_disabled_by_entry_point_or_distribution_name(monkeypatch, name):
    monkeypatch.setenv(DISABLE_ENV, name)
    registries = Registries.from_manager(get_plugin_manager())
    assert registries.pm.get_plugin("example") is None
    assert "swap-relu" not in registries.steps and "example_net" not in registries.models
    with pytest.raises(micronet.UsageError, match="unknown step 'swap-relu'"):
        compress({"model": {"spec": "resnet18"}, "step": [{"use": "swap-relu"}]}, registries=registries)


def test_a_plugin_that_fails_to_load_is_named_and_the_rest_work(monkeypatch):
    add_entry_point(monkeypatch, "broken", "no_such_module_anywhere")
    pm = get_plugin_manager()
    assert "ModuleNotFoundError" in pm.micronet_failed["broken"]
    assert "swap-relu" in Registries.from_manager(pm).steps
    info = next(i for i in describe_plugins(pm) if i.name == "broken")
    assert "failed" in info.origin and "no_such_module_anywhere" in info.error


# ------------------------------------------------------------------- counters


def test_recipe_using_the_plugin_step_and_counter(registries, tmp_path):
    recipe = {"model": {"spec": "torchvision:resnet18?num_classes=10", "input": [1, 3, 32, 32]},
              "score": {"track": "cifar10", "freebie": False},
              "step": [{"use": "swap-relu", "ceiling": 4.0}]}
    history = compress(recipe, registries=registries, out=tmp_path)
    before, after = history.input, history.final
    clipped = [r for r in after.records if r.op == "clipped_relu"]
    relus = [r for r in before.records if r.op == "relu"]
    assert len(clipped) == len(relus) == 17  # resnet18 calls its ReLU modules 17 times
    assert not after.uncounted
    # each ClippedReLU costs 2 mults per element where ReLU cost 1
    assert after.totals["mults"] - before.totals["mults"] == sum(r.counts.mults for r in relus)
    assert history.model.relu.ceiling == 4.0
    assert "ClippedReLU layers" in (tmp_path / "01-swap-relu.txt").read_text()


def test_the_plugin_counter_makes_its_module_a_leaf(registries):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), example.ClippedReLU(2.0))
    result = micronet.audit(model, (1, 3, 8, 8), registries=registries)
    record = next(r for r in result.records if r.name == "1")
    assert record.op == "clipped_relu" and record.counts.mults == 2 * 4 * 6 * 6


def test_the_weighted_layer_is_one_record_with_its_parameters(registries):
    result = micronet.audit(nn.Sequential(ScaledLinear(8, 4)), (2, 8), registries=registries)
    (record,) = [r for r in result.records if r.status == "counted"]
    assert (record.name, record.op, record.output_shapes) == ("0", "scaled_linear", ((2, 4),))
    assert record.params == 4 * 8 + 4 + 4  # weight, scale, bias
    assert record.weight_params == 4 * 8
    assert (record.counts.dense_mults, record.counts.dense_adds) == (2 * 4 * 8 + 2 * 4, 2 * 4 * 7 + 2 * 4)


def _half_zero_scaled_linear() -> nn.Module:
    """ScaledLinear(8, 4) whose weight is zero in its first 4 columns (density 0.5)."""
    layer = ScaledLinear(8, 4)
    mask = torch.ones(4, 8, dtype=torch.bool)
    mask[:, :4] = False
    set_mask(layer, "weight", mask)
    return nn.Sequential(layer)


def test_the_weighted_layers_ops_shrink_by_the_weights_density(registries):
    dense = micronet.audit(nn.Sequential(ScaledLinear(8, 4)), (1, 8), registries=registries)
    sparse = micronet.audit(_half_zero_scaled_linear(), (1, 8), registries=registries)
    (_, dense_cost), = [(r, c) for r, c in dense.layers if r.op == "scaled_linear"]
    (record, sparse_cost), = [(r, c) for r, c in sparse.layers if r.op == "scaled_linear"]
    assert record.weight_density == 16 / 32
    # dense: 4 dot products of 8 terms + 4 scale mults; 4 * 7 adds + 4 bias adds
    assert (dense_cost.mults, dense_cost.adds) == (4 * 8 + 4, 4 * 7 + 4)  # 36, 32
    # density 0.5: 4 dot products of 8 * 0.5 = 4 terms + 4; 4 * 3 + 4
    assert (sparse_cost.mults, sparse_cost.adds) == (4 * 4 + 4, 4 * 3 + 4)  # 20, 16


def test_built_in_sparsify_selects_the_declared_weighted_layer(registries):
    history = run(registries, {"use": "sparsify", "amount": 0.5, "layers": ["fc"]})
    fc = history.model.fc
    assert isinstance(fc, ScaledLinear)
    assert int((fc.weight == 0).sum()) == 6  # half of the 3 x 4 weight
    (cost,) = [c for r, c in history.final.layers if r.name == "fc"]
    # 3 dot products of 4 * 0.5 = 2 terms + 3 scale mults; 3 * 1 adds + 3 bias adds
    assert (cost.mults, cost.adds) == (3 * 2 + 3, 3 * 1 + 3)


# ------------------------------------------------------------------- clustering


def _layer_values(module: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in module.parameters(recurse=False)])


@pytest.mark.parametrize("bits", [1, 2, 3])
def test_clustering_leaves_at_most_k_values_per_layer(registries, bits):
    history = run(registries, {"use": "cluster", "bits": bits})
    model = history.model
    for name in ("conv", "fc"):
        values = _layer_values(model.get_submodule(name))
        assert len(values.unique()) <= 2 ** bits, name
    # all k centroids in use: conv's 112 distinct random values spread over every cluster
    assert len(_layer_values(model.conv).unique()) == 2 ** bits
    assert history.steps[0].notes["clustered"] == ["conv", "fc"]


@pytest.mark.parametrize("bits, conv, fc", [
    # conv: 3*4*3*3 + 4 = 112 params; fc: 4*3 weight + 3 scale + 3 bias = 18 params
    (2, 112 * 2 / 32 + 4 * 32 / 32, 18 * 2 / 32 + 4 * 32 / 32),     # 7 + 4 = 11, 1.125 + 4 = 5.125
    (4, 112 * 4 / 32 + 16 * 32 / 32, 18 * 4 / 32 + 16 * 32 / 32),   # 14 + 16 = 30, 2.25 + 16 = 18.25
])
def test_clustered_storage_is_the_indices_plus_the_codebook(registries, tmp_path, bits, conv, fc):
    history = run(registries, {"use": "cluster", "bits": bits}, out=tmp_path)
    storage = {record.name: cost.storage for record, cost in history.final.layers if cost.storage}
    assert storage == {"conv": conv, "fc": fc}
    assert history.final.score.storage == conv + fc
    assert not history.final.score.freebie  # a layer below 16 bits: no freebie
    # the archive carries the widths and the codebooks: it re-scores the same
    again = micronet.audit(str(tmp_path / "model.pt2"), (1, 3, 8, 8), registries=registries)
    assert {r.name: c.storage for r, c in again.layers if c.storage} == {"conv": conv, "fc": fc}


def test_cluster_options_are_checked_before_any_work(registries):
    for step, message in [
        ({"use": "cluster"}, "option 'bits' is required"),
        ({"use": "cluster", "bits": 9}, "option 'bits': expected 1 to 8, got 9"),
        ({"use": "cluster", "bits": 2, "init": "random"}, "option 'init' must be one of 'linear', 'density'"),
        ({"use": "cluster", "bits": 2, "layers": [3]}, "expected a list of module name globs, got \\[3\\]"),
    ]:
        with pytest.raises(micronet.UsageError, match=message):
            run(registries, step)


def test_cluster_says_when_its_selection_matches_nothing(registries, capsys):
    recipe = {"model": {"spec": "micronet:example_net", "input": [1, 3, 8, 8]},
              "step": [{"use": "cluster", "bits": 2, "layers": ["nothing*"]}]}
    history = compress(recipe, registries=registries, log=print)
    assert "cluster: layers ['nothing*'] match no layer with a weight" in capsys.readouterr().out
    assert not history.steps[0].changed


# --------------------------------------------------------------------- reports

CODEBOOKS = [["conv", "4-bit parameters + 16 words declared; storage 30 words"]]  # 112 * 4 / 32 + 16


def test_the_recipe_of_the_walkthrough_and_its_report_sections(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["compress", RECIPE, "--out", str(out)]) == 0
    history = json.loads((out / "history.json").read_text())
    # step 1: the built-in sparsify prunes the plugin's ScaledLinear, declared a weighted layer
    assert history[1]["step"]["notes"]["sparsity"] == {"fc": 0.5}
    # step 2: cluster; its section in the terminal table, and in history.json as in --json
    table = (out / "02-cluster.txt").read_text()
    assert "\nCodebooks\n  conv: 4-bit parameters + 16 words declared; storage 30 words\n" in table
    assert "Codebooks" not in history[0].get("sections", {})  # nothing declared before clustering
    assert history[2]["sections"]["Codebooks"] == CODEBOOKS
    capsys.readouterr()

    audit_json = tmp_path / "audit.json"
    assert main(["audit", str(out / "model.pt2"), "--json", str(audit_json)]) == 0
    terminal = capsys.readouterr().out
    assert "\nCodebooks\n  conv: 4-bit parameters + 16 words declared; storage 30 words\n" in terminal
    assert json.loads(audit_json.read_text())["sections"] == {"Codebooks": CODEBOOKS}
