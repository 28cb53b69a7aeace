"""The HTML reports: page structure, escaping, pipeline pages, self-containment, CLI flags."""
import html
import re

import pytest
import torch
from torch import nn

import micronet
from micronet import hookimpl
from micronet.cli import main
from micronet.errors import CompressionError
from micronet.manager import Registries, get_plugin_manager
from micronet.pipeline import compress
from micronet.reports.graphview import build_graph
from micronet.reports.html import render_audit_html, render_pipeline_html, write_audit_html
from micronet.reports.layertable import COLUMNS
from micronet.steps import CompressionStep, StepOption


class Tiny(nn.Module):
    """Every status in a few nodes: conv/BN/ReLU in a Sequential (counted),
    flatten (free), torch.special.i0 (no counter: uncounted), a linear head."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = self.pool(self.features(x)).flatten(1)
        return self.fc(torch.special.i0(x))


def _evil_init(self):
    nn.Module.__init__(self)
    self.add_module("<script>alert(1)</script>", nn.Conv2d(3, 4, 3))
    self.add_module("head", nn.Linear(4, 2))


#: A model class named with markup, with a submodule named with markup.
Evil = type("<b>Evil</b>", (nn.Module,), {
    "__init__": _evil_init,
    "forward": lambda self, x: self.head(getattr(self, "<script>alert(1)</script>")(x).mean((2, 3))),
})


@pytest.fixture(scope="module")
def tiny():
    with pytest.warns(micronet.UncountedWarning):
        return micronet.audit(Tiny(), (1, 3, 8, 8), track="cifar100")


@pytest.fixture(scope="module")
def tiny_page(tiny):
    grid = tiny.what_if(bits=[32, 8], sparsity=[0, 0.5, 0.9])
    return render_audit_html(tiny, what_if=grid)


def test_header_card_has_score_terms_reference_bar_freebie_and_rank(tiny, tiny_page):
    score, track = tiny.score, tiny.track
    for text in (f"{score.total:.4g}", f"{score.storage_term:.4g}", f"{score.ops_term:.4g}",
                 track.reference_model, f"top-1 ≥ {track.quality_bar:g}%", "not measured",
                 "applied: 32-bit parameters", "micronet-2019", "1x3x8x8"):
        assert html.escape(text, quote=False) in tiny_page, text
    rank = track.rank(score.total)
    assert rank == 1  # 0.00126: below RIAIR's 0.0044
    assert "would rank <b>1st</b> of 6 (with the 5 published results" in tiny_page and 'class="me"' in tiny_page
    assert '<td>RIAIR</td><td class="num">0.0044</td>' in tiny_page


def test_accuracy_is_shown_against_the_bar(tiny):
    assert "meets the bar" in render_audit_html(tiny, accuracy=81.25)
    below = render_audit_html(tiny, accuracy=42.0)
    assert "42.00%" in below and "below the bar" in below and "not measured" not in below


def test_every_row_is_in_the_table_with_units_in_the_headers(tiny, tiny_page):
    rows = tiny.rows()
    assert {r["status"] for r in rows} == {"counted", "free", "uncounted"}
    found = [int(i) for i in re.findall(r'<tr id="t-r(\d+)" class="row st-', tiny_page)]
    assert found == list(range(len(rows)))
    for status in ("counted", "free", "uncounted"):
        assert tiny_page.count(f'class="row st-{status}"') == sum(r["status"] == status for r in rows)
    for key, label, unit, _, _ in COLUMNS:
        if key == "other_ops":
            continue  # shown only when some node has transcendentals
        head = re.search(rf'<th data-key="{key}"[^>]*>(.*?)</th>', tiny_page).group(1)
        assert html.escape(label) in head and (not unit or f'<span class="unit">{html.escape(unit)}</span>' in head)
    assert '<tr class="grp" data-path="features"' in tiny_page  # a foldable module row


def test_what_if_heat_map_has_one_cell_per_configuration(tiny, tiny_page):
    grid = tiny.what_if(bits=[32, 8], sparsity=[0, 0.5, 0.9])
    totals = [float(t) for t in re.findall(r'<g class="cell(?: best)?" data-total="([^"]+)"', tiny_page)]
    assert totals == pytest.approx([c.total for c in grid.cells], rel=1e-5)
    assert tiny_page.count('class="cell best"') == 1


def test_a_third_what_if_axis_gets_one_panel_per_level(tiny):
    grid = tiny.what_if(bits=[32, 8], sparsity=[0, 0.5], act_bits=[32, 8, 4])
    page = render_audit_html(tiny, what_if=grid)
    for level in (32, 8, 4):
        start = page.index(f"<figcaption>act_bits = {level}</figcaption>")
        panel = page[start:page.index("</figure>", start)]
        totals = [float(t) for t in re.findall(r'data-total="([^"]+)"', panel)]
        expected = [c.total for c in grid.cells if c.level("act_bits") == level]
        assert totals == pytest.approx(expected, rel=1e-5)
    assert page.count('class="cell best"') == 1


def test_charts_are_drawn(tiny, tiny_page):
    assert '<svg class="chart layers"' in tiny_page and '<svg class="chart top"' in tiny_page


def test_the_graph_looks_through_free_nodes(tiny):
    rows = tiny.rows()
    graph = build_graph(rows)
    assert [r["node"] for r in rows if r["status"] == "free"] == ["flatten"] and "flatten" not in graph
    # by hand: a chain, the pool wired straight to i0 past the flatten between them
    assert list(graph.edges) == [("features_0", "features_1"), ("features_1", "features_2"), ("features_2", "pool"),
                                 ("pool", "special_i0"), ("special_i0", "fc")]
    assert graph.nodes["special_i0"]["status"] == "uncounted" and graph.nodes["fc"]["index"] == 6


def test_markup_in_module_and_class_names_renders_as_text():
    result = micronet.audit(Evil(), (1, 3, 8, 8))
    assert result.model == "<b>Evil</b>"
    assert any(r["name"] == "<script>alert(1)</script>" for r in result.rows())
    page = render_audit_html(result, what_if=result.what_if(bits=[32, 8]))
    assert "<script>alert" not in page and "<b>Evil" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;b&gt;Evil&lt;/b&gt;" in page
    # the table's and the diagram's JSON, the page's and the diagram's scripts, nothing else
    tags = re.findall(r"<script[^>]*>", page)
    assert set(tags) == {'<script type="application/json" id="t-data">',
                         '<script type="application/json" id="t-graph">', "<script>"}
    assert tags.count('<script type="application/json" id="t-data">') == 1


def test_the_page_is_self_contained(tiny_page):
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", tiny_page, re.I)
    assert "<link" not in tiny_page and "@import" not in tiny_page
    assert not re.search(r"""url\(\s*["']?(?!#)""", tiny_page)  # only in-page references (SVG markers)
    assert "<style>" in tiny_page and "MicronetReport" in tiny_page


def test_plugin_sections_are_escaped(tiny):
    from micronet.reports.sections import ReportSection

    section = ReportSection("x", "<i>Title</i>", lambda result: [("<u>label</u>", "<img src=x>")])
    page = render_audit_html(tiny, sections={"x": section})
    assert "&lt;i&gt;Title&lt;/i&gt;" in page and "&lt;img src=x&gt;" in page and "<img" not in page


# ------------------------------------------------------------------ pipeline pages


class Steps:
    """A plugin: a step that widens the classifier, one that always fails
    (with markup in its message), and an observer keeping the history."""

    history = None

    @hookimpl
    def micronet_register_steps(self):
        def widen(model, options, context):
            model.fc = nn.Linear(8, options["classes"])
            context.note("<i>classes</i>", options["classes"])
            return model

        def explode(model, options, context):
            raise RuntimeError("<em>boom</em>")

        classes = StepOption("classes", (int,), 10, "classes")
        return [CompressionStep("widen", "a new classifier", widen, (classes,)),
                CompressionStep("explode", "always fails", explode)]

    @hookimpl
    def micronet_pipeline_finished(self, history):
        self.history = history


@pytest.fixture
def steps():
    plugin = Steps()
    return plugin, Registries.from_manager(get_plugin_manager(entry_points=False, extra=[plugin]))


def recipe(*steps):
    return {"model": {"spec": "small", "input": [1, 3, 16, 16]}, "score": {"track": "cifar100", "freebie": False},
            "step": [dict(step) for step in steps]}


def test_pipeline_page_shows_each_step_before_after_and_layer_deltas(steps, small_model):
    _, registries = steps
    history = compress(recipe({"use": "half"}, {"use": "widen", "classes": 40}), model=small_model,
                       registries=registries)
    page = render_pipeline_html(history)
    first, half, widen = history.results
    for step in ("step-1", "step-2"):
        assert f'<section class="card step" id="{step}">' in page
    assert "plugin micronet.plugins.half" in page
    assert '<tr><th scope="row">classes</th><td>40</td></tr>' in page  # the option, as a table row
    assert '<tr><th scope="row">&lt;i&gt;classes&lt;/i&gt;</th><td>40</td></tr>' in page  # the note, escaped
    for result in history.results:
        assert f"{result.score.total:.4g}" in page
    half_part = page[page.index('id="step-1"'):page.index('id="step-2"')]
    conv = re.search(r'<td class="name" title="conv">conv</td>.*?</tr>', half_part).group(0)
    assert conv.count('<td class="num changed">32 → <b>16</b></td>') == 2  # weight and activation bits
    assert 'title="224 → 112">224 → <b>112</b>' in conv  # 3*8*3*3 = 216 + 8 bias params stored at 16 bits
    assert 'class="num down"' in half_part
    widen_part = page[page.index('id="step-2"'):page.index('id="final"')]
    fc = re.search(r'<td class="name" title="fc">fc</td>.*?</tr>', widen_part).group(0)
    assert "90 → <b>360</b>" in fc and 'class="num up"' in fc  # 8*10+10 -> 8*40+40 params
    assert '<svg class="chart steps"' in page and page.count('class="step-bar"') == 3
    assert re.findall(r'<tr id="ft-r(\d+)"', page) == [str(i) for i in range(len(widen.rows()))]


def test_a_failed_pipeline_still_has_a_page_for_what_ran(steps, small_model):
    plugin, registries = steps
    with pytest.raises(CompressionError):
        compress(recipe({"use": "half"}, {"use": "explode"}), model=small_model, registries=registries)
    page = render_pipeline_html(plugin.history)
    assert '<section class="card step failed" id="step-2">' in page and "step 2 (explode) failed" in page
    assert "&lt;em&gt;boom&lt;/em&gt;" in page and "<em>" not in page
    assert '<section class="card step" id="step-1">' in page and 'class="failed"' in page


# ------------------------------------------------------------------ command line


MODEL_FILE = """
from torch import nn

def make():
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
"""


def test_audit_html_flag_writes_the_page(tmp_path, capsys):
    out = tmp_path / "report.html"
    code = main(["audit", "micronet:resnet18_cifar", "--quiet", "--html", str(out),
                 "--what-if", "bits=32,8;sparsity=0,0.5"])
    assert code == 0, capsys.readouterr().err
    page = out.read_text()
    assert page.startswith("<!doctype html>") and "micronet:resnet18_cifar" in page
    assert page.count('<g class="cell') == 4 and 'id="what-if"' in page


def test_compress_html_flag_writes_the_page_even_when_a_step_fails(tmp_path, capsys, steps):
    (tmp_path / "net.py").write_text(MODEL_FILE)
    path = tmp_path / "recipe.toml"
    path.write_text(f'[model]\nspec = "{tmp_path / "net.py"}:make"\ninput = [1, 3, 8, 8]\n'
                    '[[step]]\nuse = "half"\n')
    out = tmp_path / "ok.html"
    assert main(["compress", str(path), "--quiet", "--html", str(out)]) == 2  # the recipe runs net.py
    assert "--trust" in capsys.readouterr().err
    assert main(["compress", str(path), "--trust", "--quiet", "--html", str(out)]) == 0
    assert "report written to" in capsys.readouterr().out
    assert 'id="step-1"' in out.read_text()

    _, registries = steps
    path.write_text(path.read_text() + '[[step]]\nuse = "explode"\n')
    failed = tmp_path / "failed.html"
    assert main(["compress", str(path), "--trust", "--quiet", "--html", str(failed)], registries=registries) == 1
    assert "report of the steps that ran" in capsys.readouterr().err
    page = failed.read_text()
    assert 'class="card step failed" id="step-2"' in page and 'class="card step" id="step-1"' in page


def test_write_is_atomic_and_returns_the_path(tiny, tmp_path):
    path = write_audit_html(tiny, tmp_path / "sub" / "a.html")
    assert path.read_text().endswith("</html>\n")
    assert [p.name for p in path.parent.iterdir()] == ["a.html"]


# ------------------------------------------------------------------ the layer table and charts (issue 16)


@pytest.fixture(scope="module")
def vit_page():
    from torchvision.models import VisionTransformer

    vit = VisionTransformer(image_size=32, patch_size=8, num_layers=1, num_heads=2, hidden_dim=32, mlp_dim=64,
                            num_classes=10)
    result = micronet.audit(vit, (1, 3, 32, 32), track="cifar100")
    return result, render_audit_html(result)


def test_transformer_tables_fold_bookkeeping_rows_and_charge_stored_parameters(vit_page):
    result, page = vit_page
    # by hand, one encoder layer: the model's 13 shape checks and patch arithmetic (getattr, 4 getitem,
    # 2 x (eq, _assert), 2 floordiv, getattr and getitem for the batch size), the encoder's 4 (dim, eq,
    # getattr, _assert), the layer's 4 and its 2 attention-output getitems, and the class-token getitem
    assert "show 24 bookkeeping nodes" in page
    assert page.count('class="row st-free bk"') == 24
    # the class token (32 values) and the position embedding (17 x 32 = 544) are storage, not free
    stored = re.findall(r'<tr id="t-r\d+" class="row st-free stored"[^>]*>.*?</tr>', page, re.S)
    assert len(stored) == 2 and all('<span class="badge stored"' in row for row in stored)
    assert ", 2 stored outside a layer" in page
    rows = {r["name"]: r for r in result.rows()}
    assert rows["class_token"]["params"] == 32 and rows["encoder.pos_embedding"]["params"] == 17 * 32


def test_a_module_holding_over_90_percent_is_opened_in_the_summary():
    from collections import OrderedDict

    from micronet.reports.charts import module_summary

    model = nn.Sequential(OrderedDict(body=nn.Sequential(nn.Linear(100, 100), nn.ReLU(), nn.Linear(100, 100)),
                                      head=nn.Linear(100, 2)))
    rows = micronet.audit(model, (1, 100)).rows()
    # body holds 2 x 10,100 of the 20,402 parameters (and nearly all ops): > 90% of the score
    assert [g["name"] for g in module_summary(rows)] == ["body.0", "body.1", "body.2", "head"]


def test_what_if_has_a_colour_scale_and_says_when_the_freebie_makes_rows_equal(tiny):
    grid = tiny.what_if(bits=[32, 16, 8], sparsity=[0, 0.5])
    page = render_audit_html(tiny, what_if=grid)
    assert "The rows bits = 32 and bits = 16 are equal because of the freebie" in page
    assert '<span class="ramp"></span>' in page
    no_freebie = render_audit_html(tiny, what_if=tiny.what_if(bits=[8, 4], sparsity=[0, 0.5]))
    assert "because of the freebie" not in no_freebie


def test_long_names_are_cut_in_the_middle_with_the_whole_name_kept():
    name = "a_rather_long_module_name_with_a_distinct_end"
    model = nn.Sequential()
    model.add_module(name, nn.Linear(4, 4))
    page = render_audit_html(micronet.audit(model, (1, 4)))
    assert (f'<span class="mid"><span class="h">{name[:-12]}</span><span class="t">{name[-12:]}</span></span>'
            in page)
    assert f'title="{name}\ntarget: nn.Linear' in page  # the whole name on hover
    assert f'"{name}"' in page  # and in the table's data, which the filter searches
