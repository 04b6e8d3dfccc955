"""The canonical text of a process, read into a `ProcessGraph` and rendered from one.

The layout (English; Russian uses the words in `WORDS["ru"]`):

    # <title>

    ## Participants                       (only when there are lanes)
    - <lane>                              "- <lane> (<pool>)" for a lane inside a pool

    ## Steps
    1. Start: <what starts it> (<lane>)   a start event; "1. Start" when it has no name
    2. <task> (<lane>)
    3. <decision question?> (<lane>)
       - If yes: go to step 5.            a condition and where it leads
       - If no: end: <end state>.
    4. <a step that does not lead to the next one>
       - Next: go to step 2.
    5. <a parallel split>
       - In parallel: go to step 6.
       - In parallel: go to step 8.
    7. <a parallel join>
       - When all branches are done: go to step 9.

    ## End states
    - <end state> (<lane>): <what it means>   the end node's label, lane and note

An end state that names no lane gets the lane of the steps leading to it, if they share one.
A step without branch lines leads to the next step. "Event: …" and "Subprocess: …" mark
intermediate events and subprocesses; "End: …" an end that has steps after it. A text that
names no start step starts at step 1: the graph gets a start node "start" called "Start"
("Начало"), and rendering leaves that node out again. Line breaks in labels are written as "<br>".

Reading is lenient, like describer/postprocess.py: headings drift, steps may be bulleted,
branches may say "If yes, go to step 7" or "Да → шаг 7". Lines that fit nowhere are kept in
`TextReading.not_understood`; branches to steps that do not exist are reported in `problems`.
Node ids are deterministic: "s<position>" for steps, "e<n>" for end states, "start" for the
implied start; lanes "lane<n>", pools "pool<n>".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from describer.graph.model import (
    DEFAULT_MAX_NODES,
    LABEL_MAX_CHARS,
    Edge,
    Lane,
    Node,
    NodeKind,
    Pool,
    ProcessGraph,
    normalise_label,
)


@dataclass(frozen=True)
class Words:
    participants: str
    steps: str
    ends: str
    untitled: str
    start: str
    event: str
    subprocess: str
    end_step: str
    end: str
    next: str
    if_: str
    parallel: str
    join: str
    go_to: str


WORDS = {
    "en": Words(
        "Participants", "Steps", "End states", "Process", "Start", "Event", "Subprocess", "End",
        "end", "Next", "If", "In parallel", "When all branches are done", "go to step {n}",
    ),
    "ru": Words(
        "Участники", "Шаги", "Конечные состояния", "Процесс", "Начало", "Событие", "Подпроцесс", "Конец",
        "конец", "Далее", "Если", "Параллельно", "Когда все ветви завершены", "перейти к шагу {n}",
    ),
}  # fmt: skip

SECTION_PATTERNS = {
    "participants": re.compile(r"\b(participant|lane|pool|role|actor)|участник|дорожк|\bпул|\bрол[ьи]|исполнител", re.I),
    "ends": re.compile(r"\bend\b|\bend state|outcome|result|конечн|заверш|итог|результат", re.I),
    "steps": re.compile(r"\bsteps?\b|шаг|порядок|ход процесса|algorithm|алгоритм", re.I),
}
HEADING = re.compile(r"^\s*(#{1,6})\s*(.+?)\s*#*\s*$")
LOOSE_HEADING = re.compile(r"^\s*(?:\*\*|__)?([^\W\d][^:*_]{0,40}?)(?:\*\*|__)?\s*:?\s*(?:\*\*|__)?\s*$")
STEP_LINE = re.compile(r"^\s*(?:(?:step|шаг)\s+)?(\d{1,3})\s*[.):]\s+(.*\S)\s*$", re.I)
BULLET_LINE = re.compile(r"^(\s*)[-*•–+]\s+(.*\S)\s*$")
SKIPPED_LINE = re.compile(r"^\s*(```.*|-{3,}|\*{3,}|_{3,})?\s*$")
BRANCH_WORD = re.compile(r"^(if|when|otherwise|else|yes|no|next|then|in parallel|если|иначе|да|нет|далее|затем|параллельно)\b", re.I)
TARGET_STEP = (
    r"(?:(?:go(?:es)?|jump|return|continue|proceed|back)\s+(?:back\s+)?(?:to|with|at)\s+"
    r"|(?:перейти|переход|вернуться|возврат)\s+(?:к|на)\s+|→\s*|->\s*)?"
    r"(?:(?:step|шаг[ауеи]?)\s*(?:№\s*)?)(?P<step>\d{1,3})"
    r"|(?:→|->)\s*(?P<arrow>\d{1,3})"
)
BRANCH_TO_STEP = re.compile(rf"^(?:(?P<cond>.*?)(?:\s*[:,—–]\s*|\s+(?=→|->)))?(?:then\s+|то\s+)?(?:{TARGET_STEP})$", re.I | re.S)
BRANCH_TO_END = re.compile(r"^(?:(?P<cond>.*?)\s*[:,—–]\s*)?(?:end|конец|finish|завершение)\s*(?::\s*(?P<end>.*?))?$", re.I | re.S)
LANE_SUFFIX = re.compile(r"^(?P<text>.*?\S)\s*\((?P<lane>[^()]+)\)$")
KIND_PREFIXES = (
    (NodeKind.START, re.compile(r"^(?:start|начало|старт)\s*:\s*(?P<label>.*)$", re.I)),
    (NodeKind.EVENT, re.compile(r"^(?:event|intermediate event|событие)\s*:\s*(?P<label>.*)$", re.I)),
    (NodeKind.SUBPROCESS, re.compile(r"^(?:sub-?process|подпроцесс)\s*:\s*(?P<label>.*)$", re.I)),
    (NodeKind.END, re.compile(r"^(?:end|конец)\s*:\s*(?P<label>.*)$", re.I)),
)
BARE_START = re.compile(r"^(?:start|начало|старт)$", re.I)
IF_PREFIX = re.compile(r"^(?:if|если)\s+", re.I)
# Conditions that are no condition: the edge gets no label, the words say what the step is.
NEXT_WORDS = {"", "next", "then", "after that", "далее", "затем", "потом", "дальше"}
PARALLEL_WORDS = {"in parallel", "parallel", "параллельно", "одновременно"}
JOIN_WORDS = {"when all branches are done", "when all are done", "after all branches", "когда все ветви завершены"}
# Decision labels that read as a condition by themselves: rendered without "If".
OWN_CONDITION = re.compile(r"^(otherwise|else|when|unless|иначе|в противном случае|когда|пока)\b", re.I)
IMPLIED_START_ID = "start"
# The step text of a node without a label (a bare parallel gateway): read back as no label.
UNLABELLED = "—"
LINE_BREAK = re.compile(r"<br\s*/?>", re.I)
CYRILLIC = re.compile(r"[а-яё]", re.I)
LATIN = re.compile(r"[a-z]", re.I)


@dataclass(frozen=True)
class TextReading:
    graph: ProcessGraph
    not_understood: list[str]  # the lines as the model wrote them
    problems: list[str]


@dataclass
class _Branch:
    condition: str
    step: int | None = None
    end: str | None = None


@dataclass
class _Step:
    number: int | None
    text: str
    branches: list[_Branch] = field(default_factory=list)


@dataclass
class _Draft:
    title: str = ""
    participants: list[str] = field(default_factory=list)
    steps: list[_Step] = field(default_factory=list)
    ends: list[str] = field(default_factory=list)
    loose: list[str] = field(default_factory=list)


# Reading ---------------------------------------------------------------------------------


def read_text(text: str, language: str = "", *, max_nodes: int = DEFAULT_MAX_NODES) -> TextReading:
    """The graph of a description. Raises pydantic's ValidationError (a ValueError) when the
    process has more than `max_nodes` steps."""
    language = language or detect_language(text)
    draft = _scan(text)
    if not draft.steps:
        # Nothing numbered: every loose line is a step, as in postprocess, so no text is lost.
        draft.steps, draft.loose = [_Step(None, _clean(line)) for line in draft.loose], []
    builder = _GraphBuilder(draft, WORDS.get(language, WORDS["en"]))
    graph = ProcessGraph.model_validate(builder.build(language), context={"max_nodes": max_nodes})
    return TextReading(graph=graph, not_understood=draft.loose, problems=builder.problems)


def detect_language(text: str) -> str:
    return "ru" if len(CYRILLIC.findall(text)) > len(LATIN.findall(text)) else "en"


def _scan(text: str) -> _Draft:
    draft, section = _Draft(), "steps"
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if SKIPPED_LINE.match(line):
            continue
        heading = _heading(line)
        if heading is None:
            _add_line(draft, section, line)
        elif heading[0] == 1 and not draft.title:
            draft.title = _clean(heading[1])
        elif (found := _section_of(heading[1])) is not None:
            section = found
        elif not draft.title and not draft.steps:
            draft.title = _clean(heading[1])
        else:
            draft.loose.append(line.strip())
    return draft


def _heading(line: str) -> tuple[int, str] | None:
    if match := HEADING.match(line):
        return len(match.group(1)), match.group(2)
    # "Steps:" or "**Участники**" on a line of its own, when it names a section.
    match = LOOSE_HEADING.match(line)
    if match and (line.rstrip().endswith(":") or "**" in line) and _section_of(match.group(1)):
        return 2, match.group(1)
    return None


def _section_of(heading: str) -> str | None:
    return next((name for name, pattern in SECTION_PATTERNS.items() if pattern.search(heading)), None)


def _add_line(draft: _Draft, section: str, line: str) -> None:
    step, bullet = STEP_LINE.match(line), BULLET_LINE.match(line)
    item = step.group(2) if step else bullet.group(2) if bullet else None
    if section == "participants" and item:
        draft.participants.append(_clean(item))
    elif section == "ends" and item:
        draft.ends.append(_clean(item))
    elif step:
        draft.steps.append(_Step(int(step.group(1)), _clean(step.group(2))))
    elif bullet and draft.steps and _is_branch(bullet):
        _add_branch(draft, line, bullet.group(2))
    elif bullet:
        draft.steps.append(_Step(None, _clean(bullet.group(2))))
    else:
        draft.loose.append(line.strip())


def _is_branch(bullet: re.Match[str]) -> bool:
    text = _clean(bullet.group(2))
    return bool(bullet.group(1)) or bool(BRANCH_WORD.match(text)) or _parse_branch(text) is not None


def _add_branch(draft: _Draft, line: str, text: str) -> None:
    branch = _parse_branch(_clean(text))
    if branch is None:
        draft.loose.append(line.strip())  # a remark under a step, or a branch with no target
    else:
        draft.steps[-1].branches.append(branch)


def _parse_branch(text: str) -> _Branch | None:
    # One full stop ends the line; an end state's own "…." keeps the rest.
    text = text[:-1].rstrip() if text.endswith(".") else text
    if match := BRANCH_TO_STEP.match(text):
        return _Branch(_clean(match.group("cond") or ""), step=int(match.group("step") or match.group("arrow")))
    if match := BRANCH_TO_END.match(text):
        return _Branch(_clean(match.group("cond") or ""), end=(match.group("end") or "").strip())
    return None


def _clean(text: str) -> str:
    """Markdown emphasis and extra spaces away; "<br>" is a line break inside a label."""
    text = text.replace("**", "").replace("__", "")
    return "\n".join(re.sub(r"[ \t]+", " ", part).strip() for part in LINE_BREAK.split(text)).strip()


class _GraphBuilder:
    """Turns a draft into the graph's fields, collecting problems on the way."""

    def __init__(self, draft: _Draft, words: Words) -> None:
        self.draft, self.words = draft, words
        self.problems: list[str] = []
        self.pools: list[Pool] = []
        self.lanes: list[Lane] = []
        self.nodes: list[Node] = []
        self.edges: list[Edge] = []
        self.end_ids: dict[str, str] = {}  # normalised label → node id
        self._end_nodes: list[Node] = []

    def build(self, language: str) -> dict:
        self._lanes()
        self._ends()
        steps = [self._step_node(position, step) for position, step in enumerate(self.draft.steps, 1)]
        starts = [node for node in steps if node.kind == NodeKind.START]
        if steps and not starts:
            self.nodes.append(Node(id=IMPLIED_START_ID, kind=NodeKind.START, label=self.words.start))
            self.edges.append(Edge(source=IMPLIED_START_ID, target=steps[0].id))
        self.nodes += steps
        self._edges(steps)
        self._unreached_ends()
        self._end_lanes()
        self.nodes += self._end_nodes
        title = self.draft.title or self.words.untitled
        return {"title": title[:LABEL_MAX_CHARS], "language": language, "pools": self.pools, "lanes": self.lanes,
                "nodes": self.nodes, "edges": self.edges}  # fmt: skip

    def _lanes(self) -> None:
        names = self.draft.participants or self._suffix_lanes()
        for name in names:
            match = LANE_SUFFIX.match(name)
            lane_name, pool_name = (match.group("text"), match.group("lane")) if match else (name, None)
            if any(normalise_label(lane.name) == normalise_label(lane_name) for lane in self.lanes):
                continue
            self.lanes.append(Lane(id=f"lane{len(self.lanes) + 1}", name=self._cut(lane_name), pool=self._pool(pool_name)))

    def _suffix_lanes(self) -> list[str]:
        """Without a Participants section, "(X)" ending every step is taken for a lane;
        a remark in brackets on some steps stays in their labels."""
        suffixes = [LANE_SUFFIX.match(step.text) for step in self.draft.steps]
        if len(suffixes) < 2 or not all(suffixes):
            return []
        return list(dict.fromkeys(match.group("lane").strip() for match in suffixes if match))

    def _pool(self, name: str | None) -> str | None:
        if name is None:
            return None
        for pool in self.pools:
            if normalise_label(pool.name) == normalise_label(name):
                return pool.id
        self.pools.append(Pool(id=f"pool{len(self.pools) + 1}", name=self._cut(name.strip())))
        return self.pools[-1].id

    def _ends(self) -> None:
        referenced = [branch.end for step in self.draft.steps for branch in step.branches if branch.end is not None]
        for entry in self.draft.ends:
            label, note = _split_end(entry, referenced)
            label, lane = self._lane_of(label)
            self._end_node(label, note, lane)

    def _end_node(self, label: str, note: str = "", lane: str | None = None) -> str:
        key = normalise_label(label)
        if key not in self.end_ids:
            node_id = f"e{len(self._end_nodes) + 1}"
            self.end_ids[key] = node_id
            node = Node(id=node_id, kind=NodeKind.END, label=self._cut(label), note=self._cut(note), lane=lane)
            self._end_nodes.append(node)
        return self.end_ids[key]

    def _end_lanes(self) -> None:
        """An end state that names no lane is drawn in the lane of the steps leading to it,
        when they share one."""
        lanes = {node.id: node.lane for node in self.nodes}
        for index, node in enumerate(self._end_nodes):
            before = {lanes[edge.source] for edge in self.edges if edge.target == node.id}
            if node.lane is None and len(before) == 1 and None not in before:
                self._end_nodes[index] = node.model_copy(update={"lane": before.pop()})

    def _step_node(self, position: int, step: _Step) -> Node:
        text, lane = self._lane_of(step.text)
        kind, label = _kind_and_label(text, step.branches)
        return Node(id=f"s{position}", kind=kind, label=self._cut(label, position), lane=lane)

    def _lane_of(self, text: str) -> tuple[str, str | None]:
        match = LANE_SUFFIX.match(text)
        if match:
            for lane in self.lanes:
                if normalise_label(lane.name) == normalise_label(match.group("lane")):
                    return match.group("text"), lane.id
        return text, None

    def _edges(self, steps: list[Node]) -> None:
        numbers = _step_numbers(self.draft.steps)
        if len(set(numbers)) < len(numbers):
            self.problems.append("The step numbers repeat, so branches were read as going to the n-th step.")
            numbers = list(range(1, len(steps) + 1))
        by_number = dict(zip(numbers, steps, strict=True))
        for index, (step, node) in enumerate(zip(self.draft.steps, steps, strict=True)):
            if not step.branches:
                following = steps[index + 1] if index + 1 < len(steps) else None
                if following is not None and following.kind != NodeKind.START:
                    self.edges.append(Edge(source=node.id, target=following.id))
            for branch in step.branches:
                self._branch_edge(node, numbers[index], branch, by_number)

    def _branch_edge(self, node: Node, number: int, branch: _Branch, by_number: dict[int, Node]) -> None:
        label = "" if node.kind == NodeKind.PARALLEL else _edge_label(branch.condition)
        if branch.step is not None and branch.step not in by_number:
            self.problems.append(f"Step {number} goes to step {branch.step}, which does not exist.")
            return
        target = by_number[branch.step].id if branch.step is not None else self._end_node(branch.end or "")
        self.edges.append(Edge(source=node.id, target=target, label=self._cut(label)))

    def _unreached_ends(self) -> None:
        reached = {edge.target for edge in self.edges}
        for node in self._end_nodes:
            if node.id not in reached:
                self.problems.append(f"No step leads to the end state “{node.label}”.")

    def _cut(self, text: str, position: int | None = None) -> str:
        if len(text) <= LABEL_MAX_CHARS:
            return text
        where = f"Step {position}" if position else f"“{text[:40]}…”"
        self.problems.append(f"{where} is longer than {LABEL_MAX_CHARS} characters; the rest was cut.")
        return text[:LABEL_MAX_CHARS]


def _step_numbers(steps: list[_Step]) -> list[int]:
    return [step.number if step.number is not None else position for position, step in enumerate(steps, 1)]


def _split_end(entry: str, referenced: list[str]) -> tuple[str, str]:
    """ "Change rejected: nothing is changed" → label and note; a referenced label that itself
    holds a colon is recognised whole."""
    for label in referenced:
        if normalise_label(entry) == normalise_label(label):
            return entry, ""
        if entry.casefold().startswith(label.casefold() + ":"):
            return entry[: len(label)], entry[len(label) + 1 :].strip()
    label, _, note = entry.partition(":")
    return label.strip(), note.strip()


def _kind_and_label(text: str, branches: list[_Branch]) -> tuple[NodeKind, str]:
    if BARE_START.match(text):
        return NodeKind.START, text
    for kind, pattern in KIND_PREFIXES:
        if match := pattern.match(text):
            return kind, match.group("label").strip()
    conditions = [normalise_label(branch.condition) for branch in branches]
    if any(condition in PARALLEL_WORDS | JOIN_WORDS for condition in conditions):
        return NodeKind.PARALLEL, "" if text == UNLABELLED else text
    labelled = [condition for condition in conditions if condition not in NEXT_WORDS]
    if text.rstrip().endswith(("?", "？")) or len(labelled) >= 2:
        return NodeKind.DECISION, text
    return NodeKind.TASK, text


def _edge_label(condition: str) -> str:
    if normalise_label(condition) in NEXT_WORDS | PARALLEL_WORDS | JOIN_WORDS:
        return ""
    if IF_PREFIX.match(condition):
        stripped = IF_PREFIX.sub("", condition, count=1)
        return stripped[:1].upper() + stripped[1:]
    return condition


def complete_lines(text: str) -> str:
    """The lines of a text cut off mid-line that were complete: all but an unfinished last one
    (the whole text when it is one unfinished line: the lenient reader may still find a step)."""
    if text.endswith("\n") or "\n" not in text:
        return text
    return text[: text.rfind("\n") + 1]


# Rendering -------------------------------------------------------------------------------


def render_text(graph: ProcessGraph, language: str) -> str:
    """The canonical layout in English ("en") or Russian ("ru")."""
    words = WORDS.get(language, WORDS["en"])
    steps = _rendered_steps(graph, words)
    numbers = {node.id: number for number, node in enumerate(steps, 1)}
    lines = [f"# {_one_line(graph.title) or words.untitled}", ""]
    if graph.lanes:
        lines += [f"## {words.participants}", *[f"- {_participant(graph, lane)}" for lane in graph.lanes], ""]
    lines.append(f"## {words.steps}")
    for number, node in enumerate(steps, 1):
        lines.append(f"{number}. {_step_text(graph, node, words)}")
        lines += [f"   - {line}" for line in _branch_lines(graph, node, numbers, words)]
    ends = [node for node in graph.nodes if _is_terminal_end(graph, node)]
    if ends:
        lines += ["", f"## {words.ends}", *[f"- {_end_entry(graph, node)}" for node in ends]]
    return "\n".join(lines).strip() + "\n"


def _rendered_steps(graph: ProcessGraph, words: Words) -> list[Node]:
    steps = [node for node in graph.nodes if not _is_terminal_end(graph, node)]
    if len(steps) > 1 and _is_implied_start(graph, steps, words):
        return steps[1:]
    return steps


def _is_implied_start(graph: ProcessGraph, steps: list[Node], words: Words) -> bool:
    """The start that read_text adds to a text without one: left out, so the text stays as written.
    Its id tells it from a written "1. Start", which keeps its number."""
    first, out = steps[0], graph.outgoing(steps[0].id)
    return (
        first.id == IMPLIED_START_ID
        and first.kind == NodeKind.START
        and first.label.casefold() in {other.start.casefold() for other in WORDS.values()}
        and first.lane is None
        and not first.note
        and not graph.incoming(first.id)
        and sum(node.kind == NodeKind.START for node in graph.nodes) == 1
        and [(edge.target, edge.label) for edge in out] == [(steps[1].id, "")]
    )


def _is_terminal_end(graph: ProcessGraph, node: Node) -> bool:
    return node.kind == NodeKind.END and not graph.outgoing(node.id)


def _participant(graph: ProcessGraph, lane: Lane) -> str:
    pool = next((pool for pool in graph.pools if pool.id == lane.pool), None)
    return f"{_one_line(lane.name)} ({_one_line(pool.name)})" if pool else _one_line(lane.name)


def _step_text(graph: ProcessGraph, node: Node, words: Words) -> str:
    label = _one_line(node.label)
    prefixes = {NodeKind.START: words.start, NodeKind.EVENT: words.event, NodeKind.SUBPROCESS: words.subprocess,
                NodeKind.END: words.end_step}  # fmt: skip
    if node.kind == NodeKind.START and label.casefold() == words.start.casefold():
        text = label
    elif node.kind in prefixes:
        text = f"{prefixes[node.kind]}: {label}"
    else:
        text = label or UNLABELLED
    lane = next((lane for lane in graph.lanes if lane.id == node.lane), None)
    return f"{text} ({_one_line(lane.name)})" if lane else text


def _branch_lines(graph: ProcessGraph, node: Node, numbers: dict[str, int], words: Words) -> list[str]:
    out = graph.outgoing(node.id)
    if _falls_through(graph, node, out, numbers):
        return []
    return [f"{_condition(node, edge, len(out), words)}: {_target(graph, edge, numbers, words)}." for edge in out]


def _falls_through(graph: ProcessGraph, node: Node, out: list[Edge], numbers: dict[str, int]) -> bool:
    """A step with one unlabelled edge to the next step needs no branch line."""
    if node.kind in (NodeKind.DECISION, NodeKind.PARALLEL) or len(out) != 1 or out[0].label:
        return False
    target = out[0].target
    return numbers.get(target) == numbers[node.id] + 1 and graph.node(target).kind != NodeKind.START


def _condition(node: Node, edge: Edge, branches: int, words: Words) -> str:
    if node.kind == NodeKind.PARALLEL and not edge.label:
        return words.parallel if branches > 1 else words.join
    label = _one_line(edge.label)
    if not label:
        return words.next
    if node.kind != NodeKind.DECISION or OWN_CONDITION.match(label):
        return label
    # "Yes" reads "If yes"; keep the case of a leading abbreviation ("PIN ok").
    lowered = label[:1].lower() + label[1:] if label[1:2].islower() or len(label) == 1 else label
    return f"{words.if_} {lowered}"


def _target(graph: ProcessGraph, edge: Edge, numbers: dict[str, int], words: Words) -> str:
    if edge.target in numbers:
        return words.go_to.format(n=numbers[edge.target])
    label = _one_line(graph.node(edge.target).label)
    return f"{words.end}: {label}" if label else words.end


def _end_entry(graph: ProcessGraph, node: Node) -> str:
    lane = next((lane for lane in graph.lanes if lane.id == node.lane), None)
    name = f"{_one_line(node.label)} ({_one_line(lane.name)})" if lane else _one_line(node.label)
    return f"{name}: {_one_line(node.note)}" if node.note else name


def _one_line(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\n", "<br>")
