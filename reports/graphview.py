"""The model's graph: :func:`build_graph` (used by the page's diagram,
:mod:`micronet.reports.diagram`) and the old left-to-right strip of dots.

The strip (:func:`graph_views`, :func:`layered_layout`, :func:`render_graph_svg`)
is no longer on the page; it stays only while tests/reports/test_html.py
imports it, and can go with those tests. Free nodes (views, cats, getitems) are collapsed: their producers are wired
straight to their consumers. Nodes sit in columns given by
``networkx.topological_generations`` (longest path from the inputs), ordered
within a column by their predecessors' mean position, so a plain chain is a
straight line and skip connections are arcs above it. Views that group the
nodes by module (the first ``depth`` parts of their names) keep DenseNets and
EfficientNets readable; the full view is one circle per counted node.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import networkx as nx

from .format import percent
from .svg import FAMILY_COLOUR, clip, esc, family, group_key, number, svg_open

__all__ = ["GraphView", "build_graph", "layered_layout", "graph_views", "render_graph_svg"]


def build_graph(rows: Sequence[Mapping[str, Any]]) -> nx.DiGraph:
    """One node per non-free row (keyed by its fx node name, with ``index``,
    ``name``, ``op``, ``ops``, ``storage``, ``share``); edges from each node's
    producers, looking through free nodes."""
    graph = nx.DiGraph()
    through: dict[str, tuple[str, ...]] = {}  # free node -> the real producers behind it
    for index, row in enumerate(rows):  # rows are in topological order
        sources: dict[str, None] = {}
        for name in row["inputs"]:
            for source in through.get(name, (name,)):
                sources[source] = None
        if row["status"] == "free":
            through[row["node"]] = tuple(s for s in sources if s in graph)
            continue
        graph.add_node(row["node"], index=index, name=row["name"], op=row["op"], ops=row["ops"],
                       storage=row["storage"], share=row["share"], status=row["status"],
                       params=row["params"])
        graph.add_edges_from((s, row["node"]) for s in sources if s in graph)
    return graph


def layered_layout(graph: nx.DiGraph) -> dict[Any, tuple[int, float]]:
    """node -> (column, row offset from the centre line).

    Columns are topological generations; sources move right next to their
    first consumer; within a column nodes follow their predecessors' mean row.
    """
    column: dict[Any, int] = {}
    for depth, generation in enumerate(nx.topological_generations(graph)):
        for node in generation:
            column[node] = depth
    for node in graph:
        if graph.in_degree(node) == 0 and graph.out_degree(node):
            column[node] = min(column[s] for s in graph.successors(node)) - 1
    by_column: dict[int, list[Any]] = {}
    for node in sorted(graph, key=lambda n: (column[n], graph.nodes[n].get("index", 0))):
        by_column.setdefault(column[node], []).append(node)
    place: dict[Any, tuple[int, float]] = {}
    for col in sorted(by_column):
        nodes = by_column[col]
        if len(nodes) > 1:
            nodes.sort(key=lambda n: (_mean_row(graph, place, n), graph.nodes[n].get("index", 0)))
        middle = (len(nodes) - 1) / 2
        for i, node in enumerate(nodes):
            place[node] = (col, i - middle)
    return place


def _mean_row(graph: nx.DiGraph, place, node) -> float:
    rows = [place[p][1] for p in graph.predecessors(node) if p in place]
    return sum(rows) / len(rows) if rows else 0.0


def grouped(graph: nx.DiGraph, depth: int) -> nx.DiGraph:
    """The graph with nodes merged by module (the first ``depth`` parts of
    their names); costs are summed, the op is the one with the most ops."""
    merged = nx.DiGraph()
    key_of = {}
    for node, data in graph.nodes(data=True):
        key = group_key(data["name"], depth)
        key_of[node] = key
        if key not in merged:
            merged.add_node(key, index=data["index"], name=key, ops=0.0, storage=0.0, share=0.0,
                            params=0, members=0, top_ops=-1.0, op=data["op"], status="counted")
        item = merged.nodes[key]
        for cost in ("ops", "storage", "share", "params"):
            item[cost] += data[cost]
        item["members"] += 1
        if data["ops"] > item["top_ops"]:
            item["top_ops"], item["op"] = data["ops"], data["op"]
        if data["status"] == "uncounted":
            item["status"] = "uncounted"
    merged.add_edges_from((key_of[a], key_of[b]) for a, b in graph.edges if key_of[a] != key_of[b])
    if not nx.is_directed_acyclic_graph(merged):  # a module called twice: keep the full graph
        return graph
    return merged


@dataclass
class GraphView:
    """One rendering of the graph: a label, its SVG and its node count."""

    key: str
    label: str
    svg: str
    nodes: int
    default: bool = False
    detail: dict = field(default_factory=dict)


def graph_views(rows: Sequence[Mapping[str, Any]], table_id: str = "t", max_grouped: int = 90) -> list[GraphView]:
    """Module-level views at each useful depth, then the full view.

    The default view is the deepest grouping with at most ``max_grouped``
    nodes (the full view when the model is that small)."""
    graph = build_graph(rows)
    total_ops = sum(d["ops"] for _, d in graph.nodes(data=True)) or 1.0
    views: list[GraphView] = []
    seen = {graph.number_of_nodes()}
    deepest = max((d["name"].count(".") for _, d in graph.nodes(data=True)), default=0)
    for depth in range(1, deepest + 1):
        merged = grouped(graph, depth)
        count = merged.number_of_nodes()
        if merged is graph or count in seen or count < 5:
            continue
        seen.add(count)
        views.append(GraphView(f"d{depth}", f"modules, depth {depth}", render_graph_svg(
            merged, total_ops, table_id, grouped=True), count))
    views.append(GraphView("all", "every node", render_graph_svg(graph, total_ops, table_id),
                           graph.number_of_nodes()))
    small = [v for v in views if v.nodes <= max_grouped]
    (small[-1] if small else views[0]).default = True
    return views


def _edge(x1: float, y1: float, x2: float, y2: float, dx: float) -> str:
    if abs(y1 - y2) < 0.5 and x2 - x1 > 1.5 * dx:  # a skip along a row: an arc above it
        lift = min(12 + 0.3 * (x2 - x1), 150)
        return f'M{x1:.1f} {y1:.1f}Q{(x1 + x2) / 2:.1f} {y1 - 2 * lift:.1f} {x2:.1f} {y2:.1f}'
    bend = min(dx * 0.6, (x2 - x1) / 2)
    return f'M{x1:.1f} {y1:.1f}C{x1 + bend:.1f} {y1:.1f} {x2 - bend:.1f} {y2:.1f} {x2:.1f} {y2:.1f}'


def render_graph_svg(graph: nx.DiGraph, total_ops: float, table_id: str = "t", grouped: bool = False) -> str:
    """The laid-out graph as an SVG string (fixed pixel size, scrolls
    horizontally); each node has a tooltip with its costs and ``data-i``
    (its first row's index) so the page can jump to it in the table."""
    place = layered_layout(graph)
    dx, dy = (96, 64) if grouped else (26, 30)
    columns = max((c for c, _ in place.values()), default=0) + 1
    half_rows = max((abs(r) for _, r in place.values()), default=0)
    arcs = max((min(12 + 0.3 * dx * (place[b][0] - place[a][0]), 150)
                for a, b in graph.edges if place[a][1] == place[b][1]), default=0)
    top = 20 + arcs
    width = columns * dx + 40
    height = top + (2 * half_rows) * dy + (90 if grouped else 40)
    xy = {n: (20 + dx / 2 + c * dx, top + (r + half_rows) * dy) for n, (c, r) in place.items()}
    out = [svg_open(width, height, "graph" + (" grouped" if grouped else ""),
                    f"model graph, {graph.number_of_nodes()} nodes", fluid=False)]
    out.append('<g class="edges">')
    out += [f'<path d="{_edge(*xy[a], *xy[b], dx)}"/>' for a, b in graph.edges]
    out.append('</g><g class="nodes">')
    for node, data in sorted(graph.nodes(data=True), key=lambda item: item[1]["index"]):
        x, y = xy[node]
        share = data["ops"] / total_ops
        radius = (5 + 16 * share ** 0.5) if grouped else (3 + 11 * share ** 0.5)
        fill = FAMILY_COLOUR[family(data["op"])]
        cls = "gnode uncounted" if data["status"] == "uncounted" else "gnode"
        tip = _tooltip(data, share, grouped)
        out.append(f'<g class="{cls}" data-i="{data["index"]}" data-table="{table_id}" '
                   f'transform="translate({x:.1f} {y:.1f})"><title>{esc(tip)}</title>'
                   f'<circle r="{radius:.1f}" fill="{fill}"/>')
        if grouped:
            label = clip(_short(data["name"]), 26)
            out.append(f'<text x="4" y="{radius + 12:.1f}" transform="rotate(30)">{esc(label)}</text>')
        out.append('</g>')
    out.append('</g></svg>')
    return "".join(out)


def _short(name: str) -> str:
    """The last two parts of a dotted name, more while they are all numbers
    (``features.1.0`` stays whole, ``a.denseblock1.denselayer2`` loses ``a``)."""
    parts = name.split(".")
    keep = min(2, len(parts))
    while keep < len(parts) and all(p.isdigit() for p in parts[-keep:]):
        keep += 1
    return ".".join(parts[-keep:])


def _tooltip(data: Mapping[str, Any], share: float, grouped: bool) -> str:
    lines = [data["name"] + (f"  ({data['members']} nodes)" if grouped else f"  [{data['op']}]")]
    lines.append(f"MicroNet ops {number(data['ops'])}  ({percent(share)} of all ops)")
    lines.append(f"storage {number(data['storage'])} 32-bit eq.  params {number(data['params'])}")
    lines.append(f"share of the score {percent(data['share'])}")
    if data["status"] == "uncounted":
        lines.append("contains UNCOUNTED nodes" if grouped else "UNCOUNTED: its cost is missing")
    return "\n".join(lines)
