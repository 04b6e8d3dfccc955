"""`evaluate`: the harness is right by construction — the truth's own descriptions score ≈ 1, the
starter set's texts match their drawings, and the real pipeline runs on the tiny models."""

from __future__ import annotations

import hashlib
import json

import pytest
from django.core.files.base import ContentFile
from django.core.management import call_command

from describer import evaluation
from describer.graph.generate import manifest_entry, plan_item
from describer.graph.mermaid import read_mermaid
from describer.graph.metrics import aggregate, score
from describer.graph.text import read_text
from describer.models import Example
from tests.conftest import diagram_png
from tests.example_files import STARTER


def test_the_truths_own_descriptions_score_at_least_0_99_on_200_generated_items():
    scores = []
    for index in range(200):
        plan = plan_item(7, index)
        scores.append(score(plan.graph, read_text(plan.text, plan.graph.language).graph))
    means = aggregate(scores)
    assert means["items"] == 200
    for metric in ("node_f1", "edge_f1", "triple_f1_strict", "triple_f1_relaxed", "graph_edit_similarity"):
        assert means[metric] >= 0.99, metric


def test_the_starter_sets_texts_score_at_least_0_99_against_their_drawings():
    scores = [
        score(read_mermaid(path.read_text(encoding="utf-8")).graph,
              read_text(path.with_suffix(".txt").read_text(encoding="utf-8")).graph)
        for path in sorted(STARTER.glob("*.mmd"))
    ]  # fmt: skip
    means = aggregate(scores)
    assert means["items"] == 44
    assert means["node_f1"] >= 0.99 and means["edge_f1"] >= 0.99 and means["graph_edit_similarity"] >= 0.99


def write_set(folder, plans, image_of) -> None:
    """Items in make_diagram_set's layout, each image from `image_of(index, plan)`."""
    entries = []
    for index, plan in plans:
        (folder / f"{plan.name}.json").write_text(plan.graph.model_dump_json(), encoding="utf-8")
        (folder / f"{plan.name}.txt").write_text(plan.text, encoding="utf-8")
        entry = manifest_entry(plan) | {"image": f"{plan.name}.png", "split": "test"}
        (folder / entry["image"]).write_bytes(image_of(index, plan))
        entries.append(entry)
    (folder / "manifest.json").write_text(json.dumps({"items": entries}), encoding="utf-8")


@pytest.fixture
def small_set(tmp_path):
    """Three items in make_diagram_set's layout (images drawn by Pillow: the harness, not the drawing, is tested)."""
    write_set(tmp_path, [(index, plan_item(11, index)) for index in range(3)], lambda index, _: diagram_png(text=f"Item {index}"))
    return tmp_path


@pytest.mark.django_db
def test_canonical_predictions_through_the_command_score_1_with_a_table_and_json(small_set, tmp_path, capsys):
    out = tmp_path / "scores.json"
    call_command("evaluate", str(small_set), "--predict", "canonical", "--json", str(out))
    printed = capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["summary"]["overall"]["items"] == 3
    assert data["summary"]["overall"]["node_f1"] >= 0.99 and data["summary"]["overall"]["parse_rate"] == 1.0
    assert "overall" in printed and "size=" in printed and "language=" in printed


@pytest.mark.django_db
def test_an_item_whose_image_is_a_retrieval_example_is_reported_apart(small_set):
    items = evaluation.load_items(small_set)
    leaked = items[0]
    example = Example(name="leak", description="# x", image_sha256=hashlib.sha256(leaked.image.read_bytes()).hexdigest())
    example.image.save("leak.png", ContentFile(leaked.image.read_bytes()), save=True)

    summary = evaluation.summarise(evaluation.evaluate_set(None, items, predict="canonical"))

    assert summary["overall"]["items"] == 2
    assert summary["leaked"]["items"] == 1


@pytest.mark.django_db
def test_the_real_pipeline_runs_on_the_tiny_models(small_set, tiny_runtime, quick_generation):
    results = evaluation.evaluate_set(tiny_runtime, evaluation.load_items(small_set))
    summary = evaluation.summarise(results)
    assert summary["overall"]["items"] == 3
    # The tiny model writes nonsense: figures near 0, but every item went through the pipeline.
    assert all(result.seconds > 0 for result in results)
    assert 0.0 <= summary["overall"]["parse_rate"] <= 1.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("# Order\n\n## Steps\n1. Start: order in\n2. Ship it\n", True),
        ("1) Check the order\n2) Ship it\n", True),
        ("Иэ тшгтни ь\nдолгого пути gibberish", False),  # prose: the lenient reader makes steps of it
        ("", False),
    ],
)
def test_parse_success_means_the_asked_for_layout(text, expected):
    from describer import graphs

    assert evaluation.parsed(text, graphs.from_description(text)) is expected


def test_pearson_by_hand():
    # x = 1, 2, 3; y = 1, 2, 4: Σdxdy = 3, Σdx² = 2, Σdy² = 42/9, r = 3 / √(2 · 42/9) = 0.9820
    assert evaluation.pearson([1, 2, 3], [1, 2, 4]) == 0.982
    # y = 4, 2, 1: dy = 5/3, -1/3, -4/3, Σdxdy = -3, Σdy² = 42/9: r = -0.9820
    assert evaluation.pearson([1, 2, 3], [4, 2, 1]) == -0.982
    assert evaluation.pearson([0.5, 0.5], [0.1, 0.9]) is None  # constant: undefined
    assert evaluation.pearson([0.5], [0.1]) is None


def test_the_summary_correlates_coverage_with_the_ground_truth_metrics():
    from describer.graph.metrics import Scores

    def result(coverage, node_f1, parsed=True):
        counts = dict.fromkeys(("true_nodes", "predicted_nodes", "matched_nodes", "true_edges", "predicted_edges", "matched_edges"), 1)
        scores = Scores(**counts, **{name: node_f1 for name in evaluation.METRICS}) if parsed else None
        return evaluation.ItemResult("x", {}, parsed, scores, coverage=coverage)

    figures = evaluation.summarise([result(1.0, 1.0), result(2.0, 2.0), result(3.0, 4.0), result(None, 0.5)])["overall"]
    assert figures["coverage"] == 2.0  # the item without a reading is left out
    assert figures["coverage_r_node_f1"] == 0.982 and figures["coverage_r_edge_f1"] == 0.982


def drawn(indexes) -> tuple[list, object]:
    from describer.graph.images import render_png

    return [(index, plan_item(3, index)) for index in indexes], lambda _, plan: render_png(plan.graph, scale=1.5)


@pytest.fixture
def drawn_set(tmp_path):
    """Two items whose images are their graphs drawn by Pillow: Tesseract reads real labels."""
    write_set(tmp_path, *drawn((1, 5)))
    return tmp_path


@pytest.mark.django_db
def test_evaluate_reports_coverage_beside_the_ground_truth(drawn_set, tmp_path, capsys):
    out = tmp_path / "scores.json"
    call_command("evaluate", str(drawn_set), "--predict", "canonical", "--json", str(out))
    data = json.loads(out.read_text())
    assert data["summary"]["overall"]["coverage"] >= 0.95
    assert all(item["coverage"] >= 0.95 and item["ocr_seconds"] > 0 for item in data["items"])
    assert "coverage" in capsys.readouterr().out


def test_a_perturbed_answer_leaves_out_and_invents_what_it_says():
    import random

    from describer.graph.text import read_text, render_text

    truth = plan_item(3, 2).graph
    for seed in range(6):
        wrong = evaluation.perturbed_graph(truth, random.Random(seed))
        kept = {node.id for node in wrong.nodes}
        invented = [node for node in wrong.nodes if node.id.startswith("invented_")]
        assert all(node.label in evaluation.INVENTED_STEPS[truth.language] for node in invented)
        assert all(edge.source in kept and edge.target in kept for edge in wrong.edges)
        # what it left out and invented is what node F1 counts against it
        scores = score(truth, read_text(render_text(wrong, truth.language), truth.language).graph)
        missing = len(truth.nodes) - (len(wrong.nodes) - len(invented))
        assert scores.true_nodes == len(truth.nodes) and scores.matched_nodes == len(truth.nodes) - missing


@pytest.mark.django_db
def test_on_perturbed_answers_coverage_follows_node_f1(tmp_path):
    write_set(tmp_path, *drawn((1, 5, 2, 3, 4, 6, 7, 9)))
    results = evaluation.evaluate_set(None, evaluation.load_items(tmp_path), predict="perturbed")
    overall = evaluation.summarise(results)["overall"]
    assert overall["items"] == 8 and overall["node_f1"] < 0.95  # the answers are wrong, by different amounts
    assert overall["coverage_r_node_f1"] > 0.6
