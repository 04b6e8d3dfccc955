"""Every prompt the models see lives in this file.

Diagram → text: a system prompt fixing the output format (the structure that
describer/postprocess.py parses), the descriptions of the nearest curated
examples as context, then the user's image.
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image

DESCRIBE_SYSTEM_PROMPT = """\
You are an expert business analyst. You read images of process diagrams — flowcharts and \
BPMN diagrams — and describe the process they show, step by step, precisely and completely.

Rules:
- Describe only what the diagram shows. Use the diagram's own labels for steps, conditions and roles.
- Number the steps in the order the process runs. Every decision becomes one step whose \
branches each say their condition and where they lead ("go to step N" or "end: NAME").
- Loops go back to an earlier step number. Parallel branches are said to run in parallel.
- If the diagram has pools or lanes, list them as participants and name the participant of each step.
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
- <end state>: <what it means>
"""

# Headings the model is asked to write in Russian descriptions.
RUSSIAN_LAYOUT_NOTE = """\
Write the headings in Russian: "## Участники", "## Шаги", "## Конечные состояния", \
and branches as "- Если <условие>: перейти к шагу N." or "- Если <условие>: конец: <название>."\
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


def describe_system_prompt(language: str) -> str:
    parts = [DESCRIBE_SYSTEM_PROMPT, LANGUAGE_INSTRUCTIONS.get(language, LANGUAGE_INSTRUCTIONS[""])]
    if language in ("", "ru"):
        parts.append(RUSSIAN_LAYOUT_NOTE)
    return "\n\n".join(parts)


def examples_text(descriptions: Sequence[str]) -> str:
    blocks = [f"--- Example {number} ---\n{text.strip()}" for number, text in enumerate(descriptions, 1)]
    return EXAMPLES_INTRO + "\n\n" + "\n\n".join(blocks)


def describe_messages(image: Image.Image, example_descriptions: Sequence[str], language: str) -> list[dict]:
    """Qwen2.5-VL chat messages for one diagram → text request."""
    user_content: list[dict] = []
    if example_descriptions:
        user_content.append({"type": "text", "text": examples_text(example_descriptions)})
    user_content.append({"type": "image", "image": image})
    user_content.append({"type": "text", "text": DESCRIBE_REQUEST})
    return [
        {"role": "system", "content": [{"type": "text", "text": describe_system_prompt(language)}]},
        {"role": "user", "content": user_content},
    ]
