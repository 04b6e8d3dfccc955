"""The process graph of a conversion: read from the model's text or the Mermaid code, stored
with the conversion, and rendered into every format (describer/graph/ has the pure readers and
renderers; this module is where Django's settings and rows meet them)."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.conf import settings
from pydantic import ValidationError

from describer.graph.mermaid import read_mermaid, render_mermaid
from describer.graph.model import ProcessGraph
from describer.graph.text import read_text, render_text


@dataclass
class GraphResult:
    """A conversion's graph (None when none could be made) and what it could not take."""

    graph: ProcessGraph | None
    notes: dict = field(default_factory=dict)

    def fields(self) -> dict:
        return {"output_graph": self.graph.model_dump(mode="json") if self.graph else None, "graph_notes": self.notes}


def from_description(text: str, language: str = "") -> GraphResult:
    """The graph of a model's description; its not-understood lines and problems are kept."""
    try:
        reading = read_text(text, language, max_nodes=settings.GRAPH_MAX_NODES)
    except (ValidationError, ValueError) as error:
        return GraphResult(None, {"not_understood": [], "problems": [_first_error(error)]})
    return GraphResult(reading.graph, {"not_understood": reading.not_understood, "problems": reading.problems})


def from_mermaid(code: str) -> GraphResult:
    """The graph of Mermaid code; the lines outside the accepted subset are listed with the reason."""
    try:
        reading = read_mermaid(code, max_nodes=settings.GRAPH_MAX_NODES)
    except (ValidationError, ValueError) as error:
        return GraphResult(None, {"unsupported": [], "problems": [_first_error(error)]})
    unsupported = [[line, reason] for line, reason in reading.unsupported]
    return GraphResult(reading.graph, {"unsupported": unsupported, "problems": []})


def description_text(graph: ProcessGraph, language: str = "") -> str:
    """The canonical description shown and downloaded: rendered from the graph, so they agree."""
    return render_text(graph, language or graph.language or "en")


def stored_graph(data: dict | None) -> ProcessGraph | None:
    if not data:
        return None
    return ProcessGraph.model_validate(data, context={"max_nodes": settings.GRAPH_MAX_NODES})


def mermaid_of(data: dict | None) -> str:
    graph = stored_graph(data)
    return render_mermaid(graph) if graph else ""


def _first_error(error: Exception) -> str:
    if isinstance(error, ValidationError):
        first = error.errors()[0]
        return str(first.get("ctx", {}).get("error") or first.get("msg"))
    return str(error)
