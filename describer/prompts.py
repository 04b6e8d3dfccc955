"""Every prompt the models see lives in this file.

Diagram → text: a system prompt fixing the output format (the structure that
describer/postprocess.py parses), the descriptions of the nearest curated
examples as context, then the user's image.
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image

from describer.mermaid import strip_styling

DESCRIBE_SYSTEM_PROMPT = """\
You are an expert business analyst. You read images of process diagrams — flowcharts and \
BPMN diagrams — and describe the process they show, step by step, precisely and completely.

Rules:
- Describe only what the diagram shows. Use the diagram's own labels for steps, conditions and roles.
- Number the steps in the order the process runs. Every decision becomes one step whose \
branches each say their condition and where they lead ("go to step N" or "end: NAME").
- Loops go back to an earlier step number.
- A parallel split gives one branch line "- In parallel: go to step N." per branch; the step that \
waits for them all says "- When all branches are done: go to step N.".
- Begin the first step with "Start:", an intermediate event with "Event:", a subprocess with "Subprocess:".
- If the diagram has pools or lanes, list them as participants and name the participant of each step \
and of each end state.
- Write plain text in the Markdown layout below, nothing before or after it.

Layout:
# <name of the process>

## Participants
- <pool or lane>            (leave this section out when there are no pools or lanes)

## Steps
1. <what happens> (<participant>)
2. <decision question>
   - If <condition>: go to step 3.
   - If <other condition>: end: <end state>.
3. ...

## End states
- <end state> (<participant>): <what it means>
"""

# Headings the model is asked to write in Russian descriptions.
RUSSIAN_LAYOUT_NOTE = """\
Write the headings in Russian: "## Участники", "## Шаги", "## Конечные состояния", \
and branches as "- Если <условие>: перейти к шагу N." or "- Если <условие>: конец: <название>."; \
"Начало:", "Событие:", "Подпроцесс:", "- Параллельно: перейти к шагу N." and \
"- Когда все ветви завершены: перейти к шагу N."\
"""

LANGUAGE_INSTRUCTIONS = {
    "": "Write the description in the language of the diagram's labels (Russian labels → Russian text).",
    "en": "Write the description in English, translating the diagram's labels.",
    "ru": "Write the description in Russian, translating the diagram's labels.",
}

EXAMPLES_INTRO = (
    "Descriptions of similar diagrams, written by experts in the required layout. "
    "They describe OTHER diagrams: copy their style, not their content."
)

DESCRIBE_REQUEST = "Describe the process shown in this diagram."

# A fine-tuned adapter (describer/inference/finetune.py) is trained and served with this instead of
# the rules and examples above: it has learnt the layout and the examples, and a ~1,000-token
# system prompt would cost every one of its training steps and every prefill.
ADAPTER_SYSTEM_PROMPT = "You describe process diagrams step by step in this site's Markdown layout."


def describe_system_prompt(language: str) -> str:
    parts = [DESCRIBE_SYSTEM_PROMPT, LANGUAGE_INSTRUCTIONS.get(language, LANGUAGE_INSTRUCTIONS[""])]
    if language in ("", "ru"):
        parts.append(RUSSIAN_LAYOUT_NOTE)
    return "\n\n".join(parts)


def examples_text(descriptions: Sequence[str]) -> str:
    blocks = [f"--- Example {number} ---\n{text.strip()}" for number, text in enumerate(descriptions, 1)]
    return EXAMPLES_INTRO + "\n\n" + "\n\n".join(blocks)


def found_text(labels: Sequence[str]) -> str:
    """The labels OCR read in the diagram, for the prompt (DESCRIBER_OCR_IN_PROMPT)."""
    lines = "\n".join(f"- {label}" for label in labels)
    return (
        "Text found in the diagram by OCR, one label per line (it may contain reading errors; "
        f"trust the image where they differ):\n{lines}"
    )


def describe_messages(
    image: Image.Image,
    example_descriptions: Sequence[str],
    language: str,
    labels: Sequence[str] = (),
    *,
    short: bool = False,
) -> list[dict]:
    """Qwen2.5-VL chat messages for one diagram → text request; `labels`, when given, are the
    texts OCR found in the image; `short`: the fine-tuned adapter's prompt."""
    system = describe_system_prompt(language) if not short else (
        ADAPTER_SYSTEM_PROMPT + " " + LANGUAGE_INSTRUCTIONS.get(language, LANGUAGE_INSTRUCTIONS[""]))
    user_content: list[dict] = []
    if example_descriptions:
        user_content.append({"type": "text", "text": examples_text(example_descriptions)})
    user_content.append({"type": "image", "image": image})
    if labels:
        user_content.append({"type": "text", "text": found_text(labels)})
    user_content.append({"type": "text", "text": DESCRIBE_REQUEST})
    return [
        {"role": "system", "content": [{"type": "text", "text": system}]},
        {"role": "user", "content": user_content},
    ]


# --- Text → diagram ------------------------------------------------------------------
#
# A text-only chat: the system prompt fixes the output (one ```mermaid block, a
# flowchart in a safe, parseable subset of the syntax), then few-shot turns (a
# description as the user, its code as the assistant), then the user's text.
# A repair sends the failing code and the parser's message back.

DRAW_SYSTEM_PROMPT = """\
You are an expert business analyst. You turn descriptions of processes into Mermaid flowcharts \
that show every step, decision and end state of the process, and nothing it does not say.

Answer with one Mermaid code block and nothing before or after it:
```mermaid
flowchart TD
    ...
```

Rules:
- The first line is `flowchart TD`. One node per step, in the order the process runs.
- Node ids are short ASCII names (A, B, C, … or check_order); the visible text is the label, \
always in double quotes: A["Check the order"].
- Start and end states are stadiums: S(["Order received"]). Decisions are rhombi: \
D{"Is the order paid?"}. Every edge leaving a decision carries its condition: D -->|"Yes"| E.
- Loops are edges back to the earlier node. Participants, pools or lanes become subgraphs: \
subgraph sales["Sales"] … end.
- Write the labels in the language of the description (Russian description → Russian labels), \
in its own words.
- Never put double quotes, HTML tags or Markdown inside a label. No style, classDef, click, \
links or %%{init}%% directives.
"""

DRAW_REQUEST = "Draw this process as a Mermaid flowchart."

# Used when no curated example has Mermaid code yet: one English, one Russian, so the
# model sees the format and that the labels keep the description's language.
BUILT_IN_DRAWING_EXAMPLES: list[tuple[str, str]] = [
    (
        """\
# Order handling
1. A customer places an order.
2. The shop checks whether the order is paid.
   - If it is paid: go to step 3.
   - If it is not paid: end: order cancelled.
3. The warehouse ships the goods.
4. End: order delivered.""",
        """\
flowchart TD
    A(["Order placed"]) --> B{"Is the order paid?"}
    B -->|"Yes"| C["Ship the goods"]
    B -->|"No"| X(["Order cancelled"])
    C --> E(["Order delivered"])""",
    ),
    (
        """\
# Согласование отпуска
Сотрудник подаёт заявление. Руководитель рассматривает его: если согласовано, отдел кадров \
оформляет приказ и процесс завершается; если нет, заявление возвращается сотруднику на доработку.""",
        """\
flowchart TD
    A(["Заявление подано"]) --> B["Руководитель рассматривает заявление"]
    B --> C{"Согласовано?"}
    C -->|"Да"| D["Отдел кадров оформляет приказ"]
    C -->|"Нет"| E["Сотрудник дорабатывает заявление"]
    E --> B
    D --> F(["Отпуск оформлен"])""",
    ),
]

REPAIR_SYSTEM_PROMPT = (
    DRAW_SYSTEM_PROMPT
    + """
Now you are fixing code that the Mermaid parser rejected. Change only what the error needs; keep \
every node, edge and label, and the labels' language. Answer with the whole corrected code in one \
```mermaid block.
"""
)

REPAIR_REQUEST = """\
This Mermaid code does not parse.

Parser error:
{error}

Code:
```mermaid
{code}
```

Common causes: a label with brackets, parentheses, quotes or other special characters that is \
not wrapped in double quotes; a missing or misspelt arrow; a subgraph without its `end`; text \
after the code. Write the corrected code."""


def mermaid_block(code: str) -> str:
    return f"```mermaid\n{code.strip()}\n```"


def draw_messages(text: str, examples: Sequence[tuple[str, str]]) -> list[dict]:
    """Chat messages for one text → diagram request; `examples` are (description, Mermaid code)
    pairs shown as earlier turns of the conversation."""
    messages: list[dict] = [{"role": "system", "content": DRAW_SYSTEM_PROMPT}]
    for description, code in examples or BUILT_IN_DRAWING_EXAMPLES:
        messages.append({"role": "user", "content": f"{DRAW_REQUEST}\n\n{description.strip()}"})
        messages.append({"role": "assistant", "content": mermaid_block(strip_styling(code))})
    messages.append({"role": "user", "content": f"{DRAW_REQUEST}\n\n{text.strip()}"})
    return messages


def repair_messages(code: str, error: str) -> list[dict]:
    """Chat messages asking the model to fix code that the Mermaid parser rejected with `error`."""
    return [
        {"role": "system", "content": REPAIR_SYSTEM_PROMPT},
        {"role": "user", "content": REPAIR_REQUEST.format(error=error.strip(), code=code.strip())},
    ]
