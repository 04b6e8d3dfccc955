"""Grammars (EBNF, as xgrammar reads it) of what the model may write for each job kind.

Constrained decoding (describer/inference/constraints.py) lets the model pick only tokens that
keep its answer inside these languages, so every complete answer parses:

- `description_grammar(language)`: the canonical layout of describer/graph/text.py — a title,
  participants when there are lanes, numbered steps (numbered 1, 2, 3 … in order) with their
  branch lines, each pointing to a step number or to an end, and end states; the headings and
  phrases in English ("en"), Russian ("ru"), or either (any other language).
- `mermaid_grammar()`: the Mermaid subset describer/graph/mermaid.py reads and Mermaid itself
  draws — what render_mermaid writes: optional front matter with the title, the metadata line,
  a `flowchart` header, node declarations with quoted labels, edges with optional labels
  (chains, and nodes declared where an edge names them, as the drawing prompt shows),
  subgraphs (pools holding lanes) and classDef/class/style lines; in a ```mermaid block or
  bare. (render_mermaid's `%% note` comments are left out: a drawing from a text has no notes.)

Labels are free text without control characters (so on one line), with no length bound here:
xgrammar compiles a bounded run (`[^"]{0,239}`) against a 150k-token vocabulary in seconds and
keeps a hundred megabytes of masks for it, and a repeated rule per character (`char{1,300}`)
costs up to a second per token to mask, while unbounded runs of one character class compile in
well under a second and mask in microseconds. The decoder's constraints end a line that grows
too long instead (describer/inference/constraints.py), and the readers cut labels past
LABEL_MAX_CHARS. How many participants, branches and end states may follow is bounded, by
nested options.
Nothing here imports torch: the grammars are plain strings, tested against the renderers' output.
"""

from __future__ import annotations

import json
from functools import cache

from describer.graph.mermaid import RESERVED_IDS
from describer.graph.text import WORDS, Words

# Steps are numbered in order; numbers past this one are not offered (a real answer of
# DESCRIBER_MAX_NEW_TOKENS tokens holds far fewer steps).
MAX_STEPS = 100
# Mermaid words that cannot be a node or subgraph id (RESERVED_IDS: those Mermaid 12 refuses;
# the others are keywords of its flowchart lexer).
MERMAID_KEYWORDS = sorted(
    RESERVED_IDS | {"default", "click", "call", "href", "direction", "interpolate", "accTitle", "accDescr"}
)
IDENTIFIER_CHARS = "[A-Za-z0-9_]"
# Control characters, as an EBNF character-class body: never in a label.
CONTROL_CHARS = "\\x00-\\x1f\\x7f"
# Lines of a kind: participants, branches of one step, end states; entity codes in a label.
MAX_PARTICIPANTS = 16
MAX_BRANCHES = 8
MAX_END_STATES = 40
MAX_CODED = 4


def _literal(text: str) -> str:
    """An EBNF string literal (JSON escapes are what xgrammar's EBNF takes)."""
    return json.dumps(text, ensure_ascii=False)


def _label(*, excluded: str = "") -> str:
    """Free text on one line: it starts with a visible character and has no control characters
    (so no line break)."""
    chars = CONTROL_CHARS + excluded
    return f"[^ {chars}] [^{chars}]*"


def _at_most(item: str, count: int) -> str:
    """`item` 0 to `count` times, as nested options (a bounded repetition of a rule masks slowly)."""
    nested = ""
    for _ in range(count):
        nested = f"({item}{' ' + nested if nested else ''})?"
    return nested


# Descriptions ------------------------------------------------------------------------------


@cache
def description_grammar(language: str = "") -> str:
    """The canonical layout in `language` ("en" or "ru"); both languages for any other value."""
    languages = [language] if language in WORDS else list(WORDS)
    rules = [f"root ::= {' | '.join(f'layout_{code}' for code in languages)}"]
    for code in languages:
        rules += _layout_rules(code, WORDS[code])
    rules += [
        "name ::= label",
        f"label ::= {_label()}",
        # A condition stops before ":", which starts its target.
        f"condition ::= {_label(excluded=':')}",
        "number ::= [1-9] [0-9]? [0-9]?",
        'participant ::= "- " name "\\n"',
        'end_state ::= "- " label "\\n"',
    ]
    return "\n".join(rules) + "\n"


def _layout_rules(code: str, words: Words) -> list[str]:
    go_to_prefix, _, go_to_suffix = words.go_to.partition("{n}")
    # One rule holds a step's text and branches, and each numbered step refers to it: xgrammar
    # expands a label's bounded run once per place that names it.
    steps = [f"step{n}_{code} ::= {_literal(f'{n}. ')} step_body_{code}" for n in range(1, MAX_STEPS + 1)]
    chain = [
        f"steps_from{n}_{code} ::= step{n}_{code}" + (f" steps_from{n + 1}_{code}?" if n < MAX_STEPS else "")
        for n in range(1, MAX_STEPS + 1)
    ]
    steps_heading = _literal(f"## {words.steps}\n")
    participants_heading = _literal(f"## {words.participants}\n")
    ends_heading = _literal(f"\n## {words.ends}\n")
    return [
        f"layout_{code} ::= \"# \" name \"\\n\\n\" participants_{code}? {steps_heading} steps_from1_{code} ends_{code}?",
        f"participants_{code} ::= {participants_heading} participant {_at_most('participant', MAX_PARTICIPANTS - 1)} \"\\n\"",
        f"ends_{code} ::= {ends_heading} end_state {_at_most('end_state', MAX_END_STATES - 1)}",
        f"step_body_{code} ::= label \"\\n\" {_at_most(f'branch_{code}', MAX_BRANCHES)}",
        *steps,
        *chain,
        f"branch_{code} ::= \"   - \" condition_{code} \": \" target_{code} \".\\n\"",
        f"condition_{code} ::= {_literal(words.next)} | {_literal(words.parallel)} | {_literal(words.join)} "
        f"| {_literal(words.if_ + ' ')} condition | condition",
        f"target_{code} ::= {_literal(go_to_prefix)} number{' ' + _literal(go_to_suffix) if go_to_suffix else ''} "
        f"| {_literal(words.end)} (\": \" label)?",
    ]


# Mermaid -----------------------------------------------------------------------------------


@cache
def mermaid_grammar() -> str:
    rules = [
        'root ::= "```mermaid\\n" code "```" | code',
        'code ::= front? metadata? "flowchart " direction "\\n" drawing "\\n" statement*',
        # At least one node, edge or subgraph: a flowchart that draws something.
        "drawing ::= indent (node | edge | subgraph)",
        # The title as a JSON string with neither quote nor backslash inside.
        'front ::= "---\\ntitle: \\"" mplain "\\"\\n---\\n"',
        'metadata ::= "%% type: " ("flowchart" | "bpmn") ", lang: " ("en" | "ru") "\\n"',
        'direction ::= "TD" | "LR" | "TB" | "RL" | "BT"',
        'statement ::= indent (node | edge | subgraph | class_def | class_line | style_line) "\\n"',
        'indent ::= "  " | "    " | "      " | "        "',
        "node ::= id shape",
        'shape ::= "[\\"" mlabel "\\"]" | "(\\"" mlabel "\\")" | "([\\"" mlabel "\\"])" | "((\\"" mlabel "\\"))" '
        '| "{\\"" mlabel "\\"}" | "{{\\"" mlabel "\\"}}" | "[[\\"" mlabel "\\"]]"',
        'edge ::= end_point (" -->" ("|\\"" mlabel "\\"|")? " " end_point)+',
        "end_point ::= id shape?",
        # A subgraph holds nodes, ids of nodes declared elsewhere, and (a pool) subgraphs.
        'subgraph ::= "subgraph " id " "? "[\\"" mlabel "\\"]\\n" (indent (node | id | subgraph) "\\n")* indent "end"',
        'class_def ::= "classDef " id " " style',
        'class_line ::= "class " id ("," id)* " " id',
        'style_line ::= "style " id " " style',
        'style ::= property ("," property)*',
        'property ::= ("fill" | "stroke" | "color") ":#" [0-9a-fA-F]{3,6} '
        '| "stroke-width:" [0-9]{1,2} ("." [0-9])? "px" | "stroke-dasharray:" [0-9]{1,2} (" " [0-9]{1,2})?',
        # In a quoted label: no quote, backtick, <, > or &; "#" only as an entity code; "<br>" a
        # line break. Runs of plain characters between them (see the module docstring).
        f"mlabel ::= mplain {_at_most('mcoded mplain?', MAX_CODED)} | mcoded mplain? {_at_most('mcoded mplain?', MAX_CODED - 1)}",
        "mplain ::= [^\"\\\\`<>&#" + CONTROL_CHARS + "]+",
        'mcoded ::= "#" ([a-z] [a-z] [a-z]? [a-z]? [a-z]? [a-z]? | [0-9] [0-9]? [0-9]? [0-9]? [0-9]? [0-9]?) ";" | "<br>"',
        *_identifier_rules(MERMAID_KEYWORDS),
    ]
    return "\n".join(rules) + "\n"


def _identifier_rules(keywords: list[str]) -> list[str]:
    """`id`: a letter or "_", then letters, digits and "_", and none of `keywords`.

    A regular language, written as a trie of the keywords: at each prefix of a keyword the id may
    end (unless the prefix is a keyword), go on along the trie, or leave it for any tail."""
    trie: dict[str, dict] = {}
    for word in keywords:
        node = trie
        for char in word:
            node = node.setdefault(char, {})
        node["$"] = {}
    rules: list[str] = []
    counter = [0]

    def rule_for(node: dict, prefix: str) -> str:
        name = f"id_{counter[0]}"
        counter[0] += 1
        branches = []
        for char in sorted(key for key in node if key != "$"):
            branches.append(f"{_literal(char)} {rule_for(node[char], prefix + char)}")
        others = _class_without(sorted(key for key in node if key != "$"), first=not prefix)
        branches.append(f"{others} id_tail")
        if prefix and "$" not in node:
            branches.append('""')
        rules.append(f"{name} ::= {' | '.join(branches)}")
        return name

    rules.append(f"id ::= {rule_for(trie, '')}")
    return [*rules, f"id_tail ::= {IDENTIFIER_CHARS}*"]


def _class_without(chars: list[str], *, first: bool) -> str:
    """A character class of identifier characters (the first: no digit) minus `chars`."""
    allowed = [chr(code) for code in range(128) if chr(code).isalnum() or chr(code) == "_"]
    if first:
        allowed = [char for char in allowed if not char.isdigit()]
    return "[" + "".join(char for char in allowed if char not in chars) + "]"
