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
