"""micronet.selection: which layers a built-in step may select, and what it says
when a selection matches nothing."""
import torch
from torch import nn

from micronet.selection import kinds_text, registered_for, select_modules, weighted_candidates
from micronet.steps import WeightedLayer


class Kernel(nn.Module):
    """A plugin's layer whose weight is called ``kernel``, beside a 1-d ``gain``."""

    def __init__(self):
        super().__init__()
        self.kernel = nn.Parameter(torch.ones(4, 3))
        self.gain = nn.Parameter(torch.ones(4))


class Wide(Kernel):
    """A subclass with a declaration of its own."""


class TiedLinear(nn.Linear):
    """A Linear subclass a plugin declares (its weight is still ``weight``)."""


def model() -> nn.Sequential:
    """conv, linear, Kernel, Wide, TiedLinear, ReLU: one of each kind."""
    return nn.Sequential(nn.Conv2d(3, 4, 1), nn.Linear(4, 4), Kernel(), Wide(), TiedLinear(4, 4), nn.ReLU())


KERNEL, WIDE = WeightedLayer(Kernel, weight="kernel"), WeightedLayer(Wide, weight="gain")
TIED = WeightedLayer(TiedLinear)


def test_built_in_kinds_and_declared_layers_with_their_weights():
    found = weighted_candidates(model().named_modules(), [KERNEL, WIDE, TIED])
    assert {name: (c.weight, c.declared) for name, c in found.items()} == {
        "0": ("weight", None), "1": ("weight", None), "2": ("kernel", KERNEL), "3": ("gain", WIDE),
        "4": ("weight", TIED)}
    assert found["2"].tensor is found["2"].module.kernel


def test_without_declarations_only_the_built_in_kinds():
    assert list(weighted_candidates(model().named_modules(), [])) == ["0", "1", "4"]  # TiedLinear is a Linear
    assert list(weighted_candidates(model().named_modules(), [], (nn.Conv2d,))) == ["0"]


def test_the_most_specific_declaration_wins_in_any_order():
    assert registered_for(Wide(), [KERNEL, WIDE]) is WIDE
    assert registered_for(Wide(), [WIDE, KERNEL]) is WIDE
    assert registered_for(Kernel(), [WIDE, KERNEL]) is KERNEL
    assert registered_for(nn.ReLU(), [WIDE, KERNEL]) is None


def test_a_declared_class_whose_weight_is_missing_is_no_candidate():
    assert weighted_candidates([("k", Kernel())], [WeightedLayer(Kernel, weight="kernal")]) == {}


def test_kinds_text_names_the_declared_classes():
    assert kinds_text("Conv/Linear", []) == "Conv/Linear"
    assert kinds_text("Conv/Linear", [WIDE, KERNEL, KERNEL]) == "Conv/Linear or Kernel, Wide"


def test_globs_select_and_say_what_matches_nothing():
    candidates = {"features.0": 1, "features.1": 2, "head": 3}
    chosen = select_modules(candidates, ["features.*", "body.*"], ["*.1", "tail"], 0, lambda c: c, "layer")
    assert chosen.modules == {"features.0": 1}
    assert chosen.unmatched == ("layers glob 'body.*' matches no layer", "ignore glob 'tail' matches no layer")
    small = select_modules(candidates, [], [], 2, lambda c: c, "layer")
    assert (list(small.modules), small.small, small.unmatched) == (["features.1", "head"], ("features.0",), ())


def test_a_selection_that_leaves_nothing_says_so():
    assert select_modules({}, [], [], 0, len, "Conv/Linear layer").unmatched == (
        "the model has no Conv/Linear layer: nothing is selected",)
    assert select_modules({"head": 1}, [], ["h*"], 0, len, "Conv/Linear layer").unmatched == (
        "no Conv/Linear layer is selected (layers [], ignore ['h*'])",)
