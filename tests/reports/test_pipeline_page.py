"""The pipeline page from a real small run: micronet:digits_cnn trained on the
real digits data, sparsified to 50% per layer. Every figure below is counted
by hand from the model's shapes (conv1 1->16 3x3 without bias: 144 weights;
conv2 16->32 3x3: 4,608; conv3 32->64 3x3: 18,432; fc 64->10: 640 weights + 10
biases), not read back from the code under test."""
import re

import pytest
from conftest import digits_recipe, trained_digits_cnn

from micronet.pipeline import compress
from micronet.reports.format import grouped, plural
from micronet.reports.html import render_audit_html, render_pipeline_html
from micronet.rules import CIFAR100, IMAGENET


@pytest.fixture(scope="module")
def sparsified():
    history = compress(digits_recipe({"use": "sparsify", "amount": 0.5}), model=trained_digits_cnn())
    return history, render_pipeline_html(history)


def _row(page: str, name: str) -> str:
    return re.search(rf'<tr><td class="name" title="{name}">{name}</td>.*?</tr>', page).group(0)


def test_a_sparsify_steps_nonzero_and_sparsity_columns_are_the_hand_counts(sparsified):
    _, page = sparsified
    step = page[page.index('id="step-1"'):page.index('id="final"')]
    for name, weights, params in (("conv1", 144, 144), ("conv2", 4608, 4608), ("conv3", 18432, 18432),
                                  ("fc", 640, 650)):
        row = _row(step, name)
        nonzero = params - weights // 2  # half of every weight zeroed, biases kept
        assert f'title="{params:,} → {nonzero:,}"' in row, (name, row)
        assert "0.0% → <b>50.0%</b>" in row, (name, row)  # the fraction of zero weights
    notes = step[step.index("Notes"):]
    assert "11,912 <span" in notes and "23,824 <span" in notes  # zeros and elements: 72+2304+9216+320, 23,824
    assert notes.count('<i style="width:50.0%"></i>') == 4  # per-layer sparsity as a bar list
    assert "{'" not in step and "[]" not in step  # no Python reprs


def test_the_pipeline_page_puts_accuracy_against_the_bar_next_to_each_score(sparsified):
    history, page = sparsified
    first, final = history.input, history.final
    assert first.accuracy is not None and final.accuracy is not None
    for result in (first, final):
        verdict = "meets" if result.accuracy >= 97 else "below"
        assert f"{result.accuracy:.2f}%</span> <span class=\"muted\">{verdict} the bar: top-1 ≥ 97%" in page
    assert '<svg class="chart steps"' in page and page.count('class="acc-pt"') == 2
    assert '<svg class="chart scatter"' in page and "bar 97%" in page


def test_thousands_separators_and_plurals():
    assert grouped(11173962) == "11,173,962" and grouped(2.0) == "2" and grouped(0.000123) == "0.000123"
    assert grouped(True) == "yes" and grouped(1234.5678) == "1,235"
    assert plural(1, "node") == "1 node" and plural(2, "node") == "2 nodes"
    assert plural(1, "entry", "entries") == "1 entry" and plural(1200, "node") == "1,200 nodes"


def test_a_module_of_one_node_reads_1_node():
    from torch import nn

    import micronet

    model = nn.Sequential(nn.Sequential(nn.Linear(4, 4)), nn.ReLU())
    page = render_audit_html(micronet.audit(model, (1, 4)))
    assert '<span class="muted">1 node</span>' in page and "1 nodes" not in page


@pytest.mark.parametrize("track, score, words", [
    (IMAGENET, 0.5, "would rank <b>5th</b> of 5"),  # worse than all 4 published ImageNet results
    (IMAGENET, 0.15, "would rank <b>2nd</b> of 5"),  # between RIAIR's 0.1295 and 0.1887
    (CIFAR100, 0.0055, "would rank <b>3rd</b> of 6"),  # after 0.0044 and 0.0054
])
def test_rank_wording(track, score, words):
    from micronet.reports.html import _ranking

    sentence, table = _ranking(track, score)
    assert words in sentence and "among" not in sentence
    assert "<td>RIAIR</td>" in table
