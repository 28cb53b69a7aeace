"""A fast command line (issue 14): what ``import micronet`` and ``micronet audit``
of a built-in model leave out of ``sys.modules``, and the :class:`Lazy`
targets that let a counters module name torchvision's classes without importing it.

The heavy libraries are checked in a fresh interpreter (this one has them all
imported by other tests); the assertions are on ``sys.modules``, never on time.
"""
from __future__ import annotations

import json
import subprocess
import sys
import types

import pytest
from torch import nn

from micronet.errors import PluginError
from micronet.registry import CounterRegistry, Lazy, Registration, free, target_name

#: Each costs from 0.5 s (sympy, which torch.broadcast_shapes imports) to 1.7 s (torchvision,
#: which imports torch._dynamo) on top of ``import torch``; an audit of a built-in needs none.
HEAVY = ("torchvision", "torch._dynamo", "torch_pruning", "timm", "transformers", "sklearn", "sympy")


def _run(code: str, tmp_path) -> dict:
    """Run ``code`` in a fresh interpreter; it prints one JSON object last."""
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_import_and_cli_audit_of_a_builtin_import_no_heavy_library(tmp_path):
    found = _run(f"""
import contextlib, io, json, sys
heavy = {HEAVY!r}
import micronet
after_import = [name for name in heavy if name in sys.modules]
from micronet.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    rc = main(["audit", "micronet:resnet18_cifar"])
after_audit = [name for name in heavy if name in sys.modules]
print(json.dumps({{"import": after_import, "audit": after_audit, "rc": rc,
                  "conv1": [line for line in out.getvalue().splitlines() if line.startswith("conv1 ")]}}))
""", tmp_path)
    assert found["import"] == [] and found["audit"] == []
    assert found["rc"] == 0
    # conv1 of resnet18_cifar: 3x3, 3 -> 64 channels at 32x32: 3*3*3*64 = 1728 params,
    # 1728*1024 = 1.77M mults (the audit ran to the end)
    assert len(found["conv1"]) == 1 and "1.73K" in found["conv1"][0] and "1.77M" in found["conv1"][0]


@pytest.mark.slow
def test_torchvision_stochastic_depth_counts_when_the_registry_predates_torchvision(tmp_path):
    # The CLI builds its registries before the model spec is resolved (which imports torchvision):
    # StochasticDepth must still be a free leaf. efficientnet_b0 applies it in its 9 MBConv blocks
    # with a residual (stages 2-7 repeat 1, 1, 2, 2, 3, 0 times after their first block).
    found = _run("""
import json, sys
import micronet
from micronet.manager import Registries
registries = Registries.from_manager()
registries.counters
before = "torchvision" in sys.modules
result = micronet.audit("torchvision:efficientnet_b0", (1, 3, 32, 32), registries=registries)
depth = [(r.op, r.status) for r in result.records if r.op == "stochasticdepth"]
print(json.dumps({"before": before, "uncounted": len(result.uncounted), "depth": depth}))
""", tmp_path)
    assert found["before"] is False
    assert found["uncounted"] == 0
    assert found["depth"] == [["stochasticdepth", "free"]] * 9


# ------------------------------------------------------------------ Lazy targets


class _Block(nn.Module):
    def forward(self, x):
        return x


class _SubBlock(_Block):
    pass


def _fake_library(monkeypatch, name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    module.Block, module.SubBlock = _Block, _SubBlock
    monkeypatch.setitem(sys.modules, name, module)
    return module


def test_lazy_target_waits_for_its_module_then_counts_like_the_object(monkeypatch):
    registry = CounterRegistry([free(Lazy("mn_fake_library", "Block"), nn.Identity)])
    monkeypatch.delitem(sys.modules, "mn_fake_library", raising=False)
    assert registry.counter(_Block) is None and registry.counter(_SubBlock) is None
    assert registry.counter(nn.Identity).free
    _fake_library(monkeypatch, "mn_fake_library")
    entry = registry.counter(_Block)
    assert entry is not None and entry.free and entry.op == "_block"
    assert registry.counter(_SubBlock) is entry  # by MRO, as an object target
    assert registry.counter(Lazy("mn_fake_library", "Block")) is entry
    assert registry.knows_module(_SubBlock)


def test_lazy_target_keeps_duplicates_and_replace_in_registration_order(monkeypatch):
    lazy = Lazy("mn_fake_library", "Block")
    replaced = Registration("free", (lazy,), op="first")
    later = Registration("free", (_Block,), op="second", replace=True, plugin="later")
    monkeypatch.delitem(sys.modules, "mn_fake_library", raising=False)
    registry = CounterRegistry([replaced, later])
    clash = CounterRegistry([Registration("free", (_Block,), plugin="one"),
                             Registration("free", (lazy,), plugin="two")])
    assert registry.counter(_Block).op == "second"
    assert clash.counter(_Block).plugin == "one"  # not known to clash yet
    _fake_library(monkeypatch, "mn_fake_library")
    assert registry.counter(_Block).op == "second"  # the later one still wins
    with pytest.raises(PluginError, match="two free rules: plugin 'one' and plugin 'two'"):
        clash.counter(nn.Identity)


def test_lazy_target_with_a_wrong_name_is_a_plugin_error(monkeypatch):
    _fake_library(monkeypatch, "mn_fake_library")
    registry = CounterRegistry()
    with pytest.raises(PluginError, match="mn_fake_library.Blok: module 'mn_fake_library' has no attribute"):
        registry.add(free(Lazy("mn_fake_library", "Blok")))


def test_lazy_target_is_named_by_its_path():
    assert target_name(Lazy("torchvision.ops.stochastic_depth", "StochasticDepth")) == \
        "torchvision.ops.stochastic_depth.StochasticDepth"
    assert Lazy("mn_no_such_library", "Block").resolve() is None
