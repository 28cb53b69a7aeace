"""The pipeline page's "Search" section and the search's terminal lines: from a
real search step on digits (in that step's card only, the budget, predicted and
achieved score and drop, each layer's setting, largest part of the score
first), from hand-set notes (every value formatted with its unit, activation
bits and channels shown only when present), and with hostile layer names."""
import dataclasses
import re
import unicodedata

import pytest
from conftest import digits_recipe as recipe, trained_digits_cnn

from micronet import audit
from micronet.models import digits_cnn
from micronet.pipeline import StepRecord, compress
from micronet.reports.html import render_pipeline_html
from micronet.reports.search import search_section, search_text, search_view

SHAPE = (1, 1, 8, 8)
EVIL = "<script>alert(1)</script>"
TITLE = "\x1b]0;pwned\x07evil"  # xterm: set the window title


@pytest.fixture(scope="module")
def history():
    """The trained digits CNN (>= 97% top-1), then half (a step without a
    search), then a search to a loose budget (score 1.0, half the reference's
    2.0) over two bit widths and two sparsities, without fine-tuning."""
    steps = ({"use": "half"},
             {"use": "search", "target_score": 1.0, "weight_bits": [8, 4], "sparsity": [0, 0.5]})
    return compress(recipe(*steps), model=trained_digits_cnn())


@pytest.fixture(scope="module")
def digits_input():
    """An audit of the untrained digits CNN: the parameters of its layers,
    conv1 1*16*3*3 = 144, conv2 16*32*3*3 = 4,608, conv3 32*64*3*3 = 18,432,
    fc 64*10 + 10 = 650 (the convolutions have no bias: BatchNorm follows)."""
    return audit(digits_cnn(), SHAPE, track="digits", freebie=False)


def card(page: str, index: int) -> str:
    start = page.index(f'id="step-{index}"')
    end = page.find("<section", start)
    return page[start:end if end >= 0 else len(page)]


def rows_of(section: str) -> list[list[str]]:
    body = section[section.index("<tbody>"):section.index("</tbody>")]
    return [re.findall(r"<td[^>]*>(?:<span class=\"sbar\"><i[^>]*></i></span>)?([^<]*)</td>", row)
            for row in re.findall(r"<tr>(.*?)</tr>", body)]


def test_the_section_is_in_the_search_steps_card_only(history):
    assert history.failed is None and [s.name for s in history.steps] == ["half", "search"]
    page = render_pipeline_html(history)
    assert page.count('<div class="search">') == 1
    assert '<div class="search">' in card(page, 2) and '<div class="search">' not in card(page, 1)


def test_budget_scores_and_drops_from_the_real_step(history):
    step, before = history.steps[1], history.steps[0].result
    notes, section = step.notes, card(render_pipeline_html(history), 2)
    assert "score ≤ 1</dd>" in section
    assert f"predicted <b>{notes['predicted_score']:.4g}</b> → achieved <b>{step.result.score.total:.4g}</b>" \
        in section
    assert step.result.score.total <= 1.0 and "within the budget" in section
    assert f"predicted <b>{notes['predicted_drop']:.2f}</b> points" in section
    drop = before.accuracy - step.result.accuracy  # the pipeline's top-1 on the test split, points
    assert f"measured <b>{drop:.2f}</b> points on the test split ({before.accuracy:.2f}% → " \
           f"{step.result.accuracy:.2f}%)" in section
    assert f"{notes['rescores']:,} exact re-scores" in section


def test_one_row_per_layer_largest_part_of_the_score_first(history):
    step = history.steps[1]
    section = search_section(step, history.steps[0].result)
    rows = rows_of(section)
    # the digits CNN's four weighted layers, with their parameters (see digits_input)
    params = {"conv1": "144", "conv2": "4,608", "conv3": "18,432", "fc": "650"}
    assert sorted(row[0] for row in rows) == sorted(params)
    parts = {}
    for name, shown, bits, sparsity, drop, part in rows:
        chosen = step.notes["settings"][name]
        assert drop == f"{chosen['predicted_drop']:.2f}"
        assert shown == params[name]
        assert bits == f"{chosen['weight_bits']:g}" and sparsity == f"{100 * chosen['sparsity']:.4g}%"
        parts[name] = sum(r["share"] for r in step.result.rows() if r["name"] == name) * step.result.score.total
        assert part == f"{parts[name]:.4g}"
    assert [row[0] for row in rows] == sorted(parts, key=lambda name: -parts[name])
    assert "act bits" not in section and "channels" not in section  # no layer has them


NOTES = {
    "settings": {"conv1": {"weight_bits": 8, "sparsity": 0.0, "act_bits": 8, "channels": 0.25,
                           "predicted_drop": 0.125},
                 "conv3": {"weight_bits": 3, "sparsity": 0.875, "act_bits": 4, "predicted_drop": 1.5},
                 "fc": {"weight_bits": 2, "sparsity": 0.5, "channels": 0.5}},
    "predicted_score": 0.123456, "score": 0.120001, "predicted_drop": 1.625, "measured_drop": 0.75,
    "objective": "least score with top-1 drop <= 1 point", "nearest_score": 0.0456, "lambda": 2.5,
    "rescores": 12345, "seconds": 1234.5, "sparsity_reached": {"conv3": 0.8751, "fc": 0.5},
}


def hand_step(notes=NOTES, options=None):
    """A search step as the pipeline records one that failed after choosing
    (no result): only its notes and options speak."""
    return StepRecord(3, "search", "micronet.plugins.search", options or {"target_score": 0.125, "max_drop": 1.0},
                      None, "CompressionError: hand-made", 1.0, notes)


def test_hand_set_notes_each_appear_formatted(digits_input):
    section = search_section(hand_step(), digits_input)
    assert "<dd>least score with top-1 drop &lt;= 1 point</dd>" in section  # an objective it does not know
    assert "<dd>score ≤ 0.125 and top-1 drop ≤ 1 points</dd>" in section
    assert "predicted <b>0.1235</b> → achieved <b>0.12</b>" in section and "within the budget" in section
    assert "predicted <b>1.62</b> points" in section  # 1.625, exact in binary, rounds half to even
    assert "measured <b>0.75</b> points on the test split</dd>" in section  # no top-1 before and after
    assert "nearest reachable score 0.0456 · λ = 2.5 points per score unit · 12,345 exact re-scores · " \
           "1,234.50 s" in section
    heads = re.findall(r"<th[^>]*>([^<]*)(?:<span class=\"unit\">([^<]*)</span>)?</th>", section)
    assert heads == [("layer", ""), ("params", "elements"), ("weight bits", "bits"), ("sparsity", "zeros"),
                     ("act bits", "bits"), ("channels", "as noted"), ("predicted drop", "top-1 points")]
    # no result after the step: sorted by parameters, most first
    assert rows_of(section) == [["conv3", "18,432", "3", "87.5%", "4", "–", "1.50"],
                                ["fc", "650", "2", "50%", "–", "50%", "–"],
                                ["conv1", "144", "8", "0%", "8", "25%", "0.12"]]
    assert 'title="chosen 87.5%, reached 87.51%"><span class="sbar"><i style="width:87.5%">' in section


def test_over_budget_and_terminal_lines_by_hand(digits_input):
    over = hand_step(options={"target_score": 0.1})
    assert "over the budget" in search_section(over, digits_input)
    lines = search_text(over, digits_input)
    assert lines[0] == "budget score <= 0.1: score predicted 0.1235, achieved 0.1200 (OVER the budget)"
    assert lines[1] == "  objective: least score with top-1 drop <= 1 point"
    assert lines[2] == ("  top-1 drop in points: predicted 1.62 (additive model, calibration split); "
                        "measured 0.75 on the test split")
    assert lines[3].split() == ["layer", "params", "w", "bits", "sparsity", "a", "bits", "channels", "pred.", "drop"]
    assert lines[4].split() == ["conv3", "18,432", "3", "87.5%", "4", "–", "1.50"]
    assert lines[6].split() == ["conv1", "144", "8", "0%", "8", "25%", "0.12"]
    assert len(lines) == 7
    cut = search_text(over, digits_input, limit=1, where="out/history.json")
    assert cut[-1] == "  ... 2 more layers in out/history.json" and len(cut) == 6


def test_a_drop_budget_its_tries_and_columns_that_change_nothing_left_out(digits_input):
    """The notes of a max_accuracy_drop search that backed off once: every
    layer at float activations (32 bits) and no channel zeroed."""
    notes = {"objective": "max_accuracy_drop", "predicted_score": 0.25, "score": 0.25, "predicted_drop": 0.5,
             "accuracy_before": 99.25, "accuracy": 98.5, "measured_drop": 0.75, "least_drop": 0.0,
             "settings": {name: {"weight_bits": 4, "act_bits": 32, "sparsity": 0.5, "channels": 0.0}
                          for name in ("conv1", "conv2")},
             "attempts": [{"budget": 1.0, "predicted_drop": 1.0, "predicted_score": 0.2, "measured_drop": 1.5},
                          {"budget": 0.5, "predicted_drop": 0.5, "predicted_score": 0.25, "measured_drop": 0.75}]}
    step = hand_step(notes=notes, options={"target_score": None, "max_accuracy_drop": 1.0})
    section = search_section(step, digits_input)
    assert "<dd>the lowest score within a top-1 drop budget</dd>" in section
    assert "<dd>top-1 drop ≤ 1 points</dd>" in section and "within the budget" in section  # 0.75 <= 1
    assert "measured <b>0.75</b> points on the test split (99.25% → 98.50%)" in section
    assert "least reachable predicted drop 0.00 points" in section
    assert ("1. predicted-drop budget 1.00 points: predicted drop 1.00, score 0.2, measured drop 1.50 points<br>"
            "2. predicted-drop budget 0.50 points: predicted drop 0.50, score 0.25, measured drop 0.75 points") \
        in section
    assert "act bits" not in section and "channels" not in section
    assert rows_of(section) == [["conv2", "4,608", "4", "50%"], ["conv1", "144", "4", "50%"]]
    lines = search_text(step, digits_input)
    assert lines[0] == "budget top-1 drop <= 1 points: score predicted 0.2500, achieved 0.2500 (within the budget)"
    assert lines[3] == "  try 1. predicted-drop budget 1.00 points: predicted drop 1.00, score 0.2, " \
                       "measured drop 1.50 points"
    assert lines[5].split() == ["layer", "params", "w", "bits", "sparsity"]


def test_steps_without_search_settings_have_no_section(digits_input):
    assert search_view(hand_step(notes={}), digits_input) is None
    assert search_section(hand_step(notes={"settings": {"conv1": 4}}), digits_input) == ""
    assert search_text(hand_step(notes={"table": []}), digits_input) == []


def test_hostile_layer_names_are_escaped(history):
    step = history.steps[1]
    settings = {EVIL if name == "conv2" else name: value for name, value in step.notes["settings"].items()}
    evil = dataclasses.replace(step, notes={**step.notes, "settings": settings, "objective": EVIL})
    page = render_pipeline_html(dataclasses.replace(history, steps=[history.steps[0], evil]))
    assert EVIL not in page and "<script>alert" not in page
    section = card(page, 2)
    assert '<td class="name">&lt;script&gt;alert(1)&lt;/script&gt;</td>' in section
    assert "<dd>&lt;script&gt;alert(1)&lt;/script&gt;</dd>" in section


def test_hostile_layer_names_reach_the_terminal_as_escapes(digits_input):
    notes = {**NOTES, "settings": {TITLE: {"weight_bits": 4, "sparsity": 0.5}}, "objective": TITLE}
    lines = search_text(hand_step(notes=notes), digits_input)
    raw = [c for c in "".join(lines) if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")]
    assert raw == []
    assert lines[1] == "  objective: \\x1b]0;pwned\\x07evil"
    assert lines[-1].split()[0] == "\\x1b]0;pwned\\x07evil"
