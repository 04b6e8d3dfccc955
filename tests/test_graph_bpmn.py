"""Graph → BPMN 2.0 XML with diagram interchange, and back: the export validates against the
vendored OMG XSD, reads back to the same graph, is laid out without overlapping shapes (nodes in
their lane's band, edges from border to border, never through a shape), keeps awkward labels as
text, and the reader refuses DTDs and entities without ever expanding or fetching them."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from itertools import combinations, pairwise
from pathlib import Path

import pytest
from pydantic import ValidationError

from describer.graph.bpmn import BpmnError, read_bpmn, render_bpmn, validate_bpmn
from describer.graph.model import ProcessGraph

ROOT = Path(__file__).resolve().parent.parent
NS = {
    "bpmn": "http://www.omg.org/spec/BPMN/20100524/MODEL",
    "bpmndi": "http://www.omg.org/spec/BPMN/20100524/DI",
    "dc": "http://www.omg.org/spec/DD/20100524/DC",
    "di": "http://www.omg.org/spec/DD/20100524/DI",
}


def make(
    nodes: list[tuple[str, str, str, str | None] | tuple[str, str, str, str | None, str]],
    edges: list[tuple[str, str, str]],
    *,
    lanes: list[tuple[str, str, str | None]] = (),
    pools: list[tuple[str, str]] = (),
    title: str = "Process",
    language: str = "en",
) -> ProcessGraph:
    """nodes: (id, kind, label, lane[, note]); edges: (source, target, condition); lanes: (id, name, pool)."""
    return ProcessGraph.model_validate(
        {
            "title": title,
            "language": language,
            "pools": [{"id": i, "name": name} for i, name in pools],
            "lanes": [{"id": i, "name": name, "pool": pool} for i, name, pool in lanes],
            "nodes": [dict(zip(("id", "kind", "label", "lane", "note"), node)) for node in nodes],
            "edges": [{"source": s, "target": t, "label": label} for s, t, label in edges],
        }
    )


SEQUENCE = make(
    [("s", "start", "Order received", None), ("a", "task", "Check stock", None),
     ("b", "task", "Ship", None), ("e", "end", "Done", None)],
    [("s", "a", ""), ("a", "b", ""), ("b", "e", "")],
)
DECISION_LOOP = make(
    [("s", "start", "Claim filed", None), ("check", "task", "Check the claim", None),
     ("d", "decision", "Complete?", None), ("pay", "task", "Pay", None), ("ask", "task", "Ask for documents", None),
     ("refuse", "task", "Refuse", None), ("e", "end", "Closed", None, "The claim is settled or refused.")],
    [("s", "check", ""), ("check", "d", ""), ("d", "pay", "Yes"), ("d", "ask", "Missing papers"),
     ("d", "refuse", "Fraud"), ("ask", "check", ""), ("pay", "e", ""), ("refuse", "e", "")],
)
PARALLEL = make(
    [("s", "start", "", None), ("fork", "parallel", "", None), ("a", "task", "Book hotel", None),
     ("b", "task", "Book flight", None), ("c", "task", "Rent a car", None), ("join", "parallel", "", None),
     ("e", "end", "", None)],
    [("s", "fork", ""), ("fork", "a", ""), ("fork", "b", ""), ("fork", "c", ""), ("a", "join", ""),
     ("b", "join", ""), ("c", "join", ""), ("join", "e", "")],
)
TWO_LANES = make(
    [("s", "start", "Leave requested", "staff"), ("ask", "task", "Fill in the form", "staff"),
     ("ok", "decision", "Approved?", "boss"), ("sign", "task", "Sign", "boss"),
     ("holiday", "end", "On holiday", "staff"), ("no", "end", "Refused", "boss")],
    [("s", "ask", ""), ("ask", "ok", ""), ("ok", "sign", "Yes"), ("ok", "no", "No"), ("sign", "holiday", ""),
     ("s", "holiday", "")],
    lanes=[("staff", "Employee", "company"), ("boss", "Manager", "company")],
    pools=[("company", "Company")],
)
TWO_POOLS = make(
    [("s", "start", "Need goods", "buyer"), ("order", "task", "Send order", "buyer"),
     ("get", "task", "Receive order", "seller"), ("ship", "task", "Ship goods", "seller"),
     ("pay", "task", "Pay", "buyer"), ("e", "end", "", "buyer")],
    [("s", "order", ""), ("order", "get", "order"), ("get", "ship", ""), ("ship", "pay", "goods"), ("pay", "e", "")],
    lanes=[("buyer", "Purchasing", "shop"), ("seller", "Sales", "supplier")],
    pools=[("shop", "Shop"), ("supplier", "Supplier")],
)
EVENTS_AND_SUBPROCESS = make(
    [("s", "start", "Month ends", None), ("wait", "event", "Invoices in", None),
     ("close", "subprocess", "Close the books", None), ("retry", "task", "Retry", None), ("e", "end", "", None)],
    [("s", "wait", ""), ("wait", "close", ""), ("close", "retry", ""), ("retry", "retry", "again"),
     ("retry", "e", "")],
)
LANES_WITHOUT_POOL = make(
    [("s", "start", "", "front"), ("a", "task", "Take the call", "front"), ("b", "task", "Fix it", "back"),
     ("c", "task", "Close the ticket", None), ("e", "end", "", None)],
    [("s", "a", ""), ("a", "b", ""), ("b", "c", ""), ("c", "a", "reopened"), ("c", "e", "")],
    lanes=[("front", "First line", None), ("back", "Second line", None)],
    title="Support",
)
GRAPHS = {
    "sequence": SEQUENCE,
    "decision with three branches and a loop": DECISION_LOOP,
    "parallel split and join": PARALLEL,
    "two lanes in a pool": TWO_LANES,
    "two pools": TWO_POOLS,
    "events and a subprocess": EVENTS_AND_SUBPROCESS,
    "lanes without a pool": LANES_WITHOUT_POOL,
}
graphs = pytest.mark.parametrize("graph", list(GRAPHS.values()), ids=list(GRAPHS))

AWKWARD = [
    'He said "yes" & \'no\'',
    "a < b > c && d",
    "#quot;quoted#quot; #35;1 #lt;",
    "line one\nline two\r\nline three\ttab",
    "  leading and trailing spaces  ",
    "Отпуск согласован 🎉👩‍💼",
    "&amp; &#60; &lt; ]]> <![CDATA[x]]>",
]


# --- helpers over the exported XML ------------------------------------------------------------


def bounds(xml: str) -> dict[str, tuple[float, float, float, float]]:
    """bpmnElement → (x, y, width, height) of its shape."""
    root = ET.fromstring(xml.encode())
    result = {}
    for shape in root.iterfind(".//bpmndi:BPMNShape", NS):
        box = shape.find("dc:Bounds", NS)
        result[shape.get("bpmnElement")] = tuple(float(box.get(k)) for k in ("x", "y", "width", "height"))
    return result


def edges(xml: str) -> list[tuple[str, str, list[tuple[float, float]]]]:
    """(source id, target id, waypoints) of every sequence and message flow."""
    root = ET.fromstring(xml.encode())
    flows = {
        flow.get("id"): (flow.get("sourceRef"), flow.get("targetRef"))
        for flow in [*root.iterfind(".//bpmn:sequenceFlow", NS), *root.iterfind(".//bpmn:messageFlow", NS)]
    }
    result = []
    for edge in root.iterfind(".//bpmndi:BPMNEdge", NS):
        points = [(float(p.get("x")), float(p.get("y"))) for p in edge.iterfind("di:waypoint", NS)]
        result.append((*flows[edge.get("bpmnElement")], points))
    return result


def overlap(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    return ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah


def inside(inner: tuple[float, ...], outer: tuple[float, ...]) -> bool:
    ix, iy, iw, ih = inner
    ox, oy, ow, oh = outer
    return ox <= ix and oy <= iy and ix + iw <= ox + ow and iy + ih <= oy + oh


def on_border(point: tuple[float, float], box: tuple[float, ...]) -> bool:
    (px, py), (x, y, w, h) = point, box
    on_vertical = px in (x, x + w) and y <= py <= y + h
    on_horizontal = py in (y, y + h) and x <= px <= x + w
    return on_vertical or on_horizontal


def crosses(a: tuple[float, float], b: tuple[float, float], box: tuple[float, ...]) -> bool:
    """Whether an axis-parallel segment runs through the inside of a box (touching is fine)."""
    x, y, w, h = box
    (x1, y1), (x2, y2) = sorted([a, b])
    if y1 == y2:
        return y < y1 < y + h and x1 < x + w and x < x2
    return x < x1 < x + w and y1 < y + h and y < y2


# --- validity and round trip --------------------------------------------------------------------


@graphs
def test_every_export_validates_against_the_bpmn_xsd(graph):
    assert validate_bpmn(render_bpmn(graph)) == []


def test_the_validator_reports_what_breaks_the_schema_with_its_line():
    broken = render_bpmn(SEQUENCE).replace("<bpmn:task ", "<bpmn:task colour=\"red\" ", 1)
    broken = broken.replace('isExecutable="false"', 'isExecutable="maybe"', 1)

    errors = validate_bpmn(broken)

    assert any("colour" in error and error.startswith("line ") for error in errors), errors
    assert any("isExecutable" in error and "maybe" in error for error in errors), errors


@graphs
def test_reading_the_export_gives_the_same_graph(graph):
    assert read_bpmn(render_bpmn(graph)) == graph


def test_layout_is_deterministic_whatever_the_hash_seed():
    script = (
        "import sys; from tests.test_graph_bpmn import GRAPHS; from describer.graph.bpmn import render_bpmn; "
        "sys.stdout.write(''.join(render_bpmn(graph) for graph in GRAPHS.values()))"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2")
    }
    assert outputs == {"".join(render_bpmn(graph) for graph in GRAPHS.values())}


def test_ids_stay_unique_when_a_pool_a_lane_and_a_node_share_one():
    graph = make(
        [("X", "start", "", "X"), ("flow", "task", "Work", "X"), ("lane", "end", "", "X")],
        [("X", "flow", ""), ("flow", "lane", "")],
        lanes=[("X", "Lane X", "X")],
        pools=[("X", "Pool X")],
    )
    xml = render_bpmn(graph)
    assert validate_bpmn(xml) == []  # xsd:ID: no id twice in the document
    assert read_bpmn(xml) == graph


def test_edges_between_pools_are_message_flows_and_inside_one_sequence_flows():
    root = ET.fromstring(render_bpmn(TWO_POOLS).encode())
    flows = root.iterfind(".//bpmn:messageFlow", NS)
    message = [(flow.get("sourceRef"), flow.get("targetRef"), flow.get("name")) for flow in flows]
    assert message == [("order", "get", "order"), ("ship", "pay", "goods")]
    assert len(root.findall(".//bpmn:sequenceFlow", NS)) == 3
    participants = [p.get("name") for p in root.iterfind(".//bpmn:participant", NS)]
    assert participants == ["Shop", "Supplier"]


def test_lanes_without_a_pool_are_drawn_in_one_pool_named_by_the_title():
    xml = render_bpmn(LANES_WITHOUT_POOL)
    root = ET.fromstring(xml.encode())
    [participant] = root.findall(".//bpmn:participant", NS)
    assert participant.get("name") == "Support"
    boxes = bounds(xml)
    for element in ("lane.front", "lane.back", "a", "b", "c", "e"):
        assert inside(boxes[element], boxes[participant.get("id")]), element
    assert read_bpmn(xml).pools == []


def test_a_graph_without_pools_or_lanes_is_a_plain_process():
    root = ET.fromstring(render_bpmn(SEQUENCE).encode())
    assert root.find("bpmn:collaboration", NS) is None
    [process] = root.findall("bpmn:process", NS)
    assert root.find(".//bpmndi:BPMNPlane", NS).get("bpmnElement") == process.get("id")


# --- layout -------------------------------------------------------------------------------------


@graphs
def test_no_two_shapes_overlap_and_every_node_is_inside_its_lanes_band(graph):
    boxes = bounds(render_bpmn(graph))
    nodes = [boxes[node.id] for node in graph.nodes]
    lanes = [boxes[f"lane.{lane.id}"] for lane in graph.lanes]
    pools = [box for element, box in boxes.items() if element.endswith(".pool") or element.startswith("pool.")]
    for group in (nodes, lanes, pools):
        assert not [pair for pair in combinations(group, 2) if overlap(*pair)]
    for node in graph.nodes:
        if node.lane:
            assert inside(boxes[node.id], boxes[f"lane.{node.lane}"]), node.id
    for lane in graph.lanes:
        pool = f"pool.{lane.pool}" if lane.pool else "implicit.pool"
        assert inside(boxes[f"lane.{lane.id}"], boxes[pool]), lane.id


@graphs
def test_every_edge_runs_from_border_to_border_at_right_angles_and_never_through_a_shape(graph):
    xml = render_bpmn(graph)
    boxes = bounds(xml)
    nodes = [boxes[node.id] for node in graph.nodes]
    routed = edges(xml)
    assert len(routed) == len(graph.edges)
    for source, target, points in routed:
        assert on_border(points[0], boxes[source]) and on_border(points[-1], boxes[target]), (source, target)
        for a, b in pairwise(points):
            assert a[0] == b[0] or a[1] == b[1], (source, target, a, b)
            assert not [box for box in nodes if crosses(a, b, box)], (source, target, a, b)


def test_a_sequence_is_one_straight_row_from_left_to_right():
    boxes = bounds(render_bpmn(SEQUENCE))
    centres = [(x + w / 2, y + h / 2) for x, y, w, h in (boxes[node.id] for node in SEQUENCE.nodes)]
    assert len({y for _, y in centres}) == 1
    assert [x for x, _ in centres] == sorted({x for x, _ in centres})


def test_branches_take_a_column_after_their_decision_and_the_loop_runs_back_below_them():
    xml = render_bpmn(DECISION_LOOP)
    boxes = bounds(xml)
    decision_x = boxes["d"][0]
    branches = [boxes[node] for node in ("pay", "ask", "refuse")]
    assert len({box[0] for box in branches}) == 1 and branches[0][0] > decision_x
    [(_, _, loop)] = [edge for edge in edges(xml) if edge[:2] == ("ask", "check")]
    lowest_shape = max(boxes[node.id][1] + boxes[node.id][3] for node in DECISION_LOOP.nodes)
    assert max(y for _, y in loop) > lowest_shape
    assert loop[-1][0] == boxes["check"][0], "it comes back into the left side of the task"


def test_shapes_have_the_sizes_bpmn_js_uses():
    boxes = bounds(render_bpmn(PARALLEL))
    assert boxes["s"][2:] == (36, 36) and boxes["fork"][2:] == (50, 50) and boxes["a"][2:] == (100, 80)
    boxes = bounds(render_bpmn(EVENTS_AND_SUBPROCESS))
    assert boxes["wait"][2:] == (36, 36) and boxes["close"][2:] == (100, 80)


# --- labels -------------------------------------------------------------------------------------


@pytest.mark.parametrize("label", AWKWARD)
def test_awkward_labels_survive_render_and_read_everywhere_a_label_goes(label):
    graph = make(
        [("s", "start", label, "l"), ("d", "decision", label, "l"), ("e", "end", "", "l", label)],
        [("s", "d", ""), ("d", "e", label)],
        lanes=[("l", label, "p")],
        pools=[("p", label)],
        title=label,
        language="ru",
    )
    xml = render_bpmn(graph)
    assert validate_bpmn(xml) == []
    assert read_bpmn(xml) == graph


def test_labels_that_look_like_xml_stay_text():
    attack = '"/><bpmn:task id="evil" name="x"/><bpmn:task name="'
    comment = "--><!ENTITY x SYSTEM 'file:///etc/passwd'><!--"
    graph = make([("a", "task", attack, None), ("b", "task", comment, None)], [("a", "b", attack)])
    xml = render_bpmn(graph)
    root = ET.fromstring(xml.encode())
    assert [task.get("id") for task in root.iterfind(".//bpmn:task", NS)] == ["a", "b"]
    assert "<!ENTITY" not in xml
    assert read_bpmn(xml) == graph


def test_characters_xml_cannot_carry_are_dropped_not_fatal():
    graph = make([("a", "task", "bell\x07 escape\x1b nul\x00 end", None)], [])
    xml = render_bpmn(graph)
    assert validate_bpmn(xml) == []
    assert read_bpmn(xml).nodes[0].label == "bell escape nul end"


# --- reading: safety and foreign files ----------------------------------------------------------

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
  <!ENTITY lol "lol">
  <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
  <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
  <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
  <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
  <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
  <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
  <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
  <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
  <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" name="&lol9;" targetNamespace="x">
  <bpmn:process id="p"><bpmn:task id="t" name="&lol9;"/></bpmn:process>
</bpmn:definitions>"""


def external_entity_document(system_id: str) -> str:
    return f"""<?xml version="1.0"?>
<!DOCTYPE definitions [<!ENTITY secret SYSTEM "{system_id}">]>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" targetNamespace="x">
  <bpmn:process id="p"><bpmn:task id="t">&secret;</bpmn:task><bpmn:task id="u" name="&secret;"/></bpmn:process>
</bpmn:definitions>"""


def test_a_billion_laughs_document_is_refused_at_once_with_a_clear_error():
    started = time.monotonic()
    with pytest.raises(BpmnError, match=r"DTD or entities .* refused"):
        read_bpmn(BILLION_LAUGHS)
    [error] = validate_bpmn(BILLION_LAUGHS)
    assert "refused" in error
    assert time.monotonic() - started < 1


def test_an_external_entity_is_refused_and_the_file_never_read():
    with pytest.raises(BpmnError, match="DTD or entities") as refused:
        read_bpmn(external_entity_document("file:///etc/passwd"))
    assert "root:" not in str(refused.value)
    assert "root:" not in " ".join(validate_bpmn(external_entity_document("file:///etc/passwd")))


@pytest.fixture
def listener() -> Iterator[tuple[str, list[str]]]:
    """A local HTTP server that records every request: a DTD or entity fetched would show up here."""
    requests: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b'<!ENTITY secret "leaked">')

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", requests
    server.shutdown()


def test_no_dtd_or_entity_is_ever_fetched_over_the_network(listener):
    url, requests = listener
    external_dtd = f"""<?xml version="1.0"?>
<!DOCTYPE definitions SYSTEM "{url}/evil.dtd">
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" targetNamespace="x"/>"""
    for document in (external_dtd, external_entity_document(f"{url}/secret")):
        with pytest.raises(BpmnError, match="DTD or entities"):
            read_bpmn(document)
        assert validate_bpmn(document) != []
    assert requests == []


def test_a_document_that_is_not_bpmn_is_refused_saying_what_is_expected():
    with pytest.raises(BpmnError, match="not BPMN 2.0.*definitions"):
        read_bpmn('<svg xmlns="http://www.w3.org/2000/svg"/>')
    with pytest.raises(BpmnError, match="not well-formed"):
        read_bpmn("<bpmn:definitions")


def test_more_nodes_than_the_limit_are_refused_with_the_limit():
    with pytest.raises(ValidationError, match="at most 3 are allowed"):
        read_bpmn(render_bpmn(DECISION_LOOP), max_nodes=3)


FOREIGN = """<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
    xmlns:bpmndi="http://www.omg.org/spec/BPMN/20100524/DI" xmlns:dc="http://www.omg.org/spec/DD/20100524/DC"
    xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
    id="Definitions_1" targetNamespace="http://bpmn.io/schema/bpmn" exporter="Camunda Modeler">
  <bpmn:collaboration id="Collaboration_1">
    <bpmn:participant id="Participant_1" name="Bank" processRef="Process_1" />
  </bpmn:collaboration>
  <bpmn:process id="Process_1" isExecutable="true">
    <bpmn:laneSet id="LaneSet_1">
      <bpmn:lane id="Lane_clerk" name="Clerk">
        <bpmn:flowNodeRef>StartEvent_1</bpmn:flowNodeRef>
        <bpmn:flowNodeRef>Activity.review</bpmn:flowNodeRef>
        <bpmn:flowNodeRef>Gateway_1</bpmn:flowNodeRef>
      </bpmn:lane>
    </bpmn:laneSet>
    <bpmn:startEvent id="StartEvent_1" name="Loan requested" />
    <bpmn:userTask id="Activity.review" name="Review" />
    <bpmn:exclusiveGateway id="Gateway_1" />
    <bpmn:callActivity id="Activity_2" name="Scoring" />
    <bpmn:intermediateCatchEvent id="Event_1" name="Documents in" />
    <bpmn:endEvent id="EndEvent_1" />
    <bpmn:dataObject id="DataObject_1" />
    <bpmn:sequenceFlow id="Flow_1" sourceRef="StartEvent_1" targetRef="Activity.review" />
    <bpmn:sequenceFlow id="Flow_2" sourceRef="Activity.review" targetRef="Gateway_1" />
    <bpmn:sequenceFlow id="Flow_3" sourceRef="Gateway_1" targetRef="Activity_2">
      <bpmn:conditionExpression xsi:type="bpmn:tFormalExpression">amount &gt; 1000</bpmn:conditionExpression>
    </bpmn:sequenceFlow>
    <bpmn:sequenceFlow id="Flow_4" name="small" sourceRef="Gateway_1" targetRef="Event_1" />
    <bpmn:sequenceFlow id="Flow_5" sourceRef="Event_1" targetRef="EndEvent_1" />
    <bpmn:sequenceFlow id="Flow_6" sourceRef="Activity_2" targetRef="EndEvent_1" />
  </bpmn:process>
</bpmn:definitions>"""


def test_a_simple_foreign_bpmn_file_is_read_as_well_as_the_graph_allows():
    graph = read_bpmn(FOREIGN)

    assert graph.title == "Bank"
    assert [(pool.id, pool.name) for pool in graph.pools] == [("Participant_1", "Bank")]
    assert [(lane.id, lane.name, lane.pool) for lane in graph.lanes] == [("Lane_clerk", "Clerk", "Participant_1")]
    kinds = [(node.id, node.kind.value, node.lane) for node in graph.nodes]
    assert kinds == [
        ("StartEvent_1", "start", "Lane_clerk"),
        ("Activity_review", "task", "Lane_clerk"),
        ("Gateway_1", "decision", "Lane_clerk"),
        ("Activity_2", "subprocess", None),
        ("Event_1", "event", None),
        ("EndEvent_1", "end", None),
    ]
    assert [(e.source, e.target, e.label) for e in graph.edges][1:4] == [
        ("Activity_review", "Gateway_1", ""),
        ("Gateway_1", "Activity_2", "amount > 1000"),
        ("Gateway_1", "Event_1", "small"),
    ]
    assert validate_bpmn(render_bpmn(graph)) == []
