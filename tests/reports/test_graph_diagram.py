"""The graph diagram (reports/diagram.py, assets/graph.js): boxes, drawn
edges, foldable modules and fold levels checked by hand on small nets; the
layout dagre makes in headless Chromium checked on torchvision's densenet121
at every fold level (no two boxes overlap, every edge runs downward, frames
hold their boxes, a folded module counts its nodes), at 1400x900 and 390x844
(a click on a node selects its table row, no console error, nothing wider
than the screen); screenshots are kept as artefacts (the test prints where).
Headless Chromium never makes a window narrower than 500 px, so each size is
an iframe of exactly that size (its own viewport), as in test_html_browser.py."""
import html
import json
import re
import shutil
import time
import warnings

import pytest
from torch import nn

import micronet
from headless import CHROMIUM, chromium, results_in_frame
from micronet.reports.diagram import OPEN_BOXES, diagram_data, drawn_edges, graph_json
from micronet.reports.html import render_audit_html
from micronet.reports.page import asset



class Block(nn.Module):
    """conv, bn, relu and a residual add: four counted nodes."""

    def __init__(self, c):
        super().__init__()
        self.conv, self.bn, self.relu = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU()

    def forward(self, x):
        return self.relu(self.bn(self.conv(x))) + x


class Net(nn.Module):
    """stem; body = two Blocks (8 nodes); wrap holds only wrap.0 (a wrapper:
    no box of its own); head holds one Linear (one node: no module box)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.body = nn.Sequential(Block(4), Block(4))
        self.wrap = nn.Sequential(nn.Sequential(nn.Conv2d(4, 4, 1), nn.ReLU()))
        self.head = nn.Sequential(nn.Linear(4, 10))

    def forward(self, x):
        return self.head(self.wrap(self.body(self.stem(x))).mean((2, 3)))


class Split(nn.Module):
    """Module ``a``'s two layers run with ``mid`` (outside ``a``) between them:
    folding ``a`` to one box would make a cycle a -> mid -> a."""

    def __init__(self):
        super().__init__()
        self.a = nn.ModuleDict({"one": nn.Linear(4, 4), "two": nn.Linear(4, 4)})
        self.mid = nn.ReLU()

    def forward(self, x):
        return self.a["two"](self.mid(self.a["one"](x)))


@pytest.fixture(scope="module")
def net():
    return micronet.audit(Net(), (1, 3, 8, 8))


def test_dense_inputs_implied_by_a_drawn_path_are_left_out_and_shortcuts_stay():
    # DenseNet-like: node k reads every earlier node; only the two latest inputs are drawn
    dense = [(a, b) for b in range(6) for a in range(b)]
    assert drawn_edges(6, dense) == [(0, 1), (0, 2), (1, 2), (1, 3), (2, 3), (2, 4), (3, 4), (3, 5), (4, 5)]
    # a ResNet block: 0 -> 1 -> 2 -> 3 and the shortcut 0 -> 3 (two inputs: both drawn)
    assert drawn_edges(4, [(0, 1), (1, 2), (2, 3), (0, 3)]) == [(0, 1), (0, 3), (1, 2), (2, 3)]
    # three branches that meet: no input depends on another, all are drawn
    fan = [(0, 1), (0, 2), (0, 3), (1, 4), (2, 4), (3, 4)]
    assert drawn_edges(5, fan) == sorted(fan)
    # 0 -> 1 -> 2 -> 3 -> 4 with 4 also reading 0 and 1: 0 and 1 are ancestors of 3 (drawn) -> left out
    assert drawn_edges(5, [(0, 1), (1, 2), (2, 3), (3, 4), (0, 4), (1, 4), (2, 4)]) == \
        [(0, 1), (1, 2), (2, 3), (2, 4), (3, 4)]


def test_boxes_modules_and_fold_levels_of_a_small_net(net):
    rows = net.rows()
    diagram = diagram_data(rows)
    names = [rows[i]["name"] for i, _, _ in diagram.boxes]
    assert names == ["stem", "body.0.conv", "body.0.bn", "body.0.relu", "body.0.add", "body.1.conv", "body.1.bn",
                     "body.1.relu", "body.1.add_1", "wrap.0.0", "wrap.0.1", "mean", "head.0"]
    # wrap is a wrapper around wrap.0 (same two nodes) and head holds one node: neither gets a box
    assert [(m.path, m.parent, m.depth, m.nodes, m.foldable) for m in diagram.modules] == [
        ("body", -1, 1, 8, True), ("body.0", 0, 2, 4, True), ("body.1", 0, 2, 4, True), ("wrap.0", -1, 1, 2, True)]
    body = diagram.modules[0]
    assert body.ops == sum(r["ops"] for r in rows if r["name"].startswith("body."))
    # a folded module's count is the number of boxes inside it
    for k, module in enumerate(diagram.modules):
        inside = [b for b in diagram.boxes if b[2] >= 0 and _inside(diagram.modules, b[2], k)]
        assert module.nodes == len(inside)
    # modules: stem, [body], [wrap.0], mean, head.0; depth 2: body's blocks fold, wrap.0 opens
    assert diagram.levels == (("modules", (0, 3), 5), ("depth 2", (1, 2), 7), ("every node", (), 13))
    assert diagram.default == 2  # 13 boxes <= OPEN_BOXES: everything open
    # a chain, and each block's add reads its input: the shortcuts are drawn, nothing hidden
    assert (0, 4) in diagram.edges and (4, 8) in diagram.edges and len(diagram.edges) == 14
    assert set(diagram.hidden) == {0}


def _inside(modules, home, k):
    while home >= 0:
        if home == k:
            return True
        home = modules[home].parent
    return False


def test_a_module_split_by_an_outside_node_does_not_fold():
    diagram = diagram_data(micronet.audit(Split(), (1, 4)).rows())
    assert [(m.path, m.nodes, m.foldable) for m in diagram.modules] == [("a", 2, False)]
    assert all(0 not in folded for _, folded, _ in diagram.levels)


def test_hostile_names_stay_text_in_the_json_and_the_script_writes_no_markup():
    model = nn.Sequential()
    model.add_module("<script>alert(1)</script>", nn.Sequential(nn.Linear(4, 4), nn.ReLU()))
    model.add_module('"><img src=x onerror=alert(2)>', nn.Linear(4, 2))
    result = micronet.audit(model, (1, 4))
    page = render_audit_html(result)
    start = page.index('<section class="card" id="graph">')
    section = page[start:page.index("</section>", page.index('id="t-graph"', start))]
    assert "<script>alert" not in section and "<img" not in section and "onerror=alert(2)>" not in section
    data = json.loads(re.search(r'<script type="application/json" id="t-graph">(.*?)</script>', section).group(1))
    assert data == json.loads(json.dumps(graph_json(result.rows(), "t")))
    assert [b[1] for b in data["boxes"]] == ["<script>alert(1)</script>.0", "<script>alert(1)</script>.1",
                                             '"><img src=x onerror=alert(2)>']
    assert data["modules"][0][0] == "<script>alert(1)</script>"
    script = asset("graph.js")
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script and "document.write" not in script
    assert "http" not in section.replace("http://www.w3.org/2000/svg", "")  # nothing fetched


# ------------------------------------------------------------------ in Chromium

#: Before the page's scripts: collect errors and console.error calls.
CATCH = ("<script>window.__errors = []; window.addEventListener('error', function (e) {"
         " window.__errors.push(String(e.message)); }); (function () { var ce = console.error;"
         " console.error = function () { window.__errors.push(Array.prototype.join.call(arguments, ' '));"
         " ce.apply(console, arguments); }; })();</script>")

#: After them: every fold level's layout, then the screen at the default level and a click.
PROBE = r"""
<script>
window.addEventListener("load", function () {
  var out = { levels: [] };
  function rectOf(b, pad) { return { x0: b.x - b.width / 2, x1: b.x + b.width / 2, y0: b.y - b.height / 2, y1: b.y + b.height / 2 }; }
  function overlap(a, b) { return a.x0 < b.x1 - 0.5 && b.x0 < a.x1 - 0.5 && a.y0 < b.y1 - 0.5 && b.y0 < a.y1 - 0.5; }
  function overlaps(list) {
    var found = [];
    for (var i = 0; i < list.length; i++) for (var j = i + 1; j < list.length; j++)
      if (overlap(list[i], list[j])) found.push([list[i].id, list[j].id]);
    return found;
  }
  try {
    var G = window.MicronetGraphs["t-graph"], svg = document.querySelector("#graph .gd-svg");
    var data = JSON.parse(document.getElementById("t-graph").textContent);
    data.levels.forEach(function (level, k) {
      var t0 = performance.now();
      G.setLevel(k);
      var ms = performance.now() - t0, st = G.state;
      function rect(id) { return rectOf(st.boxes[id] || st.frames[id] || st.ports[id]); }
      function within(id, frame) {  // id is frame, or drawn inside it
        for (var p = id; p; p = (st.boxes[p] || st.frames[p]).parent) if (p === frame) return true;
        return false;
      }
      var boxes = Object.keys(st.boxes).map(function (id) { var r = rect(id); r.id = id; return r; });
      var up = st.edges.filter(function (e) { return !(rect(e.v).y1 <= rect(e.w).y0); })
        .map(function (e) { return [e.v, e.w]; });
      var ids = Object.keys(st.boxes).concat(Object.keys(st.frames));
      var outside = ids.filter(function (id) {
        var item = st.boxes[id] || st.frames[id];
        if (!item.parent) return false;
        var a = rect(id), b = rect(item.parent);
        return a.x0 < b.x0 || a.x1 > b.x1 || a.y0 < b.y0 || a.y1 > b.y1; });
      Object.keys(st.frames).forEach(function (f) {  // a frame overlaps only what is inside it
        var r = rect(f);
        ids.forEach(function (id) { if (!within(id, f) && !within(f, id) && overlap(r, rect(id))) outside.push([f, id]); });
      });
      var counts = Array.prototype.map.call(svg.querySelectorAll("g.gmodule"), function (el) {
        return [Number(el.dataset.m), el.querySelector(".meta").textContent]; });
      out.levels.push({ label: level[0], expected: level[2], drawn: svg.querySelectorAll("g.gnode, g.gmodule").length,
        laidOut: boxes.length, edges: st.edges.length, heads: st.edges.filter(function (e) { return e.head; }).length, arrows: svg.querySelectorAll(".gedge path.arrowhead").length,
        overlaps: overlaps(boxes), up: up, outside: outside, counts: counts, ms: ms,
        pageHeight: document.documentElement.scrollHeight });
    });
    G.setLevel(data.default);
    var screen = Array.prototype.map.call(svg.querySelectorAll("g.gnode, g.gmodule"), function (el) {
      var r = el.querySelector(".body").getBoundingClientRect();
      return { id: el.dataset.i || "m" + el.dataset.m, x0: r.left, x1: r.right, y0: r.top, y1: r.bottom }; });
    out.screen = { boxes: screen.length, overlaps: overlaps(screen),
                   minWidth: Math.min.apply(null, screen.map(function (r) { return r.x1 - r.x0; })) };
    document.documentElement.style.scrollBehavior = "auto";  // the page scrolls smoothly: jump at once
    var node = svg.querySelector("g.gnode[data-i]");
    node.dispatchEvent(new MouseEvent("click", { bubbles: true }));
    var row = document.getElementById("t-r" + node.dataset.i), rr = row.getBoundingClientRect();
    out.click = { i: Number(node.dataset.i), flash: row.classList.contains("flash"), shown: row.offsetParent !== null,
                  inView: rr.top >= 0 && rr.bottom <= window.innerHeight, selected: node.classList.contains("sel") };
    var module = svg.querySelector("g.gmodule");
    if (module) {
      var m = Number(module.dataset.m), before = svg.querySelectorAll("g.gnode, g.gmodule").length;
      module.dispatchEvent(new MouseEvent("click", { bubbles: true }));
      var opened = svg.querySelectorAll("g.gnode, g.gmodule").length;
      var title = svg.querySelector('g.gtitle[data-m="' + m + '"]');
      title.dispatchEvent(new MouseEvent("click", { bubbles: true }));
      out.fold = { before: before, opened: opened, folded: svg.querySelectorAll("g.gnode, g.gmodule").length,
                   hadTitle: !!title };
    }
    var box = document.querySelector("#graph .gd").getBoundingClientRect();
    out.width = { gd: box.right, viewport: window.innerWidth, page: document.documentElement.scrollWidth };
    out.viewport = [window.innerWidth, window.innerHeight];
  } catch (e) {
    out.error = String(e && e.stack || e);
  }
  out.errors = window.__errors;
  var pre = document.createElement("pre");
  pre.id = "test-results";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>
"""

#: For the screenshots: only the graph section, at its default level.
SHOT_STYLE = "<style>main > section:not(#graph) { display: none; }</style>"

#: The probed page in an iframe of exactly the size asked for: headless
#: Chromium will not make a window narrower than 500 px, so a 390 px phone is
#: a 390 px frame (its own viewport: media queries, innerWidth and scrollWidth
#: are the frame's). Once the frame has loaded (its probe ran on its own load
#: event, before this one), the probe's results are copied out to this
#: document, which ``--dump-dom`` prints.
FRAME = r"""<!doctype html><html><body style="margin:0">
<iframe id="f" src="%(page)s" style="display:block;width:%(w)dpx;height:%(h)dpx;border:0"></iframe>
<script>
document.getElementById("f").addEventListener("load", function () {
  var pre = document.createElement("pre"), found;
  try { found = this.contentDocument.getElementById("test-results"); } catch (e) { found = null; }
  pre.id = "test-results";
  pre.textContent = found ? found.textContent : JSON.stringify({ error: "the frame's probe wrote nothing" });
  document.body.appendChild(pre);
});
</script></body></html>
"""




def probe(tmp_path, page: str, width: int, height: int) -> dict:
    """What PROBE saw of ``page`` loaded in a ``width`` x ``height`` (px) iframe."""
    path = tmp_path / f"probed-{width}.html"
    path.write_text(page.replace("<head>", "<head>" + CATCH, 1).replace("</body>", PROBE + "</body>"))
    frame = tmp_path / f"frame-{width}.html"
    frame.write_text(FRAME % {"page": path.name, "w": width, "h": height})
    return results_in_frame(tmp_path, frame, width, height)


def screenshot(tmp_path, page: str, width: int, height: int):
    """A PNG of ``page`` (only its graph section) in a ``width`` px frame,
    2400 px tall as test_html_browser.py takes its phone shot."""
    path = tmp_path / f"shot-{width}.html"
    path.write_text(page.replace("</head>", SHOT_STYLE + "</head>", 1))
    frame = tmp_path / f"shot-frame-{width}.html"
    frame.write_text(FRAME.split("<script>")[0] % {"page": path.name, "w": width, "h": 2400} + "</body></html>")
    shot = tmp_path / f"densenet121-graph-{width}x{height}.png"
    chromium(tmp_path, f"--window-size={max(width, 500)},2400", f"--screenshot={shot}", frame.as_uri())
    return shot


@pytest.fixture(scope="module")
def densenet121():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = micronet.audit("torchvision:densenet121", track="imagenet")
    return result, render_audit_html(result)


@pytest.mark.slow
def test_densenet121_diagram_in_chromium(densenet121, tmp_path, artefacts):
    """Every fold level of densenet121 laid out by dagre in the page, then the
    page at a desktop and a phone size: boxes apart, arrows downward, a click
    selects the row; the screenshots are printed and kept."""
    assert CHROMIUM, "Chromium is needed: `make test` installs it (apt-get install chromium)"
    result, page = densenet121
    start = time.perf_counter()
    data = graph_json(result.rows(), "t")
    assert time.perf_counter() - start < 1.0  # about 30 ms here (Python lays nothing out: the page does)
    # by hand: 368 counted nodes; features opens to conv0, norm0, relu0, pool0, 4 dense blocks,
    # 3 transitions and norm5, then relu, pool and classifier outside it: 15 boxes
    assert [(label, count) for label, _, count in data["levels"]] == [
        ("modules", 4), ("depth 2", 15), ("depth 3", 78), ("every node", 368)]
    assert data["levels"][data["default"]][0] == "depth 2" and 15 <= OPEN_BOXES
    blocks = {m[0]: m[2] for m in data["modules"] if ".denseblock" in m[0] and m[0].count(".") == 1}
    assert blocks == {"features.denseblock1": 6 * 6, "features.denseblock2": 12 * 6,
                      "features.denseblock3": 24 * 6, "features.denseblock4": 16 * 6}  # 6 counted nodes a layer
    for width, height in ((1400, 900), (390, 844)):
        seen = probe(tmp_path, page, width, height)
        assert "error" not in seen, seen["error"]
        assert seen["viewport"] == [width, height]  # the frame's viewport: a true phone width
        assert seen["errors"] == [], seen["errors"]
        for level in seen["levels"]:
            assert level["drawn"] == level["laidOut"] == level["expected"], level["label"]
            assert level["overlaps"] == [] and level["up"] == [] and level["outside"] == [], level["label"]
            assert level["arrows"] == level["heads"] > 0 and level["edges"] >= level["heads"]
            for m, text in level["counts"]:
                assert text.startswith(f"{data['modules'][m][2]} nodes · "), (m, text)
        assert [level["label"] for level in seen["levels"]] == ["modules", "depth 2", "depth 3", "every node"]
        assert len({level["pageHeight"] for level in seen["levels"]}) == 1  # switching levels: the page keeps still
        assert {m for m, _ in seen["levels"][1]["counts"]} == {
            k for k, m in enumerate(data["modules"]) if m[0] in blocks or ".transition" in m[0] and m[0].count(".") == 1}
        assert seen["levels"][1]["ms"] < 500  # the level the page opens at: tens of ms
        assert seen["screen"]["boxes"] == 15 and seen["screen"]["overlaps"] == []
        assert seen["screen"]["minWidth"] > 100  # legible: boxes are drawn at their size, not shrunk
        click = seen["click"]
        assert click == {"i": click["i"], "flash": True, "shown": True, "inView": True, "selected": True}
        assert result.rows()[click["i"]]["name"] == "features.conv0"
        assert seen["fold"]["opened"] > seen["fold"]["before"] == seen["fold"]["folded"] == 15
        assert seen["width"]["gd"] <= seen["width"]["viewport"] == width
        assert seen["width"]["page"] <= width  # the page never scrolls sideways
        shot = screenshot(tmp_path, page, width, height)
        assert shot.stat().st_size > 20_000  # a drawn diagram, not a blank page
        print(f"screenshot: {shutil.copy(shot, artefacts / shot.name)}")


def test_hostile_names_are_drawn_as_text_in_chromium(tmp_path):
    assert CHROMIUM, "Chromium is needed: `make test` installs it (apt-get install chromium)"
    model = nn.Sequential()
    model.add_module("<b>x</b>", nn.Linear(4, 4))
    model.add_module('"><img src=x onerror=alert(2)>', nn.ReLU())
    page = render_audit_html(micronet.audit(model, (1, 4)))
    probe_script = ('<script>window.addEventListener("load", function () { var pre = document.createElement("pre");'
                    ' pre.id = "test-results"; var svg = document.querySelector("#graph .gd-svg");'
                    ' pre.textContent = JSON.stringify({ names: Array.prototype.map.call(svg.querySelectorAll('
                    '"g.gnode .name"), function (t) { return t.textContent; }), titles: Array.prototype.map.call('
                    'svg.querySelectorAll("g.gnode > title"), function (t) { return t.textContent.split("  ")[0]; }),'
                    ' markup: svg.querySelectorAll("b, img").length }); document.body.appendChild(pre); });</script>')
    path = tmp_path / "hostile.html"
    path.write_text(page.replace("</body>", probe_script + "</body>"))
    dom = chromium(tmp_path, "--dump-dom", path.as_uri())
    seen = json.loads(html.unescape(re.search(r'<pre id="test-results">(.*?)</pre>', dom, re.S).group(1)))
    assert seen["titles"] == ["<b>x</b>", '"><img src=x onerror=alert(2)>']
    assert seen["names"] == ["<b>x</b>", '"><img src…nerror=alert(2)>'] and seen["markup"] == 0


def test_a_model_with_nothing_counted_draws_a_note_without_errors(tmp_path):
    assert CHROMIUM, "Chromium is needed: `make test` installs it (apt-get install chromium)"
    result = micronet.audit(nn.Sequential(nn.Flatten()), (1, 4))
    assert [r["status"] for r in result.rows()] == ["free"]
    assert diagram_data(result.rows()).levels == (("every node", (), 0),)
    probe_script = ('<script>window.addEventListener("load", function () { var pre = document.createElement("pre");'
                    ' pre.id = "test-results"; var svg = document.querySelector("#graph .gd-svg");'
                    ' pre.textContent = JSON.stringify({ errors: window.__errors, viewBox: svg.getAttribute("viewBox"),'
                    ' note: svg.textContent }); document.body.appendChild(pre); });</script>')
    path = tmp_path / "empty.html"
    path.write_text(render_audit_html(result).replace("<head>", "<head>" + CATCH, 1)
                    .replace("</body>", probe_script + "</body>"))
    dom = chromium(tmp_path, "--dump-dom", path.as_uri())
    seen = json.loads(html.unescape(re.search(r'<pre id="test-results">(.*?)</pre>', dom, re.S).group(1)))
    assert seen == {"errors": [], "viewBox": "0 0 300 60", "note": "no counted nodes"}
