"""The shipped recipes run end to end: examples/digits.toml on real data."""
import json
from pathlib import Path

import pytest

import micronet
from micronet.cli import main

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_digits_recipe_trains_measures_searches_and_still_qualifies(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["compress", str(EXAMPLES / "digits.toml"), "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "the final model qualifies: top-1" in printed and ">= 97% (digits)" in printed
    entries = json.loads((out / "history.json").read_text())
    assert [e["step"] and e["step"]["name"] for e in entries] == [None, "finetune", "sensitivity", "search"]
    trained, searched = entries[1], entries[3]
    assert trained["score"]["total"] == pytest.approx(2.0)  # the track's reference model at fp32
    assert trained["accuracy"]["meets_bar"] and searched["accuracy"]["meets_bar"]
    assert searched["score"]["total"] <= 0.5  # the budget, met exactly by the rules
    assert len(entries[2]["step"]["notes"]["table"]) == 4 * 7  # 4 layers x (4 bit widths + 3 sparsities)
    assert searched["step"]["notes"]["sensitivity_from"] == "step 2"  # reused, not measured again
    settings = searched["step"]["notes"]["settings"]
    assert set(settings) == {"conv1", "conv2", "conv3", "fc"}
    # the archive re-scores to the recorded score, its bit widths and scales carried along
    archived = micronet.audit(str(out / "model.pt2"), track="digits", freebie=False)
    assert archived.score.total == pytest.approx(searched["score"]["total"], rel=1e-9)
