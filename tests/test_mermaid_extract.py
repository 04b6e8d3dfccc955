"""Mermaid code out of a model's answer (describer/mermaid.py): fences of every kind,
prose around the code, no fence at all, several blocks, Windows newlines, and an
answer with no diagram in it (kept whole, so the page shows the parser's error)."""

from __future__ import annotations

import pytest

from describer.mermaid import extract_mermaid, looks_like_mermaid_line, strip_styling

FLOW = """flowchart TD
    A(["Заказ получен"]) --> B{"Оплачен?"}
    B -->|"Да"| C["Отправить"]
    B -->|"Нет"| D(["Отменён"])"""


def test_it_takes_the_code_out_of_a_mermaid_fence_with_prose_around_it():
    answer = f"Here is the flowchart:\n\n```mermaid\n{FLOW}\n```\n\nIt has one decision."
    assert extract_mermaid(answer) == FLOW


def test_it_takes_the_code_out_of_a_bare_fence():
    assert extract_mermaid(f"```\n{FLOW}\n```") == FLOW


def test_it_takes_the_code_out_of_a_tilde_fence():
    assert extract_mermaid(f"~~~mermaid\n{FLOW}\n~~~") == FLOW


def test_it_finds_unfenced_code_and_drops_the_prose_before_and_after():
    answer = f"Sure! Below is the diagram.\n\n{FLOW}\n\nThis flowchart shows the order process.\nAsk for changes."
    assert extract_mermaid(answer) == FLOW


def test_it_drops_a_leading_mermaid_word():
    assert extract_mermaid(f"mermaid\n{FLOW}") == FLOW
    assert extract_mermaid(f"```\nmermaid\n{FLOW}\n```") == FLOW
    assert extract_mermaid("mermaid flowchart LR\n    A --> B") == "flowchart LR\n    A --> B"


def test_it_prefers_the_mermaid_block_among_several():
    answer = (
        "The steps:\n```text\n1. Receive\n2. Ship\n```\n"
        f"The diagram:\n```mermaid\n{FLOW}\n```\n"
        "An alternative:\n```mermaid\ngraph LR\n  X --> Y\n```"
    )
    assert extract_mermaid(answer) == FLOW


def test_it_takes_a_block_with_a_header_when_none_is_marked_mermaid():
    answer = f"```text\nnot a diagram\n```\n```\n{FLOW}\n```"
    assert extract_mermaid(answer) == FLOW


def test_windows_newlines_become_unix_ones():
    answer = "```mermaid\r\n" + FLOW.replace("\n", "\r\n") + "\r\n```\r\n"
    assert extract_mermaid(answer) == FLOW


def test_an_unclosed_fence_keeps_everything_written_so_far():
    # The model hit its token limit mid-block.
    assert extract_mermaid(f"```mermaid\n{FLOW}\n    D --> E") == f"{FLOW}\n    D --> E"


def test_a_graph_header_with_a_semicolon_is_recognised():
    assert extract_mermaid("graph TD;\nA-->B;") == "graph TD;\nA-->B;"


def test_edges_without_a_header_get_one():
    assert extract_mermaid('```mermaid\nA["Start"] --> B["End"]\n```') == 'flowchart TD\nA["Start"] --> B["End"]'


def test_text_before_the_header_inside_a_fence_is_dropped():
    assert extract_mermaid(f"```mermaid\nHere you go:\n{FLOW}\n```") == FLOW


@pytest.mark.parametrize(
    "answer",
    [
        "I cannot draw this process.",
        "```\nSorry, no diagram.\n```",
        "Graph of the process: first A, then B.",
        "",
    ],
)
def test_an_answer_without_a_diagram_is_kept_whole_for_the_parser_to_reject(answer):
    assert extract_mermaid(answer) == answer.strip()


def test_trailing_whitespace_is_removed_from_each_line():
    assert extract_mermaid("flowchart TD   \n    A --> B   \n\n") == "flowchart TD\n    A --> B"


@pytest.mark.parametrize(
    "line",
    ["A --> B", 'A["Шаг"]', "subgraph sales", "end", "B{Ok?}", "A & B --> C", "%% note", "C", "A:::done", "A -.-> B"],
)
def test_mermaid_lines_are_told_from_prose(line):
    assert looks_like_mermaid_line(line)


@pytest.mark.parametrize("line", ["This flowchart shows the process.", "Note (see above).", "Done.", "```"])
def test_prose_lines_are_told_from_mermaid(line):
    assert not looks_like_mermaid_line(line)


def test_curated_code_loses_its_styling_before_it_becomes_a_few_shot_example():
    curated = (
        "%% type: bpmn, lang: ru\r\nflowchart LR\r\n  subgraph lane [\"Отдел\"]\r\n    a(\"Шаг\")\r\n  end\r\n"
        "  a --> b\r\n  classDef task fill:#fff\r\n  class a task\r\n  style lane fill:#eee\r\n  click a call x()\r\n"
    )
    assert strip_styling(curated) == 'flowchart LR\n  subgraph lane ["Отдел"]\n    a("Шаг")\n  end\n  a --> b'
