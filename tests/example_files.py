"""Helpers for the retrieval-example tests: folders in the import layout."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.conftest import diagram_png

STARTER = Path(__file__).resolve().parent.parent / "examples" / "starter"
# A few of each kind: flowchart and BPMN, English and Russian.
MIXED = (
    "flow-en-make-tea",
    "flow-en-login-attempts",
    "flow-ru-oplata-zakaza",
    "bpmn-en-purchase-request",
    "bpmn-ru-zakupka",
    "bpmn-ru-vypusk-karty",
)


def copy_starter(folder: Path, *names: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        for suffix in (".png", ".txt", ".mmd"):
            shutil.copy(STARTER / f"{name}{suffix}", folder)
    return folder


def write_example(folder: Path, name: str, description: str = "", *, image: bytes | None = None, mermaid=None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.png").write_bytes(image if image is not None else diagram_png(name))
    (folder / f"{name}.txt").write_text(description or f"# {name}\n\n## Steps\n1. Do {name}\n", encoding="utf-8")
    if mermaid is not None:
        (folder / f"{name}.mmd").write_text(mermaid, encoding="utf-8")
