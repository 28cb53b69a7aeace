"""Malformed input is a one-line usage error through ``micronet.cli.main``:
exit code 2, ``micronet: error: MESSAGE (hint: FIX)``, nothing raw that a
terminal would act on. Plugins that break are left out, not fatal."""
import sys
import types
import unicodedata
import warnings

import pytest
from conftest import add_entry_point
import torch
from torch import nn

import micronet
from micronet import cli
from micronet.cli import main
from micronet.training.data import load_dataset
from micronet.errors import PluginError, SpecError, UsageError
from micronet.manager import (DISABLE_ENV, Registries, UnknownPluginWarning, default_registries,
                              describe_plugins, get_plugin_manager, hookimpl)
from micronet.recipe import parse_recipe

TINY = ("from torch import nn\n"
        "def make():\n"
        "    return nn.Sequential(nn.Conv2d(3, 4, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))\n")


def _raw_controls(text: str) -> list[str]:
    return [c for c in text if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") and c != "\n"]


def one_line_error(capsys, *argv, code: int = 2, hint: bool = True) -> str:
    """Run the CLI, check the exit code and that stderr is one printable
    error line (with a hint); returns that line."""
    assert main(list(argv)) == code
    err = capsys.readouterr().err
    assert err.startswith("micronet: error: ") and err.endswith("\n"), err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert _raw_controls(err) == [], err
    if hint:
        assert " (hint: " in err, err
    return err.strip()


@pytest.fixture
def tiny(tmp_path):
    """A file spec of a 1x1 conv and a linear layer (input 3xHxW, 10 classes), fast to audit."""
    (tmp_path / "tiny.py").write_text(TINY)
    return f"{tmp_path / 'tiny.py'}:make"


# ------------------------------------------------------------------ the error line itself


def test_an_error_message_with_line_breaks_and_escapes_prints_as_one_line(capsys, monkeypatch):
    def hostile(args):
        raise SpecError("model 'evil\x1b]0;pwned\x07\nfake: line'\r\u202eok", hint="a\nb")

    monkeypatch.setattr(cli, "run_audit", hostile)
    line = one_line_error(capsys, "audit", "x")
    assert line == ("micronet: error: model 'evil\\x1b]0;pwned\\x07\\nfake: line'\\r\\u202eok "
                    "(hint: a\\nb)")


def test_a_hostile_file_name_in_a_spec_error_is_escaped(capsys, tmp_path):
    path = tmp_path / "evil\x1b]0;pwned\x07\nname.py"
    path.write_text(TINY)
    line = one_line_error(capsys, "audit", f"{path}:nofactory", "--quiet")
    assert "evil\\x1b]0;pwned\\x07\\nname.py:nofactory" in line


def test_an_internal_error_is_one_printable_line_too(capsys, monkeypatch):
    def broken(args):
        raise RuntimeError("bad\nthing\x1b[2J")

    monkeypatch.setattr(cli, "run_audit", broken)
    assert main(["audit", "x"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad\\nthing\\x1b[2J" in err and _raw_controls(err) == []


# ------------------------------------------------------------------ --what-if


@pytest.mark.parametrize("grid, message", [
    ("bits=inf", "what-if bits level inf: expected a finite number"),
    ("bits=32,nan", "what-if bits level nan: expected a finite number"),
    ("weight-bits=-inf", "what-if weight_bits level -inf"),
    ("sparsity=nan", "what-if sparsity level nan"),
    ("sparsity=inf", "what-if sparsity level inf"),
    ("sparsity=-0.5", "what-if sparsity -0.5: must be at least 0 and below 1"),
    ("sparsity=1", "what-if sparsity 1.0: must be at least 0 and below 1"),
    ("bits=8;bits=4", "names the axis 'bits' twice"),
    ("weight_bits=8;sparsity=0;weight-bits=4", "names the axis 'weight_bits' twice"),
])
def test_bad_what_if_grids(capsys, tiny, grid, message):
    line = one_line_error(capsys, "audit", tiny, "--input", "1x3x8x8", "--what-if", grid)
    assert message in line


def test_what_if_levels_from_python_are_checked_too():
    result = micronet.audit(nn.Conv2d(3, 4, 1), (1, 3, 8, 8))
    with pytest.raises(UsageError, match="finite"):
        result.what_if(bits=[float("inf")])
    with pytest.raises(UsageError, match="finite"):
        result.what_if(sparsity=[float("nan")])


# ------------------------------------------------------------------ --bits / --act-bits


@pytest.mark.parametrize("flag", ["--bits", "--act-bits"])
@pytest.mark.parametrize("value, message", [
    ("[=8", "the '[' at position 1 of the pattern is never closed"),
    ("conv[0-9=8", "the '[' at position 5 of the pattern is never closed"),
    ("[!]=8", "never closed"),
    ("", "an empty item"),
    ("conv=8,", "an empty item"),
    ("=8", "expected PATTERN=BITS"),
    ("conv=", "expected PATTERN=BITS"),
    ("conv=eight", "bit width must be a whole number from 1 to 64, got 'eight'"),
    ("conv=0", "got '0'"),
    ("conv=²", "got '²'"),  # str.isdigit() says yes, int() says no
])
def test_bad_bit_overrides(capsys, tiny, flag, value, message):
    line = one_line_error(capsys, "audit", tiny, "--input", "1x3x8x8", flag, value)
    assert f"{flag} " in line and message in line


def test_closed_sets_and_literal_brackets_are_fine(capsys, tiny):
    assert main(["audit", tiny, "--input", "1x3x8x8", "--quiet", "--bits", "[0-9]=8,[[]=4,[]]=4"]) == 0


# ------------------------------------------------------------------ --top


@pytest.mark.parametrize("value", ["-3", "0", "three"])
def test_top_must_be_positive(capsys, value):
    with pytest.raises(SystemExit) as exit_info:
        main(["audit", "resnet18", "--top", value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --top: expected a whole number of at least 1" in err and value in err


# ------------------------------------------------------------------ recipes


def test_a_recipe_that_is_not_utf8(capsys, tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes('[model]\nspec = "résnet18"\n'.encode("latin-1"))
    line = one_line_error(capsys, "compress", str(path))
    assert "latin1.toml: not UTF-8 text (byte 0xe9 at offset 17); a recipe must be UTF-8 TOML" in line


@pytest.mark.parametrize("entry, message", [
    ("batch_size = -4", "batch_size must be a finite number of at least 1, got -4"),
    ("batch_size = 0", "batch_size must be a finite number of at least 1, got 0"),
    ("workers = -1", "workers must be a finite number of at least 0, got -1"),
    ("calibration_batches = -1", "calibration_batches must be a finite number of at least 0, got -1"),
    ("mixup = -1", "mixup must be a finite number of at least 0.0, got -1"),
    ("cutmix = -1.0", "cutmix must be a finite number of at least 0.0, got -1.0"),
    ("mixup = nan", "mixup must be a finite number of at least 0.0, got nan"),
    ("cutmix = inf", "cutmix must be a finite number of at least 0.0, got inf"),
    ('dataset = "mnist:/data"', "unknown dataset 'mnist:/data'"),
])
def test_bad_data_tables_fail_before_any_work(capsys, tmp_path, monkeypatch, entry, message):
    def no_work(*args, **kwargs):
        raise AssertionError("worked before validating")

    monkeypatch.setattr("micronet.pipeline.audit", no_work)
    monkeypatch.setattr("micronet.pipeline.resolve_model", no_work, raising=False)
    path = tmp_path / "r.toml"
    table = entry if entry.startswith("dataset") else f'dataset = "fake"\n{entry}'
    path.write_text(f'[model]\nspec = "resnet18"\n[data]\n{table}\n')
    line = one_line_error(capsys, "compress", str(path))
    assert f"r.toml: [data] {message}" in line


def test_good_data_tables_pass():
    data = {"dataset": "fake", "batch_size": 1, "workers": 0, "calibration_batches": 0, "mixup": 0.0,
            "cutmix": 0.2}
    assert parse_recipe({"model": {"spec": "x"}, "data": data}).data == data


# ------------------------------------------------------------------ image folders


@pytest.fixture
def broken_images(tmp_path):
    """imagefolder layout with real PNGs, one truncated PNG and one file of garbage."""
    from PIL import Image

    for split in ("train", "val"):
        for name, colour in (("cat", (200, 10, 10)), ("dog", (10, 10, 200))):
            folder = tmp_path / "pets" / split / name
            folder.mkdir(parents=True)
            for index in range(2):
                Image.new("RGB", (12, 12), colour).save(folder / f"{index}.png")
    good = (tmp_path / "pets" / "val" / "dog" / "0.png").read_bytes()
    (tmp_path / "pets" / "val" / "dog" / "1.png").write_bytes(good[:-30])  # header intact, data cut
    (tmp_path / "pets" / "train" / "cat" / "1.png").write_bytes(b"not a png at all")
    return tmp_path / "pets"


def test_corrupt_images_are_named(broken_images):
    test = load_dataset(f"imagefolder:{broken_images}", False, input_shape=(1, 3, 8, 8))
    assert test[0][0].shape == (3, 8, 8) and test[2][0].shape == (3, 8, 8)
    with pytest.raises(UsageError, match=r"cannot read the image .*val/dog/1\.png \(OSError: image file is "
                                         r"truncated"):
        test[3]
    train = load_dataset(f"imagefolder:{broken_images}", True, input_shape=(1, 3, 8, 8))
    with pytest.raises(UsageError, match=r"train/cat/1\.png \(not in a format PIL recognises\)"):
        train[1]


def test_corrupt_image_through_the_cli(capsys, tmp_path, broken_images):
    (tmp_path / "tiny.py").write_text(TINY)
    namespace: dict = {}
    exec(TINY, namespace)
    torch.save(namespace["make"]().state_dict(), tmp_path / "w.pt")
    line = one_line_error(capsys, "audit", f"{tmp_path / 'tiny.py'}:make", "--input", "1x3x8x8",
                          "--track", "cifar10", "--weights", str(tmp_path / "w.pt"),
                          "--data", f"imagefolder:{broken_images}")
    assert f"cannot read the image {broken_images / 'val' / 'dog' / '1.png'}" in line


# ------------------------------------------------------------------ plugins


def make_plugin(name, **hooks):
    """A plugin object made of the given hook functions."""
    plugin = types.SimpleNamespace(**{k: hookimpl(v) for k, v in hooks.items()})
    plugin.__name__ = name
    return plugin


def _refuse():
    raise RuntimeError("cannot register\nat all")


def test_a_plugin_whose_registration_raises_is_left_out_like_a_failed_import():
    from micronet.steps import CompressionStep

    broken = make_plugin("broken", micronet_register_counters=_refuse,
                         micronet_register_steps=lambda: [CompressionStep("never", lambda m, c: m)])
    registries = Registries.from_manager(get_plugin_manager(entry_points=False, extra=[broken]))
    assert registries.failed_plugins == (
        ("broken", "RuntimeError in micronet_register_counters: cannot register\\nat all"),)
    assert registries.pm.get_plugin("broken") is None
    assert "never" not in registries.steps  # none of its hooks run
    assert registries.counters.counter(nn.Conv2d) is not None  # the others work
    info = next(i for i in describe_plugins(registries.pm) if i.name == "broken")
    assert info.origin == "registered in code (broken) (failed to load)"
    assert info.error == "RuntimeError in micronet_register_counters: cannot register\\nat all"
    result = micronet.audit(nn.Conv2d(3, 4, 1), (1, 3, 8, 8), registries=registries)
    assert result.totals["params"] == 3 * 4 + 4


def test_an_essential_plugin_that_fails_to_register_is_an_error(monkeypatch):
    import micronet.rules

    monkeypatch.setattr(micronet.rules, "micronet_register_rulebooks", hookimpl(_refuse))
    with pytest.raises(PluginError, match="micronet.rules.*failed in micronet_register_rulebooks.*essential"):
        get_plugin_manager(entry_points=False)


@pytest.fixture
def raising_entry_point(monkeypatch, tmp_path):
    """An installed-looking plugin (entry point ``raising``) whose counters hook raises."""
    (tmp_path / "raising_plugin_for_test.py").write_text(
        "from micronet import hookimpl\n"
        "@hookimpl\n"
        "def micronet_register_counters():\n"
        "    raise RuntimeError('no counters today')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    add_entry_point(monkeypatch, "raising", "raising_plugin_for_test")
    default_registries.cache_clear()
    yield
    default_registries.cache_clear()
    sys.modules.pop("raising_plugin_for_test", None)


def test_plugins_command_and_audit_with_a_plugin_whose_registration_raises(capsys, raising_entry_point, tiny):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "raising  [entry point (failed to load)]" in out
    assert "    failed to load: RuntimeError in micronet_register_counters: no counters today" in out
    assert "micronet.counters.conv" in out
    assert default_registries().failed_plugins[-1] == (
        "raising", "RuntimeError in micronet_register_counters: no counters today")
    assert main(["audit", tiny, "--input", "1x3x8x8", "--quiet"]) == 0


def test_unknown_names_in_the_disable_variable_warn(monkeypatch):
    monkeypatch.setenv(DISABLE_ENV, "micronet.counters.conv, micronet.counters.convv")
    with pytest.warns(UnknownPluginWarning) as caught:
        pm = get_plugin_manager(entry_points=False)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert message.startswith(f"{DISABLE_ENV} names 'micronet.counters.convv', which is no installed plugin")
    assert "known: " in message and "micronet.counters.conv," in message and "\n" not in message
    assert pm.get_plugin("micronet.counters.conv") is None


def test_the_cli_prints_a_warning_as_one_line(monkeypatch, capsys):
    monkeypatch.setenv(DISABLE_ENV, "exampel\x1b[2J")
    default_registries.cache_clear()
    try:
        assert main(["plugins"]) == 0
    finally:
        default_registries.cache_clear()
    err = capsys.readouterr().err
    assert err.startswith(f"micronet: warning: {DISABLE_ENV} names 'exampel\\x1b[2J', which is no installed")
    assert err.count("\n") == 1 and _raw_controls(err) == []


def test_known_names_do_not_warn(monkeypatch):
    monkeypatch.setenv(DISABLE_ENV, "micronet.plugins.half")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnknownPluginWarning)
        assert get_plugin_manager(entry_points=False).get_plugin("micronet.plugins.half") is None


@pytest.mark.parametrize("name", ["example", "micronet-example-plugin", "Micronet_Example.Plugin"])
def test_a_third_party_plugin_is_disabled_by_entry_point_or_distribution_name(monkeypatch, name):
    assert get_plugin_manager().get_plugin("example") is not None
    monkeypatch.setenv(DISABLE_ENV, name)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnknownPluginWarning)
        pm = get_plugin_manager()
        assert get_plugin_manager(entry_points=False).get_plugin("example") is None
    assert pm.get_plugin("example") is None
    assert "swap-relu" not in Registries.from_manager(pm).steps


def test_a_plugin_returning_something_invalid_is_still_an_error():
    odd = make_plugin("odd", micronet_register_counters=lambda: ["not a registration"])
    registries = Registries.from_manager(get_plugin_manager(entry_points=False, extra=[odd]))
    with pytest.raises(PluginError, match="returned 'not a registration'"):
        registries.counters
