"""Graph → SVG and PNG, drawn on the server from the BPMN layout: the SVG is well-formed XML
with one shape per node and one arrow per edge where the BPMN export puts them, every label
as text and inside the picture, no scripts or external references; the PNG is the same drawing
at the asked scale, on white or transparent; hostile labels stay text; huge drawings are refused."""

from __future__ import annotations

import io
import math
import re
from concurrent.futures import ThreadPoolExecutor
from xml.etree.ElementTree import Element

import defusedxml.ElementTree as SafeET
import pytest
from PIL import Image, ImageFont

from describer.graph import images
from describer.graph.model import ProcessGraph
from describer.graph.bpmn import render_bpmn
from describer.graph.images import ImageTooLarge, render_png, render_svg
from tests.test_graph_bpmn import (
    DECISION_LOOP, EVENTS_AND_SUBPROCESS, GRAPHS, PARALLEL, SEQUENCE, TWO_POOLS, bounds, make,
)

SVG = "{http://www.w3.org/2000/svg}"
FONTS = "/usr/share/fonts/truetype/dejavu/"
graphs = pytest.mark.parametrize("graph", list(GRAPHS.values()), ids=list(GRAPHS))
SHAPE_TAG = {
    "start": "circle", "end": "circle", "event": "circle", "decision": "polygon", "parallel": "polygon",
    "task": "rect", "subprocess": "rect",
}
# All a drawing needs; a label that became markup would add an element of another kind.
DRAWING_TAGS = {"svg", "title", "defs", "marker", "g", "path", "circle", "rect", "polygon", "text", "tspan"}
HOSTILE = [
    "<script>alert('x')</script>",
    "\"'&<>",
    "#quot;quoted#quot; #35;1 #lt;",
    "Отпуск 🎉👩‍💼",
    "one\ntwo\r\nthree",
    "&amp; &#60; ]]> <![CDATA[x]]>",
    '"/><script>x</script><text>',
]


# --- helpers over the SVG ------------------------------------------------------------------------


def parse(svg: str) -> Element:
    """defusedxml, DTDs refused: what a careful client would do."""
    return SafeET.fromstring(svg.encode(), forbid_dtd=True)


def groups(root: Element, css_class: str) -> list[Element]:
    return [g for g in root.iter(f"{SVG}g") if css_class in g.get("class", "").split()]


def node_groups(root: Element) -> dict[str, Element]:
    return {g.get("data-id"): g for g in groups(root, "node")}


def the_shape(group: Element) -> Element:
    [shape] = [child for child in group if child.get("class") == "shape"]
    return shape


def squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def shown(group: Element) -> str:
    """The text a group's label shows, its line breaks and wrapping left out."""
    return "".join(squash("".join(text.itertext())) for text in group.iter(f"{SVG}text"))


def shape_box(shape: Element) -> tuple[float, float, float, float]:
    """(x, y, width, height) of a node's shape."""
    if shape.tag == f"{SVG}rect":
        return tuple(float(shape.get(key)) for key in ("x", "y", "width", "height"))
    if shape.tag == f"{SVG}circle":
        cx, cy = float(shape.get("cx")), float(shape.get("cy"))
        r = float(shape.get("r")) + float(shape.get("stroke-width", 0)) / 2  # the border lies inside the box
        return cx - r, cy - r, 2 * r, 2 * r
    xs, ys = zip(*(map(float, point.split(",")) for point in shape.get("points").split()), strict=True)
    return min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)


def view_box(root: Element) -> tuple[float, float, float, float]:
    x, y, w, h = map(float, root.get("viewBox").split())
    return x, y, x + w, y + h


def extents(root: Element) -> list[tuple[str, tuple[float, float, float, float]]]:
    """(what, (left, top, right, bottom)) of every shape, path and line of text drawn."""
    markers = {id(e) for defs in root.iter(f"{SVG}defs") for e in defs.iter()}  # in their own coordinates
    found = []
    for element in root.iter():
        tag = element.tag.removeprefix(SVG)
        if id(element) in markers:
            continue
        if tag == "path":
            numbers = [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", element.get("d"))]
            xs, ys = numbers[0::2], numbers[1::2]
            found.append(("path", (min(xs), min(ys), max(xs), max(ys))))
        elif tag in ("rect", "circle", "polygon"):
            x, y, w, h = shape_box(element)
            found.append((tag, (x, y, x + w, y + h)))
        elif tag == "text":
            found += [("text " + (line.text or ""), _line_extent(element, line)) for line in element]
    return found


def _line_extent(text: Element, line: Element) -> tuple[float, float, float, float]:
    """A tspan's box, measured with the DejaVu Sans the SVG names first, its rotation applied."""
    size = float(text.get("font-size"))
    font = ImageFont.truetype(FONTS + ("DejaVuSans-Bold.ttf" if text.get("font-weight") else "DejaVuSans.ttf"), size)
    width = font.getlength(line.text or "")
    x, y = float(line.get("x")), float(line.get("y"))
    left = x - {"start": 0, "middle": width / 2, "end": width}[text.get("text-anchor")]
    corners = [(left, y - size), (left + width, y - size), (left, y + size * 0.25), (left + width, y + size * 0.25)]
    if turn := re.fullmatch(r"rotate\(-90 ([\d.-]+) ([\d.-]+)\)", text.get("transform", "")):
        cx, cy = map(float, turn.groups())
        corners = [(cx + (py - cy), cy - (px - cx)) for px, py in corners]
    xs, ys = zip(*corners, strict=True)
    return min(xs), min(ys), max(xs), max(ys)


# --- helpers over the PNG ------------------------------------------------------------------------


def png(graph, **options) -> Image.Image:
    image = Image.open(io.BytesIO(render_png(graph, **options)))
    image.load()
    return image


def rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))


def has_colour(image: Image.Image, box: tuple[int, int, int, int], colour: tuple[int, int, int]) -> bool:
    crop = image.convert("RGB").crop(box)
    return any(pixel == colour for pixel in crop.getdata())


# --- the SVG -----------------------------------------------------------------------------------


@graphs
def test_the_svg_has_one_bpmn_shape_per_node_in_the_graphs_order(graph):
    root = parse(render_svg(graph))

    assert root.tag == f"{SVG}svg"
    nodes = node_groups(root)
    assert list(nodes) == [node.id for node in graph.nodes]
    for node in graph.nodes:
        assert the_shape(nodes[node.id]).tag == f"{SVG}{SHAPE_TAG[node.kind]}", node.id


@graphs
def test_the_svg_has_one_path_with_an_arrowhead_per_edge(graph):
    root = parse(render_svg(graph))
    markers = {marker.get("id") for marker in root.iter(f"{SVG}marker")}

    arrows = groups(root, "edge")

    assert [(g.get("data-source"), g.get("data-target")) for g in arrows] == [(e.source, e.target) for e in graph.edges]
    for arrow in arrows:
        [path] = arrow.iter(f"{SVG}path")
        assert re.fullmatch(r"url\(#([\w-]+)\)", path.get("marker-end")).group(1) in markers


@graphs
def test_shapes_and_arrows_sit_where_the_bpmn_export_puts_them(graph):
    """One layout for every format: the SVG's node boxes are the BPMN diagram's bounds."""
    di = bounds(render_bpmn(graph))
    root = parse(render_svg(graph))

    for node_id, group in node_groups(root).items():
        assert shape_box(the_shape(group)) == pytest.approx(di[node_id]), node_id


@graphs
def test_nothing_lies_outside_the_view_box(graph):
    root = parse(render_svg(graph))
    left, top, right, bottom = view_box(root)
    assert (float(root.get("width")), float(root.get("height"))) == (right - left, bottom - top)

    drawn = extents(root)

    assert len(drawn) > len(graph.nodes) + len(graph.edges)
    outside = [(what, box) for what, box in drawn if box[0] < left or box[1] < top or box[2] > right or box[3] > bottom]
    assert outside == []


@graphs
def test_every_label_appears_as_text(graph):
    root = parse(render_svg(graph))
    nodes = node_groups(root)
    edge_groups = groups(root, "edge")
    bands = {g.get("data-id"): g for g in [*groups(root, "pool"), *groups(root, "lane")]}

    for node in graph.nodes:
        assert shown(nodes[node.id]) == squash(node.label), node.id
    for edge, group in zip(graph.edges, edge_groups, strict=True):
        assert shown(group) == squash(edge.label)
    for lane in graph.lanes:
        assert shown(bands[f"lane.{lane.id}"]) == squash(lane.name)
    for pool in graph.pools:
        assert shown(bands[f"pool.{pool.id}"]) == squash(pool.name)
    [title] = [text for text in root.iter(f"{SVG}text") if text.get("class") == "title"]
    assert squash("".join(title.itertext())) == squash(graph.title)


def test_gateways_events_and_subprocesses_carry_their_bpmn_markers():
    parallel = node_groups(parse(render_svg(PARALLEL)))
    decision = node_groups(parse(render_svg(DECISION_LOOP)))
    events = node_groups(parse(render_svg(EVENTS_AND_SUBPROCESS)))

    def strokes(group: Element) -> list[tuple[float, ...]]:
        [path] = group.iter(f"{SVG}path")
        numbers = [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", path.get("d"))]
        return [tuple(numbers[i : i + 4]) for i in range(0, len(numbers), 4)]

    assert all(x1 == x2 or y1 == y2 for x1, y1, x2, y2 in strokes(parallel["fork"])), "a + in a parallel gateway"
    assert all(x1 != x2 and y1 != y2 for x1, y1, x2, y2 in strokes(decision["d"])), "an X in an exclusive one"
    width = {node: float(the_shape(events[node]).get("stroke-width")) for node in ("s", "e")}
    assert width["e"] >= 2 * width["s"], "an end event has a thick border"
    assert len(list(events["wait"].iter(f"{SVG}circle"))) == 2, "an intermediate event has a double border"
    assert len(list(events["close"].iter(f"{SVG}rect"))) == 2, "a collapsed subprocess has its + square"
    assert len(list(events["close"].iter(f"{SVG}path"))) == 1


def test_flows_between_pools_are_dashed_message_flows_and_the_others_solid():
    root = parse(render_svg(TWO_POOLS))
    dashed = {
        (g.get("data-source"), g.get("data-target")): next(g.iter(f"{SVG}path")).get("stroke-dasharray") is not None
        for g in groups(root, "edge")
    }
    assert dashed == {("s", "order"): False, ("order", "get"): True, ("get", "ship"): False,
                      ("ship", "pay"): True, ("pay", "e"): False}


def test_long_labels_are_wrapped_inside_their_task_and_cut_with_an_ellipsis():
    words = "Check the customer's documents against the register " * 4
    root = parse(render_svg(make([("a", "task", words, None)], [])))
    group = node_groups(root)["a"]
    x, y, w, h = shape_box(the_shape(group))
    [text] = group.iter(f"{SVG}text")

    lines = list(text)

    assert len(lines) > 2
    assert lines[-1].text.endswith("…")
    for line in lines:
        left, top, right, bottom = _line_extent(text, line)
        assert x < left and right < x + w and y < top and bottom < y + h, line.text


def test_line_breaks_in_a_label_become_separate_lines():
    root = parse(render_svg(make([("a", "task", "one\ntwo\r\nthree", None)], [])))
    [text] = node_groups(root)["a"].iter(f"{SVG}text")
    assert [line.text for line in text] == ["one", "two", "three"]
    assert len({line.get("y") for line in text}) == 3


@graphs
def test_the_svg_has_no_scripts_links_or_external_references(graph):
    root = parse(render_svg(graph))
    for element in root.iter():
        assert element.tag.removeprefix(SVG) not in {"script", "foreignObject", "image", "use", "a", "style", "iframe"}
        for name, value in element.attrib.items():
            assert not name.lower().startswith("on") and "href" not in name, (element.tag, name)
            assert "url(" not in value or re.fullmatch(r"url\(#[\w-]+\)", value), value
            assert "//" not in value and "@import" not in value, value


def test_text_is_set_in_dejavu_sans_with_generic_fallbacks():
    root = parse(render_svg(SEQUENCE))
    families = [family.strip(" '\"") for family in root.get("font-family").split(",")]
    assert families[0] == "DejaVu Sans" and families[-1] == "sans-serif"


def test_the_svg_says_the_graphs_language():
    assert parse(render_svg(make([], [], language="ru"))).get("{http://www.w3.org/XML/1998/namespace}lang") == "ru"


# --- hostile labels ----------------------------------------------------------------------------


def everywhere(label: str):
    """A graph with the label in every place a label goes."""
    return make(
        [(node, kind, label, "l") for node, kind in (("s", "start"), ("t", "task"), ("d", "decision"), ("e", "end"))],
        [("s", "t", label), ("t", "d", label), ("d", "e", label), ("d", "t", label)],
        lanes=[("l", label, "p")],
        pools=[("p", label)],
        title=label,
        language="ru",
    )


@pytest.mark.parametrize("label", HOSTILE)
def test_hostile_labels_stay_text_wherever_they_go(label):
    svg = render_svg(everywhere(label))
    root = parse(svg)

    assert {element.tag.removeprefix(SVG) for element in root.iter()} <= DRAWING_TAGS
    assert "<script" not in svg
    # In a task and in the title it is whole; elsewhere there is less room, and it may be cut.
    assert shown(node_groups(root)["t"]) == squash(label)
    [title] = [text for text in root.iter(f"{SVG}text") if text.get("class") == "title"]
    assert squash("".join(title.itertext())) == squash(label)
    for group in [*node_groups(root).values(), *groups(root, "edge"), *groups(root, "lane"), *groups(root, "pool")]:
        assert squash(label).startswith(shown(group).removesuffix("…")), shown(group)
        assert shown(group), group.get("class")


@pytest.mark.parametrize("label", HOSTILE)
def test_hostile_labels_do_not_stop_the_png(label):
    image = png(everywhere(label), scale=1)
    assert image.format == "PNG" and image.width > 100


def test_characters_xml_cannot_carry_are_dropped_not_fatal():
    root = parse(render_svg(make([("a", "task", "bell\x07 nul\x00 end", None)], [])))
    assert shown(node_groups(root)["a"]) == "bellnulend"


# --- the PNG -----------------------------------------------------------------------------------


@graphs
@pytest.mark.parametrize("scale", [1, 2, 1.5])
def test_the_png_is_the_svgs_size_times_the_scale(graph, scale):
    root = parse(render_svg(graph))
    image = png(graph, scale=scale)
    assert image.size == (math.ceil(float(root.get("width")) * scale), math.ceil(float(root.get("height")) * scale))


@graphs
def test_every_node_of_the_svg_is_drawn_at_its_place_in_the_png(graph):
    """Edges meet nodes only at their left and right sides: the border colour at the top and at
    the bottom of a node's box is the node's own outline."""
    root = parse(render_svg(graph))
    left, top, *_ = view_box(root)
    image = png(graph, scale=2)
    for node_id, group in node_groups(root).items():
        shape = the_shape(group)
        border = rgb(shape.get("stroke"))
        x, y, w, h = ((value - offset) * 2 for value, offset in zip(shape_box(shape), (left, top, 0, 0), strict=True))
        cx = round(x + w / 2)
        assert has_colour(image, (cx - 2, round(y), cx + 3, round(y) + 6), border), f"top of {node_id}"
        assert has_colour(image, (cx - 2, round(y + h) - 6, cx + 3, round(y + h)), border), f"bottom of {node_id}"


def test_the_png_is_opaque_white_by_default_and_transparent_when_asked():
    opaque, clear = png(SEQUENCE), png(SEQUENCE, background="transparent")
    start = the_shape(node_groups(parse(render_svg(SEQUENCE)))["s"])
    left, top, *_ = view_box(parse(render_svg(SEQUENCE)))
    inside_start = ((float(start.get("cx")) - left) * 2, (float(start.get("cy")) - top) * 2)

    assert opaque.mode == "RGB" and opaque.getpixel((0, 0)) == (255, 255, 255)
    assert clear.mode == "RGBA" and clear.getpixel((0, 0))[3] == 0
    assert clear.getpixel(inside_start) == (255, 255, 255, 255), "shapes keep their white fill"
    assert png(SEQUENCE, background="#ffeecc").getpixel((0, 0)) == (255, 238, 204)


def test_an_unknown_background_is_refused_saying_what_is_allowed():
    with pytest.raises(ValueError, match='"transparent".*"white"'):
        render_png(SEQUENCE, background="sparkly")


@pytest.mark.parametrize("scale", [0, -1, math.inf, math.nan])
def test_a_scale_that_is_not_a_positive_number_is_refused(scale):
    with pytest.raises(ValueError, match="positive number"):
        render_png(SEQUENCE, scale=scale)


def test_a_huge_graph_is_refused_with_its_size_and_the_limits():
    steps = [(f"n{i}", "task", f"Step {i}", None) for i in range(300)]
    huge = make(steps, [(f"n{i}", f"n{i + 1}", "") for i in range(299)])

    with pytest.raises(ImageTooLarge, match=r"would be \d+×\d+ px at scale 2; .*at most 12,000 px a side") as refused:
        render_png(huge)

    assert isinstance(refused.value, ValueError)
    assert len(node_groups(parse(render_svg(huge)))) == 300, "the SVG has no size limit"


def test_a_drawing_under_the_side_limit_is_still_refused_past_the_pixel_limit():
    root = parse(render_svg(DECISION_LOOP))
    width, height = float(root.get("width")), float(root.get("height"))
    scale = math.sqrt(61_000_000 / (width * height))
    assert max(width, height) * scale < 12_000

    with pytest.raises(ImageTooLarge, match="60 megapixels"):
        render_png(DECISION_LOOP, scale=scale)


def test_without_the_dejavu_fonts_the_error_names_the_package(monkeypatch, tmp_path):
    monkeypatch.setattr(images, "FONT_DIR", tmp_path)
    # Fonts are cached per thread: a new thread has loaded none yet.
    with ThreadPoolExecutor(1) as pool, pytest.raises(images.FontsMissing, match="fonts-dejavu-core"):
        pool.submit(render_svg, SEQUENCE).result()


def test_emoji_are_drawn_with_the_symbol_font_not_as_empty_boxes():
    from describer.graph.images import SYMBOL_FONT
    from describer.graph.model import Node

    assert SYMBOL_FONT.is_file(), "make test installs fonts-symbola"

    def png_of(label: str) -> bytes:
        return render_png(ProcessGraph(nodes=[Node(id="t", kind="task", label=label)]), scale=1)

    # DejaVu has neither glyph: both would be the same empty box.
    assert png_of("🚀") != png_of("🛸")
    assert png_of("Ship 🚀") != png_of("Ship 🛸")
