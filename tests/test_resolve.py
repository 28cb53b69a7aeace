"""Model specs -> models (``micronet.resolve``): every spec form and every error path.

Built-ins are passed as an explicit ``models=`` mapping built from the
``micronet.models`` hook, so these tests do not depend on the other plugins.
"""
from __future__ import annotations

import sys
import textwrap

import pytest
import torch
import torchvision.models
from torch import nn

import micronet.manager
from micronet.errors import SpecError
from micronet.models import micronet_register_models
from micronet.resolve import (ModelEntry, ResolvedModel, load_weights, parse_spec, parse_value,
                              resolve_model, save_with_spec)

MODELS = {entry.name: entry for entry in micronet_register_models()}
FIXTURE_MODULE = "micronet_resolve_fixture_models"


class Tiny(nn.Module):
    """A conv-BN-linear net small enough to export, save and compare quickly."""

    def __init__(self, width: int = 4, num_classes: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


def resolve(spec, **kwargs) -> ResolvedModel:
    return resolve_model(spec, models=MODELS, **kwargs)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def same_state(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture
def fixture_module(tmp_path, monkeypatch):
    """An importable module of factories, good and bad, on a temporary sys.path."""
    (tmp_path / f"{FIXTURE_MODULE}.py").write_text(textwrap.dedent("""
        import torch.nn as nn

        def tiny(width=4, num_classes=3):
            return nn.Sequential(nn.Conv2d(3, width, 3), nn.Flatten(), nn.LazyLinear(num_classes))

        def returns_int():
            return 3

        NOT_CALLABLE = 3
        instance = nn.Linear(2, 2)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield FIXTURE_MODULE
    sys.modules.pop(FIXTURE_MODULE, None)


@pytest.fixture
def net_file(tmp_path):
    """A model file loaded by path; it imports a sibling helper module."""
    (tmp_path / "helper_for_net_file.py").write_text("WIDTH = 5\n")
    path = tmp_path / "net.py"
    path.write_text(textwrap.dedent("""
        import torch.nn as nn
        from helper_for_net_file import WIDTH

        class Net(nn.Module):
            def __init__(self, width=WIDTH, num_classes=10):
                super().__init__()
                self.conv = nn.Conv2d(3, width, 3)
                self.fc = nn.Linear(width, num_classes)
    """))
    yield path
    sys.modules.pop("helper_for_net_file", None)


# --------------------------------------------------------------------- parse


def test_parse_spec_forms():
    assert parse_spec("resnet18") == ("name", "resnet18", {})
    assert parse_spec("torchvision:mobilenet_v2?width_mult=1.4&num_classes=100") == (
        "torchvision", "mobilenet_v2", {"width_mult": 1.4, "num_classes": 100})
    assert parse_spec("micronet:densenet_cifar?growth_rate=4") == (
        "micronet", "densenet_cifar", {"growth_rate": 4})
    assert parse_spec("pkg.mod:make_net?x=1") == ("python", "pkg.mod:make_net", {"x": 1})
    assert parse_spec("models/net.py:Net") == ("file", "models/net.py:Net", {})
    assert parse_spec("C:/runs/net.py:Net") == ("file", "C:/runs/net.py:Net", {})
    assert parse_spec("runs/model.pt") == ("path", "runs/model.pt", {})
    assert parse_spec("model.pt2")[0] == "path"


def test_parse_values():
    assert parse_spec("m?a=1&b=2.5&c=true&d=False&e=none&f=(1,2)&g=relu&h='8'")[2] == {
        "a": 1, "b": 2.5, "c": True, "d": False, "e": None, "f": (1, 2), "g": "relu", "h": "8"}
    assert parse_value("%26") == "%26"  # parse_value itself does not unquote; the query does
    assert parse_spec("m?s=a%26b")[2] == {"s": "a&b"}
    assert parse_value("[1, 2]") == [1, 2]


@pytest.mark.parametrize("spec, message", [
    ("", "empty model spec"),
    ("resnet18?width", "bad keyword argument 'width'"),
    ("resnet18?1x=2", "bad keyword argument"),
    ("resnet18?a=1&a=2", "given twice"),
    ("net.py", "names a Python file but no factory"),
    ("foo bar", "bad model spec"),
    ("torchvision:", "bad model name"),
    ("not a module:factory", "neither a module name nor a .py file"),
])
def test_parse_errors(spec, message):
    with pytest.raises(SpecError, match=message):
        parse_spec(spec)


# --------------------------------------------------------------- torchvision


def test_bare_torchvision_name_builds_on_meta():
    resolved = resolve("resnet18")
    assert (resolved.source, resolved.name, resolved.on_meta) == ("torchvision", "torchvision:resnet18", True)
    assert next(resolved.model.parameters()).is_meta
    assert n_params(resolved.model) == 11_689_512
    assert resolved.input_shape == (1, 3, 224, 224)
    assert not resolved.model.training


def test_prefixed_torchvision_with_kwargs():
    resolved = resolve("torchvision:mobilenet_v2?width_mult=1.4")
    assert resolved.name == "torchvision:mobilenet_v2(width_mult=1.4)"
    assert dict(resolved.kwargs) == {"width_mult": 1.4}
    # torchvision's MobileNetV2(width_mult=1.4), 1000 classes: 6.11M (RULES.md), not the paper's 6.9M
    assert n_params(resolved.model) == 6_108_776
    # 3,504,872 at 1000 classes; the classifier loses (1280 + 1) * 900
    assert n_params(resolve("torchvision:mobilenet_v2?num_classes=100").model) == 3_504_872 - 1281 * 900


def test_real_init_when_asked():
    resolved = resolve("torchvision:squeezenet1_1?num_classes=10", meta=False)
    assert not resolved.on_meta and not next(resolved.model.parameters()).is_meta


def test_factory_that_reads_tensors_still_builds_on_meta():
    """RegNet computes its widths with real tensors; parameters still land on meta."""
    resolved = resolve("regnet_x_400mf")
    assert resolved.on_meta
    assert all(t.is_meta for t in [*resolved.model.parameters(), *resolved.model.buffers()])
    assert n_params(resolved.model) == 5_495_976
    assert nn.Module.register_parameter.__qualname__ == "Module.register_parameter"  # restored


def test_meta_on_registration_changes_no_class_attribute(tmp_path):
    """The meta-on-register build uses torch's registration hooks: nn.Module's
    methods stay as they are while the factory runs, and the hooks go after."""
    (tmp_path / "reads.py").write_text(
        "import torch\nfrom torch import nn\n"
        "SEEN = []\n"
        "def make():\n"
        "    width = int(torch.tensor(3).item())  # needs a real tensor: fails on plain meta\n"
        "    SEEN.append((vars(nn.Module)['register_parameter'], vars(nn.Module)['register_buffer']))\n"
        "    return nn.Sequential(nn.Linear(4, width), nn.BatchNorm1d(width))\n")
    originals = (vars(nn.Module)["register_parameter"], vars(nn.Module)["register_buffer"])
    resolved = resolve(f"{tmp_path / 'reads.py'}:make")
    assert resolved.on_meta and all(t.is_meta for t in [*resolved.model.parameters(), *resolved.model.buffers()])
    seen = sys.modules[next(m for m in sys.modules if m.startswith("micronet_user_reads_"))].SEEN
    assert seen and all(pair == originals for pair in seen)
    assert not nn.Linear(2, 2).weight.is_meta and not nn.BatchNorm1d(2).running_mean.is_meta  # hooks removed


def test_detection_builder_never_downloads(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", no_network)
    resolved = resolve("fasterrcnn_mobilenet_v3_large_320_fpn?num_classes=3")
    assert resolved.on_meta and resolved.input_shape is None
    assert dict(resolved.kwargs) == {"num_classes": 3}
    assert resolve("torchvision.models.detection:fcos_resnet50_fpn").source == "python"


@pytest.mark.parametrize("spec", [
    "torchvision:resnet18?weights=DEFAULT",
    "resnet18?weights='IMAGENET1K_V1'",
    "resnet18?pretrained=true",
    "fasterrcnn_resnet50_fpn?weights_backbone=DEFAULT",
    "torchvision.models:resnet18?weights=DEFAULT",
])
def test_download_kwargs_are_refused(spec):
    with pytest.raises(SpecError, match="would download pretrained weights.*--weights FILE"):
        resolve(spec)


def test_harmless_download_kwargs_are_accepted():
    assert resolve("resnet18?weights=None").on_meta
    assert resolve("fasterrcnn_mobilenet_v3_large_320_fpn?weights_backbone=none").on_meta


# ------------------------------------------------------------------ built-ins


def test_builtin_with_kwargs():
    resolved = resolve("micronet:densenet_cifar?growth_rate=4&num_classes=100")
    assert (resolved.source, resolved.input_shape) == ("builtin", (1, 3, 32, 32))
    assert resolved.name == "micronet:densenet_cifar(growth_rate=4, num_classes=100)"
    assert resolved.model.linear.out_features == 100 and resolved.on_meta


def test_bare_builtin_name_after_torchvision():
    assert resolve("wrn_28_10").source == "builtin"
    assert n_params(resolve("wrn_28_10").model) == 36_536_884


def test_default_builtins_come_from_the_plugins_lazily(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("plugin manager built")

    monkeypatch.setattr(micronet.manager, "default_registries", fail)
    assert resolve_model("resnet18").source == "torchvision"  # no built-ins needed

    class Fake:
        models = {"mine": ModelEntry("mine", lambda: nn.Linear(2, 3), input_shape=(1, 2))}

    monkeypatch.setattr(micronet.manager, "default_registries", lambda: Fake())
    resolved = resolve_model("micronet:mine")
    assert resolved.model.out_features == 3 and resolved.input_shape == (1, 2)


# ------------------------------------------------------------ python and file


def test_module_factory(fixture_module):
    resolved = resolve(f"{fixture_module}:tiny?width=6&num_classes=5")
    assert resolved.source == "python"
    assert resolved.model[0].out_channels == 6 and resolved.on_meta
    assert resolved.name == f"{fixture_module}:tiny(width=6, num_classes=5)"


def test_module_attribute_that_is_a_module_instance(fixture_module):
    resolved = resolve(f"{fixture_module}:instance")
    assert isinstance(resolved.model, nn.Linear) and not resolved.on_meta
    with pytest.raises(SpecError, match="takes no keyword arguments"):
        resolve(f"{fixture_module}:instance?x=1")


def test_file_factory_does_not_keep_sys_path(net_file):
    before = list(sys.path)
    resolved = resolve(f"{net_file}:Net?num_classes=7")
    assert sys.path == before
    assert resolved.source == "file" and resolved.name == "net.py:Net(num_classes=7)"
    assert resolved.model.conv.out_channels == 5 and resolved.model.fc.out_features == 7


def test_nn_module_is_returned_in_eval_mode():
    model = Tiny().train()
    resolved = resolve_model(model)
    assert resolved.model is model and not model.training
    assert (resolved.source, resolved.on_meta, resolved.name) == ("python", False, "Tiny")


# ---------------------------------------------------------------- saved files


def test_state_dict_and_spec_round_trip(tmp_path):
    spec = "micronet:densenet_cifar?growth_rate=2"
    original = resolve(spec, meta=False).model
    path = save_with_spec(original, spec, tmp_path / "dense.pt")
    resolved = resolve(str(path))
    assert (resolved.source, resolved.on_meta, resolved.input_shape) == ("state_dict", False, (1, 3, 32, 32))
    assert resolved.spec == str(path) and resolved.name == "micronet:densenet_cifar(growth_rate=2)"
    assert same_state(resolved.model, original)
    assert not list(tmp_path.glob(".*tmp"))  # the atomic write left nothing behind


def test_saved_spec_that_runs_user_code_needs_trust(tmp_path, fixture_module):
    spec = f"{fixture_module}:tiny?width=2"
    model = resolve(spec, meta=False).model
    model(torch.zeros(1, 3, 5, 5))  # materialise the lazy layer
    path = save_with_spec(model, spec, tmp_path / "tiny.pt")
    with pytest.raises(SpecError, match="would run code.*--trust"):
        resolve(str(path))
    assert same_state(resolve(str(path), trust=True).model, model)


def test_weights_with_dataparallel_prefix(tmp_path):
    spec = "torchvision:mobilenet_v3_small?num_classes=4"
    trained = resolve(spec, meta=False).model
    for p in trained.parameters():
        nn.init.normal_(p)
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in trained.state_dict().items()}},
               tmp_path / "ckpt.pth")
    resolved = resolve(spec, weights=tmp_path / "ckpt.pth")
    assert not resolved.on_meta and not resolved.model.training
    assert same_state(resolved.model, trained)


def test_weights_into_a_meta_module_are_assigned(tmp_path):
    source = Tiny()
    torch.save(source.state_dict(), tmp_path / "w.pt")
    with torch.device("meta"):
        model = Tiny()
    resolved = resolve_model(model, weights=tmp_path / "w.pt")
    assert not resolved.on_meta and not resolved.model.fc.weight.is_meta
    assert same_state(resolved.model, source)


def test_export_archive_round_trip(tmp_path):
    model, x = Tiny().eval(), torch.randn(1, 3, 8, 8)
    torch.export.save(torch.export.export(model, (x,)), tmp_path / "tiny.pt2")
    resolved = resolve(str(tmp_path / "tiny.pt2"))
    assert resolved.source == "export" and resolved.input_shape == (1, 3, 8, 8)
    assert isinstance(resolved.exported, torch.export.ExportedProgram)
    torch.testing.assert_close(resolved.model(x), model(x))
    (tmp_path / "tiny.pt2").rename(tmp_path / "tiny.bin")  # recognised by content too
    assert resolve(str(tmp_path / "tiny.bin")).source == "export"


def test_pickled_module_needs_trust(tmp_path):
    torch.save(nn.Sequential(nn.Linear(2, 2), nn.ReLU()), tmp_path / "whole.pt")
    with pytest.raises(SpecError, match="arbitrary code.*--trust") as caught:
        resolve(str(tmp_path / "whole.pt"))
    assert caught.value.__cause__ is not None
    resolved = resolve(str(tmp_path / "whole.pt"), trust=True)
    assert resolved.source == "pickle" and isinstance(resolved.model, nn.Sequential)
    assert not resolved.model.training


# --------------------------------------------------------------------- errors


@pytest.mark.parametrize("spec, message", [
    ("resnet19", "unknown model 'resnet19'; did you mean: resnet18"),
    ("torchvision:densenet_cifar", "unknown model 'torchvision:densenet_cifar'"),
    ("micronet:densenet", "unknown model 'micronet:densenet'; did you mean: densenet_cifar"),
    ("micronet:zzz", "built-in models: densenet_cifar, digits_cnn, mobilenet_v2_cifar"),
])
def test_unknown_names_suggest_close_matches(spec, message):
    with pytest.raises(SpecError, match=message):
        resolve(spec)


@pytest.mark.parametrize("spec, message", [
    ("micronet:densenet_cifar?growth=4", "unknown keyword argument 'growth'.*did you mean 'growth_rate'"),
    ("resnet18?foo=1", "unknown keyword argument 'foo'"),
    ("micronet:wrn_28_10?depth=27", "failed to build: ValueError: WideResNet depth must be 6n\\+4"),
])
def test_bad_kwargs_name_the_argument(spec, message):
    with pytest.raises(SpecError, match=message) as caught:
        resolve(spec)
    assert caught.value.__cause__ is not None


def test_missing_argument_is_named(fixture_module, tmp_path):
    (tmp_path / "needs.py").write_text("def make(width):\n    raise AssertionError\n")
    with pytest.raises(SpecError, match="needs the argument 'width'.*\\?width=VALUE"):
        resolve(f"{tmp_path / 'needs.py'}:make")


@pytest.mark.parametrize("spec, weights, message", [
    ("nowhere/model.pt", None, "no such file: nowhere/model.pt"),
    ("nowhere/net.py:Net", None, "no such file: nowhere/net.py"),
    ("resnet18", "nowhere/w.pt", "no such weights file"),
])
def test_missing_files(spec, weights, message):
    with pytest.raises(SpecError, match=message):
        resolve(spec, weights=weights)


def test_bad_weights_files(tmp_path):
    (tmp_path / "junk.pt").write_text("not a torch file")
    with pytest.raises(SpecError, match="cannot read junk.pt") as caught:
        resolve("micronet:resnet18_cifar", weights=tmp_path / "junk.pt")
    assert caught.value.__cause__ is not None
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(SpecError, match="does not hold a state dict"):
        resolve("micronet:resnet18_cifar", weights=tmp_path / "list.pt")
    torch.save(Tiny().state_dict(), tmp_path / "bare.pt")
    with pytest.raises(SpecError, match="state dict without a model spec.*--weights"):
        resolve(str(tmp_path / "bare.pt"))


def test_mismatched_state_dicts(tmp_path):
    state = Tiny().state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["fc.bias"]
    torch.save(state, tmp_path / "keys.pt")
    with pytest.raises(SpecError, match="1 missing key \\(fc.bias\\); 1 unexpected key \\(extra.weight\\)"):
        load_weights(Tiny(), tmp_path / "keys.pt")
    torch.save(Tiny(num_classes=5).state_dict(), tmp_path / "shape.pt")
    with pytest.raises(SpecError, match="size mismatch for fc.weight"):
        resolve_model(Tiny(), weights=tmp_path / "shape.pt")


def test_factories_that_do_not_give_a_module(fixture_module):
    with pytest.raises(SpecError, match="returned a int, not an nn.Module"):
        resolve(f"{fixture_module}:returns_int")
    with pytest.raises(SpecError, match="NOT_CALLABLE is a int, not callable"):
        resolve(f"{fixture_module}:NOT_CALLABLE")
    with pytest.raises(SpecError, match="has no attribute 'tinny'.*did you mean: tiny"):
        resolve(f"{fixture_module}:tinny")


def test_files_and_modules_that_fail_to_load(tmp_path, monkeypatch):
    (tmp_path / "broken.py").write_text("def make(:\n    pass\n")
    with pytest.raises(SpecError, match="syntax error in broken.py line 1") as caught:
        resolve(f"{tmp_path / 'broken.py'}:make")
    assert isinstance(caught.value.__cause__, SyntaxError)
    assert not [name for name in sys.modules if name.startswith("micronet_user_broken")]
    (tmp_path / "raises_on_import.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(SpecError, match="cannot import module 'raises_on_import'.*no_such_dependency_xyz"):
        resolve("raises_on_import:make")
    with pytest.raises(SpecError, match="'no_such_package_xyz.models': ModuleNotFoundError"):
        resolve("no_such_package_xyz.models:make")


def test_option_conflicts(tmp_path):
    with pytest.raises(SpecError, match="meta=True cannot take weights"):
        resolve("resnet18", weights=tmp_path / "w.pt", meta=True)
    with pytest.raises(SpecError, match="keyword arguments do not apply"):
        resolve("model.pt?x=1")
    with pytest.raises(SpecError, match="string or an nn.Module"):
        resolve(42)
    with pytest.raises(SpecError, match="meta device"):
        save_with_spec(resolve("micronet:densenet_cifar").model, "micronet:densenet_cifar", tmp_path / "m.pt")
