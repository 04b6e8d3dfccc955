"""Graph metrics, proven on cases whose answers are worked out by hand in the comments."""

from __future__ import annotations

import dataclasses
import itertools
import random

import pytest

from describer.graph.metrics import Scores, aggregate, assignment, label_similarity, match_nodes, score
from describer.graph.model import ProcessGraph

CHAIN_LABELS = ["Receive order", "Check stock", "Pack goods", "Ship parcel", "Send invoice"]


def graph(nodes: list[tuple[str, str, str]], edges: list[tuple[str, str] | tuple[str, str, str]]) -> ProcessGraph:
    """nodes: (id, kind, label); edges: (source, target[, label])."""
    return ProcessGraph.model_validate(
        {
            "nodes": [{"id": i, "kind": k, "label": label} for i, k, label in nodes],
            "edges": [{"source": e[0], "target": e[1], "label": e[2] if len(e) > 2 else ""} for e in edges],
        }
    )


def chain(edges: list[tuple[str, str]] | None = None, labels: list[str] = CHAIN_LABELS) -> ProcessGraph:
    """a → b → c → d → e, tasks labelled from `labels`: 5 nodes, 4 edges."""
    ids = "abcde"
    default = [(ids[i], ids[i + 1]) for i in range(4)]
    nodes = [(i, "task", label) for i, label in zip(ids, labels, strict=True)]
    return graph(nodes, default if edges is None else edges)


def decision_graph(prefix: str = "", yes: str = "yes", no: str = "no") -> ProcessGraph:
    """start → check → ⟨decision⟩ —yes→ approve, —no→ reject; both → end. 6 nodes, 6 edges."""
    p = prefix
    return graph(
        [
            (p + "s", "start", ""),
            (p + "check", "task", "Check invoice"),
            (p + "d", "decision", ""),
            (p + "approve", "task", "Approve invoice"),
            (p + "reject", "task", "Reject invoice"),
            (p + "e", "end", ""),
        ],
        [
            (p + "s", p + "check"),
            (p + "check", p + "d"),
            (p + "d", p + "approve", yes),
            (p + "d", p + "reject", no),
            (p + "approve", p + "e"),
            (p + "reject", p + "e"),
        ],
    )


METRICS = [f.name for f in dataclasses.fields(Scores) if f.type == "float"]


def metrics(result: Scores) -> dict[str, float]:
    return {name: getattr(result, name) for name in METRICS}


# --- the premise of the chain cases: its labels are far apart, so only identical ones match


def test_the_chain_labels_are_mutually_dissimilar():
    for a, b in itertools.combinations([*CHAIN_LABELS, "Call the customer", "Archive the file"], 2):
        assert label_similarity(a, b) < 0.8, (a, b)


# --- identity and empty graphs


@pytest.mark.parametrize("make", [chain, decision_graph])
def test_a_graph_scores_one_against_itself(make):
    assert metrics(score(make(), make())) == dict.fromkeys(METRICS, 1.0)


def test_identity_holds_with_other_ids_and_another_order_of_nodes():
    truth = decision_graph()
    renamed = decision_graph(prefix="x_")
    shuffled = renamed.model_copy(update={"nodes": list(reversed(renamed.nodes))})
    assert metrics(score(truth, shuffled)) == dict.fromkeys(METRICS, 1.0)
    assert match_nodes(truth, shuffled) == {n.id: "x_" + n.id for n in truth.nodes}


def test_two_empty_graphs_agree_perfectly():
    assert metrics(score(ProcessGraph(), ProcessGraph())) == dict.fromkeys(METRICS, 1.0)


@pytest.mark.parametrize("empty_side", ["truth", "predicted"])
def test_an_empty_graph_against_a_non_empty_one_scores_zero(empty_side):
    pair = (ProcessGraph(), chain()) if empty_side == "truth" else (chain(), ProcessGraph())
    assert metrics(score(*pair)) == dict.fromkeys(METRICS, 0.0)


def test_graphs_without_edges_have_perfect_edge_scores_when_nodes_agree():
    nodes_only = chain(edges=[])
    result = score(nodes_only, nodes_only)
    assert (result.edge_f1, result.triple_f1_strict, result.graph_edit_similarity) == (1.0, 1.0, 1.0)


# --- edges dropped, added, redirected


def test_dropping_one_of_four_edges():
    result = score(chain(), chain(edges=[("a", "b"), ("b", "c"), ("c", "d")]))
    # 3 of 4 found, none wrong: P = 1, R = 3/4, F1 = 2·(3/4)/(7/4) = 6/7.
    assert (result.edge_precision, result.edge_recall) == (1.0, pytest.approx(3 / 4))
    assert result.edge_f1 == pytest.approx(6 / 7)
    assert result.node_f1 == 1.0
    # One edge deleted over 5 + 4 + 5 + 3 = 17 elements.
    assert result.graph_edit_similarity == pytest.approx(16 / 17)


def test_dropping_two_of_four_edges():
    result = score(chain(), chain(edges=[("a", "b"), ("c", "d")]))
    # P = 1, R = 1/2, F1 = 2·(1/2)/(3/2) = 2/3; GES = 1 − 2 / (5 + 4 + 5 + 2) = 7/8.
    assert (result.edge_precision, result.edge_recall, result.edge_f1) == (1.0, 0.5, pytest.approx(2 / 3))
    assert result.graph_edit_similarity == pytest.approx(7 / 8)


def test_adding_two_spurious_edges():
    result = score(chain(), chain(edges=[("a", "b"), ("b", "c"), ("c", "d"), ("d", "e"), ("a", "c"), ("a", "d")]))
    # 4 right of 6: P = 2/3, R = 1, F1 = 2·(2/3)/(5/3) = 4/5; GES = 1 − 2/20 = 9/10.
    assert result.edge_precision == pytest.approx(2 / 3)
    assert result.edge_recall == 1.0
    assert result.edge_f1 == pytest.approx(4 / 5)
    assert result.graph_edit_similarity == pytest.approx(9 / 10)


def test_redirecting_two_of_four_edges():
    result = score(chain(), chain(edges=[("a", "b"), ("b", "e"), ("c", "a"), ("d", "e")]))
    # b→c and c→d now point elsewhere: 2 of 4 right on both sides, P = R = F1 = 1/2.
    assert (result.edge_precision, result.edge_recall, result.edge_f1) == (0.5, 0.5, 0.5)
    # Nodes all agree; 2 edges deleted and 2 inserted over 18 elements: 1 − 4/18 = 7/9.
    assert result.graph_edit_similarity == pytest.approx(7 / 9)


def test_a_reversed_edge_does_not_count():
    result = score(chain(), chain(edges=[("b", "a"), ("b", "c"), ("c", "d"), ("d", "e")]))
    assert result.edge_f1 == pytest.approx(3 / 4)


# --- nodes relabelled


def test_relabelling_one_node_loses_it_and_its_two_edges():
    labels = ["Receive order", "Check stock", "Call the customer", "Ship parcel", "Send invoice"]
    result = score(chain(), chain(labels=labels))
    # Nodes: 4 of 5 on both sides, F1 = 4/5. Edges b→c and c→d lose an endpoint: F1 = 2/4.
    assert (result.node_precision, result.node_recall) == (pytest.approx(4 / 5), pytest.approx(4 / 5))
    assert result.node_f1 == pytest.approx(4 / 5)
    assert result.edge_f1 == pytest.approx(1 / 2)
    # 1 + 1 nodes and 2 + 2 edges unmatched over 18 elements: 1 − 6/18 = 2/3.
    assert result.graph_edit_similarity == pytest.approx(2 / 3)
    assert (result.matched_nodes, result.matched_edges) == (4, 2)


def test_relabelling_two_nonadjacent_nodes():
    labels = ["Call the customer", "Check stock", "Pack goods", "Ship parcel", "Archive the file"]
    result = score(chain(), chain(labels=labels))
    # Nodes 3 of 5: F1 = 3/5. Only b→c and c→d keep both ends: 2 of 4 edges.
    assert result.node_f1 == pytest.approx(3 / 5)
    assert result.edge_f1 == pytest.approx(1 / 2)
    # Unmatched: 2 + 2 nodes, 2 + 2 edges, over 18: 1 − 8/18 = 5/9.
    assert result.graph_edit_similarity == pytest.approx(5 / 9)


# --- the fuzzy threshold


def test_the_label_similarity_is_difflibs_ratio_on_normalised_labels():
    # "approve invoice" (15) inside "approve invoices" (16): 2·15 / 31.
    assert label_similarity("Approve  invoice.", "APPROVE INVOICES") == pytest.approx(30 / 31)
    assert label_similarity("", "") == 1.0
    assert label_similarity("", "yes") == 0.0


def test_a_similarity_equal_to_the_threshold_matches():
    # "check" / "chuck": 4 letters in common of 10 → 0.8 exactly.
    truth = graph([("a", "task", "check")], [])
    predicted = graph([("a", "task", "chuck")], [])
    assert label_similarity("check", "chuck") == 0.8
    assert match_nodes(truth, predicted, threshold=0.8) == {"a": "a"}
    assert match_nodes(truth, predicted, threshold=0.81) == {}


def test_a_fuzzy_label_matches_just_over_the_threshold_and_not_just_under():
    truth = graph([("a", "task", "Approve invoice")], [])
    predicted = graph([("b", "task", "Approve invoices")], [])
    # 30/31 ≈ 0.9677.
    assert match_nodes(truth, predicted, threshold=0.96) == {"a": "b"}
    assert match_nodes(truth, predicted, threshold=0.97) == {}
    assert score(truth, predicted, threshold=0.97).node_f1 == 0.0


def test_cyrillic_labels_are_normalised_and_fuzzy_matched():
    truth = graph([("a", "task", "Проверить счёт"), ("b", "task", "Оплатить счёт")], [("a", "b")])
    predicted = graph([("x", "task", "ПРОВЕРИТЬ СЧЁТ."), ("y", "task", "Оплатить счета")], [("x", "y")])
    # "оплатить счёт" (13) / "оплатить счета" (14): "оплатить сч" + "т" = 12 → 24/27 = 8/9.
    assert label_similarity("Оплатить счёт", "Оплатить счета") == pytest.approx(8 / 9)
    assert match_nodes(truth, predicted) == {"a": "x", "b": "y"}
    result = score(truth, predicted)
    assert (result.node_f1, result.edge_f1, result.triple_f1_relaxed) == (1.0, 1.0, 1.0)
    # "оплатить счета" is not exactly the true label, so the one triple fails strictly.
    assert result.triple_f1_strict == 0.0
    # Only the substitution costs 1 − 8/9 = 1/9, over 2 + 1 + 2 + 1 = 6: 1 − 1/54.
    assert result.graph_edit_similarity == pytest.approx(53 / 54)


# --- the assignment


def test_one_true_node_matches_only_one_of_two_identical_predictions():
    truth = graph([("a", "task", "Approve invoice")], [])
    predicted = graph([("x", "task", "Approve invoice"), ("y", "task", "Approve invoice")], [])
    assert len(match_nodes(truth, predicted)) == 1
    result = score(truth, predicted)
    # P = 1/2, R = 1, F1 = 2·(1/2)/(3/2) = 2/3.
    assert (result.node_precision, result.node_recall) == (0.5, 1.0)
    assert result.node_f1 == pytest.approx(2 / 3)


def test_the_assignment_maximises_the_total_rather_than_taking_the_best_pair_first():
    truth = graph([("t1", "task", "approve invoice"), ("t2", "task", "approve the invoice")], [])
    predicted = graph([("p1", "task", "approve invoice"), ("p2", "task", "approve invoices")], [])
    # t1–p1 1, t1–p2 30/31, t2–p1 30/34 ≈ 0.882, t2–p2 30/35 ≈ 0.857 (under 0.87).
    # Best pair first (t1–p1) would leave t2 alone; the optimum 30/31 + 30/34 pairs both.
    assert label_similarity("approve the invoice", "approve invoice") == pytest.approx(30 / 34)
    assert label_similarity("approve the invoice", "approve invoices") == pytest.approx(30 / 35)
    assert match_nodes(truth, predicted, threshold=0.87) == {"t1": "p2", "t2": "p1"}


def test_nodes_of_different_kinds_never_match():
    truth = graph([("a", "task", "Approve invoice")], [])
    predicted = graph([("a", "subprocess", "Approve invoice")], [])
    assert match_nodes(truth, predicted) == {}
    assert score(truth, predicted).node_f1 == 0.0


def test_unlabelled_nodes_match_by_their_matched_neighbours_not_by_order():
    # Two unlabelled decisions; the predicted graph lists them the other way round under new ids.
    nodes = [("d1", "decision", ""), ("d2", "decision", ""), ("a", "task", "Check stock"), ("b", "task", "Pack goods")]
    truth = graph(nodes, [("a", "d1"), ("b", "d2")])
    predicted = graph(
        [("q2", "decision", ""), ("q1", "decision", ""), ("a", "task", "Check stock"), ("b", "task", "Pack goods")],
        [("a", "q1"), ("b", "q2")],
    )
    assert match_nodes(truth, predicted) == {"a": "a", "b": "b", "d1": "q1", "d2": "q2"}


def test_unlabelled_nodes_are_anchored_through_other_unlabelled_nodes():
    # check → ⟨decision⟩ → ⟨parallel⟩ → pack: the gateways are found from both labelled ends.
    nodes = [("c", "task", "Check stock"), ("d", "decision", ""), ("p", "parallel", ""), ("k", "task", "Pack goods")]
    truth = graph(nodes, [("c", "d"), ("d", "p"), ("p", "k")])
    renamed = graph([(i + "2", kind, label) for i, kind, label in nodes], [("c2", "d2"), ("d2", "p2"), ("p2", "k2")])
    assert match_nodes(truth, renamed) == {"c": "c2", "d": "d2", "p": "p2", "k": "k2"}


def test_an_unambiguous_unlabelled_pair_settles_a_tie_before_it_is_guessed():
    # check → ⟨d1⟩ → ⟨p1⟩ → pack and check → ⟨d2⟩ → ⟨p2⟩ → ship. In the first round d1 and d2 tie
    # (both follow "check"), while p1 and p2 are each anchored by one labelled successor.
    nodes = [
        ("c", "task", "Check stock"),
        ("d1", "decision", ""),
        ("d2", "decision", ""),
        ("p1", "parallel", ""),
        ("p2", "parallel", ""),
        ("k", "task", "Pack goods"),
        ("n", "task", "Ship parcel"),
    ]
    edges = [("c", "d1"), ("d1", "p1"), ("p1", "k"), ("c", "d2"), ("d2", "p2"), ("p2", "n")]
    truth = graph(nodes, edges)
    renamed = graph(
        [("x" + i, kind, label) for i, kind, label in reversed(nodes)], [("x" + s, "x" + t) for s, t in edges]
    )
    assert match_nodes(truth, renamed) == {n.id: "x" + n.id for n in truth.nodes}
    assert metrics(score(truth, renamed)) == dict.fromkeys(METRICS, 1.0)


def test_a_true_tie_between_unlabelled_nodes_keeps_equal_ids_together():
    # Two interchangeable decisions between the same two tasks: either pairing scores the same,
    # and the one reported is the obvious one.
    nodes = [("c", "task", "Check stock"), ("d2", "decision", ""), ("d1", "decision", ""), ("k", "task", "Pack goods")]
    edges = [("c", "d1"), ("d1", "k"), ("c", "d2"), ("d2", "k")]
    truth, reordered = graph(nodes, edges), graph(list(reversed(nodes)), edges)
    assert match_nodes(truth, reordered) == {"c": "c", "k": "k", "d1": "d1", "d2": "d2"}


def test_unlabelled_nodes_without_anchors_pair_by_kind_in_order():
    truth = graph([("s", "start", ""), ("e", "end", "")], [("s", "e")])
    predicted = graph([("x", "end", ""), ("y", "start", "")], [("y", "x")])
    assert match_nodes(truth, predicted) == {"s": "y", "e": "x"}
    assert score(truth, predicted).graph_edit_similarity == 1.0


def test_a_labelled_node_does_not_match_an_unlabelled_one():
    truth = graph([("d", "decision", "Amount over 1000?")], [])
    predicted = graph([("d", "decision", "")], [])
    assert match_nodes(truth, predicted) == {}


@pytest.mark.parametrize("shape", [(1, 1), (3, 3), (4, 4), (2, 5), (5, 2), (6, 6)])
def test_the_hungarian_assignment_finds_the_brute_force_optimum(shape):
    rows, cols = shape
    rng = random.Random(rows * 31 + cols)
    for _ in range(30):
        weights = [[rng.choice([0.0, rng.random()]) for _ in range(cols)] for _ in range(rows)]
        pairs = assignment(weights)
        assert len(pairs) == min(rows, cols)
        assert len({i for i, _ in pairs}) == len({j for _, j in pairs}) == len(pairs)
        if rows <= cols:
            best = max(sum(weights[i][j] for i, j in enumerate(p)) for p in itertools.permutations(range(cols), rows))
        else:
            best = max(sum(weights[i][j] for j, i in enumerate(p)) for p in itertools.permutations(range(rows), cols))
        assert sum(weights[i][j] for i, j in pairs) == pytest.approx(best)


def test_an_invalid_threshold_is_refused():
    with pytest.raises(ValueError, match="must be in"):
        match_nodes(chain(), chain(), threshold=0)


# --- triples


def test_edge_labels_decide_the_triples_strictly_and_fuzzily():
    result = score(decision_graph(), decision_graph(yes="yes!", no=""))
    # All 6 edges exist: edge F1 = 1.
    assert result.edge_f1 == 1.0
    # Strict: "yes!" ≠ "yes" and "" ≠ "no": 4 of 6 → F1 = 2/3.
    assert result.triple_f1_strict == pytest.approx(2 / 3)
    # Relaxed: "yes"/"yes!" = 6/7 ≥ 0.8 passes, "no"/"" = 0 fails: 5 of 6.
    assert result.triple_f1_relaxed == pytest.approx(5 / 6)
    # Edge substitutions cost (1 − 6/7) + 1 = 8/7 over 24 elements: 1 − 1/21 = 20/21.
    assert result.graph_edit_similarity == pytest.approx(20 / 21)


def test_an_edge_label_normalised_alike_counts_strictly():
    assert score(decision_graph(), decision_graph(yes="Yes.", no=" NO ")).triple_f1_strict == 1.0


def test_strict_triples_need_exact_node_labels():
    truth = graph([("a", "task", "Check invoice"), ("b", "task", "Approve invoice")], [("a", "b")])
    predicted = graph([("a", "task", "Check invoice"), ("b", "task", "Approve invoices")], [("a", "b")])
    result = score(truth, predicted)
    assert (result.edge_f1, result.triple_f1_relaxed, result.triple_f1_strict) == (1.0, 1.0, 0.0)


# --- the graph-edit similarity on a tiny case


def test_the_graph_edit_similarity_of_a_tiny_case():
    truth = graph(
        [("a", "task", "Check invoice"), ("b", "task", "Approve invoice"), ("c", "task", "Pay invoice")],
        [("a", "b"), ("b", "c")],
    )
    predicted = graph(
        [("a", "task", "Check invoice"), ("b", "task", "Approve invoices"), ("x", "task", "Archive")],
        [("a", "b"), ("b", "x")],
    )
    result = score(truth, predicted)
    # Nodes: a = a (cost 0), b ≈ b (1 − 30/31), c deleted, x inserted: 2 + 1/31.
    # Edges: a→b kept, b→c deleted, b→x inserted: 2. Elements: 3 + 2 + 3 + 2 = 10.
    # 1 − (4 + 1/31)/10 = 37/62.
    assert result.graph_edit_similarity == pytest.approx(37 / 62)
    assert result.node_f1 == pytest.approx(2 / 3)
    assert result.edge_f1 == pytest.approx(1 / 2)
    assert (result.triple_f1_relaxed, result.triple_f1_strict) == (pytest.approx(1 / 2), 0.0)


def test_parallel_edges_are_paired_by_their_labels():
    nodes = [("d", "decision", "Stock?"), ("a", "task", "Pack goods")]
    truth = graph(nodes, [("d", "a", "yes"), ("d", "a", "partly")])
    predicted = graph(nodes, [("d", "a", "partly"), ("d", "a", "yes")])
    assert metrics(score(truth, predicted)) == dict.fromkeys(METRICS, 1.0)


# --- symmetry


def test_swapping_truth_and_prediction_swaps_precision_and_recall():
    truth, predicted = chain(), chain(edges=[("a", "b"), ("b", "c"), ("a", "e")])
    forward, backward = score(truth, predicted), score(predicted, truth)
    assert (forward.edge_precision, forward.edge_recall) == (backward.edge_recall, backward.edge_precision)
    assert forward.edge_f1 == backward.edge_f1 == pytest.approx(4 / 7)  # P = 2/3, R = 2/4
    assert forward.graph_edit_similarity == backward.graph_edit_similarity == pytest.approx(1 - 3 / 17)


# --- aggregation


def test_aggregate_takes_macro_means_and_sums_the_counts():
    perfect = score(chain(), chain())
    half = score(chain(), chain(edges=[("a", "b"), ("c", "d")]))
    result = aggregate([perfect, half])
    assert result["items"] == 2
    # Edge F1 1 and 2/3 → 5/6; edge recall 1 and 1/2 → 3/4.
    assert result["edge_f1"] == pytest.approx(5 / 6)
    assert result["edge_recall"] == pytest.approx(3 / 4)
    assert result["node_f1"] == 1.0
    assert (result["true_edges"], result["predicted_edges"], result["matched_edges"]) == (8, 6, 6)


def test_aggregate_of_nothing_has_no_means():
    result = aggregate([])
    assert result["items"] == 0
    assert result["node_f1"] is None
    assert result["true_nodes"] == 0


def test_a_parallel_gateways_label_does_not_count_it_is_matched_by_structure():
    from describer.graph.model import Edge, Node, ProcessGraph

    def graph(gateway_label: str) -> ProcessGraph:
        return ProcessGraph(nodes=[Node(id="a", kind="task", label="Order"), Node(id="g", kind="parallel", label=gateway_label),
                                   Node(id="b", kind="task", label="Pack"), Node(id="c", kind="task", label="Invoice")],
                            edges=[Edge(source="a", target="g"), Edge(source="g", target="b"), Edge(source="g", target="c")])

    scores = score(graph(""), graph("Start packing and invoicing in parallel"))
    assert (scores.node_f1, scores.edge_f1, scores.triple_f1_strict, scores.graph_edit_similarity) == (1.0, 1.0, 1.0, 1.0)
