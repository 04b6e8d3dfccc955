"""ProcessGraph ⇄ BPMN 2.0 XML with diagram interchange (DI), and validation against the OMG XSD.

`render_bpmn` lays the graph out itself: BPMN without DI cannot be opened by bpmn-js or the
Camunda Modeler, and a model never writes usable coordinates. The layout is layered left to
right (see `_layout`); sizes are bpmn-js's defaults. `layout` hands the same geometry to the
SVG and PNG renderers (describer/graph/images.py), so every drawing of a graph agrees.

Ids: node ids are written unchanged (the graph's id pattern is a subset of XML's NCName). Every
other element gets a prefix with a dot (`pool.`, `lane.`, `flow.`, …); graph ids cannot contain
a dot, so no generated id can collide with a node id, and `read_bpmn` strips the prefixes again.

`read_bpmn` reads the project's own BPMN exactly (`read_bpmn(render_bpmn(g)) == g`) and simple
foreign BPMN reasonably. It refuses any DTD before an entity can be declared, let alone expanded
or fetched (defusedxml over the standard library's expat).
"""

from __future__ import annotations

import math
import re
import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import NamedTuple
from xml.etree.ElementTree import Element as StdElement
from xml.etree.ElementTree import ParseError

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException
from lxml import etree

from describer.graph.model import (
    DEFAULT_MAX_NODES,
    ID_PATTERN,
    Edge,
    Lane,
    Node,
    NodeKind,
    Pool,
    ProcessGraph,
)

MODEL = "http://www.omg.org/spec/BPMN/20100524/MODEL"
BPMNDI = "http://www.omg.org/spec/BPMN/20100524/DI"
DC = "http://www.omg.org/spec/DD/20100524/DC"
DI = "http://www.omg.org/spec/DD/20100524/DI"
# What BPMN has no place for (the graph's language) goes into attributes of our own namespace,
# which the XSD allows on every element (anyAttribute ##other, processContents="lax").
OURS = "urn:diagramsite:bpmn"
NSMAP = {"bpmn": MODEL, "bpmndi": BPMNDI, "dc": DC, "di": DI, "ds": OURS}
XSD_DIR = Path(__file__).with_name("xsd")

IMPLICIT_POOL = "implicit.pool"
IMPLICIT_PROCESS = "implicit.process"
FREE_BAND = "free"  # the band of the nodes that are in no lane

KIND_TAG = {
    NodeKind.START: "startEvent",
    NodeKind.END: "endEvent",
    NodeKind.TASK: "task",
    NodeKind.DECISION: "exclusiveGateway",
    NodeKind.PARALLEL: "parallelGateway",
    NodeKind.EVENT: "intermediateThrowEvent",
    NodeKind.SUBPROCESS: "subProcess",
}
# Foreign BPMN: the closest kind the graph has for each flow node it may meet.
TAG_KIND = {tag: kind for kind, tag in KIND_TAG.items()} | {
    **dict.fromkeys(
        ["userTask", "serviceTask", "manualTask", "scriptTask", "sendTask", "receiveTask", "businessRuleTask"],
        NodeKind.TASK,
    ),
    **dict.fromkeys(["callActivity", "transaction", "adHocSubProcess"], NodeKind.SUBPROCESS),
    **dict.fromkeys(["inclusiveGateway", "complexGateway", "eventBasedGateway"], NodeKind.DECISION),
    **dict.fromkeys(["intermediateCatchEvent", "boundaryEvent"], NodeKind.EVENT),
}
SIZE = {  # bpmn-js's default sizes
    NodeKind.START: (36, 36),
    NodeKind.END: (36, 36),
    NodeKind.EVENT: (36, 36),
    NodeKind.DECISION: (50, 50),
    NodeKind.PARALLEL: (50, 50),
    NodeKind.TASK: (100, 80),
    NodeKind.SUBPROCESS: (100, 80),
}
CELL_W, CHANNEL, ROW_H = 100, 50, 120  # a cell holds the largest shape; edges bend in channels
COL_W = CELL_W + CHANNEL
POOL_LABEL = LANE_LABEL = 30  # the label strips bpmn-js draws at the left of pools and lanes
PAD, POOL_GAP = 30, 30
LOOP_PAD, LOOP_STEP = 10, 15  # corridors below a band's rows, one per loop that leaves the band
LANES_X = POOL_LABEL
FIRST_COLUMN_X = LANES_X + LANE_LABEL + PAD
# Characters XML 1.0 cannot carry at all, not even as character references.
NOT_XML = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
XML_DECLARATION = re.compile(r"^\s*<\?xml[^>]*\?>")
GRAPH_ID = re.compile(ID_PATTERN)


class BpmnError(ValueError):
    """A BPMN document that cannot be read; the message says why and what is accepted."""


# ---------------------------------------------------------------- rendering


def render_bpmn(graph: ProcessGraph) -> str:
    """BPMN 2.0 XML with a diagram: one participant per pool, lanes inside, laid out left to right."""
    plans = _pool_plans(graph)
    home = _home_of_nodes(graph, plans)
    root = etree.Element(_m("definitions"), nsmap=NSMAP, attrib=_definitions_attributes(graph))
    if plans[0].participant:
        root.append(_collaboration(graph, plans, home))
    for plan in plans:
        root.append(_process(graph, plan, home))
    root.append(_diagram(graph, plans, _layout(graph, plans)))
    body = etree.tostring(root, encoding="unicode", pretty_print=True)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + body


@dataclass(frozen=True)
class PoolPlan:
    """One process of the document, drawn as a pool unless the graph has neither pools nor lanes."""

    participant: str | None
    process: str
    name: str
    lanes: tuple[str, ...]  # graph lane ids
    bands: tuple[str, ...]  # horizontal bands, top to bottom: lane element ids, FREE_BAND, or an empty pool's


def _pool_plans(graph: ProcessGraph) -> list[PoolPlan]:
    if not graph.pools and not graph.lanes:
        return [PoolPlan(None, IMPLICIT_PROCESS, graph.title, (), (FREE_BAND,))]
    plans = [_pool_plan(graph, pool) for pool in graph.pools]
    loose = tuple(lane.id for lane in graph.lanes if lane.pool is None)
    laneless = any(node.lane is None for node in graph.nodes)
    if loose or laneless:
        bands = tuple(_lane_ref(lane) for lane in loose) + ((FREE_BAND,) if laneless else ())
        plans.append(PoolPlan(IMPLICIT_POOL, IMPLICIT_PROCESS, graph.title, loose, bands))
    return plans


def _pool_plan(graph: ProcessGraph, pool: Pool) -> PoolPlan:
    lanes = tuple(lane.id for lane in graph.lanes if lane.pool == pool.id)
    bands = tuple(_lane_ref(lane) for lane in lanes) or (f"empty.{pool.id}",)
    return PoolPlan(f"pool.{pool.id}", f"process.{pool.id}", pool.name, lanes, bands)


def _band_of(node: Node) -> str:
    return _lane_ref(node.lane) if node.lane else FREE_BAND


def _home_of_nodes(graph: ProcessGraph, plans: list[PoolPlan]) -> dict[str, PoolPlan]:
    plan_of_band = {band: plan for plan in plans for band in plan.bands}
    return {node.id: plan_of_band[_band_of(node)] for node in graph.nodes}


def _definitions_attributes(graph: ProcessGraph) -> dict[str, str]:
    attributes = {"id": "diagramsite.definitions", "targetNamespace": OURS, "exporter": "diagramsite"}
    if graph.title:
        attributes["name"] = _xml_text(graph.title)
    if graph.language:
        attributes[f"{{{OURS}}}language"] = graph.language
    return attributes


def _collaboration(graph: ProcessGraph, plans: list[PoolPlan], home: dict[str, PoolPlan]) -> etree._Element:
    collaboration = _element("collaboration", id="collaboration.1")
    for plan in plans:
        collaboration.append(_element("participant", id=plan.participant, name=plan.name, processRef=plan.process))
    # An edge between pools cannot be a sequence flow (those stay inside one process).
    for index, edge in enumerate(graph.edges):
        if home[edge.source] is not home[edge.target]:
            ends = {"sourceRef": edge.source, "targetRef": edge.target}
            collaboration.append(_element("messageFlow", id=_flow_id(index), name=edge.label, **ends))
    return collaboration


def _process(graph: ProcessGraph, plan: PoolPlan, home: dict[str, PoolPlan]) -> etree._Element:
    process = _element("process", id=plan.process, isExecutable="false")
    if plan.lanes:
        process.append(_lane_set(graph, plan))
    flows = [i for i, edge in enumerate(graph.edges) if home[edge.source] is plan is home[edge.target]]
    for node in graph.nodes:
        if home[node.id] is plan:
            process.append(_flow_node(node, graph, frozenset(flows)))
    for index in flows:
        edge = graph.edges[index]
        ends = {"sourceRef": edge.source, "targetRef": edge.target}
        process.append(_element("sequenceFlow", id=_flow_id(index), name=edge.label, **ends))
    return process


def _lane_set(graph: ProcessGraph, plan: PoolPlan) -> etree._Element:
    lane_set = _element("laneSet", id=f"{plan.process}.lanes")
    for lane in graph.lanes:
        if lane.id in plan.lanes:
            element = etree.SubElement(lane_set, _m("lane"), id=_lane_ref(lane.id))
            _set_name(element, lane.name)
            for node in graph.nodes:
                if node.lane == lane.id:
                    etree.SubElement(element, _m("flowNodeRef")).text = node.id
    return lane_set


def _flow_node(node: Node, graph: ProcessGraph, sequence_flows: frozenset[int]) -> etree._Element:
    element = _element(KIND_TAG[node.kind], id=node.id, name=node.label)
    if node.note:
        etree.SubElement(element, _m("documentation")).text = _xml_text(node.note)
    for index, edge in enumerate(graph.edges):
        if edge.target == node.id and index in sequence_flows:
            etree.SubElement(element, _m("incoming")).text = _flow_id(index)
    for index, edge in enumerate(graph.edges):
        if edge.source == node.id and index in sequence_flows:
            etree.SubElement(element, _m("outgoing")).text = _flow_id(index)
    return element


def _diagram(graph: ProcessGraph, plans: list[PoolPlan], layout: Layout) -> etree._Element:
    diagram = _element("BPMNDiagram", BPMNDI, id="diagram.1")
    top = "collaboration.1" if plans[0].participant else plans[0].process
    plane = etree.SubElement(diagram, _q(BPMNDI, "BPMNPlane"), id="diagram.1.plane", bpmnElement=top)
    # Shape order is the graph's order: read_bpmn restores lanes, nodes and edges from it.
    for plan in plans:
        if plan.participant:
            plane.append(_shape(plan.participant, layout.boxes[plan.participant], isHorizontal="true"))
    for lane in graph.lanes:
        plane.append(_shape(_lane_ref(lane.id), layout.boxes[_lane_ref(lane.id)], isHorizontal="true"))
    for node in graph.nodes:
        plane.append(_shape(node.id, layout.boxes[node.id], **_shape_flags(node.kind)))
    for index, points in enumerate(layout.waypoints):
        edge = etree.SubElement(plane, _q(BPMNDI, "BPMNEdge"), id=f"{_flow_id(index)}.di")
        edge.set("bpmnElement", _flow_id(index))
        for x, y in points:
            etree.SubElement(edge, _q(DI, "waypoint"), x=str(x), y=str(y))
    return diagram


def _shape_flags(kind: NodeKind) -> dict[str, str]:
    if kind == NodeKind.DECISION:
        return {"isMarkerVisible": "true"}  # bpmn-js draws the X only when asked to
    if kind == NodeKind.SUBPROCESS:
        return {"isExpanded": "false"}  # the graph knows nothing inside a subprocess
    return {}


def _shape(element_id: str, box: Box, **flags: str) -> etree._Element:
    shape = etree.Element(_q(BPMNDI, "BPMNShape"), id=f"{element_id}.di", bpmnElement=element_id, **flags)
    bounds = {"x": box.x, "y": box.y, "width": box.w, "height": box.h}
    etree.SubElement(shape, _q(DC, "Bounds"), {key: str(value) for key, value in bounds.items()})
    return shape


def _element(tag: str, namespace: str = MODEL, *, name: str = "", **attributes: str) -> etree._Element:
    element = etree.Element(_q(namespace, tag), attributes)
    _set_name(element, name)
    return element


def _set_name(element: etree._Element, name: str) -> None:
    if name:
        element.set("name", _xml_text(name))


def _xml_text(text: str) -> str:
    """lxml escapes quotes, <, >, & and line breaks itself; a few control characters cannot be
    written in XML 1.0 at all, and are dropped rather than failing the whole export."""
    return NOT_XML.sub("", text)


def _m(tag: str) -> str:
    return _q(MODEL, tag)


def _q(namespace: str, tag: str) -> str:
    return f"{{{namespace}}}{tag}"


def _lane_ref(lane_id: str) -> str:
    return f"lane.{lane_id}"


def _flow_id(index: int) -> str:
    return f"flow.{index + 1}"


# ---------------------------------------------------------------- layout


class Box(NamedTuple):
    x: int
    y: int
    w: int
    h: int

    @property
    def right(self) -> int:
        return self.x + self.w

    @property
    def bottom(self) -> int:
        return self.y + self.h

    @property
    def cy(self) -> int:
        return self.y + self.h // 2


Point = tuple[int, int]
Item = str | tuple[int, int]  # a node id, or (edge index, layer): a long edge passing a layer
Cell = tuple[str, int, int]  # band, layer, row


@dataclass(frozen=True)
class Region:
    """A pool or a lane as drawn: a band with its name written in a strip at its left."""

    element: str  # the participant's or lane's element id, a key of Layout.boxes
    name: str
    box: Box


@dataclass(frozen=True)
class Layout:
    boxes: dict[str, Box]  # participants, lanes and nodes by element id
    waypoints: list[list[Point]]  # one list per graph edge
    pools: list[Region]  # the participants, the implicit one included, in document order
    lanes: list[Region]  # in the graph's order


@dataclass(frozen=True)
class Grid:
    """Where the items sit: a cell each, in bands whose rows and loop corridors are known."""

    cells: dict[Item, Cell]
    rows: dict[str, int]  # band → rows it needs
    loops: dict[str, list[int]]  # band → the back edges leaving it, each with its own corridor
    bands: dict[str, Box]

    def centre(self, item: Item) -> Point:
        band, number, row = self.cells[item]
        return FIRST_COLUMN_X + number * COL_W + CELL_W // 2, self.bands[band].y + row * ROW_H + ROW_H // 2

    def corridor(self, band: str, back_edge: int) -> int:
        rows_bottom = self.bands[band].y + self.rows[band] * ROW_H
        return rows_bottom + LOOP_PAD + LOOP_STEP * self.loops[band].index(back_edge)


def layout(graph: ProcessGraph) -> Layout:
    """Where render_bpmn puts every pool, lane, node and edge (x right, y down, in px)."""
    return _layout(graph, _pool_plans(graph))


def _layout(graph: ProcessGraph, plans: list[PoolPlan]) -> Layout:
    """Layered, left to right. Depth-first search from the start events marks the edges that close
    loops; without them the graph is acyclic and each node's layer (column) is its longest path from
    a source. Within its band (lane) and layer each node takes a row, preferring its predecessor's
    so that chains stay straight; an edge spanning several layers reserves a cell in each (a
    "dummy"), so forward edges bend only in the empty channels between columns, and loops run back
    through a corridor below the band of their source."""
    back = _back_edges(graph)
    layer = _layers(graph, back)
    chains = _chains(graph, layer, back)
    cells = _cells(graph, layer, chains)
    rows: dict[str, int] = defaultdict(lambda: 1)
    for band, _, row in cells.values():
        rows[band] = max(rows[band], row + 1)
    loops = _loops_by_band(graph, back)
    bands, boxes = _band_boxes(plans, rows, loops, max(layer.values(), default=-1) + 1)
    grid = Grid(cells, rows, loops, bands)
    boxes |= {node.id: _node_box(node, grid) for node in graph.nodes}
    waypoints = [_route(graph.edges[i], i, chains, grid, boxes) for i in range(len(graph.edges))]
    pools = [Region(plan.participant, plan.name, boxes[plan.participant]) for plan in plans if plan.participant]
    lanes = [Region(_lane_ref(lane.id), lane.name, boxes[_lane_ref(lane.id)]) for lane in graph.lanes]
    return Layout(boxes, waypoints, pools, lanes)


def _back_edges(graph: ProcessGraph) -> frozenset[int]:
    """Edges to a node still on the depth-first stack; the search starts from the start events,
    then from every node not reached yet, in the graph's order, so the choice is deterministic."""
    out: dict[str, list[int]] = defaultdict(list)
    for index, edge in enumerate(graph.edges):
        out[edge.source].append(index)
    on_stack: dict[str, bool] = {}  # visited nodes; True while on the stack
    back: set[int] = set()
    roots = [node.id for node in graph.nodes if node.kind == NodeKind.START] + [node.id for node in graph.nodes]
    for root in roots:
        if root in on_stack:
            continue
        on_stack[root] = True
        stack = [(root, iter(out[root]))]
        while stack:
            node, edges = stack[-1]
            index = next(edges, None)
            if index is None:
                on_stack[node] = False
                stack.pop()
                continue
            target = graph.edges[index].target
            if on_stack.get(target):
                back.add(index)
            elif target not in on_stack:
                on_stack[target] = True
                stack.append((target, iter(out[target])))
    return frozenset(back)


def _layers(graph: ProcessGraph, back: frozenset[int]) -> dict[str, int]:
    """Longest path from a source over the forward edges (Kahn's order)."""
    successors: dict[str, list[str]] = defaultdict(list)
    waiting = {node.id: 0 for node in graph.nodes}
    for index, edge in enumerate(graph.edges):
        if index not in back:
            successors[edge.source].append(edge.target)
            waiting[edge.target] += 1
    layer = dict.fromkeys(waiting, 0)
    ready = [node for node, count in waiting.items() if count == 0]
    for node in ready:  # grows while it is walked
        for target in successors[node]:
            layer[target] = max(layer[target], layer[node] + 1)
            waiting[target] -= 1
            if waiting[target] == 0:
                ready.append(target)
    return layer


def _chains(graph: ProcessGraph, layer: dict[str, int], back: frozenset[int]) -> dict[int, list[Item]]:
    """Each forward edge as the items it passes: source, one dummy per layer in between, target."""
    chains: dict[int, list[Item]] = {}
    for index, edge in enumerate(graph.edges):
        if index not in back:
            dummies: list[Item] = [(index, k) for k in range(layer[edge.source] + 1, layer[edge.target])]
            chains[index] = [edge.source, *dummies, edge.target]
    return chains


def _cells(graph: ProcessGraph, layer: dict[str, int], chains: dict[int, list[Item]]) -> dict[Item, Cell]:
    band_of = {node.id: _band_of(node) for node in graph.nodes}
    before: dict[Item, list[Item]] = defaultdict(list)  # the items just before each, in edge order
    by_layer: dict[int, list[Item]] = defaultdict(list)
    for node in graph.nodes:
        by_layer[layer[node.id]].append(node.id)
    for index, chain in sorted(chains.items()):
        for previous, item in pairwise(chain):
            before[item].append(previous)
        for dummy in chain[1:-1]:
            band_of[dummy] = band_of[graph.edges[index].source]  # a long edge runs in its source's band
            by_layer[dummy[1]].append(dummy)
    cells: dict[Item, Cell] = {}
    for number in sorted(by_layer):
        groups: dict[str, list[Item]] = defaultdict(list)
        for item in by_layer[number]:
            groups[band_of[item]].append(item)
        for band, items in groups.items():
            _assign_rows(items, band, number, before, cells)
    return cells


def _assign_rows(
    items: list[Item], band: str, number: int, before: dict[Item, list[Item]], cells: dict[Item, Cell]
) -> None:
    """Rows in one band and layer: each item wants the row of its first predecessor in the band;
    nodes get their wish before long edges do, and the others move down one row at a time."""

    def wish(item: Item) -> int:
        rows = [cells[previous][2] for previous in before[item] if cells[previous][0] == band]
        return rows[0] if rows else 0

    ordered = sorted(enumerate(items), key=lambda pair: (wish(pair[1]), isinstance(pair[1], tuple), pair[0]))
    row = -1
    for _, item in ordered:
        row = max(wish(item), row + 1)
        cells[item] = (band, number, row)


def _loops_by_band(graph: ProcessGraph, back: frozenset[int]) -> dict[str, list[int]]:
    loops: dict[str, list[int]] = defaultdict(list)
    for index in sorted(back):
        loops[_band_of(graph.node(graph.edges[index].source))].append(index)
    return loops


def _band_boxes(
    plans: list[PoolPlan], rows: dict[str, int], loops: dict[str, list[int]], layers: int
) -> tuple[dict[str, Box], dict[str, Box]]:
    """Bands stacked inside their pools, pools stacked with a gap; all as wide as the layers need.
    Returns the bands, and the shapes of the pools and lanes."""
    width = FIRST_COLUMN_X + layers * COL_W + PAD
    bands: dict[str, Box] = {}
    shapes: dict[str, Box] = {}
    y = 0
    for plan in plans:
        top = y
        for band in plan.bands:
            corridors = LOOP_PAD + LOOP_STEP * len(loops[band]) if loops[band] else 0
            bands[band] = Box(LANES_X, y, width - LANES_X, rows[band] * ROW_H + corridors)
            y = bands[band].bottom
        if plan.participant:
            shapes[plan.participant] = Box(0, top, width, y - top)
        y += POOL_GAP
    shapes |= {band: box for band, box in bands.items() if band.startswith("lane.")}
    return bands, shapes


def _node_box(node: Node, grid: Grid) -> Box:
    (x, y), (w, h) = grid.centre(node.id), SIZE[node.kind]
    return Box(x - w // 2, y - h // 2, w, h)


def _channel_after(layer: int) -> int:
    return FIRST_COLUMN_X + layer * COL_W + CELL_W + CHANNEL // 2


def _route(edge: Edge, index: int, chains: dict[int, list[Item]], grid: Grid, boxes: dict[str, Box]) -> list[Point]:
    """Out of the source's right side, into the target's left side: points on both borders.
    Vertical runs only in channels, horizontal ones only through the edge's own cells or a corridor."""
    source, target = boxes[edge.source], boxes[edge.target]
    points = [(source.right, source.cy)]
    if index in chains:
        for before, after in pairwise(chains[index]):
            (_, y_before), (_, y_after) = grid.centre(before), grid.centre(after)
            if y_before != y_after:
                x = _channel_after(grid.cells[before][1])
                points += [(x, y_before), (x, y_after)]
    else:
        (band, source_layer, _), (_, target_layer, _) = grid.cells[edge.source], grid.cells[edge.target]
        corridor = grid.corridor(band, index)
        leave, enter = _channel_after(source_layer), _channel_after(target_layer - 1)
        points += [(leave, source.cy), (leave, corridor), (enter, corridor), (enter, target.cy)]
    return [*points, (target.x, target.cy)]


# ---------------------------------------------------------------- reading


def read_bpmn(xml: str | bytes, *, max_nodes: int = DEFAULT_MAX_NODES) -> ProcessGraph:
    """The graph of a BPMN 2.0 document: flow nodes, sequence and message flows, lanes, pools.

    Raises BpmnError for a document that is no BPMN or declares a DTD, and pydantic's
    ValidationError for one the graph cannot hold (too many nodes, say)."""
    root = _parse(xml)
    if root.tag != _m("definitions"):
        raise BpmnError(f"This is not BPMN 2.0: the root element is {root.tag!r}; expected definitions in {MODEL}.")
    order = {shape.get("bpmnElement"): n for n, shape in enumerate(_di_elements(root))}
    processes = root.findall(_m("process"))
    pool_of_lane = _pool_of_lanes(root, processes)
    lane_of_node = _lane_of_nodes(processes)
    lanes = [lane for process in processes for lane in process.iter(_m("lane"))]
    nodes = [child for process in processes for child in process if _local(child.tag) in TAG_KIND]
    flows = [child for process in processes for child in process.findall(_m("sequenceFlow"))]
    flows += root.findall(f"{_m('collaboration')}/{_m('messageFlow')}")
    node_ids = {element.get("id"): _graph_id(element.get("id", "")) for element in nodes}
    data = {
        "title": _title(root),
        "language": _language(root),
        "pools": [_read_pool(p) for p in _ordered(_participants(root), order)],
        "lanes": [_read_lane(lane, pool_of_lane.get(lane.get("id"))) for lane in _ordered(lanes, order)],
        "nodes": [_read_node(element, lane_of_node) for element in _ordered(nodes, order)],
        "edges": [edge for flow in _ordered(flows, order) if (edge := _read_edge(flow, node_ids))],
    }
    return ProcessGraph.model_validate(data, context={"max_nodes": max_nodes})


def _parse(xml: str | bytes) -> StdElement:
    """expat through defusedxml: a DOCTYPE is refused when it starts, before any entity exists."""
    try:
        return SafeET.fromstring(xml, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as error:
        raise BpmnError(
            "The BPMN file declares a DTD or entities (<!DOCTYPE …>, <!ENTITY …>), which are refused: "
            "they can blow the document up or read local files. Export it again without a DOCTYPE."
        ) from error
    except ParseError as error:
        raise BpmnError(f"The BPMN file is not well-formed XML: {error}.") from error


def _di_elements(root: StdElement) -> Iterator[StdElement]:
    for plane in root.iter(_q(BPMNDI, "BPMNPlane")):
        yield from plane


def _ordered(elements: Iterable[StdElement], order: dict[str | None, int]) -> list[StdElement]:
    """Diagram order first (the graph's, in our own files), then document order."""
    return [e for _, e in sorted(enumerate(elements), key=lambda p: (order.get(p[1].get("id"), math.inf), p[0]))]


def _participants(root: StdElement) -> list[StdElement]:
    participants = root.findall(f"{_m('collaboration')}/{_m('participant')}")
    return [p for p in participants if p.get("id") != IMPLICIT_POOL]


def _pool_of_lanes(root: StdElement, processes: list[StdElement]) -> dict[str | None, str]:
    """Lane element id → pool id, through the participant that references the lane's process."""
    pool_of_process: dict[str, str] = {}
    for participant in _participants(root):
        process = _local(participant.get("processRef", ""))
        pool_of_process.setdefault(process, _graph_id(participant.get("id", ""), "pool."))
    return {
        lane.get("id"): pool_of_process[process.get("id", "")]
        for process in processes
        if process.get("id", "") in pool_of_process
        for lane in process.iter(_m("lane"))
    }


def _lane_of_nodes(processes: list[StdElement]) -> dict[str, str]:
    """Node id → lane id; for nested lanes (foreign files) the innermost lane wins."""
    lane_of: dict[str, str] = {}
    for process in processes:
        for lane in process.iter(_m("lane")):
            for ref in lane.findall(_m("flowNodeRef")):
                lane_of[(ref.text or "").strip()] = _graph_id(lane.get("id", ""), "lane.")
    return lane_of


def _read_pool(participant: StdElement) -> Pool:
    return Pool(id=_graph_id(participant.get("id", ""), "pool."), name=participant.get("name", ""))


def _read_lane(lane: StdElement, pool: str | None) -> Lane:
    return Lane(id=_graph_id(lane.get("id", ""), "lane."), name=lane.get("name", ""), pool=pool)


def _read_node(element: StdElement, lane_of: dict[str, str]) -> Node:
    documentation = element.find(_m("documentation"))
    return Node(
        id=_graph_id(element.get("id", "")),
        kind=TAG_KIND[_local(element.tag)],
        label=element.get("name", ""),
        lane=lane_of.get(element.get("id", "")),
        note=(documentation.text or "") if documentation is not None else "",
    )


def _read_edge(flow: StdElement, node_ids: dict[str | None, str]) -> Edge | None:
    """None for a flow that does not join two flow nodes (a message flow to a whole pool, say)."""
    source, target = node_ids.get(flow.get("sourceRef")), node_ids.get(flow.get("targetRef"))
    if source is None or target is None:
        return None
    condition = flow.find(_m("conditionExpression"))
    condition_text = (condition.text or "").strip() if condition is not None else ""
    return Edge(source=source, target=target, label=flow.get("name") or condition_text)


def _title(root: StdElement) -> str:
    if root.get("exporter") == "diagramsite":
        return root.get("name", "")  # ours: no name is an empty title, not the first pool's name
    candidates = [root, *root.findall(_m("collaboration")), *_participants(root), *root.findall(_m("process"))]
    return next((name for element in candidates if (name := element.get("name"))), "")


def _language(root: StdElement) -> str:
    language = root.get(_q(OURS, "language"), "")
    return language if language in ("en", "ru", "other") else ""


def _graph_id(raw: str, prefix: str = "") -> str:
    """Our own ids lose their prefix; a foreign id the graph cannot take is made into one."""
    if prefix and raw.startswith(prefix):
        raw = raw[len(prefix) :]
    if GRAPH_ID.fullmatch(raw):
        return raw
    cleaned = re.sub(r"[^A-Za-z0-9_-]", "_", raw)
    return cleaned[:64] if re.match(r"[A-Za-z_]", cleaned) else f"_{cleaned}"[:64]


def _local(tag: str) -> str:
    return tag.rpartition("}")[2].rpartition(":")[2]


# ---------------------------------------------------------------- validation

_schemas = threading.local()  # an XMLSchema keeps its error log on itself: one per thread


def validate_bpmn(xml: str | bytes) -> list[str]:
    """Errors against the vendored OMG BPMN 2.0 XSD, as "line N: message"; [] when valid."""
    try:
        _parse(xml)  # refuses DTDs and entities before lxml sees the document
    except BpmnError as error:
        return [str(error)]
    document = etree.fromstring(_without_declaration(xml), _lxml_parser())
    schema = _schema()
    if schema.validate(document):
        return []
    return [f"line {error.line}: {error.message}" for error in schema.error_log]


def _schema() -> etree.XMLSchema:
    if not hasattr(_schemas, "bpmn"):
        # The imports' schemaLocations are bare file names: libxml2 finds them next to BPMN20.xsd.
        _schemas.bpmn = etree.XMLSchema(etree.parse(str(XSD_DIR / "BPMN20.xsd"), _lxml_parser()))
    return _schemas.bpmn


def _lxml_parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)


def _without_declaration(xml: str | bytes) -> str | bytes:
    """lxml refuses a str that declares an encoding; the declaration means nothing for a str."""
    return XML_DECLARATION.sub("", xml, count=1) if isinstance(xml, str) else xml
