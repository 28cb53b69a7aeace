"""Nothing read from a file or a recipe runs code without ``--trust`` (issue 10).

Two doors are tested. A ``torch.export`` archive (``micronet.exportfile``):
crafted archives carry a payload that creates a marker file when torch
unpickles or evaluates it; each is first shown to fire under plain
``torch.export.load``, then shown not to fire under ``micronet audit``. A
spec's factory (``micronet.resolve``): only model factories are called, and
a spec read from a recipe or a step's option imports no code without trust.
"""
from __future__ import annotations

import json
import pathlib
import pickle
import sys
import textwrap
import zipfile

import pytest
import torch
from torch import nn
from torch.export.pt2_archive import PT2ArchiveReader, PT2ArchiveWriter

import micronet.cli
from micronet.audit import audit
from micronet.errors import SpecError, UsageError
from micronet.exportfile import expression_problem
from micronet.resolve import resolve_model
from micronet.steps import StepContext
from micronet.bits import ARCHIVE_FILE as BITS_FILE
from micronet.bits import archive_document, bits_of, declare_storage, set_bits, storage_of

SHAPE = (1, 3, 8, 8)


class Net(nn.Module):
    """conv -> BN -> ReLU -> pool -> linear, with a lifted tensor constant: every
    member kind of a clean archive (weights, buffers, constants)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 3)
        self.offset = torch.arange(3.0)  # neither parameter nor buffer: a constant

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3))) + self.offset


class Touch:
    """Unpickled, it creates ``path``: the payload of the crafted archives."""

    def __init__(self, path: pathlib.Path):
        self.path = path

    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path(self.path),)


def _touching_tensor(tensor: torch.Tensor, marker: pathlib.Path) -> torch.Tensor:
    """A tensor subclass, which torch.export.save pickles (``use_pickle``),
    whose pickle is the payload."""

    class Touching(torch.Tensor):
        def __reduce_ex__(self, protocol):
            return Touch(marker).__reduce__()

    return torch.Tensor._make_subclass(Touching, tensor.detach())


def _exported():
    return torch.export.export(Net().eval(), (torch.randn(SHAPE),))


def _rewrite(source: pathlib.Path, target: pathlib.Path, edit, add=None) -> pathlib.Path:
    """Copy an archive member by member as torch's writer does; ``edit(name,
    data)`` returns new bytes, or None to drop the member; ``add`` more members."""
    reader = PT2ArchiveReader(str(source))
    with PT2ArchiveWriter(str(target)) as writer:
        for name in reader.get_file_names():
            if name.startswith(".data/") or name == "byteorder":  # the writer's own records
                continue
            data = edit(name, reader.read_bytes(name))
            if data is not None:
                writer.write_bytes(name, data)
        for name, data in (add or {}).items():
            writer.write_bytes(name, data)
    return target


def _edit_json(member: str, change):
    def edit(name, data):
        if name != member:
            return data
        document = json.loads(data)
        change(document)
        return json.dumps(document).encode()
    return edit


def _fires_under_torch(path: pathlib.Path, marker: pathlib.Path, run: bool = False) -> bool:
    """Whether plain torch.export.load (and the module's forward, with ``run``) creates ``marker``."""
    try:
        module = torch.export.load(str(path)).module()
        if run:
            module(torch.randn(SHAPE))
    except Exception:
        pass
    fired = marker.exists()
    marker.unlink(missing_ok=True)
    return fired


def _refused(path, capsys, *args) -> str:
    """The one line ``micronet audit`` prints on refusing ``path`` with exit 2."""
    assert micronet.cli.main(["audit", str(path), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


@pytest.fixture
def clean(tmp_path) -> pathlib.Path:
    """A plain torch.export.save archive of :class:`Net`."""
    path = tmp_path / "clean.pt2"
    torch.export.save(_exported(), path)
    return path


@pytest.fixture
def marker(tmp_path) -> pathlib.Path:
    return tmp_path / "PAYLOAD_RAN"


# ----------------------------------------------------------- clean archives


def test_clean_archive_audits_without_trust_like_its_module(clean, capsys):
    model = Net().eval()
    exported = torch.export.export(model, (torch.randn(SHAPE),))
    torch.export.save(exported, clean)
    safe, trusted = audit(str(clean)), audit(str(clean), trust=True)
    assert safe.score.total == trusted.score.total == pytest.approx(audit(model, SHAPE).score.total)
    assert safe.input_shape == SHAPE
    resolved = resolve_model(str(clean))
    x = torch.randn(SHAPE)
    torch.testing.assert_close(resolved.model(x), model(x))  # weights and the constant came through
    assert resolved.exported.example_inputs is None  # the sample inputs were never read
    assert micronet.cli.main(["audit", str(clean)]) == 0


def test_torchvision_archive_audits_without_trust(tmp_path):
    import torchvision

    model = torchvision.models.resnet18(num_classes=10).eval()
    torch.export.save(torch.export.export(model, (torch.randn(1, 3, 32, 32),)), tmp_path / "r18.pt2")
    safe = audit(str(tmp_path / "r18.pt2"))
    assert safe.score.total == audit(str(tmp_path / "r18.pt2"), trust=True).score.total
    assert safe.score.total == pytest.approx(audit(model, (1, 3, 32, 32)).score.total)


def test_archive_as_micronet_writes_it_keeps_its_bit_widths(tmp_path):
    model = Net().eval()
    set_bits(model.fc, weight=4)
    declare_storage(model.fc, "codebook", elements=16, bits=32)
    exported = torch.export.export(model, (torch.randn(SHAPE),), strict=False)
    torch.export.save(exported, tmp_path / "model.pt2", extra_files={BITS_FILE: archive_document(model)})
    resolved = resolve_model(str(tmp_path / "model.pt2"))
    assert bits_of(resolved.model.fc) == {"weight": 4}
    assert storage_of(resolved.model.fc) == {"codebook": (16, 32)}
    assert audit(str(tmp_path / "model.pt2")).score.total == pytest.approx(audit(model, SHAPE).score.total)


def test_bit_widths_file_sets_only_bit_widths(clean, tmp_path):
    bits = {"fc": {"micronet_weight_bits": 4, "forward": 1, "micronet_input_bits": "8"}}
    path = tmp_path / "bits.pt2"
    torch.export.save(_exported(), path, extra_files={BITS_FILE: json.dumps(bits)})
    fc = resolve_model(str(path)).model.fc  # the layout written before micronet.bits: still read
    assert bits_of(fc) == {"weight": 4} and not hasattr(fc, "micronet_weight_bits")
    assert callable(fc.forward)


def test_dynamic_shapes_still_load(tmp_path):
    batch = torch.export.Dim("batch", min=2, max=64)
    exported = torch.export.export(Net().eval(), (torch.randn(4, 3, 8, 8),), dynamic_shapes={"x": {0: batch}})
    torch.export.save(exported, tmp_path / "dynamic.pt2")
    assert resolve_model(str(tmp_path / "dynamic.pt2")).model(torch.randn(3, 3, 8, 8)).shape == (3, 3)


# ---------------------------------------------------------- crafted archives


def test_pickled_weight_is_refused(tmp_path, marker, capsys):
    exported = _exported()
    exported.state_dict["fc.weight"] = nn.Parameter(_touching_tensor(exported.state_dict["fc.weight"], marker))
    path = tmp_path / "evil.pt2"
    torch.export.save(exported, path)
    assert _fires_under_torch(path, marker)
    err = _refused(path, capsys)
    assert "weight 'fc.weight' pickled" in err and "--trust" in err and "trust = true" in err
    assert not marker.exists()
    renamed = path.rename(tmp_path / "state.pt")  # recognised by content, not by name
    assert "--trust" in _refused(renamed, capsys) and not marker.exists()


def test_pickled_tensor_constant_is_refused(tmp_path, marker, capsys):
    exported = _exported()
    exported.constants["offset"] = _touching_tensor(exported.constants["offset"], marker)
    path = tmp_path / "evil.pt2"
    torch.export.save(exported, path)
    assert _fires_under_torch(path, marker)
    assert "constant 'offset' pickled" in _refused(path, capsys) and not marker.exists()


def test_pickled_object_constant_is_refused(clean, tmp_path, marker, capsys):
    """An opaque object constant, as torch writes one: ``pickle.dumps`` under ``opaque_obj_N``."""
    config = "data/constants/model_constants_config.json"

    entry = {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": True, "tensor_meta": None}
    path = _rewrite(clean, tmp_path / "evil.pt2",
                    _edit_json(config, lambda document: document["config"].update(evil=entry)),
                    add={"data/constants/opaque_obj_0": pickle.dumps(Touch(marker), protocol=2)})
    assert _fires_under_torch(path, marker)
    assert "pickled Python object" in _refused(path, capsys) and not marker.exists()


def test_pickled_sample_inputs_are_never_read(tmp_path, marker, capsys):
    exported = _exported()
    exported._example_inputs = ((Touch(marker),), {})
    path = tmp_path / "evil.pt2"
    torch.export.save(exported, path)
    assert _fires_under_torch(path, marker)
    assert micronet.cli.main(["audit", str(path)]) == 0  # the inputs are not needed: ignored
    assert not marker.exists()
    assert micronet.cli.main(["audit", str(path.rename(tmp_path / "state.pt"))]) == 0
    assert not marker.exists()


def test_older_pickled_layout_is_refused(clean, tmp_path, capsys):
    path = _rewrite(clean, tmp_path / "old.pt2", lambda name, data: data, add={"data/weights/model.pt": b"PK"})
    assert "older layout" in _refused(path, capsys)


def test_code_in_a_symbolic_shape_is_refused(clean, tmp_path, marker, capsys):
    payload = f"__import__('pathlib').Path({str(marker)!r}).touch() or 1"

    def change(program):
        sizes = next(iter(program["graph_module"]["graph"]["tensor_values"].values()))["sizes"]
        sizes[0] = {"as_expr": {"expr_str": payload, "hint": {"as_int": 1}}}

    path = _rewrite(clean, tmp_path / "evil.pt2", _edit_json("models/model.json", change))
    assert _fires_under_torch(path, marker)
    err = _refused(path, capsys)
    assert "symbolic shape" in err and "--trust" in err and not marker.exists()


def test_a_spec_naming_a_module_to_import_is_refused(clean, tmp_path, marker, capsys, monkeypatch):
    (tmp_path / "payload_module_xyz.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "payload_module_xyz", raising=False)

    def change(program):
        signature = program["graph_module"]["module_call_graph"][0]["signature"]
        protocol, spec = json.loads(signature["in_spec"])
        enum = {"__enum__": True, "fqn": "payload_module_xyz:E", "name": "A"}
        spec["children_spec"][1]["context"] = json.dumps([enum])
        signature["in_spec"] = json.dumps([protocol, spec])

    path = _rewrite(clean, tmp_path / "evil.pt2", _edit_json("models/model.json", change))
    assert _fires_under_torch(path, marker)
    sys.modules.pop("payload_module_xyz", None)
    assert "payload_module_xyz" in _refused(path, capsys) and not marker.exists()
    assert "payload_module_xyz" not in sys.modules


def test_a_graph_calling_a_non_operator_is_refused(clean, tmp_path, marker, capsys):
    """Node targets resolve by attribute from ``torch``; torch's verifier refuses non-operators."""
    def change(program):
        node = program["graph_module"]["graph"]["nodes"][0]
        node["target"] = "torch.serialization.os.system"
        node["inputs"] = [{"name": "command", "arg": {"as_string": f"touch {marker}"}, "kind": 1}]

    path = _rewrite(clean, tmp_path / "evil.pt2", _edit_json("models/model.json", change))
    assert "not an allowed operator" in _refused(path, capsys) and not marker.exists()


def test_guard_code_never_runs(tmp_path, marker):
    """Guards are compiled into the forward of a module whose archive has sample inputs."""
    exported = _exported()
    path = tmp_path / "guards.pt2"
    torch.export.save(exported, path)
    payload = f"__import__('pathlib').Path({str(marker)!r}).touch() is None"
    path = _rewrite(path, tmp_path / "evil.pt2",
                    _edit_json("models/model.json", lambda program: program.update(guards_code=[payload])))
    assert _fires_under_torch(path, marker, run=True)
    resolve_model(str(path)).model(torch.randn(SHAPE))
    assert audit(str(path)).score.total > 0 and not marker.exists()


def test_trust_loads_the_archive_as_torch_does(tmp_path, marker):
    exported = _exported()
    exported.state_dict["fc.weight"] = nn.Parameter(_touching_tensor(exported.state_dict["fc.weight"], marker))
    torch.export.save(exported, tmp_path / "evil.pt2")
    with pytest.raises(SpecError):
        resolve_model(str(tmp_path / "evil.pt2"), trust=True)  # unpickled (the payload ran), then torch fails
    assert marker.exists()


@pytest.mark.parametrize("content, message", [
    (lambda clean: clean.read_bytes()[:3000], "not a zip file"),
    (lambda clean: b"\x00garbage" * 100, "not a zip file"),
    (lambda clean: b"", "not a zip file"),
    (None, "not a readable torch.export archive"),
])
def test_corrupt_archives_give_one_line(clean, tmp_path, capsys, content, message):
    path = tmp_path / "broken.pt2"
    if content is None:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("broken/archive_format", "pt2")
    else:
        path.write_bytes(content(clean))
    for args in ((), ("--trust",)):
        err = _refused(path, capsys, *args)
        assert message in err and "miniz" not in err


def test_archive_without_a_program(clean, tmp_path, capsys):
    path = _rewrite(clean, tmp_path / "empty.pt2",
                    lambda name, data: None if name.startswith("models/") else data)
    assert "holds no exported program" in _refused(path, capsys)


@pytest.mark.parametrize("text", [
    "Mul(Integer(12), Symbol('s26', positive=True, integer=True))",
    "FloorDiv(Symbol('s0', integer=True), Integer(2))",
    "Max(1, 2*s0) >= s1 + 3", "Float('1.50000000000000', precision=53)*s0", "-oo", "s0**2 // 4 % u1",
    "Piecewise((1, StrictLessThan(s0, 2)), (0, true))",
])
def test_plain_symbolic_shapes_pass(text):
    assert expression_problem(text) is None


@pytest.mark.parametrize("text", [
    "__import__('os').system('x')", "eval(chr(49))", "exec", "sympify(Symbol('x'))",
    "Max('__import__(1)', 1)", "Max(('x',), 1)", "Symbol('a b')", "Float('1e5; x')", "S.Half",
    "Symbol('x', positive='yes')", "Integer(1)[0]", "lambda: 1", "s0 if s1 else s2", "x = 1",
    "Mul(**{})", "Integer(1)(2)", "b'1'",
])
def test_other_expressions_are_refused(text):
    assert expression_problem(text)


# ----------------------------------------------------------------- factories


NOT_FACTORIES = {  # spec -> what it would do if called
    "os:system": "command='touch {marker}'",
    "subprocess:run": "args='touch {marker}'&shell=true",
    "builtins:exec": "source=\"open(r'{marker}', 'w')\"",
    "builtins:eval": "source=\"open(r'{marker}', 'w')\"",
    "shutil:rmtree": "path='{folder}'",
    "torch:load": "f='{pickle}'&weights_only=false",
    "pathlib:Path": "",
    "pathlib:Path.touch": "self='{marker}'",
    "torch.hub:load": "repo_or_dir='{folder}'&model='x'",
}


def _not_a_factory(spec: str, tmp_path: pathlib.Path, marker: pathlib.Path) -> str:
    folder = tmp_path / "keep"
    folder.mkdir(exist_ok=True)
    torch.save(Touch(marker), tmp_path / "payload.pt")
    query = NOT_FACTORIES[spec].format(marker=str(marker), folder=folder, pickle=tmp_path / "payload.pt")
    return f"{spec}?{query}" if query else spec


@pytest.mark.parametrize("spec", sorted(NOT_FACTORIES))
def test_cli_calls_only_model_factories(spec, tmp_path, marker, capsys):
    full = _not_a_factory(spec, tmp_path, marker)
    for args in ((), ("--trust",)):
        err = _refused(full, capsys, *args)
        assert "not a model factory" in err and "function or class that returns an nn.Module" in err
    assert not marker.exists() and (tmp_path / "keep").is_dir()


@pytest.mark.parametrize("spec", sorted(NOT_FACTORIES))
def test_recipe_specs_run_no_code_without_trust(spec, tmp_path, marker):
    full = _not_a_factory(spec, tmp_path, marker)
    with pytest.raises(SpecError, match=r"r\.toml names the model .*--trust \(recipe: trust = true\)"):
        resolve_model(full, origin="r.toml")
    with pytest.raises(SpecError, match="not a model factory"):
        resolve_model(full, origin="r.toml", trust=True)
    assert not marker.exists() and (tmp_path / "keep").is_dir()


def test_recipe_spec_is_refused_before_any_work(tmp_path, marker, monkeypatch):
    import micronet.pipeline

    def no_audit(*args, **kwargs):
        raise AssertionError("audit ran")

    monkeypatch.setattr(micronet.pipeline, "audit", no_audit)
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'[model]\nspec = "os:system?command=\'touch {marker}\'"\n')
    with pytest.raises(UsageError, match="r.toml.*--trust"):
        micronet.pipeline.compress(str(recipe))
    with pytest.raises(UsageError, match="not a model factory"):
        micronet.pipeline.compress(str(recipe), trust=True)
    assert not marker.exists()


@pytest.fixture
def factories(tmp_path):
    """A model file with the factory shapes a user writes, good and bad."""
    path = tmp_path / "factories.py"
    path.write_text(textwrap.dedent("""
        from __future__ import annotations

        import functools

        from torch import nn

        def plain(width=4):
            return nn.Linear(width, 2)

        def annotated(width=4) -> nn.Module:
            return nn.Linear(width, 2)

        def returns_text() -> str:
            return "not a model"

        class Zoo:
            @classmethod
            def build(cls, width=4) -> nn.Sequential:
                return nn.Sequential(nn.Linear(width, 2))

        wide = functools.partial(plain, width=8)
    """))
    return path


def test_real_factories_still_build(factories):
    for spec, kind in [(f"{factories}:plain", nn.Linear), (f"{factories}:annotated?width=3", nn.Linear),
                       (f"{factories}:Zoo.build", nn.Sequential), (f"{factories}:wide", nn.Linear),
                       ("micronet:resnet18_cifar", nn.Module), ("torchvision:resnet18", nn.Module),
                       ("torchvision.models:resnet18", nn.Module),
                       ("torch.nn:Linear?in_features=3&out_features=2", nn.Linear)]:
        assert isinstance(resolve_model(spec).model, kind), spec
    assert resolve_model(f"{factories}:wide").model.in_features == 8
    with pytest.raises(SpecError, match="returning str, not a model factory"):
        resolve_model(f"{factories}:returns_text")


def test_recipe_may_name_code_only_with_trust(factories):
    spec = f"{factories}:plain"
    with pytest.raises(SpecError, match="would run code from that file"):
        resolve_model(spec, origin="r.toml")
    assert isinstance(resolve_model(spec, origin="r.toml", trust=True).model, nn.Linear)
    for safe in ("resnet18", "torchvision:resnet18", "micronet:resnet18_cifar"):
        assert isinstance(resolve_model(safe, origin="r.toml").model, nn.Module)


def test_distill_teacher_spec_follows_the_recipe_trust(factories, marker):
    from micronet.plugins.finetune import _teacher

    options = {"teacher": f"{factories}:plain", "teacher_weights": ""}
    with pytest.raises(SpecError, match="distill step's teacher.*--trust"):
        _teacher(options, StepContext(SHAPE, None))
    assert isinstance(_teacher(options, StepContext(SHAPE, None, trust=True)), nn.Linear)
    options = {"teacher": f"os:system?command='touch {marker}'", "teacher_weights": ""}
    with pytest.raises(SpecError, match="not a model factory"):
        _teacher(options, StepContext(SHAPE, None, trust=True))
    assert not marker.exists()


def test_partial_of_a_builtin_is_not_a_factory(tmp_path, marker):
    path = tmp_path / "sneaky.py"
    path.write_text(f"import functools, os\nrun = functools.partial(os.system, 'touch {marker}')\n")
    with pytest.raises(SpecError, match="the built-in function .*system, not a model factory"):
        resolve_model(f"{path}:run")
    assert not marker.exists()
