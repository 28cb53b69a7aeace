"""The model's graph as a diagram of boxes, top to bottom, like Netron's.

Python prepares the graph; the page lays it out. :func:`diagram_data` turns
the rows into boxes (one per non-free node: op, name, output shape, cost),
edges (free nodes such as views and cats are looked through) and a tree of
modules that can fold to one box each. :func:`graph_section` returns the
section: that data as JSON, the stylesheet, and two scripts inlined from
``assets/``: dagre (``dagre.min.js``, the layered Sugiyama layout Netron
uses, MIT licence, vendored unchanged from @dagrejs/dagre 3.1.3) and
``graph.js``, which lays out the boxes that are showing, draws them with
arrows, zooms and pans, keeps an overview, folds and unfolds modules, and
on a click on a box selects the row of the layer table. Nothing is fetched.

Only what is showing is laid out: the page opens with modules folded at the
deepest level that shows at most :data:`OPEN_BOXES` boxes, so a DenseNet
opens with each dense block as one box and the layout costs milliseconds.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import networkx as nx

from .format import percent, plural, shape, si
from .graphview import build_graph
from .page import asset, json_script
from .svg import FAMILIES, esc, family

__all__ = ["Diagram", "Module", "diagram_data", "fold_levels", "graph_section", "OPEN_BOXES"]

#: The page opens at the deepest fold level that shows at most this many boxes.
OPEN_BOXES = 40

_FAMILY_INDEX = {key: k for k, (key, _, _) in enumerate(FAMILIES)}


@dataclass(frozen=True)
class Module:
    """A module that can fold to one box: its dotted ``path``, the index of its
    ``parent`` module (-1 at the top), its ``depth`` (1 at the top), how many
    non-free nodes it holds (``nodes``), their MicroNet ops (32-bit eq.), storage
    (32-bit eq.) and share of the score (a fraction), and whether folding it
    keeps the graph acyclic (``foldable``)."""

    path: str
    parent: int
    depth: int
    nodes: int
    ops: float
    storage: float
    share: float
    uncounted: int
    foldable: bool


@dataclass(frozen=True)
class Diagram:
    """Boxes, edges and modules of a model's graph.

    ``boxes`` are the non-free rows in network order, as (row index, fx node,
    module index or -1); ``edges`` join positions in ``boxes`` (those drawn:
    see :func:`drawn_edges`); ``hidden`` counts each box's inputs that are not
    drawn; ``levels`` are
    (label, folded module indices, boxes showing), shallowest first, ending
    with every node; ``default`` is the level the page opens at."""

    boxes: tuple[tuple[int, str, int], ...]
    edges: tuple[tuple[int, int], ...]
    hidden: tuple[int, ...]
    modules: tuple[Module, ...]
    levels: tuple[tuple[str, tuple[int, ...], int], ...]
    default: int


def _ancestors(path: str) -> list[str]:
    parts = path.split(".") if path else []
    return [".".join(parts[:k]) for k in range(1, len(parts) + 1)]


def _module_tree(graph: nx.DiGraph, paths: Mapping[str, str]) -> tuple[dict[str, str | None], dict[str, list[str]]]:
    """The modules worth a box (two or more nodes, not just a wrapper around a
    single child module), each with its nearest kept parent, and the nodes
    inside each (whole subtree)."""
    inside: dict[str, list[str]] = {}
    for node in graph:
        for path in _ancestors(paths[node]):
            inside.setdefault(path, []).append(node)
    kept = {path for path, nodes in inside.items() if len(nodes) >= 2}
    # a module holding exactly what its only child module holds is a wrapper: keep the child
    for path in sorted(kept, key=len, reverse=True):
        parent = path.rpartition(".")[0]
        if parent in kept and len(inside[parent]) == len(inside[path]):
            kept.discard(parent)
    parent_of: dict[str, str | None] = {}
    for path in sorted(kept, key=lambda p: p.count(".")):
        above = [p for p in _ancestors(path)[:-1] if p in kept]
        parent_of[path] = above[-1] if above else None
    return parent_of, {p: inside[p] for p in kept}


def _convex(graph: nx.DiGraph, members: Sequence[str], order: Mapping[str, int], by_order: Sequence[str]) -> bool:
    """Whether no path leaves ``members`` and comes back (folding them to one
    box then keeps the graph acyclic). Nodes are in topological ``order``, so
    only the nodes between the first and last member can be on such a path."""
    inner = set(members)
    low, high = min(order[n] for n in inner), max(order[n] for n in inner)
    left: set[str] = set()  # outside, reached from the members
    for node in by_order[low:high + 1]:
        reached = any(p in inner or p in left for p in graph.predecessors(node))
        if node in inner:
            if any(p in left for p in graph.predecessors(node)):
                return False
        elif reached:
            left.add(node)
    return True


def fold_levels(modules: Sequence[Module], box_module: Sequence[int]) -> list[tuple[str, tuple[int, ...], int]]:
    """(label, folded modules, boxes showing) for each module depth, then
    every node: at depth ``k`` the outermost foldable modules at depth ``k``
    or deeper are folded."""
    chain = []  # each module's ancestors, itself included, outermost first
    for k, module in enumerate(modules):
        chain.append((chain[module.parent] if module.parent >= 0 else []) + [k])
    levels = []
    deepest = max((m.depth for m in modules), default=0)
    for depth in range(1, deepest + 1):
        folded = []
        for k, module in enumerate(modules):
            if module.foldable and module.depth >= depth and not any(
                    a in folded for a in chain[k][:-1]):
                folded.append(k)
        showing = set()
        shut = set(folded)
        for n, home in enumerate(box_module):
            outer = next((a for a in chain[home] if a in shut), None) if home >= 0 else None
            showing.add(("m", outer) if outer is not None else ("n", n))
        label = "modules" if depth == 1 else f"depth {depth}"
        levels.append((label, tuple(folded), len(showing)))
    levels.append(("every node", (), len(box_module)))
    # drop levels that show no more than the one before
    out: list[tuple[str, tuple[int, ...], int]] = []
    for level in levels:
        if not out or level[2] > out[-1][2]:
            out.append(level)
    return out


def diagram_data(rows: Sequence[Mapping[str, Any]]) -> Diagram:
    """The boxes, edges, foldable modules and fold levels of ``rows`` (an
    audit's :meth:`rows`, in network order)."""
    graph = build_graph(rows)
    paths = {row["node"]: row["module_path"] or "" for row in rows}
    by_order = sorted(graph, key=lambda n: graph.nodes[n]["index"])
    order = {node: k for k, node in enumerate(by_order)}
    parent_of, inside = _module_tree(graph, paths)
    ordered = sorted(parent_of, key=lambda p: min(order[n] for n in inside[p]))  # network order
    ordered = _parents_first(ordered, parent_of)
    index = {path: k for k, path in enumerate(ordered)}
    modules = []
    for path in ordered:
        members = inside[path]
        data = [graph.nodes[n] for n in members]
        depth = 1
        up = parent_of[path]
        while up is not None:
            depth, up = depth + 1, parent_of[up]
        modules.append(Module(
            path=path, parent=index[parent_of[path]] if parent_of[path] is not None else -1, depth=depth,
            nodes=len(members), ops=sum(d["ops"] for d in data), storage=sum(d["storage"] for d in data),
            share=sum(d["share"] for d in data), uncounted=sum(d["status"] == "uncounted" for d in data),
            foldable=_convex(graph, members, order, by_order)))
    boxes = []
    for node in by_order:
        home = next((p for p in reversed(_ancestors(paths[node])) if p in index), None)
        boxes.append((graph.nodes[node]["index"], node, index[home] if home is not None else -1))
    edges = drawn_edges(len(by_order), [(order[a], order[b]) for a, b in graph.edges])
    hidden = [0] * len(boxes)
    for a, b in graph.edges:
        hidden[order[b]] += 1
    for a, b in edges:
        hidden[b] -= 1
    levels = fold_levels(modules, [b[2] for b in boxes])
    fits = [k for k, level in enumerate(levels) if level[2] <= OPEN_BOXES]
    default = fits[-1] if fits else 0
    return Diagram(tuple(boxes), tuple(edges), tuple(hidden), tuple(modules), tuple(levels), default)


def drawn_edges(count: int, edges: Sequence[tuple[int, int]], nearest: int = 2) -> list[tuple[int, int]]:
    """The edges worth drawing among ``count`` nodes numbered in topological
    order: every input of a node that no other input of it depends on, and its
    ``nearest`` latest inputs. An input left out is an ancestor of another
    input, so a drawn path still joins the two, whatever is folded: a
    DenseNet layer's input from every earlier layer (quadratic in the depth,
    and minutes of layout) is drawn from the two latest, while a ResNet's
    shortcut (one of two inputs) stays."""
    inputs: list[list[int]] = [[] for _ in range(count)]
    for a, b in edges:
        inputs[b].append(a)
    below = [0] * count  # bit set of each node's ancestors
    kept = []
    for node in range(count):
        sources = sorted(set(inputs[node]), reverse=True)
        for rank, source in enumerate(sources):
            if rank < nearest or not any(below[other] >> source & 1 for other in sources if other != source):
                kept.append((source, node))
        mask = 0
        for source in sources:
            mask |= below[source] | (1 << source)
        below[node] = mask
    return sorted(kept)


def _parents_first(paths: list[str], parent_of: Mapping[str, str | None]) -> list[str]:
    """``paths`` in their order, each after its parent (a parent's first node
    can come after a child's when the child is called first)."""
    out: list[str] = []
    placed: set[str] = set()

    def place(path: str) -> None:
        if path in placed:
            return
        if parent_of[path] is not None:
            place(parent_of[path])
        placed.add(path)
        out.append(path)

    for path in paths:
        place(path)
    return out


def _box_json(row: Mapping[str, Any], module: int) -> list:
    """[row index, name, op, family, output shape, cost line, tooltip, uncounted, module, hidden inputs]."""
    cost = f"{si(row['ops'])} ops · {percent(row['share'])}"
    tip = (f"{row['name']}  [{row['op']}]\noutput {shape(row['output_shapes'][:1])}\n"
           f"MicroNet ops {si(row['ops'])} ({row['ops']:,.0f}) · storage {si(row['storage'])} 32-bit eq. · "
           f"params {row['params']:,}\nshare of the score {percent(row['share'], 2)}")
    if row["status"] == "uncounted":
        tip += "\nUNCOUNTED: its cost is missing"
    return [None, row["name"], row["op"], _FAMILY_INDEX[family(row["op"])],
            shape(row["output_shapes"][:1]), cost, tip, row["status"] == "uncounted", module, 0]


def graph_json(rows: Sequence[Mapping[str, Any]], table_id: str) -> dict[str, Any]:
    """The diagram as the JSON the page's ``graph.js`` reads."""
    diagram = diagram_data(rows)
    boxes = []
    for (i, _, module), hidden in zip(diagram.boxes, diagram.hidden):
        item = _box_json(rows[i], module)
        item[0], item[9] = i, hidden
        if hidden:
            item[6] += f"\n{plural(hidden, 'more input')} from earlier layers, not drawn (a drawn path joins them)"
        boxes.append(item)
    modules = [[m.path, m.parent, m.nodes, f"{plural(m.nodes, 'node')} · {si(m.ops)} ops · {percent(m.share)}",
                f"{m.path}\n{plural(m.nodes, 'node')}"
                + (f", {m.uncounted} UNCOUNTED" if m.uncounted else "")
                + f"\nMicroNet ops {si(m.ops)} · storage {si(m.storage)} 32-bit eq.\n"
                  f"share of the score {percent(m.share, 2)}", m.foldable, m.uncounted > 0]
               for m in diagram.modules]
    return {"table": table_id, "boxes": boxes, "edges": [list(e) for e in diagram.edges], "modules": modules,
            "levels": [[label, list(folded), count] for label, folded, count in diagram.levels],
            "default": diagram.default, "colours": [colour for _, _, colour in FAMILIES]}


def graph_section(rows: Sequence[Mapping[str, Any]], table_id: str = "t") -> str:
    """The page's "Graph" section: the diagram's JSON, stylesheet and scripts
    (nothing fetched); ``table_id`` names the layer table a click selects a row of."""
    data = graph_json(rows, table_id)
    data_id = f"{table_id}-graph"
    levels = "".join(f'<button type="button" data-level="{k}" aria-pressed="{str(k == data["default"]).lower()}">'
                     f'{esc(label)} <span class="muted">{count}</span></button>'
                     for k, (label, _, count) in enumerate(data["levels"]))
    legend = "".join(f'<span><i class="sw" style="background:{colour}"></i>{label}</span>'
                     for _, label, colour in FAMILIES)
    return (
        f'<section class="card" id="graph"><h2>Graph</h2><p class="hint">Network order top to bottom, one box '
        f'per counted node (op, name, output shape, MicroNet ops and share of the score); free nodes (views, '
        f'cats) are folded into the arrows. Click a module box to open it, its frame\'s title to fold it, a '
        f'node to select its row in the table; drag to pan, Ctrl + wheel or the buttons to zoom.</p>'
        f'<div class="gd" data-graph="{esc(data_id)}"><div class="gd-bar"><div class="seg gd-levels" '
        f'role="group" aria-label="fold level">{levels}</div><div class="seg gd-zoom">'
        f'<button type="button" data-zoom="out" aria-label="zoom out">−</button>'
        f'<button type="button" data-zoom="fit">fit</button>'
        f'<button type="button" data-zoom="in" aria-label="zoom in">+</button>'
        f'<button type="button" data-zoom="map" aria-pressed="true" title="overview">map</button></div></div>'
        f'<div class="gd-view"><div class="gd-scroll" tabindex="0" aria-label="model graph">'
        f'<svg class="gd-svg" role="img" aria-label="model graph, {len(data["boxes"])} nodes"></svg></div>'
        f'<svg class="gd-mini" aria-hidden="true"></svg></div>'
        f'<div class="legend gd-legend">{legend}</div>'
        f'<noscript><p class="muted">The diagram needs JavaScript.</p></noscript></div>'
        f'<style>{asset("graph.css")}</style>{json_script(data_id, data)}'
        f'<script>{asset("dagre.min.js")}\n{asset("graph.js")}</script></section>'
    )
