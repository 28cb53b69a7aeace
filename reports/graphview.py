"""The model's graph as a networkx DiGraph: :func:`build_graph`, which the
page's diagram (:mod:`micronet.reports.diagram`) turns into boxes and arrows.

One node per counted or uncounted row; free nodes (views, cats, getitems) are
looked through, so their producers are wired straight to their consumers.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import networkx as nx

__all__ = ["build_graph"]


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
