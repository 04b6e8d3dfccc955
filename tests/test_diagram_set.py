"""`make_diagram_set`: synthetic diagrams with ground truth (describer/graph/generate.py).

One small set is drawn for the whole module (one Chromium launch); structure coverage is
checked on a few hundred plans, which need no browser."""

from __future__ import annotations

import io
import json
import math
from collections import Counter
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from PIL import Image, ImageDraw, ImageStat

from describer.graph.generate import (
    SIZE_BUCKETS,
    START_WORDS,
    ItemPlan,
    degrade,
    encoded,
    manifest_entry,
    plan_item,
)
from describer.graph.model import NodeKind, ProcessGraph
from describer.graph.vocabulary import DOMAINS, all_labels

SET_SEED = 6  # its first 6 items have JPEG and PNG, rotated and clean, both languages and types
SET_COUNT = 6
SAMPLE = 300


@pytest.fixture(scope="module")
def diagram_set(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("diagram_set")
    call_command("make_diagram_set", str(folder), count=SET_COUNT, seed=SET_SEED, verbosity=0, stdout=io.StringIO())
    return folder


@pytest.fixture(scope="module")
def sample() -> list[ItemPlan]:
    return [plan_item(1, index) for index in range(SAMPLE)]


def manifest_of(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text(encoding="utf-8"))


# Determinism ---------------------------------------------------------------------------------


def test_the_same_seed_gives_the_same_graphs_and_texts():
    first = [plan_item(5, index) for index in range(20)]
    again = [plan_item(5, index) for index in range(20)]
    other = [plan_item(6, index) for index in range(20)]

    assert [(p.graph.model_dump_json(), p.text) for p in first] == [(p.graph.model_dump_json(), p.text) for p in again]
    assert [p.text for p in first] != [p.text for p in other]
    assert len({p.text for p in first}) == 20


def test_the_written_files_are_what_the_seed_plans(diagram_set):
    manifest = manifest_of(diagram_set)

    for index, entry in enumerate(manifest["items"]):
        plan = plan_item(SET_SEED, index)
        assert (diagram_set / entry["graph"]).read_text(encoding="utf-8") == plan.graph.model_dump_json(indent=2) + "\n"
        assert (diagram_set / entry["text"]).read_text(encoding="utf-8") == plan.text
        assert entry == manifest_entry(plan)


# Graphs --------------------------------------------------------------------------------------


def is_back_edge(graph: ProcessGraph, source: str, target: str) -> bool:
    order = {node.id: position for position, node in enumerate(graph.nodes)}
    return order[target] < order[source]


def has_nested_decision(graph: ProcessGraph) -> bool:
    """A decision inside a branch of another one: reached from a branch edge before any merge."""
    for decision in (node for node in graph.nodes if node.kind == NodeKind.DECISION):
        for edge in graph.outgoing(decision.id):
            current = edge.target
            while len(graph.incoming(current)) == 1 and not is_back_edge(graph, decision.id, current):
                if graph.node(current).kind == NodeKind.DECISION:
                    return True
                out = graph.outgoing(current)
                if len(out) != 1:
                    break
                current = out[0].target
    return False


def features(graph: ProcessGraph) -> set[str]:
    kinds = Counter(node.kind for node in graph.nodes)
    found = {f"{len(graph.outgoing(node.id))} branches" for node in graph.nodes if node.kind == NodeKind.DECISION}
    parallel = [node for node in graph.nodes if node.kind == NodeKind.PARALLEL]
    if any(len(graph.outgoing(n.id)) >= 2 for n in parallel) and any(len(graph.incoming(n.id)) >= 2 for n in parallel):
        found.add("parallel split and join")
    if any(is_back_edge(graph, edge.source, edge.target) for edge in graph.edges):
        found.add("loop")
    if has_nested_decision(graph):
        found.add("nested decision")
    if kinds[NodeKind.END] >= 2:
        found.add("several ends")
    found |= {"lanes"} if graph.lanes else set()
    found |= {f"{len(graph.pools)} pools"} if graph.pools else set()
    found |= {kind.value for kind in kinds}
    return found


def test_graphs_cover_every_structure(sample):
    seen = Counter(feature for plan in sample for feature in features(plan.graph))

    wanted = ["2 branches", "3 branches", "4 branches", "parallel split and join", "loop", "nested decision",
              "several ends", "lanes", "1 pools", "2 pools", "event", "subprocess"]  # fmt: skip
    assert {feature: seen[feature] for feature in wanted if seen[feature] < 5} == {}


def test_graphs_have_3_to_40_nodes_over_every_size_bucket(sample):
    sizes = [len(plan.graph.nodes) for plan in sample]

    assert min(sizes) == 3 and max(sizes) >= 36 and max(sizes) <= 40
    assert set(Counter(plan.buckets()["size"] for plan in sample)) == set(SIZE_BUCKETS)


def test_graphs_span_both_languages_all_domains_and_both_types(sample):
    assert {plan.graph.language for plan in sample} == {"en", "ru"}
    assert {plan.domain for plan in sample} == set(DOMAINS)
    assert {plan.buckets()["diagram_type"] for plan in sample} == {"flowchart", "bpmn"}


def test_every_graph_is_valid_and_connected(sample):
    for plan in sample:
        graph = ProcessGraph.model_validate_json(plan.graph.model_dump_json())
        starts = [node for node in graph.nodes if node.kind == NodeKind.START]
        assert len(starts) == 1 and all(graph.incoming(n.id) for n in graph.nodes if n.kind != NodeKind.START)
        assert all(graph.outgoing(n.id) for n in graph.nodes if n.kind != NodeKind.END)


def test_labels_come_from_the_business_vocabulary(sample):
    for plan in sample:
        graph, known = plan.graph, all_labels(plan.graph.language) | set(START_WORDS.values())
        labels = [graph.title, *(n.label for n in graph.nodes if n.label), *(e.label for e in graph.edges if e.label)]
        labels += [lane.name for lane in graph.lanes] + [pool.name for pool in graph.pools]
        assert [label for label in labels if label not in known] == []
    assert "lorem" not in json.dumps([plan.text for plan in sample]).casefold()


def test_russian_graphs_are_labelled_in_russian(sample):
    russian = [plan for plan in sample if plan.graph.language == "ru"]

    assert all(any("а" <= ch <= "я" for ch in node.label.casefold()) for p in russian for node in p.graph.nodes if node.label)


# Splits and manifest -------------------------------------------------------------------------


def test_splits_are_about_80_10_10(sample):
    shares = Counter(plan.split for plan in sample)

    assert 0.72 <= shares["train"] / SAMPLE <= 0.88
    assert 0.05 <= shares["validation"] / SAMPLE <= 0.15 and 0.05 <= shares["test"] / SAMPLE <= 0.15


def test_the_manifest_lists_every_item_with_its_buckets_and_split(diagram_set):
    manifest = manifest_of(diagram_set)
    files = {path.name for path in diagram_set.iterdir()} - {"manifest.json"}

    listed = {entry[key] for entry in manifest["items"] for key in ("image", "graph", "text")}
    assert len(manifest["items"]) == SET_COUNT and listed == files
    for entry in manifest["items"]:
        buckets = entry["buckets"]
        assert buckets["size"] in SIZE_BUCKETS and buckets["diagram_type"] in ("flowchart", "bpmn")
        assert buckets["language"] in ("en", "ru") and buckets["domain"] in DOMAINS
        assert buckets["degradation"] in ("clean", "light", "heavy")
        assert entry["split"] in ("train", "validation", "test")


# Images --------------------------------------------------------------------------------------


def test_images_open_in_the_format_their_degradation_says(diagram_set):
    formats = []
    for entry in manifest_of(diagram_set)["items"]:
        with Image.open(diagram_set / entry["image"]) as image:
            formats.append(image.format)
            assert image.width >= 100 and image.height >= 60
        assert (image.format == "JPEG") == ("jpeg" in entry["degradation"]) == entry["image"].endswith(".jpg")
    assert set(formats) == {"JPEG", "PNG"}


def test_rotated_images_have_a_scanner_border_and_clean_ones_a_white_margin(diagram_set):
    corners = {}
    for entry in manifest_of(diagram_set)["items"]:
        with Image.open(diagram_set / entry["image"]) as image:
            corners[entry["name"]] = ImageStat.Stat(image.convert("L").crop((0, 0, 4, 4))).mean[0]
    rotated = [entry["name"] for entry in manifest_of(diagram_set)["items"] if "rotate" in entry["degradation"]]
    clean = [entry["name"] for entry in manifest_of(diagram_set)["items"] if not entry["degradation"]]

    assert rotated and clean
    assert all(corners[name] < 248 for name in rotated)
    assert all(corners[name] == 255 for name in clean)


def test_the_drawings_show_the_labels_of_their_graph(diagram_set):
    """Mermaid drew something with text: a clean image has plenty of dark (ink) pixels."""
    entry = next(entry for entry in manifest_of(diagram_set)["items"] if not entry["degradation"])
    with Image.open(diagram_set / entry["image"]) as image:
        dark = sum(image.convert("L").point(lambda value: 255 if value < 128 else 0).histogram()[255:])
    assert dark > 500


@pytest.fixture
def drawing() -> Image.Image:
    image = Image.new("RGB", (400, 200), "white")
    ImageDraw.Draw(image).rectangle((100, 50, 300, 150), outline="black", width=3)
    return image


def test_rotation_grows_the_image_by_its_angle(drawing):
    rotated = degrade(drawing, {"rotate": {"degrees": 3.0}})

    angle = math.radians(3.0)
    assert rotated.width == pytest.approx(400 * math.cos(angle) + 200 * math.sin(angle), abs=2)
    assert rotated.height == pytest.approx(200 * math.cos(angle) + 400 * math.sin(angle), abs=2)


def test_blur_turns_sharp_edges_grey(drawing):
    blurred = degrade(drawing, {"blur": {"radius": 1.5}})

    assert len(set(drawing.convert("L").getdata())) == 2
    assert len(set(blurred.convert("L").getdata())) > 10


def test_noise_speckles_flat_paper(drawing):
    noisy = degrade(drawing, {"noise": {"sigma": 12.0}})

    assert ImageStat.Stat(noisy.convert("L").crop((0, 0, 80, 40))).stddev[0] > 3


def test_uneven_light_darkens_one_side(drawing):
    lit = degrade(drawing, {"uneven_light": {"strength": 0.3, "angle": 90}})

    left, right = (ImageStat.Stat(lit.convert("L").crop(box)).mean[0] for box in ((0, 0, 40, 200), (360, 0, 400, 200)))
    assert abs(left - right) > 30


def test_jpeg_degradation_saves_a_jpeg_of_that_quality(drawing):
    low, high = (encoded(drawing, {"jpeg": {"quality": q}}) for q in (35, 90))

    assert Image.open(io.BytesIO(low)).format == "JPEG" and len(low) < len(high)
    assert Image.open(io.BytesIO(encoded(drawing, {}))).format == "PNG"


# The command ---------------------------------------------------------------------------------


def test_the_command_refuses_a_count_below_one(tmp_path):
    with pytest.raises(CommandError, match="--count must be between 1"):
        call_command("make_diagram_set", str(tmp_path), count=0, stdout=io.StringIO())


def test_every_lane_has_work_and_every_pool_a_lane(sample):
    for plan in sample:
        graph = plan.graph
        assert all(any(node.lane == lane.id for node in graph.nodes) for lane in graph.lanes)
        assert all(any(lane.pool == pool.id for lane in graph.lanes) for pool in graph.pools)


def test_uneven_light_is_a_smooth_gradient_without_dark_corners():
    paper = Image.new("RGB", (300, 300), "white")

    lit = degrade(paper, {"uneven_light": {"strength": 0.35, "angle": 45}}).convert("L")

    pixels = lit.load()
    steps = [abs(pixels[x, y] - pixels[x + 1, y]) for y in range(0, 300, 10) for x in range(299)]
    assert max(steps) <= 3
