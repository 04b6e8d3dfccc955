"""Scoring a predicted `ProcessGraph` against the true one (issue 12).

Definitions (threshold τ, default 0.8, 0 < τ ≤ 1):

- Label similarity: `difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()` of the two
  `normalise_label` forms; two empty labels are identical (1.0).
- Node assignment (`match_nodes`): one-to-one, nodes of different kinds never match (a kind is
  part of what a node is; with τ ≥ 0.5 halving would forbid the match anyway). Labelled nodes are
  assigned by the Hungarian algorithm maximising total similarity, pairs under τ dropped. Nodes whose
  labels are empty on both sides (gateways, events) are then matched by structure, see `_anchor`.
  Parallel gateways count as unlabelled on both sides: drawings show a bare "+" where descriptions
  name the step ("Start the tasks in parallel"), so their labels say nothing about the reading.
- Node, edge and triple precision/recall/F1: a zero denominator gives 0, except that two empty sets
  agree perfectly (1.0). An edge counts when its endpoints map onto a true edge's, direction kept.
  Triples ⟨source, label, target⟩: *strict* needs both endpoint labels and the edge label identical
  after normalisation; *relaxed* (FlowGen's fuzzy variant) takes the fuzzy node assignment and an
  edge-label similarity ≥ τ (two empty labels agree).
- Graph-edit similarity: 1 − cost / (|V_t| + |E_t| + |V_p| + |E_p|), cost = unmatched nodes and edges
  on both sides (1 each) + Σ(1 − similarity) over matched nodes and paired edges. It is FlowSim's
  form (1 − TED / (|F| + |F_ref|)) with the tree edit distance replaced by the cost of the graph
  edit path that the assignment above induces, and a tree's size by |V| + |E|. That path is one
  edit path, so its cost bounds the exact graph edit distance from above.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from difflib import SequenceMatcher
from math import inf

from describer.graph.model import Edge, Node, NodeKind, ProcessGraph, normalise_label

DEFAULT_THRESHOLD = 0.8
# Breaks ties between equally anchored unlabelled nodes in favour of equal ids, so a graph
# compared with itself maps every node onto itself; far below one agreeing neighbour.
_SAME_ID_BONUS = 1e-6


@dataclass(frozen=True)
class Scores:
    node_precision: float
    node_recall: float
    node_f1: float
    edge_precision: float
    edge_recall: float
    edge_f1: float
    triple_f1_strict: float
    triple_f1_relaxed: float
    graph_edit_similarity: float
    true_nodes: int
    predicted_nodes: int
    matched_nodes: int
    true_edges: int
    predicted_edges: int
    matched_edges: int


def label_similarity(a: str, b: str) -> float:
    a, b = normalise_label(a), normalise_label(b)
    return SequenceMatcher(None, a, b, autojunk=False).ratio()


def assignment(weights: list[list[float]]) -> list[tuple[int, int]]:
    """Rows paired with columns, one-to-one, maximising the total weight (min(rows, cols) pairs).

    The Hungarian algorithm with potentials, O(n²m); callers drop the pairs they do not allow.
    """
    if not weights or not weights[0]:
        return []
    if len(weights) > len(weights[0]):
        transposed = [list(column) for column in zip(*weights, strict=True)]
        return [(row, col) for col, row in assignment(transposed)]
    rows, cols = len(weights), len(weights[0])
    row_potential, col_potential = [0.0] * (rows + 1), [0.0] * (cols + 1)
    owner = [0] * (cols + 1)  # owner[j]: the row (1-based) holding column j; column 0 is a sentinel
    for row in range(1, rows + 1):
        owner[0] = row
        previous = [0] * (cols + 1)
        slack, used = [inf] * (cols + 1), [False] * (cols + 1)
        col = 0
        while owner[col]:
            used[col] = True
            current, delta, next_col = owner[col], inf, 0
            for j in range(1, cols + 1):
                if not used[j]:
                    reduced = -weights[current - 1][j - 1] - row_potential[current] - col_potential[j]
                    if reduced < slack[j]:
                        slack[j], previous[j] = reduced, col
                    if slack[j] < delta:
                        delta, next_col = slack[j], j
            for j in range(cols + 1):
                if used[j]:
                    row_potential[owner[j]] += delta
                    col_potential[j] -= delta
                else:
                    slack[j] -= delta
            col = next_col
        while col:  # flip the augmenting path back to the root
            owner[col] = owner[previous[col]]
            col = previous[col]
    return [(owner[j] - 1, j - 1) for j in range(1, cols + 1) if owner[j]]


def comparable(graph: ProcessGraph) -> ProcessGraph:
    """The graph as it is scored: parallel gateways without their labels."""
    if not any(node.kind == NodeKind.PARALLEL and node.label for node in graph.nodes):
        return graph
    nodes = [node.model_copy(update={"label": ""}) if node.kind == NodeKind.PARALLEL else node for node in graph.nodes]
    return graph.model_copy(update={"nodes": nodes})


def match_nodes(truth: ProcessGraph, predicted: ProcessGraph, threshold: float = DEFAULT_THRESHOLD) -> dict[str, str]:
    """True node id → predicted node id; see the module docstring for the rule."""
    if not 0 < threshold <= 1:
        raise ValueError(f"The threshold is {threshold}; it must be in (0, 1].")
    truth, predicted = comparable(truth), comparable(predicted)
    labelled_t = [n for n in truth.nodes if normalise_label(n.label)]
    labelled_p = [n for n in predicted.nodes if normalise_label(n.label)]
    matches = _match_by_label(labelled_t, labelled_p, threshold)
    unlabelled_t = [n for n in truth.nodes if not normalise_label(n.label)]
    unlabelled_p = [n for n in predicted.nodes if not normalise_label(n.label)]
    matches |= _anchor(truth, predicted, unlabelled_t, unlabelled_p, matches)
    return matches


def _match_by_label(truth: list[Node], predicted: list[Node], threshold: float) -> dict[str, str]:
    def weight(t: Node, p: Node) -> float:
        if t.kind != p.kind:
            return 0.0
        a, b = normalise_label(t.label), normalise_label(p.label)
        matcher = SequenceMatcher(None, a, b, autojunk=False)
        # quick_ratio bounds ratio from above: skip the costly ratio for hopeless pairs.
        return matcher.ratio() if matcher.quick_ratio() >= threshold else 0.0

    weights = [[weight(t, p) for p in predicted] for t in truth]
    return {truth[i].id: predicted[j].id for i, j in assignment(weights) if weights[i][j] >= threshold}


def _anchor(
    truth: ProcessGraph,
    predicted: ProcessGraph,
    unlabelled_t: list[Node],
    unlabelled_p: list[Node],
    matches: dict[str, str],
) -> dict[str, str]:
    """Matches for nodes unlabelled on both sides, same kind only.

    In rounds: a pair's weight is the number of its matched neighbours that agree (a matched
    predecessor of the true node whose image precedes the predicted node, likewise successors).
    A round commits the pairs (weight ≥ 1) that are each other's single best, or, when there are
    none, the maximum-weight assignment; the next round sees them as anchors. Committing
    the unambiguous pairs first lets them settle ties among the rest. When no pair is anchored
    any more, what is left is paired by kind in list order, so a graph with nothing else to go
    by (start → end) still matches itself.
    """
    found: dict[str, str] = {}
    while True:
        known = matches | found
        rest_t = [n for n in unlabelled_t if n.id not in known]
        taken = set(known.values())
        rest_p = [n for n in unlabelled_p if n.id not in taken]
        weights = [[_agreement(truth, predicted, t, p, known) for p in rest_p] for t in rest_t]
        pairs = _mutual_best(weights) or [(i, j) for i, j in assignment(weights) if weights[i][j] >= 1]
        if not pairs:
            break
        found |= {rest_t[i].id: rest_p[j].id for i, j in pairs}
    for t in rest_t:
        p = next((p for p in rest_p if p.kind == t.kind and p.id not in taken), None)
        if p is not None:
            found[t.id] = p.id
            taken.add(p.id)
    return found


def _mutual_best(weights: list[list[float]]) -> list[tuple[int, int]]:
    """Pairs of weight ≥ 1 that beat every other entry of their row and of their column."""
    columns = list(zip(*weights, strict=True))
    return [
        (i, j)
        for i, row in enumerate(weights)
        for j, weight in enumerate(row)
        if weight >= 1
        and sorted(row, reverse=True)[1:2] < [weight]
        and sorted(columns[j], reverse=True)[1:2] < [weight]
    ]


def _agreement(truth: ProcessGraph, predicted: ProcessGraph, t: Node, p: Node, known: dict[str, str]) -> float:
    if t.kind != p.kind:
        return 0.0
    sources = {e.source for e in predicted.incoming(p.id)}
    targets = {e.target for e in predicted.outgoing(p.id)}
    agreeing = sum(known.get(e.source) in sources for e in truth.incoming(t.id))
    agreeing += sum(known.get(e.target) in targets for e in truth.outgoing(t.id))
    return agreeing + (_SAME_ID_BONUS if t.id == p.id else 0.0)


def score(truth: ProcessGraph, predicted: ProcessGraph, threshold: float = DEFAULT_THRESHOLD) -> Scores:
    truth, predicted = comparable(truth), comparable(predicted)
    matches = match_nodes(truth, predicted, threshold)
    groups = _edge_groups(truth, predicted, matches)
    edge_pairs = [pair for true_edges, predicted_edges in groups for pair in _pair_edges(true_edges, predicted_edges)]
    exact = {t for t, p in matches.items() if _same_label(truth.node(t), predicted.node(p))}
    # A group's true edges share their endpoints, so its first edge speaks for all.
    strict = sum(_exact_label_pairs(ts, ps) for ts, ps in groups if {ts[0].source, ts[0].target} <= exact)
    relaxed = sum(_fuzzy_label_pairs(ts, ps, threshold) for ts, ps in groups)
    node_precision, node_recall, node_f1 = _prf(len(matches), len(truth.nodes), len(predicted.nodes))
    edge_precision, edge_recall, edge_f1 = _prf(len(edge_pairs), len(truth.edges), len(predicted.edges))
    return Scores(
        node_precision=node_precision,
        node_recall=node_recall,
        node_f1=node_f1,
        edge_precision=edge_precision,
        edge_recall=edge_recall,
        edge_f1=edge_f1,
        triple_f1_strict=_prf(strict, len(truth.edges), len(predicted.edges))[2],
        triple_f1_relaxed=_prf(relaxed, len(truth.edges), len(predicted.edges))[2],
        graph_edit_similarity=_graph_edit_similarity(truth, predicted, matches, edge_pairs),
        true_nodes=len(truth.nodes),
        predicted_nodes=len(predicted.nodes),
        matched_nodes=len(matches),
        true_edges=len(truth.edges),
        predicted_edges=len(predicted.edges),
        matched_edges=len(edge_pairs),
    )


def _same_label(t: Node, p: Node) -> bool:
    return normalise_label(t.label) == normalise_label(p.label)


def _edge_groups(
    truth: ProcessGraph, predicted: ProcessGraph, matches: dict[str, str]
) -> list[tuple[list[Edge], list[Edge]]]:
    """True edges and the predicted edges onto the same mapped endpoints, per (source, target)."""
    back = {p: t for t, p in matches.items()}
    by_key: dict[tuple[str, str], tuple[list[Edge], list[Edge]]] = {}
    for edge in truth.edges:
        by_key.setdefault((edge.source, edge.target), ([], []))[0].append(edge)
    for edge in predicted.edges:
        key = (back.get(edge.source, ""), back.get(edge.target, ""))
        if key in by_key:
            by_key[key][1].append(edge)
    return [(ts, ps) for ts, ps in by_key.values() if ps]


def _pair_edges(true_edges: list[Edge], predicted_edges: list[Edge]) -> list[tuple[Edge, Edge]]:
    # Parallel edges between the same two nodes are paired by their labels.
    weights = [[label_similarity(t.label, p.label) for p in predicted_edges] for t in true_edges]
    return [(true_edges[i], predicted_edges[j]) for i, j in assignment(weights)]


def _exact_label_pairs(true_edges: list[Edge], predicted_edges: list[Edge]) -> int:
    wanted = Counter(normalise_label(e.label) for e in true_edges)
    given = Counter(normalise_label(e.label) for e in predicted_edges)
    return sum((wanted & given).values())


def _fuzzy_label_pairs(true_edges: list[Edge], predicted_edges: list[Edge], threshold: float) -> int:
    weights = [[label_similarity(t.label, p.label) for p in predicted_edges] for t in true_edges]
    return sum(weights[i][j] >= threshold for i, j in assignment(weights))


def _prf(hits: int, relevant: int, retrieved: int) -> tuple[float, float, float]:
    if relevant == retrieved == 0:
        return 1.0, 1.0, 1.0
    precision = hits / retrieved if retrieved else 0.0
    recall = hits / relevant if relevant else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def _graph_edit_similarity(
    truth: ProcessGraph, predicted: ProcessGraph, matches: dict[str, str], edge_pairs: list[tuple[Edge, Edge]]
) -> float:
    size = len(truth.nodes) + len(truth.edges) + len(predicted.nodes) + len(predicted.edges)
    if size == 0:
        return 1.0
    unmatched = size - 2 * len(matches) - 2 * len(edge_pairs)
    node_costs = (1 - label_similarity(truth.node(t).label, predicted.node(p).label) for t, p in matches.items())
    edge_costs = (1 - label_similarity(t.label, p.label) for t, p in edge_pairs)
    return 1 - (unmatched + sum(node_costs) + sum(edge_costs)) / size


def aggregate(scores: Iterable[Scores]) -> dict[str, float | int | None]:
    """Macro means of the metrics, sums of the counts, and the number of items."""
    items = list(scores)
    result: dict[str, float | int | None] = {"items": len(items)}
    for field in dataclasses.fields(Scores):
        values = [getattr(item, field.name) for item in items]
        if field.type == "int":
            result[field.name] = sum(values)
        else:
            result[field.name] = sum(values) / len(values) if values else None
    return result
