"""Lineage drawn server-side: the neighbourhood of an asset (ancestors and descendants up to a
depth) laid out in layers left to right, so the browser only draws an SVG of at most
``MAX_NODES`` boxes whatever the size of the whole graph.

Layout: each node's layer is its longest path from a root of the neighbourhood; within a
layer, nodes are ordered by the mean position of their neighbours in the previous layer, then
the next (two sweeps of the barycentre heuristic), which keeps most edges short and uncrossed."""

from __future__ import annotations

from dataclasses import dataclass

from tidegate.definitions.graph import AssetGraph
from tidegate.definitions.key import AssetKey

MAX_NODES = 150
NODE_WIDTH, NODE_HEIGHT = 200, 30
LAYER_GAP, ROW_GAP, MARGIN = 260, 44, 10


@dataclass(frozen=True)
class Node:
    key: str
    x: int
    y: int
    focus: bool


@dataclass(frozen=True)
class Edge:
    path: str  # an SVG path from the upstream box's right side to the downstream box's left


@dataclass(frozen=True)
class Lineage:
    nodes: list[Node]
    edges: list[Edge]
    width: int
    height: int
    depth: int
    truncated: bool  # the neighbourhood at the asked depth had more than MAX_NODES nodes


def neighbourhood(graph: AssetGraph, key: AssetKey, depth: int) -> tuple[set[AssetKey], int, bool]:
    """The asset, its ancestors and descendants up to ``depth``, shrinking the depth until at
    most MAX_NODES remain (returns the depth used and whether it had to shrink)."""
    truncated = False
    while True:
        chosen = {key} | graph.ancestors([key], depth) | graph.descendants([key], depth)
        if len(chosen) <= MAX_NODES or depth <= 1:
            break
        depth -= 1
        truncated = True
    if len(chosen) > MAX_NODES:
        ordered = sorted(chosen - {key}, key=str)[: MAX_NODES - 1]
        chosen = {key, *ordered}
        truncated = True
    return chosen, depth, truncated


def layout(graph: AssetGraph, key: AssetKey, depth: int = 2) -> Lineage:
    chosen, depth, truncated = neighbourhood(graph, key, depth)
    order = [k for k in graph.order if k in chosen]
    layer: dict[AssetKey, int] = {}
    for k in order:  # topological: every upstream node has its layer already
        ups = [layer[u] for u in graph.upstream[k] if u in chosen]
        layer[k] = max(ups) + 1 if ups else 0
    layers: list[list[AssetKey]] = [[] for _ in range(max(layer.values()) + 1)]
    for k in order:
        layers[layer[k]].append(k)
    position = {k: i for members in layers for i, k in enumerate(members)}
    # Down the layers by the upstream neighbours' positions, then up by the downstream ones'.
    for sweep, neighbours in ((layers[1:], graph.upstream), (list(reversed(layers[:-1])), graph.downstream)):
        for members in sweep:
            centre = {k: _barycentre(k, neighbours[k] & chosen, position) for k in members}
            members.sort(key=lambda k: (centre[k], str(k)))
            position.update({k: i for i, k in enumerate(members)})
    nodes = {k: Node(str(k), MARGIN + layer[k] * LAYER_GAP, MARGIN + position[k] * ROW_GAP, k == key) for k in chosen}
    edges = []
    for k in order:
        for up in sorted(graph.upstream[k] & chosen, key=str):
            a, b = nodes[up], nodes[k]
            x1, y1, x2, y2 = a.x + NODE_WIDTH, a.y + NODE_HEIGHT // 2, b.x, b.y + NODE_HEIGHT // 2
            middle = (x1 + x2) // 2
            edges.append(Edge(f"M{x1},{y1} C{middle},{y1} {middle},{y2} {x2},{y2}"))
    width = MARGIN * 2 + (len(layers) - 1) * LAYER_GAP + NODE_WIDTH
    height = MARGIN * 2 + (max(len(m) for m in layers) - 1) * ROW_GAP + NODE_HEIGHT
    return Lineage([nodes[k] for k in order], edges, width, height, depth, truncated)


def _barycentre(key: AssetKey, linked: frozenset[AssetKey], position: dict[AssetKey, int]) -> float:
    return sum(position[n] for n in linked) / len(linked) if linked else float(position[key])
