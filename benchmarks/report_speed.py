"""How fast is the HTML audit report to render, to open and to sort?

Run by hand::

    .venv/bin/python benchmarks/report_speed.py                       # densenet121 (~430 nodes)
    .venv/bin/python benchmarks/report_speed.py --models densenet121,efficientnet_b7 --repeat 5

For each model (a torchvision name audited on the meta device, track imagenet):

1. render: ``render_audit_html`` with a 4 x 3 what-if grid, best of ``--repeat``
   runs (``time.perf_counter``, ``gc.collect()`` before each); the page's size.
2. browser: headless Chromium opens the file with a probe script appended. On
   the ``load`` event the probe forces a layout and reads ``performance.now()``
   (milliseconds since navigation started: parsing, styles, the page's script
   and the first layout). It then clicks column headers (MicroNet ops twice,
   then name, params and share) and times each click with a forced layout
   (``performance.now()`` around ``click()`` and ``offsetHeight``), then one
   name filter and one collapse-all. Figures are the median of ``--repeat``
   browser runs. Goals: load < 1 s, sort < 100 ms.

Chromium is found as ``chromium`` (Debian), ``chromium-browser`` or
``google-chrome``; without it only the render figures are printed.
"""
from __future__ import annotations

import argparse
import gc
import html
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import micronet
from micronet.reports.html import render_audit_html

GOALS = {"load_ms": 1000.0, "sort_ms": 100.0}

PROBE = r"""
<script>
window.addEventListener("load", function () {
  document.body.offsetHeight;
  var out = { load_ms: performance.now() };
  var t = document.getElementById("t");
  function timed(action) {
    var t0 = performance.now();
    action();
    document.body.offsetHeight;
    return performance.now() - t0;
  }
  function sortBy(key) { return timed(function () { t.querySelector('th[data-key="' + key + '"]').click(); }); }
  out.sort_ms = {
    "ops (desc)": sortBy("ops"), "ops (asc)": sortBy("ops"), "name": sortBy("name"),
    "params": sortBy("params"), "share": sortBy("share")
  };
  out.order_ms = timed(function () { t.querySelector(".b-order").click(); });
  var name = t.querySelector(".f-name");
  out.filter_ms = timed(function () { name.value = "conv"; name.dispatchEvent(new Event("input")); });
  name.value = ""; name.dispatchEvent(new Event("input"));
  out.collapse_ms = timed(function () { t.querySelector(".b-collapse").click(); });
  out.rows = t.querySelectorAll("tbody tr.row").length;
  var pre = document.createElement("pre");
  pre.id = "bench-results";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>
"""

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1400,1000"]


def best_of(repeat: int, action) -> tuple[float, object]:
    best, value = float("inf"), None
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        value = action()
        best = min(best, time.perf_counter() - start)
    return best, value


def browse(browser: str, page: str, folder: Path) -> dict:
    path = folder / "probed.html"
    path.write_text(page.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    proc = subprocess.run([browser, *FLAGS, f"--user-data-dir={folder / 'profile'}",
                           "--dump-dom", path.as_uri()],
                          capture_output=True, text=True, timeout=180)
    found = re.search(r'<pre id="bench-results">(.*?)</pre>', proc.stdout, re.S)
    if not found:
        raise RuntimeError(f"no results from Chromium (exit {proc.returncode}): {proc.stderr[-800:]}")
    return json.loads(html.unescape(found.group(1)))


def median_of(runs: list[dict]) -> dict:
    out = {k: statistics.median(r[k] for r in runs) for k in ("load_ms", "order_ms", "filter_ms", "collapse_ms")}
    out["sort_ms"] = {k: statistics.median(r["sort_ms"][k] for r in runs) for k in runs[0]["sort_ms"]}
    out["rows"] = runs[0]["rows"]
    return out


def bench(name: str, repeat: int, browser: str | None) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = micronet.audit(name, track="imagenet")
    grid = result.what_if(bits=[32, 16, 8, 4], sparsity=[0, 0.5, 0.9])
    seconds, page = best_of(repeat, lambda: render_audit_html(result, what_if=grid))
    rows = result.rows()
    print(f"{name}: {len(rows)} nodes ({sum(r['status'] != 'free' for r in rows)} counted or uncounted)")
    print(f"  render      {seconds * 1000:8.1f} ms   page {len(page.encode()) / 1e6:.2f} MB")
    if browser is None:
        print("  browser     skipped: Chromium not found (apt-get install chromium)")
        return True
    with tempfile.TemporaryDirectory() as tmp:
        runs = [browse(browser, page, Path(tmp)) for _ in range(repeat)]
    figures = median_of(runs)
    worst_sort = max(figures["sort_ms"].values())
    print(f"  load        {figures['load_ms']:8.1f} ms   (goal < {GOALS['load_ms']:.0f} ms)")
    for column, ms in figures["sort_ms"].items():
        print(f"  sort {column:<11}{ms:6.1f} ms")
    print(f"  sort, worst {worst_sort:8.1f} ms   (goal < {GOALS['sort_ms']:.0f} ms)")
    print(f"  back to network order {figures['order_ms']:.1f} ms, filter 'conv' {figures['filter_ms']:.1f} ms, "
          f"collapse all {figures['collapse_ms']:.1f} ms")
    ok = figures["load_ms"] < GOALS["load_ms"] and worst_sort < GOALS["sort_ms"]
    print(f"  {'PASS' if ok else 'FAIL'}")
    return ok


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="densenet121", help="comma-separated torchvision names")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (default 3)")
    args = parser.parse_args(argv)
    browser = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    results = [bench(name.strip(), args.repeat, browser) for name in args.models.split(",") if name.strip()]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
