"""Every number names its rule: each record says which counter produced it
(``rule``, ``module:function``) and which plugin registered that counter
(``plugin``); rows, JSON, CSV and the HTML tooltip show both, so an override
with ``replace=True`` is visible."""
import csv
import html
import io
import json
import types

import pytest
import torch
from torch import nn

import micronet
from micronet.errors import CounterError
from micronet.manager import Registries, get_plugin_manager
from micronet.records import COUNTED, FREE, UNCOUNTED
from micronet.registry import Registration
from micronet.reports import render_audit_html, render_csv, render_json


class Tiny(nn.Module):
    """conv(3->8, 3x3, no bias) -> relu -> flatten -> linear(8*4*4 -> 10), on 1x3x4x4."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.relu(self.conv(x)), 1))


def cheap_conv(call: micronet.OpCall) -> micronet.Counts:
    """A deliberately different conv rule: one multiply per output element."""
    return micronet.Counts(mults=call.y.numel)


def _plugin(name: str, fn, **registration) -> types.ModuleType:
    """A plugin module ``name`` registering ``fn`` as the nn.Conv2d counter."""
    plugin = types.ModuleType(name)

    @micronet.hookimpl
    def micronet_register_counters():
        return [Registration("counter", (nn.Conv2d,), fn, op="conv2d", **registration)]

    plugin.micronet_register_counters = micronet_register_counters
    return plugin


@pytest.fixture(scope="module")
def overridden():
    registries = Registries.from_manager(
        get_plugin_manager(entry_points=False, extra=[_plugin("cheap_conv_plugin", cheap_conv, replace=True)]))
    return micronet.audit(Tiny(), (1, 3, 4, 4), registries=registries)


def _row(result, name):
    return next(r for r in result.rows() if r["name"] == name)


def test_built_in_counters_name_their_module_function_and_plugin(registries):
    result = micronet.audit(Tiny(), (1, 3, 4, 4), registries=registries)
    conv, fc = (next(r for r in result.records if r.name == name) for name in ("conv", "fc"))
    assert (conv.name, conv.rule, conv.plugin) == ("conv", "micronet.counters.conv:conv_module",
                                                   "micronet.counters.conv")
    assert (fc.name, fc.rule, fc.plugin) == ("fc", "micronet.counters.linear:linear_module",
                                             "micronet.counters.linear")
    flatten = next(r for r in result.records if r.op == "flatten")
    assert flatten.status == FREE and flatten.rule == "free" and flatten.plugin.startswith("micronet.counters")


def test_a_replacing_plugin_shows_in_records_and_rows(overridden):
    conv = next(r for r in overridden.records if r.name == "conv")
    assert conv.rule == f"{cheap_conv.__module__}:cheap_conv"
    assert conv.plugin == "cheap_conv_plugin"
    assert conv.counts.mults == 8 * 4 * 4  # the override's number, not the built-in's
    row = _row(overridden, "conv")
    assert (row["rule"], row["plugin"]) == (conv.rule, "cheap_conv_plugin")


def test_json_csv_and_html_carry_rule_and_plugin(overridden):
    layer = next(l for l in json.loads(render_json(overridden))["layers"] if l["name"] == "conv")
    assert (layer["rule"], layer["plugin"]) == (f"{cheap_conv.__module__}:cheap_conv", "cheap_conv_plugin")
    rows = list(csv.DictReader(io.StringIO(render_csv(overridden))))
    conv = next(r for r in rows if r["name"] == "conv")
    assert (conv["rule"], conv["plugin"]) == (f"{cheap_conv.__module__}:cheap_conv", "cheap_conv_plugin")
    page = html.unescape(render_audit_html(overridden))
    assert f"rule: {cheap_conv.__module__}:cheap_conv (plugin cheap_conv_plugin)" in page


def test_an_override_without_replace_is_refused_naming_both_plugins():
    registries = Registries.from_manager(get_plugin_manager(entry_points=False, extra=[_plugin("sneaky", cheap_conv)]))
    with pytest.raises(micronet.PluginError, match="'micronet.counters.conv' and plugin 'sneaky'"):
        registries.counters  # noqa: B018 (merged on first use)


class Unknown(nn.Module):
    """torch.special.i0 has no counter: uncounted, with no rule."""

    def forward(self, x):
        return torch.special.i0(x)


def test_uncounted_records_name_no_rule(registries):
    with pytest.warns(micronet.UncountedWarning):
        record = micronet.audit(Unknown(), (2, 3), registries=registries).uncounted[0]
    assert (record.status, record.rule, record.plugin) == (UNCOUNTED, "", "")
    assert record.reason == "no counter for aten.i0"


class Erf(nn.Module):
    """torch.erf as a function of its input: no fx counter, counted by its aten op."""

    def forward(self, x):
        return torch.special.erf(x)


def test_the_aten_fallback_names_the_aten_counters(registries):
    records = micronet.audit(Erf(), (2, 3), registries=registries).records
    counted = [r for r in records if r.status == COUNTED]
    assert counted and all(r.via == "aten" for r in counted)
    assert all(r.rule.startswith("micronet.counters.") and ":" in r.rule for r in counted)
    assert all(r.plugin.startswith("micronet.counters.") for r in counted)


def broken_conv(call):
    raise ValueError("boom")


def test_a_failing_counter_names_node_rule_and_plugin():
    registries = Registries.from_manager(
        get_plugin_manager(entry_points=False, extra=[_plugin("broken_plugin", broken_conv, replace=True)]))
    with pytest.raises(CounterError, match=r":broken_conv, plugin broken_plugin\) failed at node conv \(conv\): "
                                           r"ValueError: boom \(hint: "):
        micronet.audit(Tiny(), (1, 3, 4, 4), registries=registries)


class Moody(nn.Module):
    """A forward fx cannot trace (a branch on a size): captured by
    torch.export, where the conv becomes an aten.convolution node."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, bias=False)

    def forward(self, x):
        y = self.conv(x)
        return y if y.shape[1] > 2 else -y


def test_export_records_name_the_aten_rules(registries):
    result = micronet.audit(Moody(), (1, 3, 5, 5), registries=registries)
    assert result.captured_via == "export"
    conv = next(r for r in result.records if r.name == "conv")
    assert conv.rule.startswith("micronet.counters.conv:") and conv.plugin == "micronet.counters.conv"


class MoodyUnknown(Moody):
    """Moody (captured by torch.export) ending in torch.special.i0, which has no counter."""

    def forward(self, x):
        return torch.special.i0(super().forward(x))


STRICT = r"node \S+ \(.+\) is not counted: no counter for aten\.(special_)?i0 \(hint: register a counter"


@pytest.mark.parametrize("model", [Unknown(), MoodyUnknown()], ids=["fx", "export"])
def test_strict_mode_says_the_same_on_both_walks(model, registries):
    shape = (2, 3) if isinstance(model, Unknown) else (1, 3, 5, 5)
    with pytest.raises(CounterError, match=STRICT):
        micronet.audit(model, shape, registries=registries, strict=True)
