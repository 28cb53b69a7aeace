"""The third-party path, end to end: the example package in tests/plugin_example
is pip-installed (``make test`` does it) and found through its entry point."""

import pytest
from conftest import add_entry_point
import torch
import torchvision
from torch import nn

import micronet
from micronet.cli import main
from micronet.manager import DISABLE_ENV, Registries, describe_plugins, get_plugin_manager
from micronet.pipeline import compress

example = pytest.importorskip("micronet_example", reason="run `make test`: it installs tests/plugin_example")


@pytest.fixture
def registries():
    return Registries.from_manager(get_plugin_manager())


def test_found_through_its_entry_point(registries):
    assert registries.pm.get_plugin("example") is example
    info = next(i for i in describe_plugins(registries.pm) if i.name == "example")
    assert info.version == "0.1.0" and info.origin == "entry point of micronet-example-plugin"
    assert info.registered["steps"] == ["swap-relu"]
    assert info.registered["counters"] == ["micronet_example.ClippedReLU"]


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


def test_disabled_by_name(monkeypatch):
    monkeypatch.setenv(DISABLE_ENV, "example")
    registries = Registries.from_manager(get_plugin_manager())
    assert "swap-relu" not in registries.steps
    with pytest.raises(micronet.UsageError, match="unknown step 'swap-relu'"):
        compress({"model": {"spec": "resnet18"}, "step": [{"use": "swap-relu"}]}, registries=registries)


def test_a_plugin_that_fails_to_load_is_named_and_the_rest_work(monkeypatch, capsys):
    add_entry_point(monkeypatch, "broken", "no_such_module_anywhere")
    pm = get_plugin_manager()
    assert "ModuleNotFoundError" in pm.micronet_failed["broken"]
    assert "swap-relu" in Registries.from_manager(pm).steps
    info = next(i for i in describe_plugins(pm) if i.name == "broken")
    assert "failed" in info.origin and "no_such_module_anywhere" in info.error


def test_plugins_command_lists_origin_and_registrations(capsys):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "example 0.1.0  [entry point of micronet-example-plugin]" in out
    assert "micronet.plugins.imta" in out and "imta-2021" in out and "steps (1): half" in out


def test_the_guide_shows_exactly_the_tested_code():
    import pathlib

    root = pathlib.Path(__file__).parents[1]
    guide = (root / "docs" / "writing-plugins.md").read_text()
    for path in ("tests/plugin_example/micronet_example/__init__.py", "tests/plugin_example/setup.cfg"):
        assert (root / path).read_text().rstrip() in guide, path
