"""A conversion in every download format: Markdown, JSON (the process graph), Mermaid, BPMN 2.0,
SVG and PNG. The pages' download links and the API's export endpoint both use `export()`, so
they hand out the same files. All but Markdown and Mermaid code typed by the user are rendered
from the stored process graph."""

from __future__ import annotations

import json
from dataclasses import dataclass

from django.http import HttpResponse

from describer import graphs
from describer.graph.bpmn import render_bpmn
from describer.graph.mermaid import render_mermaid
from describer.models import Conversion


class NotAvailable(Exception):
    """The conversion has nothing to export in that format (yet); str() says why."""


@dataclass(frozen=True)
class Export:
    content: bytes
    content_type: str
    filename: str

    def response(self) -> HttpResponse:
        response = HttpResponse(self.content, content_type=self.content_type)
        response["Content-Disposition"] = f'attachment; filename="{self.filename}"'
        return response


FORMATS = {
    # name: (file extension, content type)
    "markdown": ("md", "text/markdown; charset=utf-8"),
    "json": ("json", "application/json"),
    "mermaid": ("mmd", "text/plain; charset=utf-8"),
    "bpmn": ("bpmn", "application/xml"),
    "svg": ("svg", "image/svg+xml"),
    "png": ("png", "image/png"),
}
# Accept header → format, for the API's content negotiation.
MEDIA_TYPES = {
    "text/markdown": "markdown",
    "application/json": "json",
    "text/vnd.mermaid": "mermaid",
    "application/bpmn+xml": "bpmn",
    "application/xml": "bpmn",
    "image/svg+xml": "svg",
    "image/png": "png",
}


def default_format(conversion: Conversion) -> str:
    """What a conversion is first of all: a description, or a drawing."""
    return "markdown" if conversion.kind == Conversion.Kind.DIAGRAM_TO_TEXT else "mermaid"


def export(conversion: Conversion, fmt: str) -> Export:
    """Raises KeyError for an unknown format and NotAvailable when there is nothing to export."""
    extension, content_type = FORMATS[fmt]
    content = _RENDERERS[fmt](conversion)
    data = content if isinstance(content, bytes) else content.encode()
    return Export(data, content_type, f"{conversion.download_stem()}.{extension}")


def _graph(conversion: Conversion):
    graph = graphs.stored_graph(conversion.output_graph)
    if graph is None:
        raise NotAvailable("This conversion has no process graph yet.")
    return graph


def _markdown(conversion: Conversion) -> str:
    if not conversion.output_text:
        raise NotAvailable("This conversion has no description yet.")
    return conversion.output_text


def _json(conversion: Conversion) -> str:
    return json.dumps(_graph(conversion).model_dump(mode="json"), ensure_ascii=False, indent=2) + "\n"


def _mermaid(conversion: Conversion) -> str:
    # Text → diagram: the code as written (it may hold more than the graph takes).
    if conversion.output_mermaid:
        return conversion.output_mermaid.rstrip("\n") + "\n"
    return render_mermaid(_graph(conversion)).rstrip("\n") + "\n"


def _bpmn(conversion: Conversion) -> str:
    return render_bpmn(_graph(conversion))


def _svg(conversion: Conversion) -> str:
    from describer.graph.images import render_svg

    return render_svg(_graph(conversion))


def _png(conversion: Conversion) -> bytes:
    from describer.graph.images import ImageTooLarge, render_png

    try:
        return render_png(_graph(conversion))
    except ImageTooLarge as error:  # the message gives the size and the limits
        raise NotAvailable(str(error)) from None


_RENDERERS = {"markdown": _markdown, "json": _json, "mermaid": _mermaid, "bpmn": _bpmn, "svg": _svg, "png": _png}
