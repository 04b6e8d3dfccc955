"""ProcessGraph → SVG and PNG, drawn on the server from the BPMN layout (describer/graph/bpmn.py).

Both come from one `Scene`: the layout's pools, lanes, nodes and edges with every label already
wrapped and placed. Labels are measured with the DejaVu Sans the SVG names first and the PNG is
drawn with, so lines break where they fit in either file. The fonts come from Debian's
fonts-dejavu-core; without them neither drawing can be made, and the error says so.

The SVG is written by lxml, so every label is text, never markup; it has no scripts, no links
and no external references (its markers are defined inside it). The PNG is drawn with Pillow and
refuses sizes past MAX_SIDE and MAX_PIXELS before any memory is taken.
"""

from __future__ import annotations

import io
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Literal

from lxml import etree
from PIL import Image, ImageColor, ImageDraw, ImageFont

from describer.graph.bpmn import LANE_LABEL, NOT_XML, POOL_LABEL, ROW_H, Box, Layout, Point, layout
from describer.graph.model import Node, NodeKind, ProcessGraph

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")  # Debian's fonts-dejavu-core
FONT_FILES = {False: "DejaVuSans.ttf", True: "DejaVuSans-Bold.ttf"}
FONT_FAMILY = "'DejaVu Sans', 'Bitstream Vera Sans', Verdana, Arial, sans-serif"
# Pillow has no font fallback: characters DejaVu lacks (emoji, most pictographs) are drawn with
# Debian's fonts-symbola when it is there, else they stay DejaVu's empty box.
SYMBOL_FONT = Path("/usr/share/fonts/truetype/ancient-scripts/Symbola_hint.ttf")
SYMBOL_RANGES = ((0x2190, 0x2BFF), (0x1F000, 0x1FAFF))
SVG = "http://www.w3.org/2000/svg"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"

STROKE, FILL, STRIP = "#1f2328", "#ffffff", "#f1f3f5"
MAX_SIDE, MAX_PIXELS = 12_000, 60_000_000

MARGIN = 20
LINE_HEIGHT = 1.2
NODE_TEXT, OUTSIDE_TEXT, EDGE_TEXT, BAND_TEXT, TITLE_TEXT = 12, 11, 10, 12, 16
INSET = 6  # between a task's border and its text
OUTSIDE_WIDTH = 96  # an event's or gateway's label, below it: about a cell wide
EDGE_WIDTH = 96
SUBPROCESS_MARK = 14  # the square with a + at the bottom of a collapsed subprocess
ARROW = 10  # arrowhead length; half as wide on each side
DASH = (6, 4)  # message flows

Align = Literal["start", "middle", "end"]
Segment = tuple[Point, Point]
Fits = Callable[[str], bool]
Rect = tuple[float, float, float, float]  # x, y, width, height: a Box, or a label's plate
CIRCLES = (NodeKind.START, NodeKind.END, NodeKind.EVENT)
GATEWAYS = (NodeKind.DECISION, NodeKind.PARALLEL)


class ImageTooLarge(ValueError):
    """The PNG would be too large to draw; the message says how large and what is allowed."""


class FontsMissing(RuntimeError):
    """The server lacks the DejaVu fonts the drawings are measured and drawn with."""


# ---------------------------------------------------------------- the scene


@dataclass(frozen=True)
class Label:
    """Lines of text whose block starts at `top`; x is the left edge, centre or right edge (align)."""

    lines: tuple[str, ...]
    x: float
    top: float
    size: float
    width: float  # of the widest line
    align: Align = "middle"
    bold: bool = False
    turn: Point | None = None  # turned a quarter anticlockwise about this point (band names)

    @property
    def baselines(self) -> tuple[float, ...]:
        step = self.size * LINE_HEIGHT
        # 0.36 em below a line's middle: capitals and lower case look centred in their line
        return tuple(self.top + step * (i + 0.5) + 0.36 * self.size for i in range(len(self.lines)))

    def bounds(self) -> tuple[float, float, float, float]:
        """(left, top, right, bottom) as drawn, the turn applied."""
        left = self.x - {"start": 0, "middle": self.width / 2, "end": self.width}[self.align]
        bottom = self.top + self.size * LINE_HEIGHT * len(self.lines)
        if self.turn is None:
            return left, self.top, left + self.width, bottom
        cx, cy = self.turn  # x' = cx + (y - cy), y' = cy - (x - cx): SVG's rotate(-90)
        return cx + self.top - cy, cy - (left + self.width - cx), cx + bottom - cy, cy - (left - cx)


@dataclass(frozen=True)
class Shape:
    kind: str  # "pool", "lane" or a NodeKind value
    element: str  # the node id, or the pool's or lane's element id in the BPMN export
    box: Box
    label: Label | None


@dataclass(frozen=True)
class Arrow:
    source: str
    target: str
    points: tuple[Point, ...]
    message: bool  # between pools: dashed, with an open arrowhead
    label: Label | None


@dataclass(frozen=True)
class Scene:
    title: Label | None
    language: str
    bands: tuple[Shape, ...]  # pools, then lanes
    nodes: tuple[Shape, ...]
    arrows: tuple[Arrow, ...]
    origin: tuple[int, int]  # the top left corner of the drawing, in layout coordinates
    width: int
    height: int


def _scene(graph: ProcessGraph) -> Scene:
    geometry = layout(graph)
    bands = tuple(
        Shape(kind, region.element, region.box, _band_label(region.name, region.box, strip))
        for kind, strip, regions in (("pool", POOL_LABEL, geometry.pools), ("lane", LANE_LABEL, geometry.lanes))
        for region in regions
    )
    nodes = tuple(
        Shape(node.kind.value, node.id, geometry.boxes[node.id], _node_label(node, geometry.boxes[node.id]))
        for node in graph.nodes
    )
    arrows = tuple(_arrow(graph, index, geometry) for index in range(len(graph.edges)))
    title = _title(graph.title, geometry)
    left, top, right, bottom = _extent(bands, nodes, arrows, title)
    origin = (math.floor(left) - MARGIN, math.floor(top) - MARGIN)
    size = (math.ceil(right) + MARGIN - origin[0], math.ceil(bottom) + MARGIN - origin[1])
    return Scene(title, graph.language, bands, nodes, arrows, origin, *size)


def _band_label(name: str, box: Box, strip: int) -> Label | None:
    """Written bottom to top in the strip at the band's left, as bpmn-js does."""
    centre = (box.x + strip / 2, box.y + box.h / 2)
    lines = wrap(name, box.h - 10, BAND_TEXT, max_lines=2)
    return _label(lines, centre[0], centre[1] - _height(lines, BAND_TEXT) / 2, BAND_TEXT, turn=centre)


def _node_label(node: Node, box: Box) -> Label | None:
    """Inside a task; below an event or a gateway, down to the bottom of its row."""
    if node.kind in (NodeKind.TASK, NodeKind.SUBPROCESS):
        mark = SUBPROCESS_MARK + 4 if node.kind == NodeKind.SUBPROCESS else 0
        room = box.h - mark - 2 * INSET
        lines = wrap(node.label, box.w - 2 * INSET, NODE_TEXT, max_lines=int(room // (NODE_TEXT * LINE_HEIGHT)))
        middle = box.y + (box.h - mark) / 2
        return _label(lines, box.x + box.w / 2, middle - _height(lines, NODE_TEXT) / 2, NODE_TEXT)
    room = ROW_H / 2 - box.h / 2 - 2
    lines = wrap(node.label, OUTSIDE_WIDTH, OUTSIDE_TEXT, max_lines=max(1, int(room // (OUTSIDE_TEXT * LINE_HEIGHT))))
    return _label(lines, box.x + box.w / 2, box.bottom + 3, OUTSIDE_TEXT)


def _arrow(graph: ProcessGraph, index: int, geometry: Layout) -> Arrow:
    edge = graph.edges[index]
    points = tuple(geometry.waypoints[index])
    message = _pool_of(graph, edge.source) != _pool_of(graph, edge.target)
    return Arrow(edge.source, edge.target, points, message, _edge_label(edge.label, points))


def _pool_of(graph: ProcessGraph, node_id: str) -> str | None:
    """As in the BPMN export: a node's pool is its lane's; None is the implicit one."""
    lane = graph.node(node_id).lane
    return next(candidate.pool for candidate in graph.lanes if candidate.id == lane) if lane else None


def _edge_label(text: str, points: tuple[Point, ...]) -> Label | None:
    """A straight edge: above it, between the two shapes. An edge that bends: where it turns into
    its own row, left of the bend and above the row's line; the edges out of one gateway share
    their first segment, so labels there would lie on top of each other. A loop: under its
    corridor, the one free strip it has (the band's rows are above, the next corridor below)."""
    (x0, y0), (x1, _) = points[0], points[1]
    if len(points) < 4:
        lines = wrap(text, max(x1 - x0 - 8, 40), EDGE_TEXT, max_lines=3)
        return _label(lines, x0 + 4, y0 - 3 - _height(lines, EDGE_TEXT), EDGE_TEXT, "start")
    (x, y), (x_next, _) = points[2], points[3]
    if x_next < x:
        lines = wrap(text, max(x - x_next - 8, 40), EDGE_TEXT, max_lines=1)
        return _label(lines, x - 4, y + 1, EDGE_TEXT, "end")
    lines = wrap(text, EDGE_WIDTH, EDGE_TEXT, max_lines=2)
    return _label(lines, x - 4, y - 3 - _height(lines, EDGE_TEXT), EDGE_TEXT, "end")


def _title(title: str, geometry: Layout) -> Label | None:
    width = max((box.right for box in geometry.boxes.values()), default=0)
    lines = wrap(title, max(width, 480), TITLE_TEXT, max_lines=3, bold=True)
    return _label(lines, 0, -12 - _height(lines, TITLE_TEXT), TITLE_TEXT, "start", bold=True)


def _label(
    lines: tuple[str, ...], x: float, top: float, size: float, align: Align = "middle", *,
    bold: bool = False, turn: Point | None = None,
) -> Label | None:
    if not lines:
        return None
    width = max(_font(size, bold).getlength(line) for line in lines)
    return Label(lines, x, top, size, width, align, bold, turn)


def _height(lines: tuple[str, ...], size: float) -> float:
    return len(lines) * size * LINE_HEIGHT


def _extent(
    bands: tuple[Shape, ...], nodes: tuple[Shape, ...], arrows: tuple[Arrow, ...], title: Label | None
) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) of everything drawn."""
    boxes = [(s.box.x, s.box.y, s.box.right, s.box.bottom) for s in (*bands, *nodes)]
    boxes += [(x, y, x, y) for arrow in arrows for x, y in arrow.points]
    labels = [s.label for s in (*bands, *nodes, *arrows)] + [title]
    boxes += [label.bounds() for label in labels if label is not None]
    if not boxes:
        return 0, 0, 0, 0
    return min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)


# ---------------------------------------------------------------- text


def wrap(text: str, width: float, size: float, *, max_lines: int, bold: bool = False) -> tuple[str, ...]:
    """Lines of at most `width` px: the text's own line breaks first, then word by word; a word
    wider than a line is broken between characters. What does not fit into max_lines is cut
    with an ellipsis."""
    font = _font(size, bold)

    def fits(line: str) -> bool:
        return font.getlength(line) <= width

    clean = NOT_XML.sub("", text)  # what XML cannot carry the PNG should not show either
    lines = [line for paragraph in clean.splitlines() for line in _wrap_paragraph(paragraph, fits)]
    if len(lines) <= max_lines:
        return tuple(lines)
    kept = lines[: max(max_lines, 1)]
    return (*kept[:-1], _with_ellipsis(kept[-1], fits))


def _wrap_paragraph(paragraph: str, fits: Fits) -> list[str]:
    lines: list[str] = []
    line = ""
    for word in paragraph.split():
        candidate = f"{line} {word}" if line else word
        if fits(candidate):
            line = candidate
            continue
        if line:
            lines.append(line)
        *full, line = _break_word(word, fits)
        lines += full
    return [*lines, line] if line else lines


def _break_word(word: str, fits: Fits) -> list[str]:
    pieces = [""]
    for character in word:
        if pieces[-1] and not fits(pieces[-1] + character):
            pieces.append(character)
        else:
            pieces[-1] += character
    return pieces


def _with_ellipsis(line: str, fits: Fits) -> str:
    while line and not fits(line + "…"):
        line = line[:-1]
    return line.rstrip() + "…"


_fonts = threading.local()  # a FreeType face must not be used by two threads at once


def _symbol_font(size: float) -> ImageFont.FreeTypeFont | None:
    cache = _fonts.__dict__
    if ("symbols", size) not in cache:
        cache["symbols", size] = ImageFont.truetype(str(SYMBOL_FONT), size) if SYMBOL_FONT.is_file() else None
    return cache["symbols", size]


def _is_symbol(character: str) -> bool:
    return any(low <= ord(character) <= high for low, high in SYMBOL_RANGES)


def _runs(line: str) -> list[tuple[str, bool]]:
    """The line cut into runs of symbol and non-symbol characters, in order."""
    runs: list[tuple[str, bool]] = []
    for character in line:
        symbol = _is_symbol(character)
        if runs and runs[-1][1] == symbol:
            runs[-1] = (runs[-1][0] + character, symbol)
        else:
            runs.append((character, symbol))
    return runs


def _font(size: float, bold: bool = False) -> ImageFont.FreeTypeFont:
    cache = _fonts.__dict__
    if (size, bold) not in cache:
        path = FONT_DIR / FONT_FILES[bold]
        if not path.is_file():
            raise FontsMissing(
                f"{path} is missing: SVG and PNG drawings need DejaVu Sans. Install Debian's fonts-dejavu-core."
            )
        cache[size, bold] = ImageFont.truetype(str(path), size)
    return cache[size, bold]


# ---------------------------------------------------------------- geometry both drawings share


def _diamond(box: Box) -> list[Point]:
    cx, cy = box.x + box.w // 2, box.cy
    return [(cx, box.y), (box.right, cy), (cx, box.bottom), (box.x, cy)]


def _subprocess_mark(box: Box) -> Box:
    side = SUBPROCESS_MARK
    return Box(box.x + (box.w - side) // 2, box.bottom - side - 4, side, side)


def _marks(shape: Shape) -> list[Segment]:
    """The strokes inside a shape: a gateway's X or +, the + of a collapsed subprocess."""
    box = shape.box
    if shape.kind == NodeKind.SUBPROCESS:
        box, arm = _subprocess_mark(box), 4
    elif shape.kind == NodeKind.DECISION:
        cx, cy, arm = box.x + box.w / 2, box.cy, 8
        return [((cx - arm, cy - arm), (cx + arm, cy + arm)), ((cx + arm, cy - arm), (cx - arm, cy + arm))]
    elif shape.kind == NodeKind.PARALLEL:
        arm = 11
    else:
        return []
    cx, cy = box.x + box.w / 2, box.y + box.h / 2
    return [((cx - arm, cy), (cx + arm, cy)), ((cx, cy - arm), (cx, cy + arm))]


def _mark_width(kind: str) -> float:
    return 1.5 if kind == NodeKind.SUBPROCESS else 3


def _circle_width(kind: str) -> float:
    return {NodeKind.START: 2, NodeKind.END: 4}.get(kind, 1.5)  # BPMN: an end event's border is thick


def _arrowhead(before: Point, tip: Point) -> list[Point]:
    (x0, y0), (x1, y1) = before, tip
    length = math.hypot(x1 - x0, y1 - y0) or 1
    ux, uy = (x1 - x0) / length, (y1 - y0) / length
    bx, by = x1 - ux * ARROW, y1 - uy * ARROW
    return [(x1, y1), (bx - uy * ARROW / 2, by + ux * ARROW / 2), (bx + uy * ARROW / 2, by - ux * ARROW / 2)]


def _dashes(points: tuple[Point, ...]) -> list[Segment]:
    """A dashed polyline as its dashes; the pattern runs on across the bends."""
    on, off = DASH
    dashes: list[Segment] = []
    phase = 0.0  # distance into the current on+off period
    for (x0, y0), (x1, y1) in pairwise(points):
        length = math.hypot(x1 - x0, y1 - y0)
        at = 0.0
        while at < length:
            step = min((on - phase) if phase < on else (on + off - phase), length - at)
            if phase < on:
                a, b = at / length, (at + step) / length
                dashes.append(((x0 + (x1 - x0) * a, y0 + (y1 - y0) * a), (x0 + (x1 - x0) * b, y0 + (y1 - y0) * b)))
            at += step
            phase = (phase + step) % (on + off)
    return dashes


# ---------------------------------------------------------------- SVG


def render_svg(graph: ProcessGraph) -> str:
    """A standalone SVG document of the graph in BPMN's notation."""
    scene = _scene(graph)
    x, y = scene.origin
    root = etree.Element(
        _s("svg"),
        nsmap={None: SVG},
        attrib={
            "width": str(scene.width),
            "height": str(scene.height),
            "viewBox": f"{x} {y} {scene.width} {scene.height}",
            "font-family": FONT_FAMILY,
            "role": "img",
        },
    )
    if scene.language in ("en", "ru"):
        root.set(XML_LANG, scene.language)
    if scene.title:
        etree.SubElement(root, _s("title")).text = " ".join(scene.title.lines)
    root.append(_svg_defs())
    background = [_svg_band(band) for band in scene.bands]
    # Edges after nodes: they end on the borders, and their labels must stay on top.
    for element in (*background, *map(_svg_node, scene.nodes), *map(_svg_arrow, scene.arrows)):
        root.append(element)
    if scene.title:
        root.append(_svg_text(scene.title, "title"))
    for child in root:
        child.tail = "\n"
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + etree.tostring(root, encoding="unicode") + "\n"


def _svg_defs() -> etree._Element:
    defs = etree.Element(_s("defs"))
    head = f"M 0 0 L {ARROW} {_n(ARROW / 2)} L 0 {ARROW} Z"
    for marker_id, fill in (("ds-arrow", STROKE), ("ds-open-arrow", FILL)):
        marker = etree.SubElement(defs, _s("marker"), id=marker_id, viewBox=f"-1 -1 {ARROW + 2} {ARROW + 2}")
        size = str(ARROW + 2)  # the view box's extra unit each side keeps the head's outline whole
        marker.attrib.update(
            {"refX": str(ARROW), "refY": _n(ARROW / 2), "markerWidth": size, "markerHeight": size,
             "markerUnits": "userSpaceOnUse", "orient": "auto"}
        )
        etree.SubElement(marker, _s("path"), d=head, fill=fill, stroke=STROKE, attrib={"stroke-width": "1"})
    start = etree.SubElement(defs, _s("marker"), id="ds-message-start", viewBox="-5 -5 10 10", refX="0", refY="0")
    start.attrib.update({"markerWidth": "10", "markerHeight": "10", "markerUnits": "userSpaceOnUse"})
    etree.SubElement(start, _s("circle"), r="3.5", fill=FILL, stroke=STROKE, attrib={"stroke-width": "1"})
    return defs


def _svg_band(band: Shape) -> etree._Element:
    group = etree.Element(_s("g"), {"class": band.kind, "data-id": band.element})
    box, strip = band.box, POOL_LABEL if band.kind == "pool" else LANE_LABEL
    strip_box = Box(box.x, box.y, strip, box.h)
    group.append(_svg_rect(strip_box, fill=STRIP, **{"stroke-width": "1.5"}))
    group.append(_svg_rect(box, fill="none", **{"stroke-width": "1.5", "class": "shape"}))
    if band.label:
        group.append(_svg_text(band.label))
    return group


def _svg_node(node: Shape) -> etree._Element:
    group = etree.Element(_s("g"), {"class": f"node {node.kind}", "data-id": node.element})
    box = node.box
    cx, cy = box.x + box.w / 2, box.y + box.h / 2
    if node.kind in CIRCLES:
        width = _circle_width(node.kind)
        # r less half the stroke: the border stays inside the box, as in the PNG
        circle = {"cx": _n(cx), "cy": _n(cy), "r": _n(box.w / 2 - width / 2), "fill": FILL, "stroke": STROKE}
        etree.SubElement(group, _s("circle"), circle | {"stroke-width": _n(width), "class": "shape"})
        if node.kind == NodeKind.EVENT:  # an intermediate event's double border
            inner = circle | {"r": _n(box.w / 2 - 3.75), "fill": "none", "stroke-width": "1.5"}
            etree.SubElement(group, _s("circle"), inner)
    elif node.kind in GATEWAYS:
        points = " ".join(f"{x},{y}" for x, y in _diamond(box))
        attributes = {"points": points, "fill": FILL, "stroke": STROKE, "stroke-width": "2", "class": "shape"}
        etree.SubElement(group, _s("polygon"), attributes)
    else:
        group.append(_svg_rect(box, fill=FILL, rx="10", **{"stroke-width": "2", "class": "shape"}))
    if node.kind == NodeKind.SUBPROCESS:
        group.append(_svg_rect(_subprocess_mark(box), fill="none", **{"stroke-width": "1.5"}))
    marks = _marks(node)
    if marks:
        d = " ".join(f"M {_n(a[0])} {_n(a[1])} L {_n(b[0])} {_n(b[1])}" for a, b in marks)
        attributes = {"stroke-width": _n(_mark_width(node.kind)), "stroke-linecap": "round"}
        etree.SubElement(group, _s("path"), d=d, fill="none", stroke=STROKE, attrib=attributes)
    if node.label:
        group.append(_svg_text(node.label))
    return group


def _svg_arrow(arrow: Arrow) -> etree._Element:
    group = etree.Element(_s("g"), {"class": "edge", "data-source": arrow.source, "data-target": arrow.target})
    d = "M " + " L ".join(f"{_n(x)} {_n(y)}" for x, y in arrow.points)
    attributes = {"fill": "none", "stroke": STROKE, "stroke-width": "1.5", "stroke-linejoin": "round"}
    if arrow.message:
        attributes |= {"stroke-dasharray": " ".join(map(str, DASH)), "marker-start": "url(#ds-message-start)"}
    attributes["marker-end"] = "url(#ds-open-arrow)" if arrow.message else "url(#ds-arrow)"
    etree.SubElement(group, _s("path"), d=d, attrib=attributes)
    if arrow.label:
        left, top, right, bottom = arrow.label.bounds()
        group.append(_svg_rect((left - 2, top, right - left + 4, bottom - top), fill=FILL, stroke="none", rx="2"))
        group.append(_svg_text(arrow.label))
    return group


def _svg_rect(rect: Rect, **attributes: str) -> etree._Element:
    x, y, w, h = rect
    geometry = {"x": _n(x), "y": _n(y), "width": _n(w), "height": _n(h), "stroke": STROKE}
    return etree.Element(_s("rect"), geometry | attributes)


def _svg_text(label: Label, css_class: str = "label") -> etree._Element:
    attributes = {"class": css_class, "font-size": _n(label.size), "text-anchor": label.align, "fill": STROKE}
    if label.bold:
        attributes["font-weight"] = "bold"
    if label.turn:
        attributes["transform"] = f"rotate(-90 {_n(label.turn[0])} {_n(label.turn[1])})"
    text = etree.Element(_s("text"), attributes)
    for line, baseline in zip(label.lines, label.baselines, strict=True):
        etree.SubElement(text, _s("tspan"), x=_n(label.x), y=_n(baseline)).text = line
    return text


def _s(tag: str) -> str:
    return f"{{{SVG}}}{tag}"


def _n(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


# ---------------------------------------------------------------- PNG


def render_png(graph: ProcessGraph, scale: float = 2.0, background: str = "white") -> bytes:
    """The SVG's drawing as a PNG, `scale` pixels per SVG unit; background "transparent" or a
    colour ("white", "#f6f8fa"). Raises ImageTooLarge (a ValueError) past MAX_SIDE or MAX_PIXELS."""
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"The scale must be a positive number such as 1 or 2, not {scale!r}.")
    paper = _colour(background)
    scene = _scene(graph)
    size = _png_size(scene, scale)
    canvas = _Canvas(Image.new("RGBA", size, paper), scale, scene.origin)
    for band in scene.bands:
        canvas.band(band)
    for node in scene.nodes:
        canvas.node(node)
    for arrow in scene.arrows:
        canvas.arrow(arrow)
    canvas.text(scene.title)
    image = canvas.image if paper[3] < 255 else canvas.image.convert("RGB")
    output = io.BytesIO()
    image.save(output, "PNG")
    return output.getvalue()


def _colour(background: str) -> tuple[int, int, int, int]:
    if background.strip().lower() == "transparent":
        return (255, 255, 255, 0)
    try:
        return ImageColor.getcolor(background, "RGBA")
    except ValueError:
        raise ValueError(
            f'The background {background!r} is no colour: use "transparent", a name such as "white" or "#rrggbb".'
        ) from None


def _png_size(scene: Scene, scale: float) -> tuple[int, int]:
    width, height = math.ceil(scene.width * scale), math.ceil(scene.height * scale)
    if max(width, height) > MAX_SIDE or width * height > MAX_PIXELS:
        raise ImageTooLarge(
            f"The drawing would be {width}×{height} px at scale {scale:g}; a PNG may be at most "
            f"{MAX_SIDE:,} px a side and {MAX_PIXELS // 1_000_000} megapixels. "
            "Use a smaller scale, or download the SVG, which has no size limit."
        )
    return width, height


class _Canvas:
    """Scene coordinates onto an image: shifted to the origin, times the scale."""

    def __init__(self, image: Image.Image, scale: float, origin: tuple[int, int]) -> None:
        self.image, self.scale, self.origin = image, scale, origin
        self.draw = ImageDraw.Draw(image)

    def xy(self, point: Point | tuple[float, float]) -> tuple[float, float]:
        return (point[0] - self.origin[0]) * self.scale, (point[1] - self.origin[1]) * self.scale

    def box(self, rect: Rect) -> list[float]:
        x, y, w, h = rect
        return [*self.xy((x, y)), *self.xy((x + w, y + h))]

    def px(self, width: float) -> int:
        return max(1, round(width * self.scale))

    def band(self, band: Shape) -> None:
        strip = POOL_LABEL if band.kind == "pool" else LANE_LABEL
        strip_box = Box(band.box.x, band.box.y, strip, band.box.h)
        self.draw.rectangle(self.box(strip_box), fill=STRIP, outline=STROKE, width=self.px(1.5))
        self.draw.rectangle(self.box(band.box), outline=STROKE, width=self.px(1.5))
        self.text(band.label)

    def node(self, node: Shape) -> None:
        box, kind = node.box, node.kind
        if kind in CIRCLES:
            self.draw.ellipse(self.box(box), fill=FILL, outline=STROKE, width=self.px(_circle_width(kind)))
            if kind == NodeKind.EVENT:
                inner = Box(box.x + 3, box.y + 3, box.w - 6, box.h - 6)
                self.draw.ellipse(self.box(inner), outline=STROKE, width=self.px(1.5))
        elif kind in GATEWAYS:
            self.draw.polygon([self.xy(p) for p in _diamond(box)], fill=FILL, outline=STROKE, width=self.px(2))
        else:
            self.draw.rounded_rectangle(self.box(box), 10 * self.scale, fill=FILL, outline=STROKE, width=self.px(2))
        if kind == NodeKind.SUBPROCESS:
            self.draw.rectangle(self.box(_subprocess_mark(box)), outline=STROKE, width=self.px(1.5))
        for a, b in _marks(node):
            self.draw.line([self.xy(a), self.xy(b)], fill=STROKE, width=self.px(_mark_width(kind)))
        self.text(node.label)

    def arrow(self, arrow: Arrow) -> None:
        width = self.px(1.5)
        if arrow.message:
            for a, b in _dashes(arrow.points):
                self.draw.line([self.xy(a), self.xy(b)], fill=STROKE, width=width)
            x, y = self.xy(arrow.points[0])
            r = 3.5 * self.scale
            self.draw.ellipse([x - r, y - r, x + r, y + r], fill=FILL, outline=STROKE, width=self.px(1))
        else:
            self.draw.line([self.xy(p) for p in arrow.points], fill=STROKE, width=width, joint="curve")
        head = [self.xy(p) for p in _arrowhead(arrow.points[-2], arrow.points[-1])]
        self.draw.polygon(head, fill=FILL if arrow.message else STROKE, outline=STROKE, width=self.px(1))
        if arrow.label:
            left, top, right, bottom = arrow.label.bounds()
            plate = (left - 2, top, right - left + 4, bottom - top)  # keeps the label legible across a line
            self.draw.rounded_rectangle(self.box(plate), 2 * self.scale, fill=FILL)
            self.text(arrow.label)

    def text(self, label: Label | None) -> None:
        if label is None:
            return
        if label.turn is not None:
            self._turned_text(label)
            return
        self._lines(self.draw, label, self.xy)

    def _lines(self, draw: ImageDraw.ImageDraw, label: Label, to_px: Callable[[Point], tuple[float, float]]) -> None:
        font = _font(label.size * self.scale, label.bold)
        symbols = _symbol_font(label.size * self.scale)
        share = {"start": 0.0, "middle": 0.5, "end": 1.0}[label.align]
        for line, baseline in zip(label.lines, label.baselines, strict=True):
            runs = [(text, symbols if symbol and symbols else font) for text, symbol in _runs(line)]
            x, y = to_px((label.x, baseline))
            x -= share * sum(run_font.getlength(text) for text, run_font in runs)
            for text, run_font in runs:  # left to right, each run in the font that has its glyphs
                draw.text((x, y), text, fill=STROKE, font=run_font, anchor="ls")
                x += run_font.getlength(text)

    def _turned_text(self, label: Label) -> None:
        """Pillow writes only horizontally: the lines go onto their own image, turned, then laid on."""
        upright = Label(label.lines, label.x, label.top, label.size, label.width, label.align, label.bold)
        left, top, right, bottom = upright.bounds()
        scale = self.scale
        sheet = Image.new("RGBA", (math.ceil((right - left) * scale) + 2, math.ceil((bottom - top) * scale) + 2))
        self._lines(ImageDraw.Draw(sheet), upright, lambda p: ((p[0] - left) * scale + 1, (p[1] - top) * scale + 1))
        turned = sheet.rotate(90, expand=True)
        x, y = self.xy(label.bounds()[:2])
        self.image.alpha_composite(turned, (max(0, round(x) - 1), max(0, round(y) - 1)))


def drawn_labels(graph: ProcessGraph, scale: float = 2.0) -> list[tuple[str, tuple[int, int, int, int]]]:
    """Every text render_png draws at `scale`, as (its lines joined by spaces, its box (x, y, w,
    h) in the PNG's pixels): the ground truth of what reading the PNG's text should find. A text
    cut short with an ellipsis is given as drawn."""
    scene = _scene(graph)
    labels = [scene.title] + [shape.label for shape in (*scene.bands, *scene.nodes, *scene.arrows)]
    drawn = []
    for label in labels:
        if label is None:
            continue
        left, top, right, bottom = label.bounds()
        x, y = (left - scene.origin[0]) * scale, (top - scene.origin[1]) * scale
        box = (round(x), round(y), round((right - left) * scale), round((bottom - top) * scale))
        drawn.append((" ".join(label.lines), box))
    return drawn
