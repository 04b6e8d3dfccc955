"""Mermaid flowcharts read into a `ProcessGraph` and rendered from one.

The accepted subset (anything else is skipped and reported with its line number):

- `flowchart` or `graph` with TD, TB, BT, LR or RL; `%%` comments; `%%{init: …}%%`;
  front matter (`---` … `---`), of which `title:` is read; classDef, style, linkStyle,
  click and direction lines are ignored.
- `subgraph id ["Name"]`, `subgraph id [Name]`, `subgraph Name` … `end`. A subgraph that
  holds subgraphs is a pool, one that holds none a lane. Deeper nesting: a lane belongs to
  its outermost subgraph's pool; a node placed directly in a pool is in no lane. A node is
  in the first subgraph it is written in.
- Nodes, with quoted or unquoted labels, `:::class` allowed. Shapes → kinds:

      id((…))  circle          start, end or event: by class startEvent/endEvent/event,
      id([…])  stadium          otherwise no incoming edge → start, no outgoing → end,
      id(((…))) double circle   both → event (a double circle is an end unless its class says)
      id>…]    flag            event, unless a class says start/end
      id{…}    rhombus         decision; parallel when its label is "+" or its class parallel
      id{{…}}  hexagon         parallel gateway
      id[[…]]  subroutine      subprocess
      id[…] id(…) id[/…/] id[\\…\\] id[/…\\] id[\\…/] id[(…)]   task
      id       (never shaped)  task labelled with its id

  A "+" drawn in a rhombus is the gateway's symbol, not its name: the label is "".
- Labels: Mermaid entity codes (`#quot;`, `#35;`, `#amp;`, `#9829;`) and HTML ones (`&amp;`)
  are decoded, `<br>` is a line break, a Markdown string ("`…`") loses its backticks.
- Edges: `-->`, `---`, `-.->`, `==>`, `--o`, `--x` and longer ones; labels as `-->|x|` or
  `-- x -->` (`-. x .->`, `== x ==>`); chains `A --> B --> C`; `A & B --> C & D`.
  `~~~` only places nodes (no edge); `<-->` is read as one edge, left to right.

The graph's language comes from a `%% type: …, lang: xx` line (the examples' metadata), node
notes from `%% note <id>: …` lines, which render_mermaid writes so that nothing is lost.

render_mermaid draws like the starter examples: with lanes `flowchart LR`, events as circles
and tasks rounded; without, `flowchart TD`, stadiums and rectangles; their classDefs. Every
label is quoted, with `"`, `&`, `<`, `>`, backticks and entity-like `#…;` as entity codes and
line breaks as `<br>`. Reading its output gives the same graph, with two exceptions: ids that
Mermaid refuses (keywords such as `end`; a lane and a node of one id) get a "_" appended, and
lanes of one pool must be listed together. Mermaid 12 shows `&`, `<` and `>` right in the
site's SVG text labels, but other entity codes (so `"`) literally there (mermaid-js/mermaid#7015);
HTML labels show them all.
"""

from __future__ import annotations

import html.entities
import json
import re
from dataclasses import dataclass, field

from describer.graph.model import (
    DEFAULT_MAX_NODES,
    ID_PATTERN,
    LABEL_MAX_CHARS,
    Edge,
    Lane,
    Node,
    NodeKind,
    Pool,
    ProcessGraph,
)
from describer.graph.text import complete_lines

DIRECTIONS = {"TD", "TB", "BT", "LR", "RL"}
HEADER = re.compile(r"^(flowchart|graph)\b\s*(\S+)?\s*$", re.I)
OTHER_DIAGRAM = re.compile(
    r"^(sequenceDiagram|classDiagram|stateDiagram(-v2)?|erDiagram|gantt|pie|journey|gitGraph|mindmap|timeline|"
    r"quadrantChart|requirementDiagram|C4\w*|sankey(-beta)?|xychart(-beta)?|block(-beta)?|packet(-beta)?|"
    r"architecture(-beta)?|kanban|zenuml)\b"
)
IGNORED_STATEMENT = re.compile(r"^(classDef|style|linkStyle|click|direction|accTitle|accDescr)(\s|:|$)")
CLASS_STATEMENT = re.compile(r"^class\s+(\S+)\s+(\S+)\s*$")
SUBGRAPH = re.compile(r"^subgraph\b\s*(.*)$")
SUBGRAPH_TITLED = re.compile(r"^([^\s\[\"]+)\s*\[\s*(.*?)\s*\]$")
METADATA = re.compile(r"^%%\s*(?:type\s*:\s*[\w-]+\s*,\s*)?lang(?:uage)?\s*:\s*(\w+)\s*$", re.I)
NOTE = re.compile(r"^%%\s*note\s+([^\s:]+)\s*:\s?(.*)$", re.I)
# Letters, digits, "_"; "-" and "." inside, as long as they do not start an arrow.
NODE_ID = re.compile(r"\w+(?:[-.]\w+)*")
CLASS_SHORTHAND = re.compile(r":::([\w-]+)")
# (opener, closers, shape), longest openers first.
SHAPES = (
    ("(((", (")))",), "double_circle"),
    ("((", ("))",), "circle"),
    ("([", ("])",), "stadium"),
    ("[[", ("]]",), "subroutine"),
    ("[(", (")]",), "cylinder"),
    ("{{", ("}}",), "hexagon"),
    ("[/", ("/]", "\\]"), "lean"),
    ("[\\", ("\\]", "/]"), "lean"),
    ("(", (")",), "round"),
    ("[", ("]",), "rect"),
    ("{", ("}",), "rhombus"),
    (">", ("]",), "flag"),
)
ROUND_SHAPES = {"circle", "stadium", "double_circle", "flag"}
PLAIN_LINK = re.compile(r"\s*(?P<link><?(?:-\.+-|-{2,}|={2,}|~{3,})[>ox]?)")
TEXT_LINK = re.compile(
    r"\s*(?P<open><?(?:--|==|-\.))(?![-=.>])\s*(?P<text>\"[^\"]*\"|[^\"]*?)\s*"
    r"(?P<close>-{2,}>|-{3,}|-{2,}[ox]|={2,}>|={3,}|={2,}[ox]|\.+->|\.+-)"
)
PIPE_TEXT = re.compile(r"\s*\|(?P<text>\"[^\"]*\"|[^|]*)\|")
ENTITY = re.compile(r"#(\d{1,7}|[A-Za-z][A-Za-z0-9]{1,31});")
# Browsers show HTML entities in labels decoded, so reading does too.
HTML_ENTITY = re.compile(r"&(?:#\d{1,7}|#x[0-9A-Fa-f]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")
LINE_BREAK = re.compile(r"<br\s*/?>", re.I)
EVENT_CLASSES = {
    "startevent": NodeKind.START, "start": NodeKind.START,
    "endevent": NodeKind.END, "end": NodeKind.END,
    "event": NodeKind.EVENT, "intermediateevent": NodeKind.EVENT,
}  # fmt: skip
PARALLEL_CLASSES = {"parallel", "parallelgateway"}


@dataclass(frozen=True)
class MermaidReading:
    graph: ProcessGraph
    unsupported: list[tuple[int, str]]  # (line number from 1, why it was skipped)


@dataclass
class _NodeDraft:
    id: str
    shape: str | None = None
    label: str | None = None
    raw_label: str = ""
    subgraph: str | None = None
    classes: list[str] = field(default_factory=list)
    note: str = ""


@dataclass
class _Subgraph:
    id: str
    name: str
    parent: str | None
    line: int
    children: list[str] = field(default_factory=list)


@dataclass
class _NodeRef:
    id: str
    shape: str | None
    raw_label: str | None
    classes: list[str]


class _ParseError(ValueError):
    pass


def close_cut_off(code: str) -> str:
    """Code cut off mid-answer made whole: its complete lines, with an "end" for every subgraph
    still open and the code block closed. (Unfinished statements would not parse.)"""
    complete = complete_lines(code)
    depth = 0
    for line in complete.splitlines():
        stripped = line.strip()
        if SUBGRAPH.match(stripped):
            depth += 1
        elif stripped == "end" and depth:
            depth -= 1
    closed = complete + "end\n" * depth
    return closed + "```\n" if closed.lstrip().startswith("```") else closed


# Reading ---------------------------------------------------------------------------------


def read_mermaid(code: str, *, max_nodes: int = DEFAULT_MAX_NODES) -> MermaidReading:
    """The graph of a Mermaid flowchart. Raises pydantic's ValidationError (a ValueError) when
    it has more than `max_nodes` nodes."""
    reader = _Reader()
    reader.read(code)
    graph = ProcessGraph.model_validate(reader.graph_fields(), context={"max_nodes": max_nodes})
    return MermaidReading(graph=graph, unsupported=reader.unsupported)


class _Reader:
    def __init__(self) -> None:
        self.unsupported: list[tuple[int, str]] = []
        self.nodes: dict[str, _NodeDraft] = {}
        self.edges: list[tuple[str, str, str]] = []
        self.subgraphs: dict[str, _Subgraph] = {}
        self.stack: list[str] = []
        self.classes: list[tuple[str, str]] = []
        self.notes: list[tuple[str, str]] = []
        self.title = ""
        self.language = ""
        self.header_seen = False
        self.stopped = False
        self.line = 0  # of the statement being read, for reports

    def read(self, code: str) -> None:
        for number, statement in _statements(code, self):
            if self.stopped:
                return
            self.line = number
            try:
                self._statement(number, statement)
            except _ParseError as error:
                self.unsupported.append((number, str(error)))
        for subgraph_id in self.stack:
            subgraph = self.subgraphs[subgraph_id]
            self.unsupported.append((subgraph.line, f"The subgraph “{subgraph.name}” has no “end”."))

    def comment(self, number: int, text: str) -> None:
        if match := METADATA.match(text):
            if match.group(1).lower() in ("en", "ru", "other"):
                self.language = match.group(1).lower()
        elif match := NOTE.match(text):
            self.line = number
            self.notes.append((match.group(1), self._cut(_decode(match.group(2).strip()))))

    def _statement(self, number: int, statement: str) -> None:
        if not self.header_seen:
            self.header_seen = True
            if self._header(number, statement):
                return
        if IGNORED_STATEMENT.match(statement):
            return
        if match := CLASS_STATEMENT.match(statement):
            self.classes += [(node_id, match.group(2)) for node_id in match.group(1).split(",")]
        elif match := SUBGRAPH.match(statement):
            self._open_subgraph(match.group(1).strip())
        elif statement == "end":
            if not self.stack:
                raise _ParseError("“end” closes no subgraph.")
            self.stack.pop()
        else:
            self._chain(statement)

    def _header(self, number: int, statement: str) -> bool:
        if match := HEADER.match(statement):
            direction = match.group(2)
            if direction and direction.upper() not in DIRECTIONS:
                self.unsupported.append((number, f"Unknown direction “{direction}”: TD, TB, BT, LR or RL."))
            return True
        if OTHER_DIAGRAM.match(statement):
            self.unsupported.append((number, "Only flowcharts (“flowchart” or “graph”) can be read into a process."))
            self.stopped = True
            return True
        self.unsupported.append((number, "A flowchart starts with “flowchart TD” (or graph, with TB, BT, LR or RL)."))
        return False

    def _open_subgraph(self, rest: str) -> None:
        match = SUBGRAPH_TITLED.match(rest)
        if match:
            given_id, name = match.group(1), _label_text(match.group(2))
        elif re.fullmatch(r"[\w-]+", rest):
            given_id, name = rest, rest
        else:
            given_id, name = None, _label_text(rest)
        subgraph_id = given_id or f"subgraph{len(self.subgraphs) + 1}"
        if subgraph_id in self.subgraphs:
            self.unsupported.append((self.line, f"A second subgraph “{subgraph_id}”: its lines are read into the first."))
            self.stack.append(subgraph_id)
            return
        parent = self.stack[-1] if self.stack else None
        self.subgraphs[subgraph_id] = _Subgraph(subgraph_id, self._cut(name), parent, self.line)
        if parent:
            self.subgraphs[parent].children.append(subgraph_id)
        self.stack.append(subgraph_id)

    def _chain(self, statement: str) -> None:
        groups, links = _parse_chain(statement)
        for group in groups:
            for ref in group:
                self._declare(ref)
        notices = {"invisible": "An invisible link (~~~) only places nodes: no edge was read.",
                   "both": "A two-way arrow (<-->) was read as one edge, from left to right."}  # fmt: skip
        for sources, (kind, label), targets in zip(groups, links, groups[1:], strict=False):
            if kind in notices and (self.line, notices[kind]) not in self.unsupported:
                self.unsupported.append((self.line, notices[kind]))
            if kind != "invisible":
                self.edges += [(source.id, target.id, self._cut(label)) for source in sources for target in targets]

    def _declare(self, ref: _NodeRef) -> None:
        node = self.nodes.setdefault(ref.id, _NodeDraft(ref.id))
        if ref.shape is not None:
            # Before decoding: a "+" is the gateway symbol, "#43;" a label that reads "+".
            node.shape, node.raw_label = ref.shape, (ref.raw_label or "").strip().strip('"').strip()
            node.label = self._cut(_label_text(ref.raw_label or ""))
        node.classes += ref.classes
        if node.subgraph is None and self.stack:
            node.subgraph = self.stack[-1]
        if ref.id in self.subgraphs:
            self.unsupported.append((self.line, f"“{ref.id}” is a subgraph; an edge to a subgraph is read as a node."))

    def graph_fields(self) -> dict:
        ids = _GraphIds(self.nodes, self.subgraphs)
        for node_id, class_name in self.classes:
            if node_id in self.nodes:
                self.nodes[node_id].classes.append(class_name)
        for node_id, note in self.notes:
            if node_id in self.nodes:
                self.nodes[node_id].note = note
        pools, lanes, lane_of = self._pools_and_lanes(ids)
        nodes = [self._node(draft, ids, lane_of) for draft in self.nodes.values()]
        edges = [Edge(source=ids.node[s], target=ids.node[t], label=label) for s, t, label in self.edges]
        return {"title": self.title, "language": self.language, "pools": pools, "lanes": lanes,
                "nodes": nodes, "edges": edges}  # fmt: skip

    def _pools_and_lanes(self, ids: _GraphIds) -> tuple[list[Pool], list[Lane], dict[str, str | None]]:
        pools, lanes, lane_of = [], [], {}
        for subgraph in self.subgraphs.values():
            if subgraph.children:
                if subgraph.parent is None:
                    pools.append(Pool(id=ids.subgraph[subgraph.id], name=subgraph.name))
                lane_of[subgraph.id] = None
                continue
            pool = _outermost(self.subgraphs, subgraph.id)
            lanes.append(Lane(id=ids.subgraph[subgraph.id], name=subgraph.name, pool=ids.subgraph[pool] if pool else None))
            lane_of[subgraph.id] = ids.subgraph[subgraph.id]
        return pools, lanes, lane_of

    def _node(self, draft: _NodeDraft, ids: _GraphIds, lane_of: dict[str, str | None]) -> Node:
        kind = _kind(draft, self._degree(draft.id))
        label = draft.id if draft.label is None else draft.label
        if kind == NodeKind.PARALLEL and draft.shape == "rhombus" and draft.raw_label == "+":
            label = ""
        lane = lane_of.get(draft.subgraph) if draft.subgraph else None
        return Node(id=ids.node[draft.id], kind=kind, label=label[:LABEL_MAX_CHARS], lane=lane, note=draft.note)

    def _degree(self, node_id: str) -> tuple[int, int]:
        incoming = sum(target == node_id for _, target, _ in self.edges)
        return incoming, sum(source == node_id for source, _, _ in self.edges)

    def _cut(self, text: str) -> str:
        if len(text) <= LABEL_MAX_CHARS:
            return text
        self.unsupported.append((self.line, f"“{text[:40]}…” is longer than {LABEL_MAX_CHARS} characters; the rest was cut."))
        return text[:LABEL_MAX_CHARS]


def _outermost(subgraphs: dict[str, _Subgraph], subgraph_id: str) -> str | None:
    parent = subgraphs[subgraph_id].parent
    while parent is not None and subgraphs[parent].parent is not None:
        parent = subgraphs[parent].parent
    return parent


class _GraphIds:
    """Mermaid ids that the graph cannot hold (a leading digit, other letters) get valid,
    unique ones; valid ids are kept as they are."""

    def __init__(self, nodes: dict[str, _NodeDraft], subgraphs: dict[str, _Subgraph]) -> None:
        taken = {name for name in [*nodes, *subgraphs] if re.match(ID_PATTERN, name)}
        self.node = {name: self._valid(name, taken) for name in nodes}
        self.subgraph = {name: self._valid(name, taken) for name in subgraphs}

    @staticmethod
    def _valid(name: str, taken: set[str]) -> str:
        if re.match(ID_PATTERN, name):
            return name
        base = "n_" + re.sub(r"[^A-Za-z0-9_-]", "_", name)[:56]
        candidate, number = base, 1
        while candidate in taken:
            number += 1
            candidate = f"{base}_{number}"
        taken.add(candidate)
        return candidate


def _kind(draft: _NodeDraft, degree: tuple[int, int]) -> NodeKind:
    classes = {name.casefold() for name in draft.classes}
    if draft.shape in ROUND_SHAPES:
        by_class = next((EVENT_CLASSES[name] for name in classes if name in EVENT_CLASSES), None)
        if by_class is not None:
            return by_class
        if draft.shape == "double_circle":
            return NodeKind.END
        if draft.shape == "flag":
            return NodeKind.EVENT
        incoming, outgoing = degree
        return NodeKind.START if not incoming else NodeKind.END if not outgoing else NodeKind.EVENT
    if draft.shape == "rhombus":
        return NodeKind.PARALLEL if classes & PARALLEL_CLASSES or draft.raw_label == "+" else NodeKind.DECISION
    return {"hexagon": NodeKind.PARALLEL, "subroutine": NodeKind.SUBPROCESS}.get(draft.shape or "", NodeKind.TASK)


def _statements(code: str, reader: _Reader):
    """(line number, statement) pairs: front matter, comments and blank lines are taken out,
    lines are split at semicolons outside labels."""
    lines = code.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    start = _front_matter(lines, reader)
    for number, line in enumerate(lines[start:], start + 1):
        stripped = line.strip()
        if stripped.startswith("%%"):
            reader.comment(number, stripped)
            continue
        for statement in _split_semicolons(stripped):
            yield number, statement


def _front_matter(lines: list[str], reader: _Reader) -> int:
    """Reads `title:` from a leading `---` block; returns the index of the first line after it."""
    if not lines or lines[0].strip() != "---":
        return 0
    for index, line in enumerate(lines[1:], 1):
        if line.strip() == "---":
            return index + 1
        if match := re.match(r"^title\s*:\s*(.*)$", line.strip()):
            reader.line = index + 1
            reader.title = reader._cut(_yaml_scalar(match.group(1)))
    return 0  # never closed: not front matter


def _yaml_scalar(value: str) -> str:
    if value.startswith('"'):
        try:
            return str(json.loads(value))
        except ValueError:
            return value.strip('"')
    if value.startswith("'") and value.endswith("'") and len(value) > 1:
        return value[1:-1].replace("''", "'")
    return value.strip()


def _split_semicolons(line: str) -> list[str]:
    parts, current, quoted = [], "", False
    for char in line:
        if char == '"':
            quoted = not quoted
        if char == ";" and not quoted and not re.search(r"#\w+$", current):
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [part.strip() for part in parts if part.strip()]


def _parse_chain(statement: str) -> tuple[list[list[_NodeRef]], list[tuple[str, str]]]:
    groups, links = [], []
    group, pos = _node_group(statement, 0)
    groups.append(group)
    while pos < len(statement) and statement[pos:].strip():
        link, pos = _link(statement, pos)
        group, pos = _node_group(statement, pos)
        links.append(link)
        groups.append(group)
    return groups, links


def _node_group(text: str, pos: int) -> tuple[list[_NodeRef], int]:
    refs = []
    while True:
        ref, pos = _node_ref(text, pos)
        refs.append(ref)
        match = re.compile(r"\s*&\s*").match(text, pos)
        if not match:
            return refs, pos
        pos = match.end()


def _node_ref(text: str, pos: int) -> tuple[_NodeRef, int]:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    match = NODE_ID.match(text, pos)
    if not match:
        raise _ParseError(f"Could not read a node at “{text[pos:pos + 30]}”.")
    node_id, pos = match.group(), match.end()
    shape, raw_label, pos = _shape(text, pos)
    classes = []
    while shorthand := CLASS_SHORTHAND.match(text, pos):
        classes.append(shorthand.group(1))
        pos = shorthand.end()
    return _NodeRef(node_id, shape, raw_label, classes), pos


def _shape(text: str, pos: int) -> tuple[str | None, str | None, int]:
    for opener, closers, shape in SHAPES:
        if text.startswith(opener, pos):
            label, end = _shape_label(text, pos + len(opener), closers)
            return shape, label, end
    return None, None, pos


def _shape_label(text: str, pos: int, closers: tuple[str, ...]) -> tuple[str, int]:
    rest = text[pos:]
    quoted = re.match(r'\s*("[^"]*")\s*', rest)
    if quoted:
        after = pos + quoted.end()
        closer = next((c for c in closers if text.startswith(c, after)), None)
        if closer:
            return quoted.group(1), after + len(closer)
    found = [(rest.find(c), c) for c in closers if rest.find(c) >= 0]
    if not found:
        raise _ParseError(f"A label is not closed with “{closers[0]}”.")
    index, closer = min(found)
    return rest[:index], pos + index + len(closer)


def _link(text: str, pos: int) -> tuple[tuple[str, str], int]:
    if match := TEXT_LINK.match(text, pos):
        return (_link_kind(match.group("open") + match.group("close")), _label_text(match.group("text"))), match.end()
    match = PLAIN_LINK.match(text, pos)
    if not match:
        raise _ParseError(f"Expected an arrow such as --> at “{text[pos:pos + 30].strip()}”.")
    link, pos = match.group("link"), match.end()
    if link.endswith(("o", "x")) and pos < len(text) and not text[pos].isspace():
        link, pos = link[:-1], pos - 1  # "--oB": the o is the next node's id
    if link in ("--", "==", "<--", "<=="):
        raise _ParseError(f"Expected an arrow such as --> at “{text[pos - len(link):pos + 30].strip()}”.")
    label = ""
    if pipe := PIPE_TEXT.match(text, pos):
        label, pos = _label_text(pipe.group("text")), pipe.end()
    return (_link_kind(link), label), pos


def _link_kind(link: str) -> str:
    if "~" in link:
        return "invisible"
    return "both" if link.startswith("<") else "edge"


def _label_text(raw: str) -> str:
    """A label as shown: quotes and Markdown backticks off, `<br>` and entity codes decoded."""
    text = raw.strip()
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        text = text[1:-1].strip()
    if len(text) >= 2 and text[0] == "`" and text[-1] == "`":
        text = text[1:-1]
    return _decode(text)


def _decode(text: str) -> str:
    text = HTML_ENTITY.sub(lambda match: html.unescape(match.group()), LINE_BREAK.sub("\n", text))
    return ENTITY.sub(_entity, text)


def _entity(match: re.Match[str]) -> str:
    code = match.group(1)
    if code.isdigit():
        number = int(code)
        return chr(number) if 0 < number <= 0x10FFFF else match.group()
    if code in html.entities.name2codepoint:
        return chr(html.entities.name2codepoint[code])
    return html.entities.html5.get(f"{code};", match.group())


# Rendering -------------------------------------------------------------------------------

CLASS_OF_KIND = {
    NodeKind.START: "startEvent", NodeKind.END: "endEvent", NodeKind.EVENT: "event", NodeKind.TASK: "task",
    NodeKind.DECISION: "gateway", NodeKind.PARALLEL: "gateway", NodeKind.SUBPROCESS: "subprocess",
}  # fmt: skip
CLASS_DEFS = {
    "startEvent": "fill:#ffffff,stroke:#2e7d32,stroke-width:2px",
    "endEvent": "fill:#ffffff,stroke:#b71c1c,stroke-width:4px",
    "event": "fill:#ffffff,stroke:#1565c0,stroke-width:2px",
    "task": "fill:#fffdf5,stroke:#444444,stroke-width:1.5px",
    "gateway": "fill:#fff8dc,stroke:#b8860b,stroke-width:2px",
    "subprocess": "fill:#fffdf5,stroke:#444444,stroke-width:3px",
}
LANE_STYLE = "fill:#f5f7fa,stroke:#78909c"
# Mermaid 12 refuses these as node or subgraph ids (tried in Chromium).
RESERVED_IDS = {"end", "graph", "flowchart", "subgraph", "style", "class", "classDef", "linkStyle"}
# In a quoted label: `"` would end it, a backtick could start a Markdown string, `<`/`>`/`&`
# would be read as HTML. `#` is coded only where Mermaid would take it for an entity code.
ESCAPED = {'"': "#quot;", "&": "#amp;", "<": "#lt;", ">": "#gt;", "`": "#96;", "\n": "<br>", "\r": "#13;"}
ENTITY_LIKE = re.compile(r"#(?=[A-Za-z0-9_]+;)")


def render_mermaid(graph: ProcessGraph) -> str:
    """Flowchart code: lanes as subgraphs (inside their pool's), shapes by kind, every label
    quoted and escaped with entity codes. Same graph, same text."""
    ids = _mermaid_ids(graph)
    lines = _front(graph)
    lines.append("flowchart LR" if graph.lanes else "flowchart TD")
    lines += _body(graph, ids)
    lines += [f"  {ids.node[edge.source]} -->{_edge_text(edge)} {ids.node[edge.target]}" for edge in graph.edges]
    lines += _classes(graph, ids)
    lines += [f"  style {ids.group[lane.id]} {LANE_STYLE}" for lane in graph.lanes]
    lines += [f"%% note {ids.node[node.id]}: {_escape(node.note)}" for node in graph.nodes if node.note]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class _MermaidIds:
    node: dict[str, str]
    group: dict[str, str]  # pools and lanes


def _mermaid_ids(graph: ProcessGraph) -> _MermaidIds:
    """Graph ids as they are, unless Mermaid would not take them: a keyword, or a lane and a
    node of one id (Mermaid has one namespace for both). Those get a "_" more."""
    taken: set[str] = set()

    def free(item_id: str) -> str:
        candidate = item_id
        while candidate in RESERVED_IDS or candidate in taken:
            candidate += "_"
        taken.add(candidate)
        return candidate

    group = {item.id: free(item.id) for item in [*graph.pools, *graph.lanes]}
    return _MermaidIds(node={node.id: free(node.id) for node in graph.nodes}, group=group)


def _front(graph: ProcessGraph) -> list[str]:
    lines = ["---", f"title: {json.dumps(graph.title, ensure_ascii=False)}", "---"] if graph.title else []
    if graph.language:
        lines.append(f"%% type: {'bpmn' if graph.lanes else 'flowchart'}, lang: {graph.language}")
    return lines


def _body(graph: ProcessGraph, ids: _MermaidIds) -> list[str]:
    """Node declarations inside their lanes when that keeps the graph's node order (so a
    reading gives the same graph); otherwise declared first, and the lanes list their ids."""
    blocks = _lane_blocks(graph)
    laneless = [node for node in graph.nodes if node.lane is None]
    in_lanes = [node for _, lanes in blocks for lane in lanes for node in graph.nodes if node.lane == lane.id]
    top = [f"  {_declaration(graph, node, ids)}" for node in laneless]
    if in_lanes + laneless == graph.nodes:
        return _subgraph_lines(graph, blocks, ids, declare=True) + top
    if laneless + in_lanes == graph.nodes:
        return top + _subgraph_lines(graph, blocks, ids, declare=True)
    declarations = [f"  {_declaration(graph, node, ids)}" for node in graph.nodes]
    return declarations + _subgraph_lines(graph, blocks, ids, declare=False)


def _lane_blocks(graph: ProcessGraph) -> list[tuple[Pool | None, list[Lane]]]:
    """Consecutive lanes of one pool go into one pool subgraph."""
    blocks: list[tuple[Pool | None, list[Lane]]] = []
    for lane in graph.lanes:
        pool = next((pool for pool in graph.pools if pool.id == lane.pool), None)
        if blocks and pool is not None and blocks[-1][0] == pool:
            blocks[-1][1].append(lane)
        else:
            blocks.append((pool, [lane]))
    return blocks


def _subgraph_lines(
    graph: ProcessGraph, blocks: list[tuple[Pool | None, list[Lane]]], ids: _MermaidIds, *, declare: bool
) -> list[str]:
    lines = []
    for pool, lanes in blocks:
        indent = "    " if pool else "  "
        if pool:
            lines.append(f'  subgraph {ids.group[pool.id]} ["{_escape(pool.name)}"]')
        for lane in lanes:
            members = [node for node in graph.nodes if node.lane == lane.id]
            lines.append(f'{indent}subgraph {ids.group[lane.id]} ["{_escape(lane.name)}"]')
            lines += [f"{indent}  {_declaration(graph, node, ids) if declare else ids.node[node.id]}" for node in members]
            lines.append(f"{indent}end")
        if pool:
            lines.append("  end")
    return lines


def _declaration(graph: ProcessGraph, node: Node, ids: _MermaidIds) -> str:
    label = _escape(node.label)
    if node.kind == NodeKind.PARALLEL:
        shape = f'{{{{"{label}"}}}}' if node.label else '{"+"}'
    elif node.kind == NodeKind.DECISION:
        shape = f'{{"{label}"}}' if label != "+" else '{"#43;"}'  # a bare "+" would read as parallel
    elif node.kind in (NodeKind.START, NodeKind.END, NodeKind.EVENT):
        shape = f'(("{label}"))' if graph.lanes else f'(["{label}"])'
    elif node.kind == NodeKind.SUBPROCESS:
        shape = f'[["{label}"]]'
    else:
        shape = f'("{label}")' if graph.lanes else f'["{label}"]'
    return f"{ids.node[node.id]}{shape}"


def _edge_text(edge: Edge) -> str:
    return f'|"{_escape(edge.label)}"|' if edge.label else ""


def _classes(graph: ProcessGraph, ids: _MermaidIds) -> list[str]:
    """The examples' classDefs; the class of a start, end or event decides its kind on reading."""
    members: dict[str, list[str]] = {}
    for node in graph.nodes:
        members.setdefault(CLASS_OF_KIND[node.kind], []).append(ids.node[node.id])
    lines = [f"  classDef {name} {style}" for name, style in CLASS_DEFS.items() if name in members]
    return lines + [f"  class {','.join(members[name])} {name}" for name in CLASS_DEFS if name in members]


def _escape(text: str) -> str:
    """A label for inside double quotes. Spaces at either end are coded too, as reading
    strips the rest; an empty label is one space (Mermaid has no empty quoted label)."""
    escaped = "".join(ESCAPED.get(char, char) for char in ENTITY_LIKE.sub("#35;", text))
    escaped = re.sub(r"[\x00-\x08\x0b-\x1f]", lambda match: f"#{ord(match.group())};", escaped)
    middle = escaped.strip()
    if not middle:
        return _coded(escaped) or " "
    lead, trail = escaped[: len(escaped) - len(escaped.lstrip())], escaped[len(escaped.rstrip()) :]
    return _coded(lead) + middle + _coded(trail)


def _coded(spaces: str) -> str:
    return "".join(f"#{ord(char)};" for char in spaces)
