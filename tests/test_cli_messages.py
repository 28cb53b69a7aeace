"""What `micronet compress` and `micronet audit` say on the terminal: warnings
shown, steps that changed nothing, plugins that failed to load."""
from micronet import hookimpl
from micronet.cli import main
from micronet.manager import Registries, get_plugin_manager

RECIPE = """[model]
spec = "micronet:resnet18_cifar"
[score]
track = "cifar10"
{steps}
"""


def write_recipe(tmp_path, steps: str):
    path = tmp_path / "r.toml"
    path.write_text(RECIPE.format(steps=steps))
    return str(path)


def test_compress_shows_step_warnings_and_steps_that_changed_nothing(tmp_path, capsys):
    path = write_recipe(tmp_path, '[[step]]\nuse = "sparsify"\namount = 0.5\nlayers = ["no_such_layer*"]\n')
    builtins = Registries.from_manager(get_plugin_manager(entry_points=False))  # no plugin's layers
    assert main(["compress", path], registries=builtins) == 0
    captured = capsys.readouterr()
    assert "micronet: warning: sparsify: layers glob 'no_such_layer*' matches no Conv/Linear layer" in captured.err
    assert "step 1 (sparsify) changed nothing" in captured.out
    assert "1. sparsify" in captured.out and "(changed nothing)" in captured.out


def test_a_step_that_changes_the_model_is_not_flagged(tmp_path, capsys):
    assert main(["compress", write_recipe(tmp_path, '[[step]]\nuse = "half"\n')]) == 0
    assert "changed nothing" not in capsys.readouterr().out


class Broken:
    """A plugin whose registration hook raises."""

    @hookimpl
    def micronet_register_tracks(self):
        raise RuntimeError("tracks table missing")


def test_audit_and_compress_name_a_plugin_that_failed_to_load(tmp_path, capsys):
    registries = Registries.from_manager(get_plugin_manager(entry_points=False, extra=[Broken()]))
    assert [name for name, _ in registries.failed_plugins] != []
    assert main(["audit", "micronet:resnet18_cifar", "--track", "cifar10", "--quiet"], registries=registries) == 0
    err = capsys.readouterr().err
    assert "failed to load and is left out" in err and "tracks table missing" in err
    recipe = write_recipe(tmp_path, '[[step]]\nuse = "half"\n')
    assert main(["compress", recipe, "--quiet"], registries=registries) == 0
    assert "tracks table missing" in capsys.readouterr().err


def test_compress_shows_top1_beside_the_score_and_says_whether_the_model_qualifies(tmp_path, capsys):
    (tmp_path / "net.py").write_text("from torch import nn\n\ndef make():\n    return nn.Sequential(\n"
                                     "        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),\n"
                                     "        nn.Linear(4, 10))\n")
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'[model]\nspec = "{tmp_path / "net.py"}:make"\ninput = [1, 3, 32, 32]\n'
                      '[score]\ntrack = "cifar10"\n'
                      '[data]\ndataset = "fake"\nbatch_size = 256\n[[step]]\nuse = "half"\n')
    args = ["compress", str(recipe), "--trust", "--quiet", "--html", str(tmp_path / "p.html")]
    assert main(args) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[-1] == "top-1"
    import re
    top1 = [float(m) for m in re.findall(r"(\d+\.\d\d)%$", out, re.M)]
    assert len(top1) == 2  # the input and the half model, each measured on the test split
    # an untrained 10-class model on the fake problem: far below the cifar10 bar of 90%
    assert "the final model does NOT qualify: top-1" in out and "< 90% (cifar10)" in out
    page = (tmp_path / "p.html").read_text()
    assert page.count('class="pill bad">') >= 2 and "top-1</th>" in page


def test_compress_without_data_says_accuracy_was_not_measured(tmp_path, capsys):
    assert main(["compress", write_recipe(tmp_path, '[[step]]\nuse = "half"\n'), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.count("accuracy was not measured (no [data] table)") == 1 and "top-1" not in out.splitlines()[0]
