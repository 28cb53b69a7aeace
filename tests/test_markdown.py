"""micronet audit --markdown (issue 15): a GitHub-flavoured Markdown score card
and top-layers table, checked on a model counted by hand."""
from collections import OrderedDict

import pytest
from torch import nn

import micronet
from micronet.cli import main
from micronet.markdown import render_markdown


def mlp() -> nn.Module:
    """Linear(4, 3) -> ReLU -> Linear(3, 2) (counted by hand in tests/test_budget.py)."""
    return nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))


def tables(text: str) -> list[list[list[str]]]:
    """Each Markdown table of ``text`` as rows of cells (separator rows left out);
    asserts every row of a table has as many cells as its header."""
    found, current = [], None
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").replace("\\|", "\0").split("|")]
            cells = [c.replace("\0", "\\|") for c in cells]
            if current is None:
                current = [cells]
            elif not all(set(c) <= set("-:") and c for c in cells):
                current.append(cells)
            else:
                assert len(cells) == len(current[0])
                continue
            assert len(cells) == len(current[0]), line
        elif current is not None:
            found.append(current)
            current = None
    return found


def test_score_card_and_top_layers_have_the_hand_counted_figures():
    card, layers = tables(render_markdown(micronet.audit(mlp(), (1, 4))))
    facts = dict(card[1:])
    # params 15 + 8 = 23; storage 23 * 16/32 = 11.5 values = 46 bytes; ops 18 + 1.5 + 9 = 28.5; MACs 12 + 6
    assert facts["params"] == "23 (nonzero 23)"
    assert facts["storage"] == "11.5 32-bit values (46B)"
    assert facts["ops"] == "28.5 MicroNet ops" and facts["MACs"] == "18"
    # score = 11.5/36.5e6 + 28.5/10.49e9 = 3.17785e-07
    assert facts["score"].startswith("**3.17785e-07**")
    assert facts["track"] == "cifar100" and facts["rulebook"] == "micronet-2019"
    assert facts["reference"] == "WideResNet-28-10: 36.5M params, 10.49G ops"
    assert facts["freebie"].startswith("applied") and facts["precision"] == "32-bit weights: 2 layers"
    assert layers[0] == ["#", "layer", "op", "params", "storage", "ops", "MACs", "weight bits", "share"]
    # layer 0: share (7.5/36.5e6 + 18/10.49e9) / score = 65.2%
    assert layers[1] == ["1", "0", "linear", "15", "7.5", "18", "12", "32", "65.2%"]
    assert layers[2] == ["2", "2", "linear", "8", "4", "9", "6", "32", "34.8%"]


def test_quality_row_says_the_bar_of_the_track_in_its_metric():
    from dataclasses import replace

    result = micronet.audit(mlp(), (1, 4))
    assert dict(tables(render_markdown(result))[0][1:])["quality"] == "not measured (bar: top-1 &gt;= 80%)"
    measured = dict(tables(render_markdown(replace(result, accuracy=81.25)))[0][1:])
    assert measured["quality"] == "top-1 81.25% &gt;= 80% (meets the bar)"
    lm = micronet.audit(mlp(), (1, 4), track="wikitext103")
    assert dict(tables(render_markdown(replace(lm, accuracy=36.5)))[0][1:])["quality"] == \
        "perplexity 36.50 &gt; 35 (misses the bar)"


def test_names_with_pipes_and_markup_stay_in_their_cell():
    model = nn.Sequential(OrderedDict([("a|b<i>", nn.Linear(4, 2))]))
    card, layers = tables(render_markdown(micronet.audit(model, (1, 4))))
    assert layers[1][1] == "a\\|b&lt;i&gt;"


def test_cli_writes_the_markdown_file(capsys, tmp_path):
    path = tmp_path / "card.md"
    assert main(["audit", "micronet:digits_cnn", "--track", "digits", "--quiet", "--markdown", str(path),
                 "--top", "3"]) == 0
    card, layers = tables(path.read_text())
    facts = dict(card[1:])
    assert facts["model"].startswith("micronet:digits\\_cnn") and facts["track"] == "digits"
    assert len(layers) == 1 + 3
