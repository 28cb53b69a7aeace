"""Budgets (issue 15): micronet.assert_budget, BudgetExceeded and the audit's
--fail-above / --max-params / --max-macs exit codes, on models counted by hand."""
from dataclasses import replace

import pytest
from torch import nn

import micronet
from micronet.budget import BudgetExceeded, check_budget, parse_amount
from micronet.cli import main
from micronet.errors import UsageError


def mlp() -> nn.Module:
    """Linear(4, 3) -> ReLU -> Linear(3, 2): counted by hand below."""
    return nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))


# By hand, micronet-2019 with the freebie (16-bit params and mults, 32-bit adds), batch 1:
#   "0": params 4*3 + 3 = 15, storage 15 * 16/32 = 7.5, mults 12 -> 6, adds 3*3 + 3 = 12, ops 18, MACs 12
#   "1": ReLU, 3 mults -> 1.5 ops
#   "2": params 3*2 + 2 = 8, storage 4, mults 6 -> 3, adds 2*2 + 2 = 6, ops 9, MACs 6
# totals: params 23, storage 11.5, ops 28.5, MACs 18; cifar100 score 11.5/36.5e6 + 28.5/10.49e9
PARAMS, STORAGE, OPS, MACS = 23, 11.5, 28.5, 18
SCORE = 11.5 / 36.5e6 + 28.5 / 10.49e9


@pytest.fixture(scope="module")
def result():
    return micronet.audit(mlp(), (1, 4))


def test_within_budget_returns_the_result(result):
    assert micronet.assert_budget(result, score=SCORE * 1.001, params=23, storage=11.5, ops=28.5,
                                  macs=18) is result


def test_each_broken_bound_is_named_with_its_excess_and_top_layers(result):
    with pytest.raises(BudgetExceeded) as caught:
        micronet.assert_budget(result, score=SCORE / 2, params=20, storage="10", ops=30, macs=12)
    error = caught.value
    assert isinstance(error, AssertionError)
    assert [v.quantity for v in error.violations] == ["score", "params", "storage", "macs"]  # ops 28.5 <= 30
    lines = str(error).splitlines()
    assert len(lines) == 4
    # params: 23 > 20 by 3 = +15.0%; layer "0" holds 15, "2" holds 8
    assert "params 23 parameters exceeds the budget 20 by 3 (+15.0%)" in lines[1]
    assert lines[1].endswith("most parameters: 0 15, 2 8")
    # storage: 11.5 > 10 by 1.5 (+15.0%), 46 bytes against 40
    assert "by 1.5 (+15.0%)" in lines[2] and "46B against 40B" in lines[2]
    # MACs: 18 > 12 by 6 (+50.0%), layer 0 has 12, layer 2 has 6
    assert "by 6 (+50.0%)" in lines[3] and lines[3].endswith("most MACs: 0 12, 2 6")
    # score: twice the limit, +100%; the layers' shares: layer 0 = (7.5/36.5e6 + 18/10.49e9) / score
    score = error.violations[0]
    assert score.actual == pytest.approx(SCORE) and score.excess_fraction == pytest.approx(1.0)
    assert score.top[0][0] == "0"
    assert score.top[0][1] == pytest.approx((7.5 / 36.5e6 + 18 / 10.49e9) / SCORE)
    assert "(+100.0%)" in lines[0] and "largest shares of the score: 0 65.2%" in lines[0]


def test_the_error_pickles_with_its_violations(result):
    import pickle

    with pytest.raises(BudgetExceeded) as caught:
        micronet.assert_budget(result, macs=10)
    copy = pickle.loads(pickle.dumps(caught.value))
    assert copy.violations == caught.value.violations and str(copy) == str(caught.value)


def test_the_json_document_is_checked_like_the_result(result):
    violations = check_budget(result.to_dict(), params=22)
    assert [(v.quantity, v.actual, v.limit, v.excess) for v in violations] == [("params", 23, 22, 1)]


def test_a_perplexity_bound_is_a_maximum_in_the_json_document_too():
    """The JSON document says its metric: a perplexity of 36 breaks accuracy=35
    whether the budget reads the Result or its document (a saved audit)."""
    lm = replace(micronet.audit(mlp(), (1, 4), track="wikitext103"), accuracy=36.0)
    for source in (lm, lm.to_dict()):
        with pytest.raises(BudgetExceeded, match="accuracy 36.00 is above the maximum 35 by 1.00"):
            micronet.assert_budget(source, accuracy=35)
        micronet.assert_budget(source, accuracy=40)


def test_accuracy_is_a_minimum_and_needs_a_measurement(result):
    with pytest.raises(UsageError, match="measured none"):
        micronet.assert_budget(result, accuracy=90)
    measured = replace(result, accuracy=85.0)
    micronet.assert_budget(measured, accuracy=85)
    with pytest.raises(BudgetExceeded, match=r"accuracy 85.00 is below the minimum 90 by 5.00 points \(\+5.6%\)"):
        micronet.assert_budget(measured, accuracy=90)


@pytest.mark.parametrize("text, value", [("1.5M", 1.5e6), ("2e9", 2e9), ("300k", 3e5), ("0.05", 0.05),
                                         ("1_000", 1000), ("3G", 3e9), ("2B", 2e9), (7, 7.0)])
def test_amounts(text, value):
    assert parse_amount(text, "--max-params") == value


@pytest.mark.parametrize("text", ["lots", "-1", "1.5X", "nan", True])
def test_bad_amounts_are_usage_errors(text):
    with pytest.raises(UsageError, match="--max-params"):
        parse_amount(text, "--max-params")


# ------------------------------------------------------------------ the CLI's exit codes
# micronet:digits_cnn: the audit's own totals are the reference (read from its JSON, not re-derived)


def _audit(capsys, *extra):
    code = main(["audit", "micronet:digits_cnn", "--track", "digits", "--quiet", *extra])
    return code, *capsys.readouterr()


def test_fail_above_exit_codes(capsys, tmp_path):
    code, out, _ = _audit(capsys, "--json", str(tmp_path / "a.json"))
    assert code == 0
    import json

    doc = json.loads((tmp_path / "a.json").read_text())
    score, params, macs = doc["score"]["total"], doc["totals"]["params"], doc["totals"]["macs"]
    assert _audit(capsys, "--fail-above", str(score * 1.01), "--max-params", str(params),
                  "--max-macs", str(macs))[0] == 0
    code, out, err = _audit(capsys, "--fail-above", str(score / 2), "--max-params", "1K",
                            "--max-macs", str(macs))
    assert code == 1
    lines = [line for line in err.splitlines() if line.startswith("micronet: over budget:")]
    assert len(lines) == 2  # score and params; MACs are within
    assert "(+100.0%)" in lines[0]  # twice the limit
    assert "exceeds the budget 1K by" in lines[1]


@pytest.mark.parametrize("option", ["--fail-above", "--max-params", "--max-macs"])
def test_a_bad_bound_is_a_one_line_usage_error(capsys, option):
    code, out, err = _audit(capsys, option, "many")
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and option in err and "1.5M" in err
