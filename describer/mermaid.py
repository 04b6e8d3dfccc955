"""Mermaid code out of a model's answer.

Models wrap the code in Markdown fences (```mermaid, ``` or ~~~), put prose
before and after it, write a stray "mermaid" word, forget the fence, or stop
mid-block. `extract_mermaid` finds the flowchart in all of these. When nothing
in the answer looks like a flowchart, it returns the answer itself: the page
then shows the real parser's error on it and offers a repair, instead of an
empty diagram that hides what the model wrote.

Whether code parses is decided by the real Mermaid parser, in the browser
(static/js/mermaid-editor.js); nothing here second-guesses it.
"""

from __future__ import annotations

import re

# Mermaid's own default limit on diagram text (maxTextSize).
MERMAID_MAX_CHARS = 50_000

DEFAULT_HEADER = "flowchart TD"

_FENCE = re.compile(
    r"^[ \t]*(?P<fence>`{3,}|~{3,})[ \t]*(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)(?:^[ \t]*(?P=fence)[`~]*[ \t]*$|\Z)",
    re.MULTILINE | re.DOTALL,
)
# "flowchart TD", "graph LR;", "mermaid flowchart TD" (the fence's word left on the line).
_HEADER = re.compile(
    r"^[ \t]*(?:mermaid[ \t:]+)?"
    r"(?P<header>(?:flowchart|flowchart-elk|graph)(?:[ \t]+(?:TB|TD|BT|RL|LR))?[ \t]*(?:;|$))",
    re.IGNORECASE | re.MULTILINE,
)
_KEYWORD_LINE = re.compile(
    r"^(?:subgraph|end|direction|classDef|class|style|linkStyle|click|accTitle|accDescr|flowchart|graph)\b",
    re.IGNORECASE,
)
# A node (A, A[..], A(..), A{..}, A>..], A@{..}, A:::cls, A & B), or an edge anywhere in the line.
_NODE_OR_EDGE = re.compile(r"^[\w-]+(?:[ \t]*$|[\[({>]|[ \t]*(?:&|;|:::|@\{))|--|==|-\.|~~~")


def normalise_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n").lstrip("\ufeff")


def looks_like_mermaid_line(line: str) -> bool:
    stripped = line.strip()
    if not stripped or stripped.startswith("%%"):
        return True
    return bool(_KEYWORD_LINE.match(stripped) or _NODE_OR_EDGE.search(stripped))


_STYLING_LINE = re.compile(r"^[ \t]*(?:%%|classDef\b|class\b|style\b|linkStyle\b|click\b)", re.IGNORECASE)


def strip_styling(code: str) -> str:
    """The code without comments, directives, styles, classes and clicks: what the prompt asks
    the model to write, so the few-shot examples show exactly that."""
    return "\n".join(line for line in normalise_newlines(code).split("\n") if not _STYLING_LINE.match(line)).strip()


def extract_mermaid(answer: str) -> str:
    """The Mermaid flowchart in a model's answer, or the whole answer when there is none."""
    text = normalise_newlines(answer).strip()
    fenced = _best_fenced_block(text)
    code = _from_header(fenced if fenced is not None else text)
    if code is None:
        code = _headless_edges(fenced if fenced is not None else text)
    if code is None:
        return text
    if fenced is None:
        code = _trim_trailing_prose(code)
    return "\n".join(line.rstrip() for line in code.strip("\n").splitlines())


def _best_fenced_block(text: str) -> str | None:
    """The fenced block most likely to be the diagram: a ```mermaid one with a header first,
    then any block with a header, then any ```mermaid block."""
    blocks = [(match["lang"].lower(), match["body"]) for match in _FENCE.finditer(text)]
    for wanted in (
        lambda lang, body: lang == "mermaid" and _HEADER.search(body),
        lambda lang, body: _HEADER.search(body),
        lambda lang, body: lang == "mermaid",
    ):
        for lang, body in blocks:
            if wanted(lang, body):
                return body
    return None


def _from_header(text: str) -> str | None:
    """From the first flowchart header to the end, or None without one."""
    match = _HEADER.search(text)
    if match is None:
        return None
    return text[match.start("header") :]


def _headless_edges(text: str) -> str | None:
    """Edges without a header (the model skipped it): give them the default one."""
    lines = [line for line in text.splitlines() if line.strip()]
    edges = [line for line in lines if re.search(r"-->|---|==>|-\.->", line)]
    if not edges or not all(looks_like_mermaid_line(line) for line in lines):
        return None
    return f"{DEFAULT_HEADER}\n{text.strip()}"


def _trim_trailing_prose(code: str) -> str:
    """Unfenced code runs to the end of the answer: drop the explanation after it."""
    lines = code.split("\n")
    while lines and not (lines[-1].strip() and looks_like_mermaid_line(lines[-1])):
        lines.pop()
    return "\n".join(lines)
