/* micronet HTML report: sorting, filtering, module folding and CSV export of
   the layer tables, and jumping from a chart or graph mark to its row.
   Vanilla JS, no network; inlined into every page. */
(function () {
  "use strict";
  var tables = {};
  var collator = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });

  function ancestors(path, strict) {
    if (!path) return [];
    var parts = path.split("."), out = [];
    for (var i = 1; i <= parts.length - (strict ? 1 : 0); i++) out.push(parts.slice(0, i).join("."));
    return out;
  }

  function numel(text) {
    if (!text) return 0;
    var first = String(text).split(";")[0], n = 1;
    first.split("x").forEach(function (s) { n *= Number(s) || 0; });
    return n;
  }

  function csvCell(value) {
    if (value === null || value === undefined) return "";
    var text = String(value);
    // text a spreadsheet would evaluate gets a leading quote (OWASP); numbers stay numbers
    if (typeof value === "string" && /^[=+\-@\t\r]/.test(text)) text = "'" + text;
    return /[",\r\n]/.test(text) ? '"' + text.replace(/"/g, '""') + '"' : text;
  }

  function LayerTable(root) {
    var data = JSON.parse(document.getElementById(root.dataset.json).textContent);
    var tbody = root.querySelector("tbody");
    var orig = Array.prototype.slice.call(tbody.children);
    var rows = [], groups = [];
    orig.forEach(function (tr) {
      if (tr.classList.contains("grp")) {
        groups.push({ tr: tr, path: tr.dataset.path, anc: ancestors(tr.dataset.path, true),
                      tog: tr.querySelector(".tog") });
      } else {
        rows.push({ tr: tr, i: Number(tr.dataset.i), anc: ancestors(tr.dataset.path, false),
                    bk: tr.classList.contains("bk") });
      }
    });
    var col = {};
    data.keys.forEach(function (key, k) { col[key] = k; });
    var ui = {
      name: root.querySelector(".f-name"), op: root.querySelector(".f-op"),
      status: root.querySelector(".f-status"), count: root.querySelector(".count"),
      order: root.querySelector(".b-order"), bk: root.querySelector(".f-bk")
    };
    var heads = Array.prototype.slice.call(root.querySelectorAll("thead th"));
    var collapsed = new Set();
    var state = { key: null, dir: 1 };

    function value(row, key) {
      if (key === "index") return row.i;
      var v = data.rows[row.i][col[key]];
      if (key === "output_shapes") return numel(v);
      return v === null || v === undefined ? -Infinity : v;
    }

    function filters() {
      return { name: ui.name.value.trim().toLowerCase(), op: ui.op.value, status: ui.status.value,
               bk: !ui.bk || ui.bk.checked };
    }

    function matches(row, f) {
      var r = data.rows[row.i];
      if (f.name && String(r[col.name]).toLowerCase().indexOf(f.name) < 0) return false;
      if (f.op && r[col.op] !== f.op) return false;
      if (f.status === "!free") return r[col.status] !== "free";
      return !f.status || r[col.status] === f.status;
    }

    function hiddenByFold(anc) {
      for (var k = 0; k < anc.length; k++) if (collapsed.has(anc[k])) return true;
      return false;
    }

    function apply() {
      var f = filters(), filtering = !!(f.name || f.op || f.status);
      var tree = state.key === null && !filtering, shown = 0, folded = 0;
      tbody.classList.toggle("tree", tree);
      rows.forEach(function (row) {
        var hide = tree ? hiddenByFold(row.anc) : !matches(row, f);
        // bookkeeping rows (getattr, getitem, shape checks) stay folded unless asked for by op or checkbox
        if (!hide && row.bk && !f.bk && !f.op) { hide = true; folded++; }
        if (row.tr.hidden !== hide) row.tr.hidden = hide;
        if (!hide) shown++;
      });
      groups.forEach(function (g) {
        var hide = !tree || hiddenByFold(g.anc), open = !collapsed.has(g.path);
        if (g.tr.hidden !== hide) g.tr.hidden = hide;
        if (g.tog && g.tog.getAttribute("aria-expanded") !== String(open)) g.tog.setAttribute("aria-expanded", String(open));
      });
      ui.count.textContent = shown + " of " + rows.length + " nodes" + (folded ? " (" + folded + " bookkeeping folded)" : "");
      ui.order.disabled = state.key === null;
    }

    function place(list) {
      var frag = document.createDocumentFragment();
      list.forEach(function (tr) { frag.appendChild(tr); });
      tbody.appendChild(frag);
    }

    function sort(key, dir) {
      heads.forEach(function (th) { th.removeAttribute("aria-sort"); });
      if (key === null || key === "index" && dir !== -1) {
        state.key = null;
        place(orig);
      } else {
        var th = root.querySelector('thead th[data-key="' + key + '"]');
        var text = th && th.dataset.kind === "text";
        if (dir === undefined) dir = state.key === key ? -state.dir : (text ? 1 : -1);
        state.key = key; state.dir = dir;
        var vals = rows.map(function (row) { return value(row, key); });
        var order = rows.map(function (row, k) { return k; });
        order.sort(function (a, b) {
          var x = vals[a], y = vals[b];
          var c = text ? collator.compare(String(x), String(y)) : (x < y ? -1 : x > y ? 1 : 0);
          return c * dir || rows[a].i - rows[b].i;
        });
        place(order.map(function (k) { return rows[k].tr; }).concat(groups.map(function (g) { return g.tr; })));
        if (th) th.setAttribute("aria-sort", dir > 0 ? "ascending" : "descending");
      }
      apply();
    }

    function toggle(path, open) {
      if (open === undefined) open = collapsed.has(path);
      if (open) collapsed.delete(path); else collapsed.add(path);
      apply();
    }

    function csv() {
      var f = filters(), lines = [data.header.map(csvCell).join(",")];
      Array.prototype.forEach.call(tbody.children, function (tr) {
        if (tr.classList.contains("grp")) return;
        var row = rows[Number(tr.dataset.i)];
        if (row && matches(row, f)) lines.push(data.rows[row.i].map(csvCell).join(","));
      });
      return lines.join("\n") + "\n";
    }

    function download() {
      var blob = new Blob([csv()], { type: "text/csv;charset=utf-8" });
      var a = document.createElement("a");
      a.href = URL.createObjectURL(blob);
      a.download = String(data.file).replace(/[^\w.\-]+/g, "_");
      document.body.appendChild(a);
      a.click();
      setTimeout(function () { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
    }

    function reveal(i) {
      var row = rows[i];
      if (!row) return;
      if (row.tr.hidden) {
        if (state.key === null) row.anc.forEach(function (p) { collapsed.delete(p); });
        ui.name.value = ""; ui.op.value = ""; ui.status.value = "";
        if (row.bk && ui.bk) ui.bk.checked = true;
        apply();
      }
      row.tr.scrollIntoView({ block: "center" });
      row.tr.classList.remove("flash");
      void row.tr.offsetWidth;
      row.tr.classList.add("flash");
    }

    heads.forEach(function (th) {
      th.tabIndex = 0;
      th.addEventListener("click", function () { sort(th.dataset.key); });
      th.addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sort(th.dataset.key); }
      });
    });
    tbody.addEventListener("click", function (e) {
      var tr = e.target.closest("tr.grp");
      if (tr && (e.target.closest(".tog") || e.target.closest("td.name"))) toggle(tr.dataset.path);
    });
    ui.name.addEventListener("input", apply);
    ui.op.addEventListener("change", apply);
    ui.status.addEventListener("change", apply);
    if (ui.bk) ui.bk.addEventListener("change", apply);
    ui.order.addEventListener("click", function () { sort(null); });
    root.querySelector(".b-collapse").addEventListener("click", function () {
      groups.forEach(function (g) { collapsed.add(g.path); });
      apply();
    });
    root.querySelector(".b-expand").addEventListener("click", function () { collapsed.clear(); apply(); });
    root.querySelector(".b-csv").addEventListener("click", download);
    apply();
    return { sort: sort, toggle: toggle, apply: apply, csv: csv, reveal: reveal, rows: rows, state: state };
  }

  function init() {
    Array.prototype.forEach.call(document.querySelectorAll(".layer-table"), function (root) {
      tables[root.id] = LayerTable(root);
    });
    document.addEventListener("click", function (e) {
      var mark = e.target.closest && e.target.closest("svg [data-table][data-i]");
      if (mark && tables[mark.dataset.table]) tables[mark.dataset.table].reveal(Number(mark.dataset.i));
    });
  }

  window.MicronetReport = { tables: tables };
  init();
})();
