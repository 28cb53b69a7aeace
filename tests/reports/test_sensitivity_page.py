"""The pipeline page's "Per-layer sensitivity" section, from a real sensitivity
step on digits: in that step's card, one chart per layer in ranking order, each
point's drop the one in the notes, layer names escaped, absent elsewhere."""
import dataclasses
import re

import pytest
from conftest import trained_digits_cnn

from micronet.pipeline import compress
from micronet.reports.html import render_pipeline_html
from micronet.reports.sensitivity import sensitivity_section, setting_label, settings

SHAPE = (1, 1, 8, 8)
EVIL = "<script>alert(1)</script>"


def recipe(*steps):
    return {"model": {"spec": "unused", "input": list(SHAPE)},
            "score": {"track": "digits", "rulebook": "micronet-2019", "freebie": False},
            "data": {"dataset": "digits", "batch_size": 64, "calibration_batches": 2},
            "step": [dict(step) for step in steps]}


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
