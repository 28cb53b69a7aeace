"""The pipeline page's "Per-layer sensitivity" section, from a real sensitivity
step on digits: in that step's card, one chart per layer in ranking order, each
point's drop the one in the notes, layer names escaped, absent elsewhere."""
import dataclasses
import re

import pytest
from conftest import digits_recipe as recipe, trained_digits_cnn

from micronet.pipeline import compress
from micronet.reports.html import render_pipeline_html
from micronet.reports.sensitivity import sensitivity_section, sensitivity_text, setting_label, settings

EVIL = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def history():
    """micronet:digits_cnn after 8 epochs of SGD on digits (as
    tests/plugins/test_sensitivity.py trains it), then a sensitivity step (bits
    8/4/2, sparsity 0.5/0.9) and a quantize step that leaves no table."""
    model = trained_digits_cnn()
    steps = ({"use": "sensitivity", "bits": [4, 8, 2], "sparsity": [0.9, 0.5]}, {"use": "quantize", "weight_bits": 8})
    return compress(recipe(*steps), model=model.eval())


def card(page: str, index: int) -> str:
    start = page.index(f'id="step-{index}"')
    end = page.find("<section", start)
    return page[start:end if end >= 0 else len(page)]


def figures(html_text: str) -> list[tuple[str, str]]:
    """(layer attribute, the figure's markup) in page order."""
    return re.findall(r'<figure class="sens-chart" data-layer="([^"]*)">(.*?)</figure>', html_text, re.S)


def test_section_is_in_the_sensitivity_steps_card_only(history):
    page = render_pipeline_html(history)
    assert history.steps[0].name == "sensitivity" and "table" in history.steps[0].notes
    assert page.count("Per-layer sensitivity") == 1
    assert "Per-layer sensitivity" in card(page, 1) and "Per-layer sensitivity" not in card(page, 2)
    baseline = history.steps[0].notes["baseline"]
    assert f"baseline top-1 <b>{baseline['top1']:.2f}%</b>" in card(page, 1)
    assert f"loss <b>{baseline['loss']:.4f}</b>" in card(page, 1)


def test_one_chart_per_layer_in_ranking_order_with_the_notes_drops(history):
    notes = history.steps[0].notes
    found = figures(card(render_pipeline_html(history), 1))
    assert [layer for layer, _ in found] == notes["ranking"]
    assert len(notes["ranking"]) >= 2
    for layer, markup in found:
        points = re.findall(r'data-kind="(\w+)" data-level="([^"]*)" data-drop="([^"]*)"><title>([^<]*)</title>',
                            markup)
        # chart order: bits high to low, then sparsity low to high, whatever the option order
        assert [(kind, float(level)) for kind, level, _, _ in points] == \
            [("bits", 8), ("bits", 4), ("bits", 2), ("sparsity", 0.5), ("sparsity", 0.9)]
        expected = {(row["kind"], float(row["level"])): row["drop"] for row in notes["table"]
                    if row["layer"] == layer}
        for kind, level, drop, title in points:
            assert float(drop) == expected[(kind, float(level))]
            assert f"top-1 drop {expected[(kind, float(level))]:.2f} points" in title
        assert markup.count("<polyline") == 2  # one line for bits, one for sparsity


def test_table_has_a_row_per_layer_with_worst_drop_and_each_setting(history):
    notes = history.steps[0].notes
    section = sensitivity_section(notes)
    table = section[section.index('<table class="sens-table">'):]
    heads = re.findall(r"<th[^>]*>([^<]*)</th>", table)
    assert heads == ["layer", "worst drop", "8b", "4b", "2b", "50%", "90%"]
    rows = re.findall(r'<tr><td class="name">([^<]*)</td><td class="num worst">([^<]*)</td>', table)
    worst = {name: max(r["drop"] for r in notes["table"] if r["layer"] == name) for name in notes["ranking"]}
    assert rows == [(name, f"{worst[name]:.2f}") for name in notes["ranking"]]


def test_hostile_layer_names_are_escaped(history):
    step = history.steps[0]
    table = [dict(row, layer=EVIL if row["layer"] == step.notes["ranking"][0] else row["layer"])
             for row in step.notes["table"]]
    ranking = [EVIL] + list(step.notes["ranking"][1:])
    evil = dataclasses.replace(step, notes={**step.notes, "table": table, "ranking": ranking})
    page = render_pipeline_html(dataclasses.replace(history, steps=[evil, *history.steps[1:]]))
    assert EVIL not in page and "<script>alert" not in page
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert figures(card(page, 1))[0][0] == escaped
    assert f'<td class="name">{escaped}</td>' in card(page, 1)


def test_a_page_without_a_sensitivity_table_has_no_such_section(history):
    plain = [dataclasses.replace(s, notes={k: v for k, v in s.notes.items() if k != "table"})
             for s in history.steps]
    page = render_pipeline_html(dataclasses.replace(history, steps=plain))
    body = page[page.index("<main>"):]
    assert "Per-layer sensitivity" not in body and '<figure class="sens-chart"' not in body
    assert sensitivity_section({}) == sensitivity_section(None) == sensitivity_section({"table": []}) == ""


def test_settings_order_and_labels_by_hand():
    rows = [{"kind": "sparsity", "level": 0.9}, {"kind": "bits", "level": 2}, {"kind": "bits", "level": 8},
            {"kind": "sparsity", "level": 0.5}, {"kind": "bits", "level": 2}]
    assert settings(rows) == [("bits", 8), ("bits", 2), ("sparsity", 0.5), ("sparsity", 0.9)]
    assert [setting_label(*s) for s in settings(rows)] == ["8b", "2b", "50%", "90%"]
    assert setting_label("sparsity", 0.875) == "87.5%"


def test_kinds_it_does_not_know_yet_are_labelled_not_fatal():
    """Activation bits and channels (being added to the sensitivity step) get
    their labels and colours; any other kind is grey, labelled as noted; a row
    without a numeric drop is left out."""
    row = lambda layer, kind, level, drop: {"layer": layer, "kind": kind, "level": level, "drop": drop,  # noqa: E731
                                            "top1": 90.0, "loss_increase": 0.1}
    table = [row("a", "channels", 0.5, 3.0), row("a", "act_bits", 4, 2.0), row("a", "act_bits", 8, 0.5),
             row("a", "bits", 4, 1.0), row("a", "wavelets", "haar", 7.0), row("a", "channels", 0.25, 1.5),
             row("b", "sparsity", 0.5, 0.25), row("b", "act_bits", 8, None), row("b", "bits", "x", 9.0)]
    assert settings(table[:6]) == [("bits", 4), ("act_bits", 8), ("act_bits", 4), ("channels", 0.25),
                                   ("channels", 0.5), ("wavelets", "haar")]
    assert [setting_label(*s) for s in settings(table[:6])] == ["4b", "a8", "a4", "ch 25%", "ch 50%",
                                                                "wavelets haar"]
    section = sensitivity_section({"table": table})  # no ranking: by worst drop
    assert [layer for layer, _ in figures(section)] == ["a", "b"]
    heads = re.findall(r"<th[^>]*>([^<]*)</th>", section[section.index('<table class="sens-table">'):])
    assert heads == ["layer", "worst drop", "4b", "a8", "a4", "50%", "ch 25%", "ch 50%", "wavelets haar"]
    chart_a = figures(section)[0][1]
    assert chart_a.count("<polyline") == 4  # bits, act_bits, channels, wavelets
    assert 'stroke="#8e5bd0"' in chart_a and 'stroke="#2f9e6e"' in chart_a and 'stroke="#7b8494"' in chart_a
    assert "a · ch 25%: top-1 drop 1.50 points" in chart_a
    assert "activation bits" in section and "channels" in section
    # b: only its sparsity row has a numeric drop and a numeric level for a known kind
    assert re.findall(r'data-kind="(\w+)"', figures(section)[1][1]) == ["sparsity"]


def test_terminal_table_ranked_with_a_row_per_setting_and_the_rest_counted(history):
    notes = history.steps[0].notes
    lines = sensitivity_text(notes, limit=2, where="out/history.json and page.html")
    base = notes["baseline"]
    assert lines[0] == (f"top-1 drop in points, each layer alone, most sensitive first (baseline "
                        f"{base['top1']:.2f}% on {notes['examples']} calibration examples)")
    assert lines[1].split() == ["layer", "worst", "8b", "4b", "2b", "50%", "90%"]
    for line, name in zip(lines[2:4], notes["ranking"]):
        drops = {(r["kind"], float(r["level"])): r["drop"] for r in notes["table"] if r["layer"] == name}
        order = [("bits", 8), ("bits", 4), ("bits", 2), ("sparsity", 0.5), ("sparsity", 0.9)]
        assert line.split() == [name, f"{max(drops.values()):.2f}"] + [f"{drops[s]:.2f}" for s in order]
    more = len(notes["ranking"]) - 2
    assert lines[4:] == [f"  ... {more} more layer{'s' * (more != 1)} in out/history.json and page.html"]
    assert sensitivity_text({}) == sensitivity_text(None) == []


def test_terminal_table_escapes_hostile_names():
    table = [{"layer": "\x1b]0;pwned\x07evil", "kind": "bits", "level": 2, "drop": 5.0}]
    lines = sensitivity_text({"table": table})
    assert lines[2].split() == ["\\x1b]0;pwned\\x07evil", "5.00", "5.00"]
