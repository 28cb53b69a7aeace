"""Recipes: parsed from TOML, every mistake named before any work starts."""
import pytest

from micronet.errors import UsageError
from micronet.recipe import load_recipe, parse_recipe

GOOD = """
[model]
spec = "micronet:resnet18_cifar"
input = [1, 3, 32, 32]
weights = "w.pt"

[score]
track = "cifar10"
rulebook = "imta-2021"
freebie = false

[data]
dataset = "fake"
batch_size = 64

[[step]]
use = "half"

[[step]]
use = "swap-relu"
ceiling = 4.0
"""


def test_a_full_recipe(tmp_path):
    path = tmp_path / "recipe.toml"
    path.write_text(GOOD)
    recipe = load_recipe(path)
    assert recipe.spec == "micronet:resnet18_cifar" and recipe.input_shape == (1, 3, 32, 32)
    assert recipe.weights == str(tmp_path / "w.pt")  # relative to the recipe's folder
    assert (recipe.track, recipe.rulebook, recipe.freebie) == ("cifar10", "imta-2021", False)
    assert recipe.data == {"dataset": "fake", "batch_size": 64}
    assert [(s.index, s.use, dict(s.options)) for s in recipe.steps] == [
        (1, "half", {}), (2, "swap-relu", {"ceiling": 4.0})]


def test_defaults():
    recipe = parse_recipe({"model": {"spec": "resnet18"}})
    assert (recipe.track, recipe.rulebook, recipe.freebie, recipe.steps) == ("cifar100", "micronet-2019", True, ())


@pytest.mark.parametrize("document, message", [
    ({}, r"missing \[model\]"),
    ({"model": {}}, "needs spec"),
    ({"model": {"spec": "x"}, "extra": {}}, r"unknown table \[extra\]"),
    ({"model": {"spec": "x", "colour": 1}}, "unknown key 'colour' in \\[model\\]"),
    ({"model": {"spec": 3}}, "spec must be str"),
    ({"model": {"spec": "x", "input": [1, 0]}}, "positive integers"),
    ({"model": {"spec": "x"}, "score": {"freebie": "yes"}}, "freebie must be bool"),
    ({"model": {"spec": "x"}, "data": {"batch_size": 1.5}}, "batch_size must be int"),
    ({"model": {"spec": "x"}, "step": [{"ratio": 1}]}, 'step 1 needs use'),
    ({"model": {"spec": "x"}, "step": {"use": "half"}}, r"\[\[step\]\]"),
])
def test_bad_documents(document, message):
    with pytest.raises(UsageError, match=message):
        parse_recipe(document)


def test_bad_toml_and_missing_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[model\nspec = 1")
    with pytest.raises(UsageError, match="not valid TOML"):
        load_recipe(path)
    with pytest.raises(UsageError, match="cannot read recipe"):
        load_recipe(tmp_path / "missing.toml")
