"""Meta-tests of the contract, through pluggy: every hook is typed and
documented, micronet calls every hook with the arguments its spec names and
the types its annotations say, and every built-in module with hooks is a
default plugin."""
from __future__ import annotations

import configparser
import importlib
import inspect
import pkgutil
import types
import typing
from pathlib import Path
from typing import Any, Mapping

import pluggy
import pytest
from torch import nn

import micronet.plugin
from micronet import hookspecs
from micronet.manager import DEFAULT_PLUGINS, Registries, get_plugin_manager
from micronet.pipeline import compress
from micronet.plugin import ModelEntry, ReportSection, hookimpl

#: Names a hook's annotations may use: the plugin contract, plus torch.nn and typing.
NAMESPACE = {**vars(micronet.plugin), "nn": nn, "Mapping": Mapping, "Any": Any}


def _specs() -> dict[str, Any]:
    pm = pluggy.PluginManager("micronet")
    pm.add_hookspecs(hookspecs)
    return {name: caller.spec for name, caller in vars(pm.hook).items() if caller.spec is not None}


SPECS = _specs()


def _hints(spec) -> dict[str, Any]:
    return typing.get_type_hints(spec.function, globalns=NAMESPACE)


def _conforms(value: Any, hint: Any) -> bool:
    """Whether ``value`` is of the annotated type (generics checked one level deep)."""
    if hint is Any:
        return True
    if hint is None or hint is type(None):
        return value is None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_conforms(value, option) for option in typing.get_args(hint))
    if origin is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_conforms(v, item) for v in value)
    return isinstance(value, origin or hint)


# ------------------------------------------------------------ typed, documented


def test_every_hook_is_prefixed_typed_and_resolves_to_public_names():
    assert len(SPECS) == 11
    for name, spec in SPECS.items():
        assert name.startswith("micronet_"), name
        signature = inspect.signature(spec.function)
        assert signature.return_annotation is not signature.empty, f"{name} has no return type"
        for arg, parameter in signature.parameters.items():
            assert parameter.annotation is not parameter.empty, f"{name}({arg}) has no type"
        hints = _hints(spec)  # NameError when a type is not importable from micronet.plugin
        assert set(hints) == {*spec.argnames, "return"}, name


def test_every_argument_the_result_and_the_calling_semantics_are_documented():
    for name, spec in SPECS.items():
        doc = inspect.getdoc(spec.function) or ""
        for arg in spec.argnames:
            assert f":param {arg}:" in doc, f"{name} does not document its argument {arg!r}"
        returns = _hints(spec)["return"]
        assert (":return:" in doc) == (returns is not type(None)), f"{name}: :return: iff it returns something"
        words = " ".join(doc.split())
        if spec.opts["firstresult"]:
            assert "first non-None" in words, name
        elif returns is type(None):
            assert "Called on every plugin; what they return is ignored" in words, name
        else:
            assert "All results are collected" in words, name


def test_registration_hooks_take_nothing_and_return_lists_observers_return_nothing():
    for name, spec in SPECS.items():
        returns = _hints(spec)["return"]
        if name.startswith("micronet_register_"):
            assert spec.argnames == () and typing.get_origin(returns) is list, name
        else:
            assert returns is type(None), name


# ------------------------------------------------------- micronet calls them all


class Recorder:
    """A plugin implementing every hook with every argument: it records each
    call with its arguments and returns one tiny model and one report section."""

    def __init__(self):
        self.calls: dict[str, list[dict[str, Any]]] = {}

    def _record(self, name: str, **kwargs) -> None:
        self.calls.setdefault(name, []).append(kwargs)

    @hookimpl
    def micronet_register_models(self):
        self._record("micronet_register_models")
        return [ModelEntry("recorded_tiny", lambda: nn.Sequential(nn.Linear(4, 3)), input_shape=(1, 4))]

    @hookimpl
    def micronet_register_counters(self):
        self._record("micronet_register_counters")
        return []

    @hookimpl
    def micronet_register_rulebooks(self):
        self._record("micronet_register_rulebooks")
        return []

    @hookimpl
    def micronet_register_tracks(self):
        self._record("micronet_register_tracks")
        return []

    @hookimpl
    def micronet_register_steps(self):
        self._record("micronet_register_steps")
        return []

    @hookimpl
    def micronet_register_weighted_layers(self):
        self._record("micronet_register_weighted_layers")
        return []

    @hookimpl
    def micronet_pipeline_started(self, recipe, result):
        self._record("micronet_pipeline_started", recipe=recipe, result=result)

    @hookimpl
    def micronet_step_started(self, index, step, options, model):
        self._record("micronet_step_started", index=index, step=step, options=options, model=model)

    @hookimpl
    def micronet_step_finished(self, index, step, options, result, error):
        self._record("micronet_step_finished", index=index, step=step, options=options, result=result,
                     error=error)

    @hookimpl
    def micronet_pipeline_finished(self, history):
        self._record("micronet_pipeline_finished", history=history)

    @hookimpl
    def micronet_register_report_sections(self):
        self._record("micronet_register_report_sections")
        return [ReportSection("recorded", "Recorded", lambda result: [("layers", str(len(result.records)))])]


def test_the_recorder_implements_every_hook_with_every_argument():
    pm = get_plugin_manager(entry_points=False, extra=[Recorder()])  # pluggy validates the arguments
    for name, spec in SPECS.items():
        (impl,) = [i for i in getattr(pm.hook, name).get_hookimpls() if isinstance(i.plugin, Recorder)]
        assert impl.argnames == spec.argnames, name


def test_a_run_calls_every_hook_with_the_arguments_and_types_of_its_spec(tmp_path):
    recorder = Recorder()
    pm = get_plugin_manager(entry_points=False, extra=[recorder])
    recorder.calls.clear()  # building the manager tries the registration hooks; count the run's calls only
    recipe = {"model": {"spec": "micronet:recorded_tiny", "input": [1, 4]},
              "step": [{"use": "sparsify", "amount": 0.5}, {"use": "quantize", "weight_bits": 8}]}
    history = compress(recipe, registries=Registries.from_manager(pm), out=tmp_path)
    assert set(recorder.calls) == set(SPECS), f"never called: {sorted(set(SPECS) - set(recorder.calls))}"
    for name, calls in recorder.calls.items():
        hints = _hints(SPECS[name])
        for call in calls:
            assert set(call) == set(SPECS[name].argnames), name
            for arg, value in call.items():
                assert _conforms(value, hints[arg]), f"{name}({arg}={value!r}) is not {hints[arg]}"
    assert [c["index"] for c in recorder.calls["micronet_step_finished"]] == [1, 2]
    assert recorder.calls["micronet_pipeline_finished"] == [{"history": history}]
    assert '"Recorded"' in (tmp_path / "history.json").read_text()


def test_what_every_plugin_returns_is_what_the_spec_says():
    pm = get_plugin_manager()  # the built-ins and every installed plugin
    for name, spec in SPECS.items():
        if not name.startswith("micronet_register_"):
            continue
        returns = _hints(spec)["return"]
        for impl in getattr(pm.hook, name).get_hookimpls():
            assert _conforms(impl.function(), returns), f"{impl.plugin_name}.{name} does not return {returns}"


# ----------------------------------------------------------- built-in plugins


def _packages() -> list[str]:
    """The packages setup.cfg installs (micronet, micronet.counters, ...)."""
    config = configparser.ConfigParser()
    config.read(Path(__file__).parents[1] / "setup.cfg")
    return config["options"]["packages"].split()


def _modules_with_hooks() -> set[str]:
    """Every module of the installed packages (and their subpackages) that
    defines a function marked ``@hookimpl`` at module level."""
    found = set()
    for package_name in _packages():
        package = importlib.import_module(package_name)
        names = [package_name] + [info.name for info in pkgutil.walk_packages(package.__path__, f"{package_name}.")
                                  if not info.name.rpartition(".")[2].startswith("__")]  # not __main__: the CLI
        for module_name in names:
            module = importlib.import_module(module_name)
            if any(hasattr(value, "micronet_impl") and getattr(value, "__module__", None) == module_name
                   for value in vars(module).values()):
                found.add(module_name)
    return found


def test_every_built_in_module_with_hooks_is_a_default_plugin():
    with_hooks = _modules_with_hooks()
    assert "micronet.counters.conv" in with_hooks and "micronet.rules" in with_hooks
    assert with_hooks == set(DEFAULT_PLUGINS), (
        f"hooks but not in DEFAULT_PLUGINS: {sorted(with_hooks - set(DEFAULT_PLUGINS))}; "
        f"in DEFAULT_PLUGINS without hooks: {sorted(set(DEFAULT_PLUGINS) - with_hooks)}")


@pytest.mark.parametrize("name", DEFAULT_PLUGINS)
def test_each_default_plugin_implements_only_declared_hooks(name):
    pm = get_plugin_manager(entry_points=False)
    module = pm.get_plugin(name)
    hooks = {n for n, v in vars(module).items() if hasattr(v, "micronet_impl")}
    assert hooks and hooks <= set(SPECS), name


# --------------------------------------------------------- the plugin module


def test_the_plugin_module_is_the_whole_contract_and_documents_it():
    assert micronet.plugin is importlib.import_module("micronet").plugin
    names = set(micronet.plugin.__all__)
    for name in names:
        value = getattr(micronet.plugin, name)
        assert value is not None, name
        if inspect.isclass(value) or inspect.isfunction(value):
            assert inspect.getdoc(value), f"micronet.plugin.{name} is not documented"
    # what each registration hook returns, what counters see and return, the bits and mask contract
    assert names >= {"hookimpl", "ModelEntry", "Registration", "collect", "counter", "shape_rule", "free",
                     "OpCall", "Method", "TensorInfo", "Counts", "Rulebook", "Track", "CompressionStep",
                     "StepOption", "StepContext", "MISSING", "WeightedLayer", "ReportSection", "Result",
                     "set_bits", "bits_of", "declare_storage", "storage_of", "set_mask", "apply_masks",
                     "masks", "MicronetError", "UsageError", "PluginError"}
    guide = micronet.plugin.__doc__
    for name, spec in SPECS.items():
        assert name in guide, f"the micronet.plugin guide does not mention {name}"
    for field in ("dot_products", "dot_length", "sparse_weight", "MISSING", "choices", "check", "original",
                  "notes", "trust", "set_bits", "declare_storage"):
        assert field in guide, field
