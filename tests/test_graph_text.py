"""describer/graph/text.py: the canonical text read into a ProcessGraph (leniently, keeping what
does not fit) and rendered from one, in English and Russian."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from describer.graph.model import Edge, Lane, Node, NodeKind, Pool, ProcessGraph
from describer.graph.text import detect_language, read_text, render_text

LEAVE = """\
# Leave request

## Participants
- Employee
- Manager (Office)

## Steps
1. Start: leave needed (Employee)
2. Ask for leave (Employee)
3. Approved? (Manager)
   - If yes: go to step 5.
   - If no: go to step 4.
4. Explain the refusal (Manager)
   - Next: end: Leave refused.
5. Book the leave (Manager)
   - Next: end: Leave booked.

## End states
- Leave refused (Employee): nothing changes
- Leave booked (Manager): the dates are in the calendar
"""

LEAVE_GRAPH = ProcessGraph(
    title="Leave request",
    language="en",
    pools=[Pool(id="pool1", name="Office")],
    lanes=[Lane(id="lane1", name="Employee"), Lane(id="lane2", name="Manager", pool="pool1")],
    nodes=[
        Node(id="s1", kind=NodeKind.START, label="leave needed", lane="lane1"),
        Node(id="s2", kind=NodeKind.TASK, label="Ask for leave", lane="lane1"),
        Node(id="s3", kind=NodeKind.DECISION, label="Approved?", lane="lane2"),
        Node(id="s4", kind=NodeKind.TASK, label="Explain the refusal", lane="lane2"),
        Node(id="s5", kind=NodeKind.TASK, label="Book the leave", lane="lane2"),
        Node(id="e1", kind=NodeKind.END, label="Leave refused", lane="lane1", note="nothing changes"),
        Node(id="e2", kind=NodeKind.END, label="Leave booked", lane="lane2", note="the dates are in the calendar"),
    ],
    edges=[
        Edge(source="s1", target="s2"),
        Edge(source="s2", target="s3"),
        Edge(source="s3", target="s5", label="Yes"),
        Edge(source="s3", target="s4", label="No"),
        Edge(source="s4", target="e1"),
        Edge(source="s5", target="e2"),
    ],
)

OTPUSK = """\
# Отпуск

## Шаги
1. Написать заявление
2. Заявление подписано?
   - Если да: конец: Отпуск оформлен.
   - Если нет: перейти к шагу 1.

## Конечные состояния
- Отпуск оформлен: приказ издан
"""


def steps_text(*steps: str) -> str:
    return "# P\n\n## Steps\n" + "\n".join(f"{number}. {step}" for number, step in enumerate(steps, 1)) + "\n"


def test_a_canonical_english_text_gives_exactly_this_graph():
    reading = read_text(LEAVE)

    assert reading.graph == LEAVE_GRAPH
    assert reading.not_understood == [] and reading.problems == []


def test_the_graph_renders_back_to_the_same_text():
    assert render_text(LEAVE_GRAPH, "en") == LEAVE


def test_russian_phrases_are_read_and_a_text_without_a_start_starts_at_step_1():
    graph = read_text(OTPUSK).graph

    assert graph.language == "ru"
    assert [(node.id, node.kind, node.label, node.note) for node in graph.nodes] == [
        ("start", NodeKind.START, "Начало", ""),
        ("s1", NodeKind.TASK, "Написать заявление", ""),
        ("s2", NodeKind.DECISION, "Заявление подписано?", ""),
        ("e1", NodeKind.END, "Отпуск оформлен", "приказ издан"),
    ]
    assert [(edge.source, edge.target, edge.label) for edge in graph.edges] == [
        ("start", "s1", ""),
        ("s1", "s2", ""),
        ("s2", "e1", "Да"),
        ("s2", "s1", "Нет"),
    ]


def test_the_implied_start_is_left_out_when_rendering_so_the_russian_text_is_unchanged():
    assert render_text(read_text(OTPUSK).graph, "ru") == OTPUSK


def test_the_same_graph_renders_in_either_language():
    english = render_text(read_text(OTPUSK).graph, "en")

    assert english.startswith("# Отпуск\n\n## Steps\n1. Написать")  # the implied start, in any language, left out
    assert "## Steps\n1. Написать заявление\n2. Заявление подписано?\n   - If да: end: Отпуск оформлен." in english
    assert "## End states\n- Отпуск оформлен: приказ издан" in english


def test_drifted_layouts_are_read_and_what_fits_nowhere_is_kept():
    text = """Some intro the model wrote.
**Steps:**
1) Receive the order
2) Paid?
- Yes → step 3
- If no, go to step 4
3) Ship it
   - then: end: Shipped
4. Cancel
   - Note: call the customer first
## Remarks
Thanks!
"""
    reading = read_text(text)

    graph = reading.graph
    assert graph.title == "Process"
    assert [(node.id, node.kind, node.label) for node in graph.nodes] == [
        ("start", NodeKind.START, "Start"),
        ("s1", NodeKind.TASK, "Receive the order"),
        ("s2", NodeKind.DECISION, "Paid?"),
        ("s3", NodeKind.TASK, "Ship it"),
        ("s4", NodeKind.TASK, "Cancel"),
        ("e1", NodeKind.END, "Shipped"),
    ]
    assert [(edge.source, edge.target, edge.label) for edge in graph.edges] == [
        ("start", "s1", ""),
        ("s1", "s2", ""),
        ("s2", "s3", "Yes"),
        ("s2", "s4", "No"),
        ("s3", "e1", ""),
    ]
    assert reading.not_understood == ["Some intro the model wrote.", "- Note: call the customer first", "## Remarks", "Thanks!"]


def test_a_branch_to_a_missing_step_and_an_end_state_nobody_reaches_are_reported():
    text = "# X\n\n## Steps\n1. Do A\n   - Next: go to step 12.\n2. Do B\n\n## End states\n- Never: unused\n"

    reading = read_text(text)

    assert reading.problems == ["Step 1 goes to step 12, which does not exist.", "No step leads to the end state “Never”."]
    assert [(edge.source, edge.target) for edge in reading.graph.edges] == [("start", "s1")]


def test_repeated_step_numbers_are_reported_and_branches_count_steps_in_order():
    reading = read_text("## Steps\n1. A\n1. B\n2. C\n   - Next: go to step 2.\n")

    assert reading.problems == ["The step numbers repeat, so branches were read as going to the n-th step."]
    assert ("s3", "s2") in [(edge.source, edge.target) for edge in reading.graph.edges]


def test_plain_lines_without_numbers_become_steps_so_nothing_is_lost():
    graph = read_text("Boil the water.\nPour it.\n").graph

    assert [node.label for node in graph.nodes] == ["Start", "Boil the water.", "Pour it."]
    assert [(edge.source, edge.target) for edge in graph.edges] == [("start", "s1"), ("s1", "s2")]


def test_parallel_splits_and_joins_round_trip():
    text = steps_text(
        "Start: work arrives",
        "Split the work\n   - In parallel: go to step 3.\n   - In parallel: go to step 4.",
        "Do A\n   - Next: go to step 5.",
        "Do B",
        "Wait for both\n   - When all branches are done: go to step 6.",
        "Finish\n   - Next: end: Done.",
    ) + "\n## End states\n- Done\n"

    graph = read_text(text).graph

    assert [node.kind for node in graph.nodes][:6] == [NodeKind.START, NodeKind.PARALLEL, NodeKind.TASK,
                                                       NodeKind.TASK, NodeKind.PARALLEL, NodeKind.TASK]  # fmt: skip
    assert all(edge.label == "" for edge in graph.edges)
    assert ("s5", "s6") in [(edge.source, edge.target) for edge in graph.edges]
    assert render_text(graph, "en") == text


def test_events_subprocesses_and_an_end_with_steps_after_it_have_their_prefixes():
    text = steps_text("Event: payment received", "Subprocess: Check the credit", "End: Closed for today", "Reopen tomorrow")

    graph = read_text(text).graph

    assert [(node.kind, node.label) for node in graph.nodes] == [
        (NodeKind.START, "Start"),
        (NodeKind.EVENT, "payment received"),
        (NodeKind.SUBPROCESS, "Check the credit"),
        (NodeKind.END, "Closed for today"),
        (NodeKind.TASK, "Reopen tomorrow"),
    ]
    assert render_text(graph, "en") == text


def test_an_end_state_without_a_lane_is_put_in_the_lane_of_the_steps_before_it():
    text = LEAVE.replace("- Leave booked (Manager):", "- Leave booked:")

    graph = read_text(text).graph

    assert graph == LEAVE_GRAPH
    assert render_text(graph, "en") == LEAVE  # the lane is now written


def test_brackets_that_name_no_participant_stay_in_the_label():
    graph = read_text(LEAVE.replace("2. Ask for leave (Employee)", "2. Ask for leave (by e-mail)")).graph

    assert graph.node("s2").label == "Ask for leave (by e-mail)" and graph.node("s2").lane is None


def test_without_a_participants_section_brackets_on_every_step_are_lanes():
    graph = read_text(steps_text("Start: go (Shop)", "Pack (Warehouse)", "Pay (Shop)")).graph

    assert [lane.name for lane in graph.lanes] == ["Shop", "Warehouse"]
    assert [node.lane for node in graph.nodes] == ["lane1", "lane2", "lane1"]


def test_a_rendered_graph_says_next_where_a_step_does_not_lead_to_the_following_one():
    graph = ProcessGraph(
        title="Loop",
        nodes=[
            Node(id="a", kind=NodeKind.START, label="Go"),
            Node(id="b", kind=NodeKind.TASK, label="Try"),
            Node(id="c", kind=NodeKind.DECISION, label="Worked?"),
            Node(id="d", kind=NodeKind.END, label="Done", note="it worked"),
        ],
        edges=[
            Edge(source="a", target="b"),
            Edge(source="b", target="c"),
            Edge(source="c", target="b", label="No"),
            Edge(source="c", target="d", label="Otherwise"),
        ],
    )

    assert render_text(graph, "en") == (
        "# Loop\n\n## Steps\n1. Start: Go\n2. Try\n3. Worked?\n   - If no: go to step 2.\n"
        "   - Otherwise: end: Done.\n\n## End states\n- Done: it worked\n"
    )


LABELS = ['Say "hi"', "a < b > c & d", "Literal #quot; and #35; stay", "Two\nlines", "Pizza 🍕 ready ✅", "Проверить «заявку»"]


def test_quotes_brackets_ampersands_entity_codes_line_breaks_emoji_and_cyrillic_survive_text():
    nodes = [Node(id="s1", kind=NodeKind.START, label=LABELS[0])]
    nodes += [Node(id=f"s{n}", kind=NodeKind.TASK, label=label) for n, label in enumerate(LABELS[1:], 2)]
    nodes += [Node(id="s7", kind=NodeKind.DECISION, label="Which one?")]
    nodes += [Node(id=f"e{n}", kind=NodeKind.END, label=label, note=label) for n, label in enumerate(LABELS, 1)]
    edges = [Edge(source=f"s{n}", target=f"s{n + 1}") for n in range(1, 7)]
    # Conditions read from text start with a capital ("If yes" → "Yes").
    edges += [Edge(source="s7", target=f"e{n}", label=label[0].upper() + label[1:]) for n, label in enumerate(LABELS, 1)]
    graph = ProcessGraph(title=" · ".join(LABELS).replace("\n", " "), language="en", nodes=nodes, edges=edges)

    text = render_text(graph, "en")

    assert read_text(text).graph == graph
    assert "2. a < b > c & d\n" in text and "4. Two<br>lines\n" in text
    assert '   - If say "hi": end: Say "hi".' in text


def test_a_text_over_the_node_limit_is_refused_with_the_limit_named():
    text = steps_text(*[f"Do thing {n}" for n in range(1, 301)])  # and the implied start: 301 nodes

    with pytest.raises(ValidationError, match=r"301 steps; at most 300 are allowed \(GRAPH_MAX_NODES\)"):
        read_text(text)
    with pytest.raises(ValidationError, match="at most 5 are allowed"):
        read_text(text, max_nodes=5)
    assert len(read_text(text, max_nodes=301).graph.nodes) == 301


def test_an_overlong_step_is_cut_and_reported():
    reading = read_text(steps_text("Start", "x" * 600))

    assert reading.graph.node("s2").label == "x" * 500
    assert reading.problems == ["Step 2 is longer than 500 characters; the rest was cut."]


def test_the_language_is_detected_from_the_letters_unless_given():
    assert detect_language(OTPUSK) == "ru" and detect_language(LEAVE) == "en"
    assert read_text(LEAVE, "other").graph.language == "other"


def test_a_written_start_step_keeps_its_number_and_an_implied_one_is_left_out():
    written, implied = steps_text("Start", "Boil the water"), steps_text("Boil the water")

    assert [node.id for node in read_text(written).graph.nodes] == ["s1", "s2"]
    assert [node.id for node in read_text(implied).graph.nodes] == ["start", "s1"]
    assert render_text(read_text(written).graph, "en") == written
    assert render_text(read_text(implied).graph, "en") == implied
