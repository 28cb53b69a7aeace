"""The audit page in a real browser: headless Chromium loads the page of
micronet:densenet_cifar, a script injected into it clicks, sorts, filters and
folds, and writes what it saw into ``<pre id=test-results>``; the test reads
that from the dumped DOM and saves a screenshot of the page."""
import html
import json
import re
import shutil
import subprocess

import pytest

import micronet
from micronet.reports.html import render_audit_html

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
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
    ["svg.layers", "svg.top", "svg.heatmap", ".graph-pane:not([hidden]) svg.graph"].forEach(function (sel) {
      var svg = document.querySelector(sel), box = svg && svg.getBoundingClientRect();
      out.charts[sel] = svg ? { w: box.width, h: box.height,
                                marks: svg.querySelectorAll("rect, circle, path").length } : null;
    });
    document.querySelector('.graph-bar button[data-view="all"]').click();
    var full = document.querySelector('.graph-pane[data-view="all"]');
    out.fullGraph = { hidden: full.hidden, nodes: full.querySelectorAll("g.gnode").length,
                      w: full.querySelector("svg").getBoundingClientRect().width };
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

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars"]


def chromium(tmp_path, *args):
    profile = tmp_path / "profile"
    proc = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


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
    assert not seen["fullGraph"]["hidden"] and seen["fullGraph"]["w"] > 1000
    assert seen["fullGraph"]["nodes"] == sum(r["status"] != "free" for r in rows)
    assert seen["csvLines"] == len(rows) + 1 and seen["csvHeader"].startswith("name,op,status,")


def test_screenshot_of_the_page(densenet, tmp_path):
    _, page = densenet
    path = tmp_path / "densenet_cifar.html"
    path.write_text(page)
    shot = tmp_path / "densenet_cifar.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1400,1000", path.as_uri())
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one
    print(f"screenshot: {shot}")


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
