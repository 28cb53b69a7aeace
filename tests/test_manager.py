"""The plugin manager: default plugins, duplicates, disabling, failures."""
import types

import pytest
from torch import nn

from micronet import Counts, hookimpl
from micronet.errors import PluginError, UsageError
from micronet.manager import DEFAULT_PLUGINS, DISABLE_ENV, Registries, get_plugin_manager
from micronet.registry import collect, counter
from micronet.rules import MICRONET_2019


def make_plugin(name, **hooks):
    """A plugin object made of the given hook functions."""
    plugin = types.SimpleNamespace(**{k: hookimpl(v) for k, v in hooks.items()})
    plugin.__name__ = name
    return plugin


def test_fresh_manager_has_every_default_plugin():
    pm = get_plugin_manager(entry_points=False)
    for name in DEFAULT_PLUGINS:
        assert pm.get_plugin(name) is not None, name
    assert get_plugin_manager(entry_points=False) is not pm


def test_builtins_register_through_the_hooks():
    registries = Registries.from_manager(get_plugin_manager(entry_points=False))
    assert registries.rulebooks["micronet-2019"] is MICRONET_2019
    assert set(registries.tracks) >= {"cifar100", "imagenet"}
    assert registries.counters.counter(nn.Conv2d) is not None
    assert registries.counters.counter(nn.Conv2d).plugin == "micronet.counters.conv"


def test_duplicate_rulebook_names_both_plugins():
    twin = make_plugin("twin", micronet_register_rulebooks=lambda: [MICRONET_2019])
    registries = Registries.from_manager(get_plugin_manager(entry_points=False, extra=[twin]))
    with pytest.raises(PluginError, match="registered twice.*micronet.rules"):
        registries.rulebooks


class Custom(nn.Conv2d):
    """A Conv2d subclass a plugin wants to count differently."""


def test_duplicate_counter_fails_unless_replace():
    mod = types.ModuleType("dup_counters")

    def conv_again(call):
        return Counts(mults=1)

    conv_again.__module__ = mod.__name__
    mod.conv_again = counter(nn.Conv2d)(conv_again)
    plugin = make_plugin("dup", micronet_register_counters=lambda: collect(mod))
    registries = Registries.from_manager(get_plugin_manager(entry_points=False, extra=[plugin]))
    with pytest.raises(PluginError, match="two counter rules"):
        registries.counters

    mod2 = types.ModuleType("replace_counters")

    def conv_replaced(call):
        return Counts(mults=1)

    conv_replaced.__module__ = mod2.__name__
    mod2.conv_replaced = counter(nn.Conv2d, replace=True)(conv_replaced)
    plugin2 = make_plugin("replacing", micronet_register_counters=lambda: collect(mod2))
    registries = Registries.from_manager(get_plugin_manager(entry_points=False, extra=[plugin2]))
    assert registries.counters.counter(Custom).fn is conv_replaced  # found along the MRO


def test_disable_env_blocks_a_plugin(monkeypatch):
    monkeypatch.setenv(DISABLE_ENV, "micronet.counters.conv")
    pm = get_plugin_manager(entry_points=False)
    assert pm.get_plugin("micronet.counters.conv") is None
    assert Registries.from_manager(pm).counters.counter(nn.Conv2d) is None


def test_essential_plugins_cannot_be_disabled(monkeypatch):
    monkeypatch.setenv(DISABLE_ENV, "micronet.rules")
    with pytest.raises(UsageError, match="essential"):
        get_plugin_manager(entry_points=False)


def test_a_plugin_whose_hook_raises_is_named_and_left_out():
    broken = make_plugin("broken", micronet_register_tracks=lambda: 1 / 0)
    registries = Registries.from_manager(get_plugin_manager(entry_points=False, extra=[broken]))
    assert registries.failed_plugins == (("broken", "ZeroDivisionError in micronet_register_tracks: "
                                                    "division by zero"),)
    assert "cifar100" in registries.tracks
