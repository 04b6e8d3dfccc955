"""Turning the model's text into a structured description.

The model is asked for the layout in describer/prompts.py, but models drift:
headings change, numbering restarts, branches are written as prose. This
module reads what came out leniently and renders one canonical layout:
title, participants (if any), numbered steps with each branch's condition and
target, end states. Whatever cannot be recognised still ends up as steps, so
nothing the model wrote is lost.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

HEADINGS = {
    "en": {"participants": "Participants", "steps": "Steps", "ends": "End states", "untitled": "Process"},
    "ru": {"participants": "Участники", "steps": "Шаги", "ends": "Конечные состояния", "untitled": "Процесс"},
}
SECTION_WORDS = {
    "participants": ("participant", "lane", "pool", "role", "actor", "участник", "дорожк", "пул", "роль", "исполнител"),
    "steps": ("step", "шаг", "порядок", "ход процесса", "algorithm", "алгоритм"),
    "ends": ("end state", "end", "outcome", "result", "конечн", "заверш", "итог", "результат"),
}
STEP_LINE = re.compile(r"^\s*(\d{1,3})[.)]\s+(.+)$")
BULLET_LINE = re.compile(r"^\s*[-*•–]\s+(.+)$")
BRANCH_START = re.compile(r"^(if|when|otherwise|else|yes|no|если|иначе|в противном случае|да|нет)\b", re.IGNORECASE)
STEP_TARGET = re.compile(r"(?:step|шаг[ауе]?|→|->)\s*(\d{1,3})", re.IGNORECASE)
END_TARGET = re.compile(r"(?:\bend\b|конец|заверш\w*)\s*:?\s*(.*)$", re.IGNORECASE)
CYRILLIC = re.compile(r"[а-яё]", re.IGNORECASE)
LATIN = re.compile(r"[a-z]", re.IGNORECASE)


@dataclass
class Branch:
    condition: str
    target_step: int | None = None
    target_end: str = ""


@dataclass
class Step:
    number: int
    text: str
    branches: list[Branch] = field(default_factory=list)


@dataclass
class StructuredDescription:
    title: str
    language: str
    summary: str = ""
    participants: list[str] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    end_states: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)

    def to_markdown(self) -> str:
        words = HEADINGS[self.language]
        lines = [f"# {self.title}", ""]
        if self.summary:
            lines += [self.summary, ""]
        if self.participants:
            lines += [f"## {words['participants']}", *[f"- {name}" for name in self.participants], ""]
        lines.append(f"## {words['steps']}")
        for step in self.steps:
            lines.append(f"{step.number}. {step.text}")
            lines += [f"   - {branch_text(branch, self.language)}" for branch in step.branches]
        if self.end_states:
            lines += ["", f"## {words['ends']}", *[f"- {end}" for end in self.end_states]]
        return "\n".join(lines).strip() + "\n"


def branch_text(branch: Branch, language: str) -> str:
    if branch.target_step is not None:
        target = f"перейти к шагу {branch.target_step}" if language == "ru" else f"go to step {branch.target_step}"
    elif branch.target_end:
        target = f"конец: {branch.target_end}" if language == "ru" else f"end: {branch.target_end}"
    else:
        return branch.condition
    return f"{branch.condition}: {target}."


def detect_language(text: str) -> str:
    cyrillic = len(CYRILLIC.findall(text))
    latin = len(LATIN.findall(text))
    return "ru" if cyrillic > latin else "en"


def clean(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("**", "").replace("__", "")).strip().rstrip(".").strip()


def section_of(heading: str) -> str | None:
    lowered = heading.lower()
    for section in ("participants", "ends", "steps"):
        if any(word in lowered for word in SECTION_WORDS[section]):
            return section
    return None


def parse_branch(text: str) -> Branch:
    text = clean(text)
    condition, _, rest = text.partition(":") if ":" in text else (text, "", "")
    step = STEP_TARGET.search(rest or text)
    if step:
        return Branch(condition=clean(condition if rest else text[: step.start()]), target_step=int(step.group(1)))
    end = END_TARGET.search(rest or "")
    if end:
        return Branch(condition=clean(condition), target_end=clean(end.group(1)))
    return Branch(condition=text)


def structure_description(raw: str, language: str = "") -> StructuredDescription:
    """Parse the model's text leniently into a StructuredDescription."""
    language = language or detect_language(raw)
    result = StructuredDescription(title="", language=language if language in HEADINGS else "en")
    section = "steps"
    loose_lines: list[str] = []
    for line in raw.replace("\r\n", "\n").split("\n"):
        if not line.strip() or line.strip().startswith("```"):
            continue
        heading = re.match(r"^\s*(#{1,6})\s*(.+)$", line)
        if heading:
            if len(heading.group(1)) == 1 and not result.title:
                result.title = clean(heading.group(2))
            else:
                section = section_of(heading.group(2)) or section
            continue
        _add_line(result, section, line, loose_lines)
    _finish(result, loose_lines)
    return result


def _add_line(result: StructuredDescription, section: str, line: str, loose_lines: list[str]) -> None:
    step = STEP_LINE.match(line)
    bullet = BULLET_LINE.match(line)
    if section == "participants" and bullet:
        result.participants.append(clean(bullet.group(1)))
    elif section == "ends" and (bullet or step):
        result.end_states.append(clean((bullet or step).group(bullet and 1 or 2)))
    elif step:
        result.steps.append(Step(number=len(result.steps) + 1, text=clean(step.group(2))))
    elif bullet and result.steps and (line.startswith((" ", "\t")) or BRANCH_START.match(clean(bullet.group(1)))):
        result.steps[-1].branches.append(parse_branch(bullet.group(1)))
    elif bullet:
        result.steps.append(Step(number=len(result.steps) + 1, text=clean(bullet.group(1))))
    else:
        loose_lines.append(clean(line))


def _finish(result: StructuredDescription, loose_lines: list[str]) -> None:
    if not result.steps:
        # Nothing numbered: every remaining line is a step, so no text is lost.
        result.steps = [Step(number=n, text=text) for n, text in enumerate(loose_lines, 1) if text]
    elif loose_lines:
        # Prose around the steps is kept as a summary under the title.
        result.summary = " ".join(loose_lines)
    if not result.title:
        result.title = HEADINGS[result.language]["untitled"]
    result.title = result.title[:200]
