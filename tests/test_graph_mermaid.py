"""describer/graph/mermaid.py: the accepted subset of Mermaid flowcharts read into a
ProcessGraph (what falls outside is reported by line, not fatal), and graphs rendered as
Mermaid that the vendored Mermaid draws."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from describer.graph.mermaid import read_mermaid, render_mermaid
from describer.graph.model import ID_PATTERN, Edge, Lane, Node, NodeKind, Pool, ProcessGraph

MERMAID_JS = Path(__file__).resolve().parent.parent / "static" / "vendor" / "mermaid.min.js"

ORDER = """\
%% type: flowchart, lang: en
flowchart TD
  a(["Order received"]) --> b{"Paid?"}
  b -->|Yes| c[Ship #quot;fast#quot;]
  b -- "No" --> d["Cancel<br>and notify"]
  c & d --> e(("Closed"))
  classDef done fill:#fff
  class e endEvent
  style a fill:#fff
"""


def edges_of(graph: ProcessGraph) -> list[tuple[str, str, str]]:
    return [(edge.source, edge.target, edge.label) for edge in graph.edges]


def kind_of(declaration: str, where: str = "middle") -> tuple[NodeKind, str]:
    lines = {"middle": f"x --> {declaration}\n  n --> y", "first": f"{declaration} --> y", "last": f"x --> {declaration}"}
    graph = read_mermaid(f"flowchart LR\n  {lines[where]}\n").graph
    return graph.node("n").kind, graph.node("n").label


def test_a_small_flowchart_gives_exactly_this_graph():
    reading = read_mermaid(ORDER)

    assert reading.graph == ProcessGraph(
        language="en",
        nodes=[
            Node(id="a", kind=NodeKind.START, label="Order received"),
            Node(id="b", kind=NodeKind.DECISION, label="Paid?"),
            Node(id="c", kind=NodeKind.TASK, label='Ship "fast"'),
            Node(id="d", kind=NodeKind.TASK, label="Cancel\nand notify"),
            Node(id="e", kind=NodeKind.END, label="Closed"),
        ],
        edges=[
            Edge(source="a", target="b"),
            Edge(source="b", target="c", label="Yes"),
            Edge(source="b", target="d", label="No"),
            Edge(source="c", target="e"),
            Edge(source="d", target="e"),
        ],
    )
    assert reading.unsupported == []


@pytest.mark.parametrize(
    ("declaration", "kind", "label"),
    [
        ('n(("E"))', NodeKind.EVENT, "E"),
        ("n([E])", NodeKind.EVENT, "E"),
        ("n(((E)))", NodeKind.END, "E"),
        ("n>E]", NodeKind.EVENT, "E"),
        ("n{E}", NodeKind.DECISION, "E"),
        ('n{"+"}', NodeKind.PARALLEL, ""),
        ('n{"#43;"}', NodeKind.DECISION, "+"),
        ("n{E}:::parallel", NodeKind.PARALLEL, "E"),
        ("n{{E}}", NodeKind.PARALLEL, "E"),
        ("n[[E]]", NodeKind.SUBPROCESS, "E"),
        ("n[E]", NodeKind.TASK, "E"),
        ("n(E)", NodeKind.TASK, "E"),
        ("n[/E/]", NodeKind.TASK, "E"),
        ("n[\\E\\]", NodeKind.TASK, "E"),
        ("n[/E\\]", NodeKind.TASK, "E"),
        ("n[(E)]", NodeKind.TASK, "E"),
        ("n", NodeKind.TASK, "n"),
        ("n((E)):::startEvent", NodeKind.START, "E"),
    ],
)
def test_shapes_decide_the_kind(declaration, kind, label):
    assert kind_of(declaration) == (kind, label)


def test_circles_and_stadiums_are_starts_without_incoming_edges_and_ends_without_outgoing_ones():
    assert kind_of("n((E))", "first")[0] == NodeKind.START
    assert kind_of("n([E])", "last")[0] == NodeKind.END
    assert kind_of("n((E)):::endEvent", "first")[0] == NodeKind.END


def test_subgraphs_are_lanes_and_a_subgraph_of_subgraphs_is_a_pool():
    code = """flowchart LR
  subgraph pool1 ["Shop"]
    subgraph sales [Sales]
      a[Take order]
    end
    subgraph Store
      b[Pack]
    end
    loose[In the pool]
  end
  subgraph "Customer side"
    c([Paid])
  end
  a --> b --> c
  c --> loose
"""
    graph = read_mermaid(code).graph

    assert graph.pools == [Pool(id="pool1", name="Shop")]
    assert graph.lanes == [
        Lane(id="sales", name="Sales", pool="pool1"),
        Lane(id="Store", name="Store", pool="pool1"),
        Lane(id="subgraph4", name="Customer side"),
    ]
    assert [(node.id, node.lane) for node in graph.nodes] == [
        ("a", "sales"), ("b", "Store"), ("loose", None), ("c", "subgraph4")
    ]  # fmt: skip


def test_a_node_belongs_to_the_first_subgraph_it_is_written_in():
    code = 'flowchart LR\n  a["A"]\n  subgraph one\n    a --> b\n  end\n  subgraph two\n    b --> c\n  end\n'

    graph = read_mermaid(code).graph

    assert [(node.id, node.lane) for node in graph.nodes] == [("a", "one"), ("b", "one"), ("c", "two")]


def test_every_kind_of_arrow_and_edge_label_is_read():
    code = """flowchart TD
  a --- b
  b -.-> c
  c ==> d
  d -. maybe .-> e
  e == sure ==> f
  f --o g
  g --x h
  h ---->|long| i
  i -->|"quoted #amp; coded"| j
  j -- plain words --> k
"""
    reading = read_mermaid(code)

    assert [edge.label for edge in reading.graph.edges] == ["", "", "", "maybe", "sure", "", "", "long", "quoted & coded",
                                                            "plain words"]  # fmt: skip
    assert [node.id for node in reading.graph.nodes] == list("abcdefghijk")
    assert reading.unsupported == []


def test_chains_and_ampersands_give_every_edge():
    graph = read_mermaid("graph LR\n  a --> b --> c\n  a & b -->|go| c & d;\n").graph

    assert edges_of(graph) == [
        ("a", "b", ""), ("b", "c", ""), ("a", "c", "go"), ("a", "d", "go"), ("b", "c", "go"), ("b", "d", "go")
    ]  # fmt: skip


def test_entity_codes_line_breaks_and_markdown_strings_are_decoded():
    code = 'flowchart TD\n  a["#quot;A#quot; #35;1 #amp; #lt;b#gt; #9829; &amp; x<br/>y"]\n  b["`Bold **text**`"]\n'

    graph = read_mermaid(code).graph

    assert graph.node("a").label == '"A" #1 & <b> ♥ & x\ny'
    assert graph.node("b").label == "Bold **text**"


def test_front_matter_title_metadata_and_notes_are_read():
    code = '---\ntitle: "Order \\"flow\\": ship"\nconfig:\n  theme: forest\n---\n%%{init: {"theme": "dark"}}%%\n'
    code += "%% type: bpmn, lang: ru\nflowchart TD\n  %% a comment\n  a --> b\n%% note b: Готово #quot;ок#quot;\n"

    reading = read_mermaid(code)

    assert reading.graph.title == 'Order "flow": ship'
    assert reading.graph.language == "ru"
    assert reading.graph.node("b").note == 'Готово "ок"'
    assert reading.unsupported == []


def test_lines_outside_the_subset_are_reported_by_number_and_the_rest_is_read():
    code = """flowchart XY
  a --> b
  a ~~~ c
  a <--> d
  this is not mermaid ((
  end
  a@{ shape: rect }
  subgraph open
    z
"""
    reading = read_mermaid(code)

    assert [number for number, _ in reading.unsupported] == [1, 3, 4, 5, 6, 7, 8]
    reasons = dict(reading.unsupported)
    assert "TD, TB, BT, LR or RL" in reasons[1]
    assert "no edge" in reasons[3] and "one edge" in reasons[4]
    assert "Expected an arrow" in reasons[5] and "closes no subgraph" in reasons[6]
    assert "has no “end”" in reasons[8]
    assert edges_of(reading.graph) == [("a", "b", ""), ("a", "d", "")]
    assert [node.id for node in reading.graph.nodes] == ["a", "b", "c", "d", "z"]
    assert reading.graph.node("z").lane == "open"


def test_an_edge_to_a_subgraph_is_reported_as_read_into_a_node():
    reading = read_mermaid("flowchart LR\n  subgraph lane1 [Sales]\n    a\n  end\n  b --> lane1\n")

    assert reading.unsupported == [(5, "“lane1” is a subgraph; an edge to a subgraph is read as a node.")]
    assert [(node.id, node.lane) for node in reading.graph.nodes] == [("a", "lane1"), ("b", None), ("lane1", None)]


def test_code_without_a_header_is_read_and_the_missing_header_reported():
    reading = read_mermaid("a --> b\n")

    assert edges_of(reading.graph) == [("a", "b", "")]
    assert reading.unsupported == [(1, "A flowchart starts with “flowchart TD” (or graph, with TB, BT, LR or RL).")]


def test_another_kind_of_diagram_gives_an_empty_graph_and_says_why():
    reading = read_mermaid("sequenceDiagram\n  A->>B: hi\n")

    assert reading.graph.nodes == [] and reading.graph.edges == []
    assert reading.unsupported == [(1, "Only flowcharts (“flowchart” or “graph”) can be read into a process.")]


def test_mermaid_ids_the_graph_cannot_hold_get_valid_unique_ones():
    graph = read_mermaid("flowchart TD\n  1 --> 2\n  n_1 --> Ω\n").graph

    ids = [node.id for node in graph.nodes]
    assert ids[2] == "n_1" and len(set(ids)) == 4
    assert all(re.match(ID_PATTERN, node_id) for node_id in ids)


TEA = ProcessGraph(
    title="Tea",
    language="en",
    nodes=[
        Node(id="s", kind=NodeKind.START, label="Start"),
        Node(id="boil", kind=NodeKind.TASK, label="Boil"),
        Node(id="ok", kind=NodeKind.DECISION, label="Hot?"),
        Node(id="done", kind=NodeKind.END, label="Tea is ready", note="Served"),
    ],
    edges=[
        Edge(source="s", target="boil"),
        Edge(source="boil", target="ok"),
        Edge(source="ok", target="done", label="Yes"),
        Edge(source="ok", target="boil", label="No"),
    ],
)


def test_a_flowchart_renders_exactly_like_this():
    assert render_mermaid(TEA) == """\
---
title: "Tea"
---
%% type: flowchart, lang: en
flowchart TD
  s(["Start"])
  boil["Boil"]
  ok{"Hot?"}
  done(["Tea is ready"])
  s --> boil
  boil --> ok
  ok -->|"Yes"| done
  ok -->|"No"| boil
  classDef startEvent fill:#ffffff,stroke:#2e7d32,stroke-width:2px
  classDef endEvent fill:#ffffff,stroke:#b71c1c,stroke-width:4px
  classDef task fill:#fffdf5,stroke:#444444,stroke-width:1.5px
  classDef gateway fill:#fff8dc,stroke:#b8860b,stroke-width:2px
  class s startEvent
  class done endEvent
  class boil task
  class ok gateway
%% note done: Served
"""


POOLED = ProcessGraph(
    pools=[Pool(id="shop", name="Shop")],
    lanes=[Lane(id="sales", name="Sales", pool="shop"), Lane(id="store", name="Store", pool="shop")],
    nodes=[
        Node(id="a", kind=NodeKind.START, label="Go", lane="sales"),
        Node(id="b", kind=NodeKind.PARALLEL, label="", lane="store"),
        Node(id="c", kind=NodeKind.SUBPROCESS, label="Pack", lane="store"),
    ],
    edges=[Edge(source="a", target="b"), Edge(source="b", target="c")],
)


def test_lanes_render_as_subgraphs_inside_their_pool():
    code = render_mermaid(POOLED)

    assert code.startswith("""\
flowchart LR
  subgraph shop ["Shop"]
    subgraph sales ["Sales"]
      a(("Go"))
    end
    subgraph store ["Store"]
      b{"+"}
      c[["Pack"]]
    end
  end
  a --> b
  b --> c
""")
    assert read_mermaid(code).graph == POOLED


def test_nodes_whose_order_mixes_lanes_are_declared_first_so_the_order_survives():
    graph = POOLED.model_copy(update={"nodes": [POOLED.nodes[1], POOLED.nodes[0], POOLED.nodes[2]]})

    code = render_mermaid(graph)

    assert '  b{"+"}\n  a(("Go"))\n  c[["Pack"]]\n  subgraph shop ["Shop"]\n    subgraph sales ["Sales"]\n      a\n' in code
    assert read_mermaid(code).graph == graph


def test_rendering_is_deterministic():
    assert render_mermaid(POOLED) == render_mermaid(ProcessGraph.model_validate_json(POOLED.model_dump_json()))


LABELS = ['Say "hi"', "a < b > c & d", "Literal #quot; and #35; stay", "Step #1; next", "Two\nlines",
          "Pizza 🍕 ready ✅", "Проверить «заявку»", "a|b `c`; d", " padded ", "+", ""]  # fmt: skip


def tricky_graph() -> ProcessGraph:
    nodes = [Node(id=f"n{index}", kind=NodeKind.DECISION, label=label, note=label) for index, label in enumerate(LABELS)]
    edges = [Edge(source=f"n{index}", target=f"n{index + 1}", label=label) for index, label in enumerate(LABELS[1:])]
    lanes = [Lane(id="lane", name=LABELS[0])]
    nodes[0] = nodes[0].model_copy(update={"lane": "lane"})
    return ProcessGraph(title=" / ".join(LABELS), language="ru", lanes=lanes, nodes=nodes, edges=edges)


def test_quotes_brackets_ampersands_entity_codes_line_breaks_emoji_and_cyrillic_survive_mermaid():
    graph = tricky_graph()

    code = render_mermaid(graph)
    reading = read_mermaid(code)

    assert reading.graph == graph and reading.unsupported == []
    assert 'n0{"Say #quot;hi#quot;"}' in code and 'n3{"Step #35;1; next"}' in code
    assert 'n4{"Two<br>lines"}' in code and 'n6{"Проверить «заявку»"}' in code
    assert 'n9{"#43;"}' in code and 'n10{" "}' in code


def test_ids_mermaid_takes_for_keywords_or_that_a_lane_shares_are_changed():
    graph = ProcessGraph(
        lanes=[Lane(id="x", name="X")],
        nodes=[Node(id="end", kind=NodeKind.TASK, label="E"), Node(id="x", kind=NodeKind.TASK, label="X", lane="x")],
        edges=[Edge(source="end", target="x")],
    )

    code = render_mermaid(graph)

    assert "  end_ --> x_\n" in code and 'subgraph x ["X"]' in code
    assert [node.id for node in read_mermaid(code).graph.nodes] == ["end_", "x_"]  # not the graph's: Mermaid's


def test_a_flowchart_over_the_node_limit_is_refused_with_the_limit_named():
    code = "flowchart TD\n" + "\n".join(f"  n{number} --> n{number + 1}" for number in range(300))

    with pytest.raises(ValidationError, match=r"301 steps; at most 300 are allowed \(GRAPH_MAX_NODES\)"):
        read_mermaid(code)
    assert len(read_mermaid(code, max_nodes=301).graph.nodes) == 301


# The site draws with SVG text labels (htmlLabels: false, static/js/mermaid-editor.js).
DRAW_JS = """async ([code, html]) => {
  mermaid.initialize({startOnLoad: false, securityLevel: "strict", htmlLabels: html,
                      flowchart: {htmlLabels: html, wrappingWidth: 400}});
  const {svg} = await mermaid.render("diagram" + Math.floor(Math.random() * 1e9), code);
  const box = document.createElement("div");
  box.innerHTML = svg;
  document.body.appendChild(box);  // innerText needs a laid-out element
  const lines = (node) => html ? node.querySelector(".nodeLabel").innerText.split("\\n")
                               : [...node.querySelectorAll("tspan.row")].map(row => row.textContent);
  const found = Object.fromEntries([...box.querySelectorAll("g.node")].map(
    node => [node.id.match(/-flowchart-(.*)-\\d+$/)[1], lines(node)]));
  box.remove();
  return found;
}"""


@pytest.fixture
def mermaid_page(page):
    page.set_content("<!doctype html><html><body></body></html>")
    page.add_script_tag(path=str(MERMAID_JS))
    return page


@pytest.mark.browser
def test_the_vendored_mermaid_draws_every_rendered_starter_example(mermaid_page):
    starter = sorted((Path(__file__).resolve().parent.parent / "examples" / "starter").glob("*.mmd"))

    for path in starter:
        graph = read_mermaid(path.read_text(encoding="utf-8")).graph
        labels = mermaid_page.evaluate(DRAW_JS, [render_mermaid(graph), False])
        shown = {node_id: " ".join(" ".join(lines).split()) for node_id, lines in labels.items()}
        # A parallel gateway without a name is drawn with its "+".
        assert shown == {node.id: node.label or "+" * (node.kind == NodeKind.PARALLEL) for node in graph.nodes}, path.name


@pytest.mark.browser
def test_the_vendored_mermaid_shows_the_tricky_labels(mermaid_page):
    graph = tricky_graph()
    code = render_mermaid(graph)

    html_labels = mermaid_page.evaluate(DRAW_JS, [code, True])
    svg_labels = mermaid_page.evaluate(DRAW_JS, [code, False])

    shown = {node_id: "\n".join(lines) for node_id, lines in html_labels.items()}
    assert shown == {node.id: node.label.strip() for node in graph.nodes}
    # Mermaid 12's SVG text labels decode only &, < and >; other entity codes stay visible
    # (mermaid-js/mermaid#7015), so there quotes show as &quot;.
    for index in (1, 4, 5, 6):
        assert "\n".join(svg_labels[f"n{index}"]) == LABELS[index]
