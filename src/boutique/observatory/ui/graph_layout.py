"""A layered (Sugiyama-style) layout of a directed graph, left to right, for the service dependency graph.

The steps, each a function of its own so it can be tested alone: break cycles by reversing the back
edges of a depth-first search; put every node in a layer by the longest path from the sources; split
edges that span several layers with virtual nodes; order each layer by the barycenter of its neighbours,
sweeping down and up, keeping the order with the fewest crossings; then place layers as columns and
nodes within a column, pulled towards their neighbours but never overlapping.

Every edge also gets a label slot: layers are doubled, so each edge crosses at least one in-between
column, and its first virtual node there is sized like its label. Labels are thus ordered and spaced
like nodes and never overlap each other or a node.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

Point = tuple[float, float]
Size = tuple[float, float]


@dataclass(frozen=True)
class NodeBox:
    """Where a node is drawn: its centre, size and layer (column)."""

    name: str
    layer: int
    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True)
class EdgeRoute:
    """How an edge is drawn: points from the source's side to the target's, and its label's centre.

    `index` is the edge's position in the input; `reversed` says the edge went against the layers
    (it closed a cycle), so it runs from right to left.
    """

    index: int
    source: str
    target: str
    points: tuple[Point, ...]
    label: Point
    reversed: bool


@dataclass(frozen=True)
class GraphLayout:
    """A whole drawing: node boxes by name, edge routes in input order, and the size of the canvas."""

    nodes: dict[str, NodeBox]
    edges: list[EdgeRoute]
    width: float
    height: float


# ---- the steps, over nodes 0..n-1 -----------------------------------------------------------------


def break_cycles(count: int, edges: Sequence[tuple[int, int]]) -> set[int]:
    """Indices of the edges to reverse to make the graph acyclic: the back edges of a depth-first search.

    The search starts from the sources (nodes without incoming edges) in node order, then from any node
    not yet reached, so edges leaving a source are never the ones reversed. Self-loops are not counted.
    """
    outgoing: list[list[tuple[int, int]]] = [[] for _ in range(count)]
    has_incoming = [False] * count
    for index, (u, v) in enumerate(edges):
        if u != v:
            outgoing[u].append((index, v))
            has_incoming[v] = True
    state = [0] * count  # 0 unseen, 1 on the search path, 2 finished
    back: set[int] = set()
    roots = [n for n in range(count) if not has_incoming[n]] + list(range(count))
    for root in roots:
        if state[root]:
            continue
        state[root] = 1
        stack = [(root, iter(outgoing[root]))]
        while stack:
            node, successors = stack[-1]
            step = next(successors, None)
            if step is None:
                state[node] = 2
                stack.pop()
                continue
            index, child = step
            if state[child] == 1:
                back.add(index)
            elif state[child] == 0:
                state[child] = 1
                stack.append((child, iter(outgoing[child])))
    return back


def assign_layers(count: int, edges: Sequence[tuple[int, int]]) -> list[int]:
    """Each node's layer: the length of the longest path reaching it from a source (edges must be acyclic)."""
    outgoing: list[list[int]] = [[] for _ in range(count)]
    indegree = [0] * count
    for u, v in edges:
        if u != v:
            outgoing[u].append(v)
            indegree[v] += 1
    layer = [0] * count
    ready = [n for n in range(count) if indegree[n] == 0]
    seen = 0
    while ready:
        node = ready.pop()
        seen += 1
        for child in outgoing[node]:
            layer[child] = max(layer[child], layer[node] + 1)
            indegree[child] -= 1
            if indegree[child] == 0:
                ready.append(child)
    if seen != count:
        raise ValueError("the graph has a cycle; break it first")
    return layer


def split_long_edges(
    layer: Sequence[int], edges: Sequence[tuple[int, int]]
) -> tuple[list[int], list[list[int]]]:
    """Virtual nodes for edges spanning several layers: the layers of all nodes (virtual ones appended)
    and, per edge, its chain of nodes from source to target, one per layer."""
    layers = list(layer)
    chains = []
    for u, v in edges:
        if layers[v] <= layers[u]:
            raise ValueError(f"edge {u}->{v} does not go to a later layer")
        chain = [u]
        for step in range(layers[u] + 1, layers[v]):
            layers.append(step)
            chain.append(len(layers) - 1)
        chain.append(v)
        chains.append(chain)
    return layers, chains


def group_layers(layer: Sequence[int]) -> list[list[int]]:
    """The nodes of each layer, in node order."""
    grouped: list[list[int]] = [[] for _ in range(max(layer, default=-1) + 1)]
    for node, at in enumerate(layer):
        grouped[at].append(node)
    return grouped


def chain_links(chains: Sequence[Sequence[int]]) -> list[tuple[int, int]]:
    """The links between consecutive nodes of every chain: edges between adjacent layers only."""
    return [(a, b) for chain in chains for a, b in itertools.pairwise(chain)]


def crossings(layers: Sequence[Sequence[int]], links: Sequence[tuple[int, int]]) -> int:
    """How many pairs of links cross, for links between adjacent layers, with the layers in this order."""
    position: dict[int, int] = {}
    layer_of: dict[int, int] = {}
    for index, members in enumerate(layers):
        for at, node in enumerate(members):
            position[node], layer_of[node] = at, index
    between: dict[int, list[tuple[int, int]]] = {}
    for u, v in links:
        between.setdefault(layer_of[u], []).append((position[u], position[v]))
    return sum(_inversions([b for _, b in sorted(pairs)]) for pairs in between.values())


def _inversions(values: Sequence[int]) -> int:
    """Pairs i < j with values[i] > values[j] (a Fenwick tree over the values)."""
    size = max(values, default=0) + 2
    tree = [0] * (size + 1)
    found = 0
    for seen, value in enumerate(values):
        at, not_above = value + 1, 0
        while at > 0:
            not_above += tree[at]
            at -= at & -at
        found += seen - not_above
        at = value + 1
        while at <= size:
            tree[at] += 1
            at += at & -at
    return found


def order_layers(
    layers: Sequence[Sequence[int]], links: Sequence[tuple[int, int]], sweeps: int = 4
) -> list[list[int]]:
    """Reorder each layer by the barycenter of its neighbours in the layer above (sweeping down), then in
    the layer below (sweeping up), `sweeps` times; the order with the fewest crossings seen wins, so the
    result never has more crossings than the order given."""
    up: dict[int, list[int]] = {}
    down: dict[int, list[int]] = {}
    for u, v in links:
        down.setdefault(u, []).append(v)
        up.setdefault(v, []).append(u)
    current = [list(members) for members in layers]
    best, best_count = [list(m) for m in current], crossings(current, links)
    position = {node: at for members in current for at, node in enumerate(members)}

    def reorder(index: int, neighbours: dict[int, list[int]]) -> None:
        """Sort one layer by barycenter; a node without neighbours keeps its place."""

        def barycenter(node: int) -> float:
            """The mean position of the node's neighbours (its own position without any)."""
            near = neighbours.get(node)
            return sum(position[n] for n in near) / len(near) if near else float(position[node])

        current[index].sort(key=barycenter)
        for at, node in enumerate(current[index]):
            position[node] = at

    for _ in range(sweeps):
        for direction in ("down", "up"):
            if direction == "down":
                for index in range(1, len(current)):
                    reorder(index, up)
            else:
                for index in range(len(current) - 2, -1, -1):
                    reorder(index, down)
            count = crossings(current, links)
            if count < best_count:
                best, best_count = [list(m) for m in current], count
            if best_count == 0:
                return best
    return best


def pack(desired: Sequence[float], separations: Sequence[float]) -> list[float]:
    """Positions in order, each at least `separations[i]` after the one before, as close as possible (least
    squares) to the desired positions: isotonic regression by pooling adjacent violators."""
    offsets = [0.0]
    for gap in separations:
        offsets.append(offsets[-1] + gap)
    blocks: list[list[float]] = []  # [sum of targets, count]
    for want, offset in zip(desired, offsets, strict=True):
        blocks.append([want - offset, 1.0])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            total, count = blocks.pop()
            blocks[-1][0] += total
            blocks[-1][1] += count
    flat = [total / count for total, count in blocks for _ in range(int(count))]
    return [value + offset for value, offset in zip(flat, offsets, strict=True)]


def place_in_columns(
    layers: Sequence[Sequence[int]],
    heights: Sequence[float],
    links: Sequence[tuple[int, int]],
    gap: float,
    rounds: int = 6,
) -> list[float]:
    """Each node's vertical centre: columns keep their order and spacing, nodes move towards the mean of
    their neighbours (above while sweeping down, below while sweeping up, both in a last pass)."""
    up: dict[int, list[int]] = {}
    down: dict[int, list[int]] = {}
    for u, v in links:
        down.setdefault(u, []).append(v)
        up.setdefault(v, []).append(u)
    y = [0.0] * len(heights)

    def separations(members: Sequence[int]) -> list[float]:
        """The least distance between the centres of neighbours in a column."""
        return [(heights[a] + heights[b]) / 2 + gap for a, b in itertools.pairwise(members)]

    for members in layers:
        stacked = pack([0.0] * len(members), separations(members))
        middle = (stacked[0] + stacked[-1]) / 2 if stacked else 0.0
        for node, at in zip(members, stacked, strict=True):
            y[node] = at - middle

    def settle(index: int, *sides: dict[int, list[int]]) -> None:
        """Move one column towards the mean of each node's neighbours on the given sides."""
        members = layers[index]
        desired = []
        for node in members:
            near = [n for side in sides for n in side.get(node, ())]
            desired.append(sum(y[n] for n in near) / len(near) if near else y[node])
        for node, at in zip(members, pack(desired, separations(members)), strict=True):
            y[node] = at

    for _ in range(rounds):
        for index in range(1, len(layers)):
            settle(index, up)
        for index in range(len(layers) - 2, -1, -1):
            settle(index, down)
    for index in range(len(layers)):
        settle(index, up, down)
    return y


# ---- the whole layout ----------------------------------------------------------------------------


def layered_layout(
    nodes: Sequence[str],
    edges: Sequence[tuple[str, str]],
    node_sizes: dict[str, Size],
    label_sizes: Sequence[Size] | None = None,
    *,
    column_gap: float = 26.0,
    row_gap: float = 12.0,
    margin: float = 12.0,
) -> GraphLayout:
    """Lay out the graph left to right; `label_sizes` (per edge, in order) reserves room for edge labels.

    Edges naming unknown nodes are an error; self-loops are left out of the drawing (their index is
    skipped in `edges` of the result).
    """
    index_of = {name: at for at, name in enumerate(nodes)}
    if len(index_of) != len(nodes):
        raise ValueError("node names must be unique")
    labels = list(label_sizes) if label_sizes is not None else [(0.0, 0.0)] * len(edges)
    if len(labels) != len(edges):
        raise ValueError("one label size per edge")
    pairs = [(index_of[u], index_of[v]) for u, v in edges]
    drawn = [at for at, (u, v) in enumerate(pairs) if u != v]
    back = break_cycles(len(nodes), [pairs[at] for at in drawn])
    flipped = {drawn[at] for at in back}
    dag = [(v, u) if at in flipped else (u, v) for at, (u, v) in ((at, pairs[at]) for at in drawn)]
    layer = [2 * at for at in assign_layers(len(nodes), dag)]  # odd columns hold labels
    layer, chains = split_long_edges(layer, dag)
    links = chain_links(chains)
    columns = order_layers(group_layers(layer), links)

    sizes: list[Size] = [node_sizes[name] for name in nodes] + [(0.0, 0.0)] * (len(layer) - len(nodes))
    for at, chain in zip(drawn, chains, strict=True):
        sizes[chain[1]] = labels[at]  # the first in-between column is the label's slot
    y = place_in_columns(columns, [h for _, h in sizes], links, row_gap)

    widths = [max((sizes[n][0] for n in members), default=0.0) for members in columns]
    x_of_column, left = [], margin
    for width in widths:
        x_of_column.append(left + width / 2)
        left += width + column_gap
    top = min((y[n] - sizes[n][1] / 2 for n in range(len(layer))), default=0.0)
    bottom = max((y[n] + sizes[n][1] / 2 for n in range(len(layer))), default=0.0)
    shift = margin - top

    def centre(node: int) -> Point:
        """A node's centre on the canvas."""
        return x_of_column[layer[node]], y[node] + shift

    boxes = {
        name: NodeBox(name, layer[at] // 2, *centre(at), node_sizes[name][0], node_sizes[name][1])
        for at, name in enumerate(nodes)
    }
    routes = []
    for at, chain in zip(drawn, chains, strict=True):
        points: list[Point] = []
        for position, node in enumerate(chain):
            cx, cy = centre(node)
            half = sizes[node][0] / 2
            if position == 0:
                points.append((cx + half, cy))
            elif position == len(chain) - 1:
                points.append((cx - half, cy))
            elif half > 0:
                points.extend([(cx - half, cy), (cx + half, cy)])
            else:
                points.append((cx, cy))
        if at in flipped:
            points.reverse()
        source, target = edges[at]
        routes.append(EdgeRoute(at, source, target, tuple(points), centre(chain[1]), at in flipped))
    width = left - column_gap + margin if columns else 2 * margin
    return GraphLayout(boxes, routes, width, bottom - top + 2 * margin)


def smooth_path(points: Sequence[Point]) -> str:
    """SVG path data through the points, each step a curve leaving and arriving horizontally."""
    if not points:
        return ""
    x0, y0 = points[0]
    parts = [f"M{x0:.1f},{y0:.1f}"]
    for x1, y1 in points[1:]:
        if y1 == y0:
            parts.append(f"L{x1:.1f},{y1:.1f}")
        else:
            dx = (x1 - x0) / 2
            parts.append(f"C{x0 + dx:.1f},{y0:.1f} {x1 - dx:.1f},{y1:.1f} {x1:.1f},{y1:.1f}")
        x0, y0 = x1, y1
    return " ".join(parts)
