"""The audit page in a real browser: headless Chromium loads the page of
micronet:densenet_cifar, a script injected into it clicks, sorts, filters and
folds, and writes what it saw into ``<pre id=test-results>``; the test reads
that from the dumped DOM and saves a screenshot of the page."""
import html
import json
import re
import shutil

import pytest

import micronet
from headless import CHROMIUM, chromium, results_in_frame
from micronet.reports.html import render_audit_html

pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Chromium is not installed: `make test` installs it where it can (apt-get install chromium)")

#: Runs after the page's own script; every check's raw observation goes into the JSON.
PROBE = r"""
<script>
(function () {
  var out = {};
  function visible(t) {
    return Array.prototype.filter.call(t.querySelectorAll("tbody tr.row"), function (tr) {
      return tr.offsetParent !== null;
    });
  }
  try {
    var t = document.getElementById("t");
    var data = JSON.parse(document.getElementById("t-data").textContent);
    var ops = data.keys.indexOf("ops"), op = data.keys.indexOf("op");
    var opsOf = function (tr) { return data.rows[Number(tr.dataset.i)][ops]; };
    out.rows = t.querySelectorAll("tbody tr.row").length;
    out.visible = visible(t).length;
    out.rowHeight = visible(t)[0].getBoundingClientRect().height;
    var th = t.querySelector('th[data-key="ops"]');
    th.click();
    var sorted = visible(t).map(opsOf);
    out.sortedFirst = sorted[0];
    out.maxOps = Math.max.apply(null, data.rows.map(function (r) { return r[ops]; }));
    out.descending = sorted.every(function (v, k) { return k === 0 || sorted[k - 1] >= v; });
    out.ariaSort = th.getAttribute("aria-sort");
    out.groupsShownWhenSorted = Array.prototype.filter.call(t.querySelectorAll("tr.grp"),
      function (tr) { return tr.offsetParent !== null; }).length;
    th.click();
    out.ascendingFirst = opsOf(visible(t)[0]);
    out.minOps = Math.min.apply(null, data.rows.map(function (r) { return r[ops]; }));
    t.querySelector(".b-order").click();
    out.backInOrder = visible(t).map(function (tr) { return Number(tr.dataset.i); })
      .every(function (v, k, a) { return k === 0 || a[k - 1] < v; });
    var select = t.querySelector(".f-op");
    select.value = "conv2d";
    select.dispatchEvent(new Event("change"));
    var convs = visible(t);
    out.filtered = convs.length;
    out.filteredOps = Array.from(new Set(convs.map(function (tr) { return data.rows[Number(tr.dataset.i)][op]; })));
    out.count = t.querySelector(".count").textContent;
    select.value = "";
    select.dispatchEvent(new Event("change"));
    var name = t.querySelector(".f-name");
    name.value = "trans2";
    name.dispatchEvent(new Event("input"));
    out.nameFiltered = visible(t).map(function (tr) { return data.rows[Number(tr.dataset.i)][0]; });
    name.value = "";
    name.dispatchEvent(new Event("input"));
    var group = t.querySelector('tr.grp[data-path="dense1"]');
    var inside = Array.prototype.filter.call(t.querySelectorAll("tbody tr.row"), function (tr) {
      return tr.dataset.path === "dense1" || tr.dataset.path.indexOf("dense1.") === 0;
    });
    out.before = visible(t).length;
    group.querySelector(".tog").click();
    out.afterCollapse = visible(t).length;
    out.insideHidden = inside.every(function (tr) { return tr.offsetParent === null; });
    out.inside = inside.length;
    out.groupStillShown = group.offsetParent !== null;
    group.querySelector(".tog").click();
    out.afterExpand = visible(t).length;
    t.querySelector(".b-collapse").click();
    var mark = document.querySelector("svg.top g.mark[data-i]");
    mark.dispatchEvent(new MouseEvent("click", { bubbles: true }));
    var target = document.getElementById("t-r" + mark.dataset.i);
    out.jump = { shown: target.offsetParent !== null, flash: target.classList.contains("flash"),
                 visible: visible(t).length };
    t.querySelector(".b-expand").click();
    out.charts = {};
    ["svg.layers", "svg.top", "svg.heatmap"].forEach(function (sel) {
      var svg = document.querySelector(sel), box = svg && svg.getBoundingClientRect();
      out.charts[sel] = svg ? { w: box.width, h: box.height,
                                marks: svg.querySelectorAll("rect, circle, path").length } : null;
    });
    out.csvLines = window.MicronetReport.tables.t.csv().trim().split("\n").length;
    out.csvHeader = window.MicronetReport.tables.t.csv().split("\n")[0];
  } catch (e) {
    out.error = String(e && e.stack || e);
  }
  var pre = document.createElement("pre");
  pre.id = "test-results";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script>
"""





@pytest.fixture(scope="module")
def densenet():
    result = micronet.audit("micronet:densenet_cifar", track="cifar100")
    return result, render_audit_html(result, what_if=result.what_if(bits=[32, 16, 8, 4], sparsity=[0, 0.5, 0.9]))


def test_table_sorting_filtering_folding_and_charts_work_in_chromium(densenet, tmp_path):
    result, page = densenet
    rows = result.rows()
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("</body>", PROBE + "</body>"))
    dom = chromium(tmp_path, "--dump-dom", probed.as_uri())
    found = re.search(r'<pre id="test-results">(.*?)</pre>', dom, re.S)
    assert found, dom[-2000:]
    seen = json.loads(html.unescape(found.group(1)))
    assert "error" not in seen, seen["error"]

    assert seen["rows"] == seen["visible"] == len(rows)
    assert 14 < seen["rowHeight"] < 40  # styled, one line per row
    assert seen["ariaSort"] == "descending" and seen["descending"]
    assert seen["sortedFirst"] == seen["maxOps"] == max(r["ops"] for r in rows)
    assert seen["groupsShownWhenSorted"] == 0
    assert seen["ascendingFirst"] == seen["minOps"] and seen["backInOrder"]

    convs = sum(r["op"] == "conv2d" for r in rows)
    assert seen["filtered"] == convs < len(rows) and seen["filteredOps"] == ["conv2d"]
    assert seen["count"] == f"{convs} of {len(rows)} nodes"
    assert seen["nameFiltered"] and all("trans2" in name for name in seen["nameFiltered"])

    assert seen["inside"] > 0 and seen["insideHidden"] and seen["groupStillShown"]
    assert seen["afterCollapse"] == seen["before"] - seen["inside"] and seen["afterExpand"] == seen["before"]

    assert seen["jump"]["shown"] and seen["jump"]["flash"] and seen["jump"]["visible"] < len(rows)
    for selector, chart in seen["charts"].items():
        assert chart and chart["w"] > 100 and chart["h"] > 50 and chart["marks"] > 5, (selector, chart)
    assert seen["csvLines"] == len(rows) + 1 and seen["csvHeader"].startswith("name,op,status,")


def test_screenshot_of_the_page(densenet, tmp_path, artefacts):
    _, page = densenet
    path = tmp_path / "densenet_cifar.html"
    path.write_text(page)
    shot = tmp_path / "densenet_cifar.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1400,1000", path.as_uri())
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one
    print(f"screenshot: {shutil.copy(shot, artefacts / shot.name)}")


def test_the_pages_csv_export_defuses_formula_names(tmp_path):
    """Layer names a spreadsheet would evaluate get a leading quote in the
    page's own CSV export, as in `--csv`; numbers (negative ones too) stay numbers."""
    from torch import nn

    model = nn.Sequential()
    model.add_module('=HYPERLINK("http://x")', nn.Linear(4, 4))
    model.add_module("@sum", nn.ReLU())
    page = render_audit_html(micronet.audit(model, (1, 4)))
    probe = ('<script>var pre = document.createElement("pre"); pre.id = "test-results";'
             'pre.textContent = window.MicronetReport.tables.t.csv(); document.body.appendChild(pre);</script>')
    probed = tmp_path / "hostile.html"
    probed.write_text(page.replace("</body>", probe + "</body>"))
    dom = chromium(tmp_path, "--dump-dom", probed.as_uri())
    found = re.search(r'<pre id="test-results">(.*?)</pre>', dom, re.S)
    assert found, dom[-2000:]
    names = [line.split(",")[0] for line in html.unescape(found.group(1)).strip().split("\n")[1:]]
    assert '"\'=HYPERLINK(""http://x"")"' in names and "'@sum" in names
    assert not any(name.startswith(("=", "@", "+", "-")) for name in names)


# ------------------------------------------------------------------ every page at a desktop and a phone size

#: In the page's <head>: collect errors and console.error calls.
CATCH = ("<script>window.__errors = []; window.addEventListener('error', function (e) {"
         " window.__errors.push(String(e.message)); }); (function () { var ce = console.error;"
         " console.error = function () { window.__errors.push(Array.prototype.join.call(arguments, ' '));"
         " ce.apply(console, arguments); }; })();</script>")

#: The frame's page measured from outside: headless Chromium will not make a
#: window narrower than 500 px, so the phone is a 390x844 iframe (its own
#: viewport: media queries and scrollWidth are the frame's).
FRAME = r"""<!doctype html><html><body style="margin:0">
<iframe id="f" src="%(page)s" style="width:%(w)dpx;height:%(h)dpx;border:0"></iframe>
<script>
document.getElementById("f").addEventListener("load", function () {
  var win = this.contentWindow, doc = this.contentDocument, out = {};
  function rgb(text) { return (text.match(/[\d.]+/g) || []).slice(0, 3).map(Number); }
  function lum(c) {
    c = c.map(function (v) { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
    return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
  }
  function background(el) {
    for (; el; el = el.parentElement) {
      var bg = win.getComputedStyle(el).backgroundColor;
      if (bg && bg !== "transparent" && !/rgba\(.*,\s*0\)$/.test(bg)) return bg;
    }
    return "rgb(255, 255, 255)";
  }
  function contrast(el) {
    if (!el) return null;
    var a = lum(rgb(win.getComputedStyle(el).color)), b = lum(rgb(background(el)));
    return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
  }
  try {
    out.viewport = win.innerWidth;
    out.scrollWidth = doc.documentElement.scrollWidth;
    out.wide = [];
    doc.querySelectorAll("main *").forEach(function (e) {
      var r = e.getBoundingClientRect();
      if (r.right > win.innerWidth + 1 && !e.parentElement.closest(".scroll,.hscroll,.delta-wrap,.chart-box,.gd,table"))
        out.wide.push(e.tagName + "." + e.className);
    });
    out.wide = out.wide.slice(0, 10);
    var nav = doc.querySelectorAll(".topbar nav a");
    out.navLinks = Array.prototype.map.call(nav, function (a) {
      var r = a.getBoundingClientRect(); return [r.width, r.height]; });
    out.contrast = { zero: contrast(doc.querySelector("td.z")), unit: contrast(doc.querySelector("th .unit")),
                     muted: contrast(doc.querySelector(".hint")) };
    out.heat = Array.prototype.map.call(doc.querySelectorAll("svg.heatmap"), function (svg) {
      return svg.getBoundingClientRect().right; });
    var bk = doc.querySelector(".layer-table .f-bk");
    if (bk) {
      var shown = function () { return Array.prototype.filter.call(doc.querySelectorAll("#t tbody tr.row"),
        function (tr) { return !tr.hidden; }).length; };
      var before = shown();
      bk.click();
      out.bookkeeping = { before: before, after: shown() };
      bk.click();
    }
    var th = doc.querySelector('.layer-table th[data-key="ops"]');
    if (th) {
      th.click();
      var lbl = th.querySelector(".lbl").getBoundingClientRect(), box = th.getBoundingClientRect();
      out.sortHeader = { inside: lbl.right <= box.right + 0.5 && lbl.left >= box.left - 0.5,
                         arrow: win.getComputedStyle(th.querySelector(".lbl"), "::after").content };
    }
  } catch (e) { out.error = String(e && e.stack || e); }
  out.errors = win.__errors;
  var pre = document.createElement("pre"); pre.id = "test-results"; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script></body></html>
"""

SIZES = ((1400, 900), (390, 844))


@pytest.fixture(scope="module")
def pages():
    """The pages a reader opens: a CNN's audit, a ViT's audit, a real pipeline's page."""
    from conftest import digits_recipe, trained_digits_cnn
    from torchvision.models import VisionTransformer

    from micronet.pipeline import compress
    from micronet.reports.html import render_pipeline_html

    vit = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
                            num_classes=100)
    result = micronet.audit(vit, (1, 3, 32, 32), track="cifar100")
    history = compress(digits_recipe({"use": "sparsify", "amount": 0.5}), model=trained_digits_cnn())
    cnn = micronet.audit("micronet:densenet_cifar", track="cifar100")
    return {"cnn": (cnn, render_audit_html(cnn, what_if=cnn.what_if(bits=[32, 16, 8, 4], sparsity=[0, 0.5, 0.9]))),
            "vit": (result, render_audit_html(result, what_if=result.what_if(bits=[32, 8], sparsity=[0, 0.5]))),
            "pipeline": (history, render_pipeline_html(history))}


@pytest.mark.parametrize("name", ["cnn", "vit", "pipeline"])
def test_every_page_fits_a_phone_and_a_desktop(pages, name, tmp_path, artefacts):
    """At 390x844 the page itself never scrolls sideways (tables and charts
    scroll in their own boxes), the section links stay usable, nothing logs
    an error, zeros and unit captions meet WCAG AA (4.5:1); screenshots of both
    sizes are saved next to the test's files and printed."""
    _, page = pages[name]
    path = tmp_path / f"{name}.html"
    path.write_text(page.replace("<head>", "<head>" + CATCH, 1))
    for width, height in SIZES:
        frame = tmp_path / f"{name}-{width}.html"
        frame.write_text(FRAME % {"page": path.name, "w": width, "h": height})
        seen = results_in_frame(tmp_path, frame, width, height)
        assert "error" not in seen, seen["error"]
        assert seen["viewport"] == width and seen["errors"] == []
        assert seen["scrollWidth"] <= width, (seen["scrollWidth"], seen["wide"])
        assert seen["navLinks"] and all(w >= 40 and h >= 24 for w, h in seen["navLinks"]), seen["navLinks"]
        for what, ratio in seen["contrast"].items():
            assert ratio is None or ratio >= 4.5, (what, ratio)
        assert all(right <= width for right in seen["heat"]), seen["heat"]  # the what-if grid fits
        if name == "vit":  # by hand: 13 checks before the encoder, its 4, each layer's 4 + 2, the last getitem
            assert seen["bookkeeping"]["after"] - seen["bookkeeping"]["before"] == 13 + 4 + 2 * 6 + 1
        if "sortHeader" in seen:
            assert seen["sortHeader"]["inside"] and "▼" in seen["sortHeader"]["arrow"]
        shot_frame = tmp_path / f"{name}-{width}-shot.html"
        shot_frame.write_text(FRAME.split("<script>")[0].replace("%(page)s", path.name)
                              % {"w": width, "h": 2400} + "</body></html>")
        shot = tmp_path / f"{name}-{width}x{height}.png"
        chromium(tmp_path, f"--window-size={max(width, 500)},2400", f"--screenshot={shot}", shot_frame.as_uri())
        assert shot.stat().st_size > 20_000
        print(f"screenshot: {shutil.copy(shot, artefacts / shot.name)}")
