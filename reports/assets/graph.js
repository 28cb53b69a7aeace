/* micronet HTML report: the model's graph as a layered diagram of boxes.
   Reads the JSON written by micronet/reports/diagram.py, lays out the boxes
   that are showing with dagre (inlined before this script), draws them as SVG
   (every string through textContent, never markup), zooms, pans, keeps an
   overview, folds and unfolds modules. A click on a node's box is a click on
   an element with data-table and data-i: report.js selects that table row.
   Vanilla JS, no network. */
(function () {
  "use strict";
  var NS = "http://www.w3.org/2000/svg";
  var BOX_W = 188, BOX_H = 58, MOD_H = 52, HEAD = 18, TITLE = 26, FRAME = 12, MARGIN = 14, MIN_SCALE = 0.08, MAX_SCALE = 2.5;

  function el(name, attrs, parent) {
    var node = document.createElementNS(NS, name);
    if (attrs) for (var key in attrs) node.setAttribute(key, attrs[key]);
    if (parent) parent.appendChild(node);
    return node;
  }

  function text(parent, x, y, value, cls) {
    var node = el("text", { x: x, y: y, "class": cls }, parent);
    node.textContent = value;
    return node;
  }

  /* "features.denseblock3.denselayer24.conv2" -> "features.den…layer24.conv2" */
  function clip(value, limit) {
    value = String(value);
    if (value.length <= limit) return value;
    var tail = Math.ceil((limit - 1) * 0.6);
    return value.slice(0, limit - 1 - tail) + "\u2026" + value.slice(value.length - tail);
  }

  function relative(path, home) {
    return home && path.indexOf(home + ".") === 0 ? path.slice(home.length + 1) : path;
  }

  function Diagram(root) {
    var data = JSON.parse(document.getElementById(root.dataset.graph).textContent);
    var boxes = data.boxes, modules = data.modules;
    var scroll = root.querySelector(".gd-scroll"), svg = root.querySelector(".gd-svg");
    var mini = root.querySelector(".gd-mini");
    var levelButtons = Array.prototype.slice.call(root.querySelectorAll(".gd-levels button"));
    var chain = [];  // each module's ancestors and itself, outermost first
    modules.forEach(function (m, k) { chain.push((m[1] >= 0 ? chain[m[1]] : []).concat([k])); });
    var folded = new Set(data.levels[data.default][1]);
    var state = { scale: 1, w: 0, h: 0, boxes: {}, frames: {}, ports: {}, edges: [], selected: null };
    var view = null;  // the overview's viewport rectangle

    // the boxes inside each module (any depth), and the edges whose two ends are inside it (-1: the model)
    var inside = { "-1": boxes.map(function (b, n) { return n; }) }, edgesIn = { "-1": data.edges };
    var enter = {}, leave = {};  // module -> edges coming in from outside it, going out of it
    boxes.forEach(function (b, n) {
      if (b[8] >= 0) chain[b[8]].forEach(function (k) { (inside[k] = inside[k] || []).push(n); });
    });
    data.edges.forEach(function (e) {
      var a = boxes[e[0]][8] >= 0 ? chain[boxes[e[0]][8]] : [], b = boxes[e[1]][8] >= 0 ? chain[boxes[e[1]][8]] : [];
      for (var j = 0; j < a.length && a[j] === b[j]; j++) (edgesIn[a[j]] = edgesIn[a[j]] || []).push(e);
      for (var o = j; o < a.length; o++) (leave[a[o]] = leave[a[o]] || []).push(e);
      for (var i = j; i < b.length; i++) (enter[b[i]] = enter[b[i]] || []).push(e);
    });

    /* what box n shows as among the items of module k's frame (k = -1: the model): itself, a
       folded module ("m") or an open one ("c", a frame); modules that cannot fold have no frame */
    function itemAt(n, k) {
      var home = boxes[n][8];
      if (home < 0) return "n" + n;
      var c = chain[home];
      for (var j = k < 0 ? 0 : c.indexOf(k) + 1; j < c.length; j++) {
        if (!modules[c[j]][5]) continue;
        return (folded.has(c[j]) ? "m" : "c") + c[j];
      }
      return "n" + n;
    }

    /* Lay out the inside of module k (or the model): open modules inside it first, each as one
       box the size of its frame, so every dagre run is small (a module's direct items). */
    function layoutLevel(k) {
      var g = new dagre.graphlib.Graph();
      g.setGraph({ rankdir: "TB", nodesep: 20, ranksep: 30, edgesep: 8, marginx: 0, marginy: 0 });
      g.setDefaultEdgeLabel(function () { return {}; });
      var rep = {}, subs = {};
      inside[k].forEach(function (n) {
        var id = itemAt(n, k);
        rep[n] = id;
        if (g.hasNode(id)) return;
        if (id.charAt(0) === "c") {
          var sub = layoutLevel(Number(id.slice(1)));
          subs[id] = sub;
          g.setNode(id, { width: Math.max(sub.w + 2 * FRAME, 140), height: sub.h + TITLE + FRAME });
        } else {
          g.setNode(id, { width: BOX_W, height: id.charAt(0) === "m" ? MOD_H : BOX_H });
        }
      });
      (edgesIn[k] || []).forEach(function (e) {
        var a = rep[e[0]], b = rep[e[1]];
        if (a !== b && !g.hasEdge(a, b)) g.setEdge(a, b);
      });
      // ports: where the edges from outside come in (top) and go out (bottom); hidden edges from
      // the in-port to every source and from every sink to the out-port keep the ports at the ends
      var sources = g.sources(), sinks = g.sinks();
      if (k >= 0 && enter[k]) {
        g.setNode("i" + k, { width: 1, height: 1 });
        enter[k].forEach(function (e) { g.setEdge("i" + k, rep[e[1]]); });
        sources.forEach(function (id) { if (!g.hasEdge("i" + k, id)) g.setEdge("i" + k, id, { hidden: true }); });
      }
      if (k >= 0 && leave[k]) {
        g.setNode("o" + k, { width: 1, height: 1 });
        leave[k].forEach(function (e) { g.setEdge(rep[e[0]], "o" + k); });
        sinks.forEach(function (id) { if (!g.hasEdge(id, "o" + k)) g.setEdge(id, "o" + k, { hidden: true }); });
      }
      dagre.layout(g);
      var info = g.graph();  // an empty graph measures -Infinity
      return { g: g, subs: subs, w: isFinite(info.width) ? info.width : 0, h: isFinite(info.height) ? info.height : 0 };
    }

    /* absolute rectangles (centre x, y; width, height; the frame around) and edge points */
    function place(level, ox, oy, parent) {
      var g = level.g;
      g.nodes().forEach(function (id) {
        var b = g.node(id), r = { x: ox + b.x, y: oy + b.y, width: b.width, height: b.height, parent: parent };
        var kind = id.charAt(0);
        if (kind === "i" || kind === "o") {  // on the frame's top or bottom edge
          var frame = state.frames[parent];
          r.y = kind === "i" ? frame.y - frame.height / 2 : frame.y + frame.height / 2;
          r.width = r.height = 0;
          state.ports[id] = r;
        } else if (kind === "c") {
          state.frames[id] = r;
          var sub = level.subs[id];
          place(sub, r.x - sub.w / 2, r.y - r.height / 2 + TITLE, id);
        } else {
          state.boxes[id] = r;
        }
      });
      g.edges().forEach(function (e) {
        var label = g.edge(e);
        if (label.hidden) return;
        var points = label.points.map(function (p) { return { x: p.x + ox, y: p.y + oy }; });
        var from = state.ports["o" + e.v.slice(1)], to = state.ports["i" + e.w.slice(1)];
        if (e.v.charAt(0) === "i") points.unshift({ x: state.ports[e.v].x, y: state.ports[e.v].y });
        if (e.w.charAt(0) === "o") points.push({ x: state.ports[e.w].x, y: state.ports[e.w].y });
        if (e.v.charAt(0) === "c" && from) points[0] = { x: from.x, y: from.y };
        if (e.w.charAt(0) === "c" && to) points[points.length - 1] = { x: to.x, y: to.y };
        // an arrowhead where the edge reaches a box; none on a frame's edge (it goes on inside)
        state.edges.push({ v: e.v, w: e.w, points: points, head: "nm".indexOf(e.w.charAt(0)) >= 0 });
      });
    }

    function drawCluster(layer, k, box) {
      var m = modules[k], parent = m[1] >= 0 ? modules[m[1]][0] : "";
      var grp = el("g", { "class": "gcluster", "data-m": k }, layer);
      el("rect", { x: box.x - box.width / 2, y: box.y - box.height / 2, width: box.width,
                   height: box.height, rx: 8 }, grp);
      var title = el("g", { "class": "gtitle" + (m[5] ? "" : " fixed"), "data-m": k,
                            tabindex: m[5] ? 0 : -1, role: "button" }, grp);
      el("title", null, title).textContent = m[4] + (m[5] ? "\nclick to fold" : "");
      text(title, box.x - box.width / 2 + 8, box.y - box.height / 2 + 16,
           (m[5] ? "\u25be " : "") + clip(relative(m[0], parent), Math.max(8, Math.floor(box.width / 7) - 3)));
    }

    function drawModule(layer, k, box) {
      var m = modules[k], parent = m[1] >= 0 ? modules[m[1]][0] : "";
      var x = box.x - BOX_W / 2, y = box.y - box.height / 2;
      var grp = el("g", { "class": "gmodule" + (m[6] ? " uncounted" : ""), "data-m": k, tabindex: 0,
                          role: "button", transform: "translate(" + x + " " + y + ")" }, layer);
      el("title", null, grp).textContent = m[4] + "\nclick to open";
      el("rect", { "class": "stack", x: 5, y: 5, width: BOX_W, height: MOD_H, rx: 6 }, grp);
      el("rect", { "class": "body", width: BOX_W, height: MOD_H, rx: 6 }, grp);
      text(grp, 9, 20, "\u25b8 " + clip(relative(m[0], parent), 24), "mname");
      text(grp, 9, 39, m[3], "meta");
    }

    function drawNode(layer, n, box) {
      var b = boxes[n], home = b[8] >= 0 ? modules[b[8]][0] : "";
      var x = box.x - BOX_W / 2, y = box.y - box.height / 2;
      var grp = el("g", { "class": "gnode" + (b[7] ? " uncounted" : ""), "data-i": b[0],
                          "data-table": data.table, tabindex: 0, role: "button",
                          transform: "translate(" + x + " " + y + ")" }, layer);
      el("title", null, grp).textContent = b[6];
      el("rect", { "class": "body", width: BOX_W, height: BOX_H, rx: 5 }, grp);
      el("path", { "class": "head", d: "M0 " + HEAD + "V5a5 5 0 0 1 5-5H" + (BOX_W - 5) + "a5 5 0 0 1 5 5V" + HEAD + "Z",
                   fill: data.colours[b[3]] }, grp);
      text(grp, 7, 13, clip(b[2], b[9] ? 17 : 26), "op");
      if (b[9]) text(grp, BOX_W - 7, 13, "+" + b[9] + " in", "op more");
      text(grp, 7, 32, clip(relative(b[1], home), 27), "name");
      text(grp, 7, 49, clip(b[4], 13), "meta");
      text(grp, BOX_W - 7, 49, b[5], "meta cost");
      if (state.selected === b[0]) grp.classList.add("sel");
    }

    function edgePath(p) {
      var d = "M" + p[0].x.toFixed(1) + " " + p[0].y.toFixed(1);
      if (p.length === 2) return d + "L" + p[1].x.toFixed(1) + " " + p[1].y.toFixed(1);
      for (var k = 1; k < p.length - 1; k++) {  // quadratic through midpoints: smooth, ends exact
        var mx = (p[k].x + p[k + 1].x) / 2, my = (p[k].y + p[k + 1].y) / 2;
        if (k === p.length - 2) { mx = p[k + 1].x; my = p[k + 1].y; }
        d += "Q" + p[k].x.toFixed(1) + " " + p[k].y.toFixed(1) + " " + mx.toFixed(1) + " " + my.toFixed(1);
      }
      return d;
    }

    /* a filled triangle at the end of an edge, pointing along its last segment */
    function arrow(points) {
      var tip = points[points.length - 1], from = points[points.length - 2];
      var dx = tip.x - from.x, dy = tip.y - from.y, len = Math.sqrt(dx * dx + dy * dy) || 1;
      dx /= len; dy /= len;
      var bx = tip.x - 8 * dx, by = tip.y - 8 * dy;
      return "M" + tip.x.toFixed(1) + " " + tip.y.toFixed(1) + "L" + (bx - 4 * dy).toFixed(1) + " " +
        (by + 4 * dx).toFixed(1) + "L" + (bx + 4 * dy).toFixed(1) + " " + (by - 4 * dx).toFixed(1) + "Z";
    }

    function render() {
      var top = layoutLevel(-1);
      state.w = Math.ceil(top.w + 2 * MARGIN) || 1;
      state.h = Math.ceil(top.h + 2 * MARGIN) || 1;
      state.boxes = {};
      state.frames = {};
      state.edges = [];
      state.ports = {};
      place(top, MARGIN, MARGIN, null);
      while (svg.firstChild) svg.removeChild(svg.firstChild);
      var frames = el("g", { "class": "gclusters" }, svg);
      var edges = el("g", { "class": "gedges" }, svg);
      var nodes = el("g", { "class": "gnodes" }, svg);
      Object.keys(state.frames).forEach(function (id) {  // outer frames first: placed before their insides
        drawCluster(frames, Number(id.slice(1)), state.frames[id]);
      });
      state.edges.forEach(function (e) {
        var grp = el("g", { "class": "gedge" }, edges);
        el("path", { d: edgePath(e.points) }, grp);
        if (e.head) el("path", { "class": "arrowhead", d: arrow(e.points) }, grp);
      });
      Object.keys(state.boxes).forEach(function (id) {
        if (id.charAt(0) === "m") drawModule(nodes, Number(id.slice(1)), state.boxes[id]);
        else drawNode(nodes, Number(id.slice(1)), state.boxes[id]);
      });
      if (!boxes.length) {
        state.w = 300; state.h = 60;
        text(nodes, 150, 34, "no counted nodes", "meta empty");
      }
      svg.setAttribute("viewBox", "0 0 " + state.w + " " + state.h);
      svg.dataset.boxes = String(Object.keys(state.boxes).length);
      drawMini();
      zoom(state.scale);
    }

    function drawMini() {
      while (mini.firstChild) mini.removeChild(mini.firstChild);
      mini.setAttribute("viewBox", "0 0 " + state.w + " " + state.h);
      var ratio = state.h / state.w, width = mini.clientWidth || 140;
      mini.style.height = Math.min(Math.max(width * ratio, 40), 220) + "px";
      Object.keys(state.frames).forEach(function (id) {
        var b = state.frames[id];
        el("rect", { x: b.x - b.width / 2, y: b.y - b.height / 2, width: b.width, height: b.height,
                     "class": "mc" }, mini);
      });
      Object.keys(state.boxes).forEach(function (id) {
        var b = state.boxes[id], fill = id.charAt(0) === "n" ? data.colours[boxes[Number(id.slice(1))][3]] : "#5b6476";
        el("rect", { x: b.x - b.width / 2, y: b.y - b.height / 2, width: b.width, height: b.height,
                     fill: fill }, mini);
      });
      view = el("rect", { "class": "mview" }, mini);
      moved();
    }

    function moved() {
      if (!view) return;
      var s = state.scale;
      view.setAttribute("x", scroll.scrollLeft / s);
      view.setAttribute("y", scroll.scrollTop / s);
      view.setAttribute("width", Math.min(scroll.clientWidth / s, state.w));
      view.setAttribute("height", Math.min(scroll.clientHeight / s, state.h));
    }

    /* scale the drawing, keeping graph point (gx, gy) under screen offset (sx, sy) in the box */
    function zoom(scale, gx, gy, sx, sy) {
      scale = Math.min(MAX_SCALE, Math.max(MIN_SCALE, scale));
      if (gx === undefined) {
        sx = scroll.clientWidth / 2; sy = scroll.clientHeight / 2;
        gx = (scroll.scrollLeft + sx) / state.scale; gy = (scroll.scrollTop + sy) / state.scale;
      }
      state.scale = scale;
      svg.setAttribute("width", Math.round(state.w * scale));
      svg.setAttribute("height", Math.round(state.h * scale));
      scroll.scrollLeft = gx * scale - sx;
      scroll.scrollTop = gy * scale - sy;
      moved();
    }

    function fitScale(whole) {
      var sw = (scroll.clientWidth - 4) / state.w, sh = (scroll.clientHeight - 4) / state.h;
      return Math.min(1, whole ? Math.min(sw, sh) : Math.max(sw, 0.55));
    }

    /* show graph point (gx, gy) at screen offset (sx, sy) in the box */
    function keep(gx, gy, sx, sy) {
      scroll.scrollLeft = gx * state.scale - sx;
      scroll.scrollTop = gy * state.scale - sy;
      moved();
    }

    function screenOf(box) {
      return { sx: box.x * state.scale - scroll.scrollLeft, sy: (box.y - box.height / 2) * state.scale - scroll.scrollTop };
    }

    function setLevel(k) {
      folded = new Set(data.levels[k][1]);
      levelButtons.forEach(function (b) { b.setAttribute("aria-pressed", String(Number(b.dataset.level) === k)); });
      render();
      zoom(fitScale(false), state.w / 2, 0, scroll.clientWidth / 2, 0);
    }

    function toggle(k, open) {
      var before = state.boxes["m" + k] || state.frames["c" + k], at = before && screenOf(before);
      if (open) folded.delete(k); else folded.add(k);
      levelButtons.forEach(function (b) { b.setAttribute("aria-pressed", "false"); });
      render();
      var after = state.boxes["m" + k] || state.frames["c" + k];
      if (at && after) keep(after.x, after.y - after.height / 2, at.sx, at.sy);
    }

    // ---- interaction
    var drag = null, dragged = false;
    scroll.addEventListener("pointerdown", function (e) {
      if (e.pointerType !== "mouse" || e.button !== 0) return;
      drag = { x: e.clientX, y: e.clientY, left: scroll.scrollLeft, top: scroll.scrollTop };
      dragged = false;
    });
    window.addEventListener("pointermove", function (e) {
      if (!drag) return;
      var dx = e.clientX - drag.x, dy = e.clientY - drag.y;
      if (!dragged && Math.abs(dx) + Math.abs(dy) < 5) return;
      dragged = true;
      scroll.classList.add("dragging");
      scroll.scrollLeft = drag.left - dx;
      scroll.scrollTop = drag.top - dy;
    });
    window.addEventListener("pointerup", function () { drag = null; scroll.classList.remove("dragging"); });
    scroll.addEventListener("click", function (e) {
      if (dragged) { dragged = false; e.stopPropagation(); e.preventDefault(); }
    }, true);
    scroll.addEventListener("scroll", moved, { passive: true });
    scroll.addEventListener("wheel", function (e) {
      if (!e.ctrlKey && !e.metaKey) return;
      e.preventDefault();
      var r = scroll.getBoundingClientRect(), sx = e.clientX - r.left, sy = e.clientY - r.top;
      zoom(state.scale * Math.exp(-e.deltaY * 0.002), (scroll.scrollLeft + sx) / state.scale,
           (scroll.scrollTop + sy) / state.scale, sx, sy);
    }, { passive: false });
    svg.addEventListener("click", function (e) {
      var node = e.target.closest(".gnode"), module = e.target.closest(".gmodule"), title = e.target.closest(".gtitle");
      if (node) {
        state.selected = Number(node.dataset.i);
        svg.querySelectorAll(".gnode.sel").forEach(function (n) { n.classList.remove("sel"); });
        node.classList.add("sel");
      } else if (module) {
        toggle(Number(module.dataset.m), true);
      } else if (title && !title.classList.contains("fixed")) {
        toggle(Number(title.dataset.m), false);
      }
    });
    svg.addEventListener("keydown", function (e) {
      if (e.key !== "Enter" && e.key !== " ") return;
      var target = e.target.closest(".gnode, .gmodule, .gtitle");
      if (!target) return;
      e.preventDefault();
      target.dispatchEvent(new MouseEvent("click", { bubbles: true }));
    });
    root.querySelector(".gd-levels").addEventListener("click", function (e) {
      var button = e.target.closest("button[data-level]");
      if (button) setLevel(Number(button.dataset.level));
    });
    root.querySelector(".gd-zoom").addEventListener("click", function (e) {
      var button = e.target.closest("button[data-zoom]");
      if (!button) return;
      var how = button.dataset.zoom;
      if (how === "map") {
        var on = root.classList.toggle("nomap");
        button.setAttribute("aria-pressed", String(!on));
        if (!on) drawMini();
        return;
      }
      if (how === "fit") zoom(fitScale(true), state.w / 2, state.h / 2, scroll.clientWidth / 2, scroll.clientHeight / 2);
      else zoom(state.scale * (how === "in" ? 1.25 : 0.8));
    });
    function miniTo(e) {
      var r = mini.getBoundingClientRect(), box = mini.viewBox.baseVal;
      var k = Math.min(r.width / box.width, r.height / box.height);  // preserveAspectRatio meet
      var ox = (r.width - box.width * k) / 2, gx = (e.clientX - r.left - ox) / k, gy = (e.clientY - r.top) / k;
      keep(gx, gy, scroll.clientWidth / 2, scroll.clientHeight / 2);
    }
    var miniDrag = false;
    mini.addEventListener("pointerdown", function (e) { miniDrag = true; miniTo(e); e.preventDefault(); });
    window.addEventListener("pointermove", function (e) { if (miniDrag) miniTo(e); });
    window.addEventListener("pointerup", function () { miniDrag = false; });

    if (scroll.clientWidth < 600) {  // a phone: the overview would cover the boxes; a button shows it
      root.classList.add("nomap");
      root.querySelector('[data-zoom="map"]').setAttribute("aria-pressed", "false");
    }
    render();
    zoom(fitScale(false), state.w / 2, 0, scroll.clientWidth / 2, 0);
    return { render: render, zoom: zoom, setLevel: setLevel, toggle: toggle, state: state,
             folded: function () { return Array.from(folded); } };
  }

  function init() {
    window.MicronetGraphs = window.MicronetGraphs || {};
    Array.prototype.forEach.call(document.querySelectorAll(".gd[data-graph]"), function (root) {
      if (!window.MicronetGraphs[root.dataset.graph]) window.MicronetGraphs[root.dataset.graph] = Diagram(root);
    });
  }

  init();  // inlined after the diagram's markup, so its elements exist already
})();
