"""Recipes: parsed from TOML, every mistake named before any work starts."""
import pytest

from micronet.errors import UsageError
from micronet.recipe import RepeatSpec, Until, load_recipe, parse_recipe

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


# ------------------------------------------------------- per-step data, repeat

SCHEDULE = """
[model]
spec = "micronet:digits_cnn"

[data]
dataset = "digits"
mixup = 0.2

[[step]]
use = "finetune"

[[step]]
use = "distill"
[step.data]
mixup = 0.0

[[step]]
use = "repeat"
times = 10
until = {sparsity = 0.651, bar = true}
  [[step.steps]]
  use = "sparsify"
  amount = 0.1
  [[step.steps]]
  use = "distill"
  epochs = 1
  data = {batch_size = 32}
"""


def test_step_data_and_a_repeat_from_toml(tmp_path):
    path = tmp_path / "recipe.toml"
    path.write_text(SCHEDULE)
    recipe = load_recipe(path)
    train, distill, repeat = recipe.steps
    assert (train.data, dict(distill.data), distill.options) == (None, {"mixup": 0.0}, {})
    assert recipe.data_for(train) == {"dataset": "digits", "mixup": 0.2}
    assert recipe.data_for(distill) == {"dataset": "digits", "mixup": 0.0}  # the step's key wins
    assert isinstance(repeat, RepeatSpec) and (repeat.index, repeat.use, repeat.times) == (3, "repeat", 10)
    assert repeat.until == Until(sparsity=0.651, bar=True)
    assert [(s.index, s.use, dict(s.options), s.where) for s in repeat.steps] == [
        (1, "sparsify", {"amount": 0.1}, "step 3 (repeat) > step 1 (sparsify)"),
        (2, "distill", {"epochs": 1}, "step 3 (repeat) > step 2 (distill)")]
    assert recipe.data_for(repeat.steps[1]) == {"dataset": "digits", "mixup": 0.2, "batch_size": 32}
    assert recipe.to_dict()["steps"] == [
        {"use": "finetune"}, {"use": "distill", "data": {"mixup": 0.0}},
        {"use": "repeat", "times": 10, "until": {"sparsity": 0.651, "bar": True},
         "steps": [{"use": "sparsify", "amount": 0.1}, {"use": "distill", "epochs": 1, "data": {"batch_size": 32}}]}]


def test_a_step_may_name_its_own_dataset_without_a_recipe_data_table():
    recipe = parse_recipe({"model": {"spec": "x"}, "step": [{"use": "finetune", "data": {"dataset": "digits"}}]})
    assert recipe.data is None and recipe.data_for(recipe.steps[0]) == {"dataset": "digits"}


def _with(*steps, data=True):
    document = {"model": {"spec": "x"}, "step": list(steps)}
    return {**document, "data": {"dataset": "digits"}} if data else document


def _repeat(*inner, **keys):
    return {"use": "repeat", "times": 3, **keys, "steps": list(inner)}


@pytest.mark.parametrize("document, message", [
    (_with({"use": "half"}, {"use": "distill", "data": {"mixupp": 0.2}}),
     r"^<dict>: step 2 \(distill\): \[step.data\] unknown key 'mixupp'; known: dataset, batch_size, workers, "),
    (_with({"use": "distill", "data": {"mixup": "lots"}}),
     r"^<dict>: step 1 \(distill\): \[step.data\] mixup must be float, got str 'lots'$"),
    (_with({"use": "distill", "data": {"batch_size": 0}}),
     r"^<dict>: step 1 \(distill\): \[step.data\] batch_size must be a finite number of at least 1, got 0"),
    (_with({"use": "distill", "data": {"dataset": "mnist"}}), r"step 1 \(distill\): \[step.data\] unknown dataset"),
    (_with({"use": "distill", "data": 0.2}), r"step 1 \(distill\): \[step.data\] must be a table, got float"),
    (_with({"use": "distill", "data": {"mixup": 0.0}}, data=False),
     r"step 1 \(distill\): \[step.data\] overrides a \[data\] table the recipe does not have \(hint: name "),
    (_with({"use": "repeat", "steps": [{"use": "half"}]}),
     r"^<dict>: step 1 \(repeat\): times must be an integer >= 1 \(the most rounds\), got None"),
    (_with(_repeat({"use": "half"}, times=0)), r"step 1 \(repeat\): times must be an integer >= 1.*got 0"),
    (_with(_repeat({"use": "half"}, times=True)), r"times must be an integer >= 1.*got True"),
    (_with(_repeat({"use": "half"}, times=2.0)), r"times must be an integer >= 1.*got 2.0"),
    (_with(_repeat({"use": "half"}, amount=0.1)),
     r"step 1 \(repeat\): unknown key 'amount'; a repeat takes: times, until, steps"),
    (_with(_repeat({"use": "half"}, data={"mixup": 0.0})), r"step 1 \(repeat\): unknown key 'data'"),
    (_with({"use": "repeat", "times": 2}), r"step 1 \(repeat\): no steps to repeat"),
    (_with(_repeat()), r"step 1 \(repeat\): no steps to repeat"),
    (_with({"use": "repeat", "times": 2, "steps": {"use": "half"}}),
     r"step 1 \(repeat\): its steps must be written as \[\[step.steps\]\] tables"),
    (_with({"use": "half"}, _repeat({"use": "half"}, _repeat({"use": "half"}))),
     r"^<dict>: step 2 \(repeat\) > step 2 \(repeat\): a repeat cannot hold another repeat"),
    (_with(_repeat({"use": "half"}, {"epochs": 1})), r"^<dict>: step 1 \(repeat\) > step 2 needs use"),
    (_with(_repeat({"use": "distill", "data": {"mixupp": 0}})),
     r"^<dict>: step 1 \(repeat\) > step 1 \(distill\): \[step.data\] unknown key 'mixupp'"),
    (_with(_repeat({"use": "half"}, until={"sparse": 0.5})),
     r"step 1 \(repeat\): until: unknown key 'sparse'; known: score, sparsity, accuracy, bar"),
    (_with(_repeat({"use": "half"}, until={"sparsity": "half"})),
     r"step 1 \(repeat\): until sparsity must be float, got str 'half'"),
    (_with(_repeat({"use": "half"}, until={"sparsity": 1.5})),
     r"until sparsity must be a fraction in \[0, 1\], got 1.5"),
    (_with(_repeat({"use": "half"}, until={"accuracy": 101})), r"until accuracy must be a top-1 percentage"),
    (_with(_repeat({"use": "half"}, until={"score": -1})), r"until score must be a score >= 0, got -1"),
    (_with(_repeat({"use": "half"}, until={"bar": 1})), r"until bar must be bool, got int 1"),
    (_with(_repeat({"use": "half"}, until={"bar": False})), r"until bar = false stops on nothing"),
    (_with(_repeat({"use": "half"}, until={})), r"until must be a table of bounds, got \{\}"),
    (_with(_repeat({"use": "half"}, until=0.5)), r"until must be a table of bounds, got 0.5"),
    (_with(_repeat({"use": "half"}, until={"accuracy": 97}), data=False),
     r"step 1 \(repeat\): until accuracy needs top-1, and the recipe has no \[data\] dataset"),
    ({"model": {"spec": "x"}, "data": {"batch_size": 8}, "step": [_repeat({"use": "half"}, until={"bar": True})]},
     r"until bar needs top-1, and the recipe has no \[data\] dataset"),
])
def test_bad_step_data_and_repeats(document, message):
    with pytest.raises(UsageError, match=message) as caught:
        parse_recipe(document)
    assert "\n" not in str(caught.value)


def test_path_options_are_taken_from_the_recipe_folder(tmp_path):
    # teacher_weights and checkpoint_dir name files: relative ones start at the recipe, like [model] weights
    from micronet.manager import default_registries
    from micronet.schedule import plan_steps

    folder = tmp_path / "recipes"
    folder.mkdir()
    (folder / "r.toml").write_text(
        '[model]\nspec = "micronet:digits_cnn"\nweights = "w.pt"\n[data]\ndataset = "digits"\n'
        '[[step]]\nuse = "distill"\nteacher = "micronet:digits_cnn"\nteacher_weights = "teacher/state_dict.pt"\n'
        'checkpoint_dir = "ckpt"\n[[step]]\nuse = "distill"\nteacher = "micronet:digits_cnn"\n'
        f'teacher_weights = "{tmp_path / "abs.pt"}"\n')
    recipe = load_recipe(folder / "r.toml")
    assert recipe.weights == str(folder / "w.pt")
    first, second = plan_steps(recipe, default_registries())
    assert first.options["teacher_weights"] == str(folder / "teacher" / "state_dict.pt")
    assert first.options["checkpoint_dir"] == str(folder / "ckpt")
    assert second.options["teacher_weights"] == str(tmp_path / "abs.pt")  # absolute: as written
    assert second.options["checkpoint_dir"] == ""  # empty: still "none"
