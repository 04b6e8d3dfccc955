"""Round trips over the starter examples: each example's .mmd and .txt survive their own format,
each one's graph survives the other format, and the two files of an example describe one graph
(up to ids and label normalisation)."""

from __future__ import annotations

from collections import Counter

import pytest

from describer.graph.mermaid import read_mermaid, render_mermaid
from describer.graph.model import NodeKind, ProcessGraph, normalise_label
from describer.graph.text import read_text, render_text
from tests.example_files import STARTER

NAMES = sorted(path.stem for path in STARTER.glob("*.txt"))


def text_of(name: str) -> str:
    return (STARTER / f"{name}.txt").read_text(encoding="utf-8")


def mermaid_of(name: str) -> str:
    return (STARTER / f"{name}.mmd").read_text(encoding="utf-8")


def node_keys(graph: ProcessGraph) -> dict[str, tuple]:
    """Each node by what it is rather than its id: kind, normalised label, lane name. A parallel
    gateway is drawn as a bare "+" but named in the text, so it is known by its neighbours."""
    lanes = {lane.id: normalise_label(lane.name) for lane in graph.lanes}
    keys: dict[str, tuple] = {
        node.id: (node.kind.value, "" if node.kind == NodeKind.PARALLEL else normalise_label(node.label), lanes.get(node.lane))
        for node in graph.nodes
    }
    for node in graph.nodes:
        if node.kind == NodeKind.PARALLEL:
            before = tuple(sorted(keys[edge.source][1] for edge in graph.incoming(node.id)))
            after = tuple(sorted(keys[edge.target][1] for edge in graph.outgoing(node.id)))
            keys[node.id] = (*keys[node.id], before, after)
    return keys


def structure(graph: ProcessGraph) -> dict:
    keys = node_keys(graph)
    pools = {pool.id: normalise_label(pool.name) for pool in graph.pools}
    return {
        "language": graph.language,
        "lanes": sorted((normalise_label(lane.name), pools.get(lane.pool)) for lane in graph.lanes),
        "nodes": Counter(keys.values()),
        "edges": Counter((keys[edge.source], keys[edge.target], normalise_label(edge.label)) for edge in graph.edges),
    }


def test_there_are_44_examples_to_go_round():
    assert len(NAMES) == 44


@pytest.mark.parametrize("name", NAMES)
def test_the_mermaid_graph_survives_mermaid(name):
    reading = read_mermaid(mermaid_of(name))

    again = read_mermaid(render_mermaid(reading.graph))

    assert reading.unsupported == [] and again.unsupported == []
    assert again.graph == reading.graph
    assert len(reading.graph.nodes) >= 5


@pytest.mark.parametrize("name", NAMES)
def test_the_text_renders_back_exactly_and_its_graph_survives_text(name):
    reading = read_text(text_of(name))

    rendered = render_text(reading.graph, reading.graph.language)

    assert reading.not_understood == [] and reading.problems == []
    assert rendered == text_of(name)
    assert read_text(rendered).graph == reading.graph


@pytest.mark.parametrize("name", NAMES)
def test_the_text_and_the_mermaid_of_an_example_are_one_graph(name):
    from_text = read_text(text_of(name)).graph
    from_mermaid = read_mermaid(mermaid_of(name)).graph

    assert structure(from_text) == structure(from_mermaid)


@pytest.mark.parametrize("name", NAMES)
def test_the_text_graph_survives_mermaid_and_the_mermaid_graph_survives_text(name):
    from_text = read_text(text_of(name)).graph
    from_mermaid = read_mermaid(mermaid_of(name)).graph

    through_text = read_text(render_text(from_mermaid, from_mermaid.language))

    assert read_mermaid(render_mermaid(from_text)).graph == from_text
    assert through_text.problems == [] and through_text.not_understood == []
    assert structure(through_text.graph) == structure(from_mermaid)


def test_the_comparison_tells_graphs_apart():
    from_text = read_text(text_of("bpmn-en-change-request")).graph
    relabelled = from_text.model_copy(update={"edges": [edge.model_copy(update={"label": "Maybe"}) for edge in from_text.edges]})
    moved = from_text.model_copy(update={"nodes": [node.model_copy(update={"lane": None}) for node in from_text.nodes]})

    assert structure(relabelled) != structure(from_text)
    assert structure(moved) != structure(from_text)
    assert structure(read_text(text_of("bpmn-en-employee-onboarding")).graph) != structure(
        read_mermaid(mermaid_of("bpmn-ru-onbording")).graph
    )


@pytest.mark.parametrize("name", NAMES)
def test_the_graph_of_each_example_survives_bpmn_and_the_bpmn_validates(name):
    from describer.graph.bpmn import read_bpmn, render_bpmn, validate_bpmn

    graph = read_mermaid(mermaid_of(name)).graph
    xml = render_bpmn(graph)

    assert validate_bpmn(xml) == []
    assert read_bpmn(xml) == graph
