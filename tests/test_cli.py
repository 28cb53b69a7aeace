"""The command line: output, files, exit codes, one-line errors and progress bars."""
import io
import json
import sys

import pytest

import micronet.manager
from micronet.cli import main
from micronet.manager import Registries, get_plugin_manager, hookimpl


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_audit_prints_a_table_and_writes_json_and_csv(capsys, tmp_path):
    code, out, err = run(capsys, "audit", "micronet:resnet18_cifar", "--input", "1x3x32x32",
                         "--json", str(tmp_path / "r.json"), "--csv", str(tmp_path / "r.csv"),
                         "--what-if", "bits=32,8;sparsity=0,0.5")
    assert code == 0, err
    assert "layer1.0.conv1" in out and "score" in out and "what-if" in out
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["totals"]["params"] == 11_173_962
    assert len(doc["what_if"]["cells"]) == 4
    csv_lines = (tmp_path / "r.csv").read_text().splitlines()
    assert csv_lines[0].startswith("name,op,status")
    assert len(csv_lines) == len(doc["layers"]) + 1


def test_python_dash_m_works():
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "micronet", "audit", "micronet:resnet18_cifar",
                           "--quiet", "--no-freebie"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert 0 < float(proc.stdout.strip()) < 2


@pytest.mark.parametrize("argv, message", [
    (["audit", "resnet19"], "did you mean"),
    (["audit", "resnet18", "--input", "1x3xbig"], "input shape"),
    (["audit", "resnet18", "--bits", "features.*=99"], "bit width"),
    (["audit", "resnet18", "--bits", "features"], "PATTERN=BITS"),
    (["audit", "resnet18", "--track", "mnist"], "unknown track"),
    (["audit", "resnet18", "--what-if", "bits=a,b"], "numbers"),
    (["audit", "no/such/file.py:make"], "file"),
    (["audit", "vit_b_16", "--input", "1x3x256x256"], "rejects input shape 1x3x256x256"),  # torch._assert
    (["audit", "resnet18", "--input-dtype", "complex"], "input dtype"),
])
def test_usage_errors_are_one_line_with_exit_code_2(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert err.startswith("micronet: error:") and message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_debug_shows_the_traceback(capsys):
    from micronet.errors import SpecError

    with pytest.raises(SpecError):
        main(["--debug", "audit", "resnet19"])


def test_missing_subcommand_is_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2


def test_data_flag_measures_accuracy(capsys, tmp_path):
    import torch

    (tmp_path / "tiny.py").write_text(
        "from torch import nn\n"
        "def make():\n"
        "    return nn.Sequential(nn.Conv2d(3, 10, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())\n")
    import importlib.util

    spec = importlib.util.spec_from_file_location("tiny_for_cli", tmp_path / "tiny.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.save(module.make().state_dict(), tmp_path / "w.pt")
    code, out, err = run(capsys, "audit", f"{tmp_path / 'tiny.py'}:make", "--input", "1x3x8x8",
                         "--track", "cifar10", "--data", "fake", "--weights", str(tmp_path / "w.pt"),
                         "--json", str(tmp_path / "r.json"))
    assert code == 0, err
    assert "accuracy   top-1" in out and "BELOW the bar" in out
    doc = json.loads((tmp_path / "r.json").read_text())
    assert 0 <= doc["accuracy"]["top1"] <= 100 and doc["accuracy"]["meets_bar"] is False
    code, out, err = run(capsys, "audit", f"{tmp_path / 'tiny.py'}:make", "--input", "1x3x8x8", "--data", "fake")
    assert code == 2 and "--weights" in err


# ------------------------------------------------------------------ registries


class Observer:
    """A plugin that only notes that the pipeline it observed finished."""

    finished = 0

    @hookimpl
    def micronet_pipeline_finished(self, history):
        self.finished += 1


@pytest.fixture
def built(monkeypatch):
    """Counts the Registries each command builds; default_registries() must not be read."""
    calls = []
    fresh = Registries.from_manager

    def counted(pm=None):
        calls.append(pm)
        return fresh(pm)

    def global_registries():
        raise AssertionError("the command line read the process-wide default_registries()")

    monkeypatch.setattr(Registries, "from_manager", counted)
    monkeypatch.setattr(micronet.manager, "default_registries", global_registries)
    return calls


def test_each_command_builds_its_registries_once(built, capsys, tmp_path):
    assert main(["plugins"]) == 0
    assert len(built) == 1
    assert main(["audit", "micronet:resnet18_cifar", "--input", "1x3x32x32", "--quiet"]) == 0
    assert len(built) == 2
    recipe = tmp_path / "recipe.toml"
    recipe.write_text('[model]\nspec = "micronet:resnet18_cifar"\ninput = [1, 3, 32, 32]\n'
                      '[[step]]\nuse = "half"\n')
    assert main(["compress", str(recipe), "--quiet"]) == 0
    assert len(built) == 3


def test_the_registries_given_to_main_are_the_ones_used(built, capsys, tmp_path):
    observer = Observer()
    given = Registries.from_manager(get_plugin_manager(entry_points=False, extra=[observer]))
    recipe = tmp_path / "recipe.toml"
    recipe.write_text('[model]\nspec = "micronet:resnet18_cifar"\ninput = [1, 3, 32, 32]\n'
                      '[[step]]\nuse = "half"\n')
    assert main(["compress", str(recipe), "--quiet"], registries=given) == 0
    assert main(["plugins"], registries=given) == 0
    assert len(built) == 1 and observer.finished == 1  # the one built above, for this test
    assert "registered in code (Observer)" in capsys.readouterr().out


# ------------------------------------------------------------------ compress: sensitivity and search


def digits_recipe(tmp_path, *steps: str) -> str:
    """A recipe on the trained digits CNN (conftest.trained_digits_cnn, >= 97%
    top-1) with ``steps`` (TOML text), its weights saved beside it."""
    import torch
    from conftest import trained_digits_cnn

    torch.save(trained_digits_cnn().state_dict(), tmp_path / "trained.pt")
    text = ('[model]\nspec = "micronet:digits_cnn"\nweights = "trained.pt"\n'
            '[score]\ntrack = "digits"\nfreebie = false\n'
            '[data]\ndataset = "digits"\nbatch_size = 64\ncalibration_batches = 2\n'
            + "".join(f"[[step]]\n{step}\n" for step in steps))
    (tmp_path / "recipe.toml").write_text(text)
    return str(tmp_path / "recipe.toml")


SENSITIVITY = 'use = "sensitivity"\nbits = [8, 2]\nsparsity = [0.5]'
SEARCH = 'use = "search"\ntarget_score = 1.0\nweight_bits = [8, 4]\nsparsity = [0, 0.5]'


def test_compress_prints_the_ranked_sensitivity_and_the_searched_settings(capsys, tmp_path):
    path = digits_recipe(tmp_path, SENSITIVITY, SEARCH)
    out_dir = tmp_path / "out"
    code, out, err = run(capsys, "compress", path, "--out", str(out_dir))
    assert code == 0, err
    steps = [entry["step"] for entry in json.loads((out_dir / "history.json").read_text())[1:]]
    sens, search = steps[0]["notes"], steps[1]["notes"]
    lines = out.splitlines()
    start = lines.index(f"1. sensitivity: top-1 drop in points, each layer alone, most sensitive first "
                        f"(baseline {sens['baseline']['top1']:.2f}% on {sens['examples']} calibration examples)")
    assert lines[start + 1].split() == ["layer", "worst", "8b", "2b", "50%"]
    for line, name in zip(lines[start + 2:start + 6], sens["ranking"]):  # the digits CNN's 4 layers
        drop = {(r["kind"], r["level"]): r["drop"] for r in sens["table"] if r["layer"] == name}
        assert line.split() == [name, f"{max(drop.values()):.2f}", f"{drop['bits', 8]:.2f}",
                                f"{drop['bits', 2]:.2f}", f"{drop['sparsity', 0.5]:.2f}"]
    assert lines[start + 6] == ""  # 4 layers: all shown, no "..." line
    start = lines.index(f"2. search: budget score <= 1: score predicted {search['predicted_score']:.4f}, "
                        f"achieved {search['score']:.4f} (within the budget)")
    block = lines[start + 1:lines.index("", start)]
    assert f"  top-1 drop in points: predicted {search['predicted_drop']:.2f} (additive model, calibration " \
           "split); measured" in "\n".join(block)
    head = next(k for k, line in enumerate(block) if line.startswith("  layer"))
    assert block[head].split() == ["layer", "params", "w", "bits", "sparsity", "pred.", "drop", "score", "part"]
    params = {"conv1": "144", "conv2": "4,608", "conv3": "18,432", "fc": "650"}  # 16*9, 32*16*9, 64*32*9, 64*10+10
    shown = [line.split() for line in block[head + 1:]]
    assert len(shown) == 4
    assert sorted(row[0] for row in shown) == sorted(params)
    for name, count, bits, sparsity, drop, _ in shown:
        chosen = search["settings"][name]
        assert (count, bits, sparsity) == (params[name], str(chosen["weight_bits"]), f"{100 * chosen['sparsity']:g}%")
        assert drop == f"{chosen['predicted_drop']:.2f}"
    assert [float(row[5]) for row in shown] == sorted((float(row[5]) for row in shown), reverse=True)
    assert lines.index("step                             score   storage       ops    top-1") > start


def test_compress_quiet_prints_no_sensitivity_or_search_lines(capsys, tmp_path):
    code, out, err = run(capsys, "compress", digits_recipe(tmp_path, SENSITIVITY), "--quiet")
    assert code == 0, err
    assert "sensitivity:" not in out and "most sensitive first" not in out and "worst" not in out


def test_compress_data_replaces_the_recipes_dataset(capsys, tmp_path):
    # a shipped recipe names a folder the user may not have: --data points it elsewhere
    recipe = tmp_path / "r.toml"
    recipe.write_text('[model]\nspec = "micronet:digits_cnn"\n[score]\ntrack = "digits"\n'
                      '[data]\ndataset = "cifar10:/nowhere"\nbatch_size = 64\n'
                      '[[step]]\nuse = "finetune"\nepochs = 1\nlr = 0.1\nmax_batches = 2\n')
    out = tmp_path / "run"
    assert main(["compress", str(recipe), "--data", "digits", "--out", str(out), "--quiet"]) == 0
    entries = json.loads((out / "history.json").read_text())
    assert entries[1]["accuracy"]["top1"] > 10  # measured on the real digits test split
    assert "not measured" not in capsys.readouterr().out
    code = main(["compress", str(recipe), "--data", "mnist:/x", "--out", str(tmp_path / "other")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") <= 2 and "mnist" in err and "cifar10:PATH" in err
    assert not (tmp_path / "other").exists()


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_compress_draws_bars_on_a_terminal_and_none_under_quiet(tmp_path, monkeypatch):
    path = digits_recipe(tmp_path, SENSITIVITY, 'use = "finetune"\nepochs = 1\nmax_batches = 2')
    monkeypatch.setattr(sys, "stdout", Terminal())
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert main(["compress", path]) == 0
    shown = sys.stderr.getvalue()
    assert "sensitivity" in shown and "0/12" in shown  # the sweep: 4 layers x (8b, 2b, 50%)
    assert "epoch 1/1" in shown and "0/2" in shown  # the fine-tuning's batches
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert main(["compress", path, "--quiet"]) == 0
    assert sys.stderr.getvalue() == ""
