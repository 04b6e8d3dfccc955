"""Grounding a description in its picture: which of the diagram's labels (read by describer.ocr)
the description uses, which it never mentions, and which of its steps say things that are
nowhere in the picture.

The reference-free faithfulness score of arXiv 2602.13376: recall of the diagram's OCR'd text
in the output, with a precision side. Here:

- a label is *used* when at least 80 % of its words are among the description's words (its
  title, participants, steps, conditions and end states); a bare "Start" or "End" is used by
  any description with steps (the layout makes a start and an end implicit);
- a step is *grounded* when at least half of its own words (leaving out the few the layout
  itself adds, such as "Start:", and common short words) are among the picture's words;
- label recall = used labels / labels; step precision = grounded steps / steps;
- the coverage score is their harmonic mean (F1): 1 when every label is used and every step is
  in the picture; leaving k of n labels out gives 2(n−k)/(2n−k); inventing steps lowers it too.

Words are compared case-folded with ё as е (ocr.words_of); a word of four letters or more also
matches one read with a single wrong letter, which is how OCR and models most often differ.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from describer.graph.text import WORDS
from describer.ocr import Reading, TextLabel, words_of

LABEL_USED = 0.8
STEP_GROUNDED = 0.5
# Words the canonical layout writes itself, and short words too common to ground anything.
LAYOUT_WORDS = frozenset(
    word
    for words in WORDS.values()
    for phrase in (words.start, words.event, words.subprocess, words.end_step)
    for word in words_of(phrase)
)
COMMON_WORDS = frozenset(words_of("a an the of to in on at for and or is are be by with it its "
                                  "и в во на с со к по за из от до о об у а но не ли что это"))  # fmt: skip


@dataclass
class LabelCoverage:
    text: str
    box: list[int]  # x, y, width, height in the image's pixels
    used: bool
    steps: list[int] = field(default_factory=list)  # numbers of the steps that say it


@dataclass
class StepCoverage:
    number: int
    text: str
    grounded: bool
    labels: list[int] = field(default_factory=list)  # indexes into Coverage.labels


@dataclass
class Coverage:
    score: float
    label_recall: float
    step_precision: float
    labels: list[LabelCoverage]
    steps: list[StepCoverage]
    image_width: int
    image_height: int

    @property
    def omissions(self) -> list[LabelCoverage]:
        return [label for label in self.labels if not label.used]

    @property
    def inventions(self) -> list[StepCoverage]:
        return [step for step in self.steps if not step.grounded]

    def as_json(self) -> dict:
        return asdict(self)


def _close(word: str, other: str) -> bool:
    """Equal, or (four letters or more) one letter replaced, added or left out."""
    if word == other:
        return True
    if min(len(word), len(other)) < 4 or abs(len(word) - len(other)) > 1:
        return False
    if len(word) == len(other):
        return sum(a != b for a, b in zip(word, other)) == 1
    short, long = sorted((word, other), key=len)
    return any(long[:i] + long[i + 1 :] == short for i in range(len(long)))


class _Bag:
    def __init__(self, words: list[str]) -> None:
        self.words = set(words)
        self.by_length: dict[int, set[str]] = {}
        for word in self.words:
            self.by_length.setdefault(len(word), set()).add(word)

    def __contains__(self, word: str) -> bool:
        if word in self.words:
            return True
        if len(word) < 4:
            return False
        return any(_close(word, other) for n in (len(word) - 1, len(word), len(word) + 1) for other in self.by_length.get(n, ()))


def share_found(words: list[str], bag: _Bag) -> float:
    """The share of `words` in `bag`; two neighbours that are one word there both count (OCR
    splits "подтве рждение", a drawing breaks "Заблокирова-ть" over two lines)."""
    if not words:
        return 0.0
    found = [word in bag for word in words]
    for i in range(len(words) - 1):
        if not (found[i] and found[i + 1]) and words[i] + words[i + 1] in bag:
            found[i] = found[i + 1] = True
    return sum(found) / len(words)


def label_words(text: str) -> list[str]:
    """A label's words, less lone letters: a gateway's "x", or an event's circle read as "Г"."""
    return [word for word in words_of(text) if len(word) >= 2 or word.isdigit()]


SHORT_LABEL_CONFIDENCE = 80.0


def is_label(label: TextLabel) -> bool:
    """A reading worth accounting for: a word of three characters or more, or a sure reading of
    a two-letter one ("No", "Да"); a gateway's mark or an event's circle is often read as "Oo"."""
    words = label_words(label.text)
    if any(len(word) >= 3 for word in words):
        return True
    sure = all(word.confidence >= SHORT_LABEL_CONFIDENCE for word in label.words)
    return sure and any(len(word) == 2 for word in words)


def step_words(text: str) -> list[str]:
    return [word for word in words_of(text) if word not in LAYOUT_WORDS and word not in COMMON_WORDS] or words_of(text)


def description_words(structure: dict) -> list[str]:
    parts = [structure.get("title", ""), *structure.get("participants", []), *structure.get("end_states", [])]
    for step in structure.get("steps", []):
        parts.append(step.get("text", ""))
        parts += [branch.get("condition", "") for branch in step.get("branches", [])]
        parts += [branch.get("target_end", "") for branch in step.get("branches", [])]
    return words_of(" ".join(parts))


def _used(words: list[str], described: _Bag, has_steps: bool) -> bool:
    if has_steps and words and all(word in LAYOUT_WORDS for word in words):
        return True
    return share_found(words, described) >= LABEL_USED


def measure(reading: Reading, structure: dict) -> Coverage:
    """How well the structured description (StructuredDescription.as_dict()) covers the labels
    of `reading`, and each step's grounding in it."""
    described = _Bag(description_words(structure))
    pictured = _Bag(words_of(reading.text))
    has_steps = bool(structure.get("steps"))
    labels = [
        LabelCoverage(label.text, list(label.box), _used(label_words(label.text), described, has_steps))
        for label in reading.labels if is_label(label)
    ]  # fmt: skip
    steps = []
    for step in structure.get("steps", []):
        own = step_words(step.get("text", ""))
        if not own:  # a bare gateway ("—") says nothing that could be invented
            continue
        steps.append(StepCoverage(step["number"], step.get("text", ""), share_found(own, pictured) >= STEP_GROUNDED))
    _link(labels, steps)
    recall = sum(label.used for label in labels) / len(labels) if labels else 1.0
    precision = sum(step.grounded for step in steps) / len(steps) if steps else (1.0 if not labels else 0.0)
    score = 2 * recall * precision / (recall + precision) if recall + precision else 0.0
    return Coverage(round(score, 4), round(recall, 4), round(precision, 4), labels, steps, reading.width, reading.height)


def _link(labels: list[LabelCoverage], steps: list[StepCoverage]) -> None:
    """A label belongs to the steps that say most of it: what hovering one highlights."""
    for index, label in enumerate(labels):
        words = label_words(label.text)
        for step in steps:
            if share_found(words, _Bag(words_of(step.text))) >= LABEL_USED:
                label.steps.append(step.number)
                step.labels.append(index)
