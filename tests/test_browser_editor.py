"""In Chromium: the Mermaid editor as a user meets it (issue 16). CodeMirror with line numbers
and highlighting; a parse error said in plain words and marked on its line; the preview never
stuck on "Drawing…"; labels with ">" and entity codes drawn as written; every drawing zooms,
pans and goes fullscreen; leaving with unsaved changes asks first."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from describer import examples, services
from describer.models import Example, MermaidVersion
from tests.browser import log_in
from tests.conftest import PASSWORD, png_bytes
from tests.example_files import write_example
from tests.test_browser_graph import described_invoice
from tests.test_browser_mermaid import open_diagram  # noqa: F401 - a fixture
from tests.test_pages_examples import BIG, used_by

pytestmark = pytest.mark.browser

GOOD = """flowchart TD
    A(["Start"]) --> B{"y > 5?"}
    B -->|"say #quot;yes#quot;"| C["Pay & file #35;1"]
    B -->|no| D[x >= 3]"""
BROKEN = """flowchart TD
    A["Start"] --> B{"Ok?"}
    B --> C[["Step"]
    C --> D"""
SVG_NS = "{http://www.w3.org/2000/svg}"
def labels(page) -> list[str]:
    return page.eval_on_selector_all(".diagram-preview svg text", "texts => texts.map(t => t.textContent.trim())")


def type_code(page, text: str) -> None:
    """Replace the code by typing it, as a user does (keyboard events into CodeMirror)."""
    page.click(".cm-content")
    page.keyboard.press("Control+A")
    page.keyboard.press("Delete")
    page.keyboard.insert_text(text)


def test_the_editor_is_codemirror_with_line_numbers_and_mermaid_highlighting(open_diagram, page, page_errors):
    open_diagram(GOOD)

    assert page.locator("#mermaid-code").is_hidden(), "the textarea is only the form's field"
    gutter = page.locator(".cm-lineNumbers .cm-gutterElement").all_inner_texts()
    assert [n for n in gutter if n.strip()][-4:] == ["1", "2", "3", "4"]
    first_line = page.locator(".cm-line").first
    assert first_line.locator("[class^=tok-]").all_inner_texts() == ["flowchart", "TD"]
    assert page.locator(".cm-content .tok-string").count() >= 3, "quoted labels are coloured"

    type_code(page, "flowchart LR\n    P --> Q")
    page.wait_for_function("() => Array.from(document.querySelectorAll('.diagram-preview svg text'), "
                           "t => t.textContent.trim()).sort().join() === 'P,Q'")
    assert page.input_value("#mermaid-code") == "flowchart LR\n    P --> Q", "the form posts what was typed"
    assert page.locator("[data-dirty]").is_visible()
    assert page_errors == []


def test_a_parse_error_is_one_plain_sentence_marked_on_its_line(open_diagram, page, page_errors):
    open_diagram(BROKEN)

    message = page.inner_text("[data-error-message]")
    assert message == "Line 3: the shape opened with “[[” is not closed: Mermaid expected “]]” here, but found “]”."
    assert "Expecting" not in message and "^" not in message and "C[[" not in message, "no parser dump, no code"
    assert page.inner_text("[data-error-line]") == "Go to line 3"
    marked_line = page.eval_on_selector(".cm-lintRange-error", "mark => mark.closest('.cm-line').textContent")
    assert marked_line == '    B --> C[["Step"]'
    # The gutter marks the same line: its marker sits in the row of line 3.
    marker = page.locator(".cm-gutter-lint .cm-lint-marker-error").bounding_box()
    line_three = page.locator(".cm-line").nth(2).bounding_box()
    assert abs(marker["y"] + marker["height"] / 2 - (line_three["y"] + line_three["height"] / 2)) < 6

    page.click("[data-error-line]")
    selected = page.evaluate("""() => { const view = document.querySelector('#diagram').mermaidEditor.view;
        const range = view.state.selection.main; return view.state.sliceDoc(range.from, range.to); }""")
    assert selected == '    B --> C[["Step"]'
    assert page_errors == []


def test_an_expected_token_list_becomes_a_sentence(open_diagram, page):
    open_diagram("flowchart TD\n    A --> B\n    B --> --> C")

    # Jison expected AMP, COLON, PIPE, TESTSTR, DOWN, DEFAULT, NUM, COMMA, NODE_STRING, … and got LINK "--> ".
    message = page.inner_text("[data-error-message]")
    assert message == "Line 3: Mermaid expected “|”, text, “&” or something else here, but found “-->”."


def test_code_that_does_not_parse_on_load_says_so_instead_of_drawing_forever(open_diagram, page):
    open_diagram(BROKEN)

    preview = page.inner_text(".diagram-preview")
    assert "Drawing" not in preview
    assert preview == "Nothing is drawn until the code parses: see the message above."

    type_code(page, "")
    page.wait_for_selector("#diagram[data-state=empty]")
    assert page.inner_text(".diagram-preview") == "Write Mermaid code to see the diagram."
    assert page.locator("[data-error]").is_hidden()

    page.keyboard.insert_text("flowchart TD\n    A --> B(")
    page.wait_for_selector("#diagram[data-state=error]")
    assert page.inner_text(".diagram-preview") == "Nothing is drawn until the code parses: see the message above."


def test_labels_with_greater_than_and_entity_codes_are_drawn_as_written(open_diagram, page, page_errors):
    conversion = open_diagram(GOOD)

    expected = ["Start", "y > 5?", 'say "yes"', "Pay & file #1", "no", "x >= 3"]
    assert sorted(labels(page)) == sorted(expected)
    with page.expect_download() as info:
        page.click("button[data-export=svg]")
    root = ET.parse(info.value.path()).getroot()
    exported = [re.sub(r"\s+", " ", "".join(text.itertext())).strip() for text in root.iter(f"{SVG_NS}text")]
    assert sorted(exported) == sorted(expected)
    assert root.find(f".//{SVG_NS}foreignObject") is None, "labels stay SVG text (strict, exportable)"
    conversion.refresh_from_db()
    assert conversion.output_mermaid == GOOD, "the code itself is never rewritten"
    assert page_errors == []


def viewport_scale(page, selector: str) -> float:
    return page.eval_on_selector(selector, "g => g.getCTM().a")


def wait_for_scale(page, selector: str, scale: float) -> None:
    """svg-pan-zoom applies a zoom on the next animation frame."""
    page.wait_for_function("([selector, scale]) => Math.abs(document.querySelector(selector).getCTM().a / scale - 1) < 0.01",
                           arg=[selector, scale])


def test_the_preview_zooms_pans_and_goes_fullscreen(open_diagram, page, page_errors):
    open_diagram(GOOD)
    viewport = ".diagram-preview svg .svg-pan-zoom_viewport"
    page.wait_for_selector(viewport)
    start = viewport_scale(page, viewport)

    page.click(".diagram-frame [data-zoom=in]")
    wait_for_scale(page, viewport, start * 1.25)
    before = page.eval_on_selector(viewport, "g => g.getCTM().e")
    box = page.locator(".diagram-preview svg").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2 + 60, box["y"] + box["height"] / 2, steps=5)
    page.mouse.up()
    assert page.eval_on_selector(viewport, "g => g.getCTM().e") == pytest.approx(before + 60, abs=3)
    page.click(".diagram-frame [data-zoom=fit]")
    wait_for_scale(page, viewport, start)

    page.click(".diagram-frame [data-zoom=fullscreen]")
    page.wait_for_function("() => document.fullscreenElement && document.fullscreenElement.matches('.diagram-frame')")
    assert page.locator(".diagram-frame [data-zoom=close]").is_hidden()
    page.click(".diagram-frame [data-zoom=fullscreen]")
    page.wait_for_function("() => !document.fullscreenElement")
    assert page_errors == []


def test_pictures_and_the_bpmn_view_of_a_description_zoom_and_go_fullscreen(
    live_server, page, page_errors, user, make_conversion
):
    conversion, _ = described_invoice(make_conversion)
    log_in(page, live_server.url, user.username, PASSWORD)
    page.goto(f"{live_server.url}{conversion.get_absolute_url()}")

    for picture in ["img.graph-svg", f"img[src='{conversion.get_absolute_url()}image/']"]:
        page.click(picture)
        page.wait_for_selector("dialog.zoom-viewer[open] svg image")
        viewport = "dialog.zoom-viewer svg .svg-pan-zoom_viewport"
        start = viewport_scale(page, viewport)
        page.click("dialog.zoom-viewer [data-zoom=in]")
        wait_for_scale(page, viewport, start * 1.25)
        page.click("dialog.zoom-viewer [data-zoom=fullscreen]")
        page.wait_for_function("() => document.fullscreenElement && document.fullscreenElement.matches('dialog.zoom-viewer .zoom-frame')")
        page.click("dialog.zoom-viewer [data-zoom=close]")
        page.wait_for_function("() => !document.fullscreenElement && !document.querySelector('dialog.zoom-viewer[open]')")
    assert page.url.endswith(conversion.get_absolute_url()), "the picture opened here, not as a new page"

    page.click("summary:has-text('Open as BPMN')")
    page.wait_for_selector("[data-bpmn-url][data-bpmn-state=ok] .zoom-controls")
    before = page.evaluate("() => document.querySelector('.djs-container svg .viewport').getCTM().a")
    page.click("[data-bpmn-url] [data-zoom=in]")
    assert page.evaluate("() => document.querySelector('.djs-container svg .viewport').getCTM().a") > before
    page.click("[data-bpmn-url] [data-zoom=fullscreen]")
    page.wait_for_function("() => document.fullscreenElement && document.fullscreenElement.matches('[data-bpmn-url]')")
    assert page_errors == []


def test_leaving_with_unsaved_changes_asks_first(open_diagram, page):
    open_diagram(GOOD)
    page.click(".cm-content")
    page.keyboard.press("End")
    page.keyboard.insert_text("\n    D --> E")
    page.wait_for_selector("[data-dirty]:not([hidden])")
    with page.expect_event("dialog") as asked:
        page.close(run_before_unload=True)
    assert asked.value.type == "beforeunload"
    asked.value.dismiss()
    assert not page.is_closed(), "the user chose to stay"


def test_saved_code_leaves_without_asking(open_diagram, page):
    open_diagram(GOOD)
    asked = []
    page.on("dialog", lambda dialog: (asked.append(dialog.type), dialog.dismiss()))

    page.click(".cm-content")
    page.keyboard.press("End")
    page.keyboard.insert_text("\n    D --> E")
    page.click("[data-save-form] button[type=submit]")
    page.wait_for_selector("#version-2")
    page.wait_for_selector("[data-dirty][hidden]", state="attached")
    with page.expect_event("close"):
        page.close(run_before_unload=True)
    assert asked == []


@pytest.mark.parametrize("code, parses", [(BROKEN, False), (GOOD, True)], ids=["broken", "good"])
def test_a_repair_no_parser_has_seen_gets_its_badge_when_the_editor_draws_it(
    open_diagram, page, page_errors, code, parses
):
    conversion = open_diagram("flowchart TD\n    A --> B(")
    services.mermaid_version_add(conversion, code=code, origin=MermaidVersion.Origin.REPAIR)
    page.reload()
    page.wait_for_selector(f"#version-2[data-parses={str(parses).lower()}]")

    repair = conversion.mermaid_versions.get(number=2)
    assert repair.parses is parses and repair.parse_checked_by == "browser"
    badge = page.locator("#version-2 .badge.failed")
    assert badge.count() == (0 if parses else 1)
    if not parses:
        assert badge.inner_text() == "does not parse"
        assert repair.parse_error.startswith("Line 3: the shape opened with")
    assert page_errors == []


def test_an_example_thumbnail_opens_the_full_picture_to_zoom(live_server, page, page_errors, user, make_conversion, tmp_path):
    write_example(tmp_path / "in", "flow-en-big", image=png_bytes(BIG, color="lightblue"))
    examples.import_folder(tmp_path / "in")
    conversion = used_by(make_conversion(status="done", output_text="# Steps\n1. Start."), Example.objects.get())
    log_in(page, live_server.url, user.username, PASSWORD)
    page.goto(f"{live_server.url}{conversion.get_absolute_url()}")

    thumbnail = page.locator(".example-list img[data-zoom-image]")
    assert thumbnail.evaluate("img => img.naturalWidth") <= 192
    thumbnail.click()
    page.wait_for_selector("dialog.zoom-viewer[open] svg image")
    assert page.get_attribute("dialog.zoom-viewer svg image", "width") == str(BIG[0]), "the full picture, not the thumbnail"
    page.keyboard.press("Escape")
    page.wait_for_selector("dialog.zoom-viewer[open]", state="detached")
    assert page_errors == []


NODE_FILL_JS = "() => getComputedStyle(document.querySelector('.diagram-preview svg .node rect, .diagram-preview svg .node path')).fill"


def test_the_drawing_follows_the_dark_theme_but_files_stay_light(open_diagram, page, page_errors):
    open_diagram(GOOD)
    light_fill = page.evaluate(NODE_FILL_JS)

    page.select_option("[data-theme-select]", "dark")
    page.wait_for_function(f"light => ({NODE_FILL_JS})() !== light", arg=light_fill)
    assert page.evaluate("() => document.documentElement.dataset.theme") == "dark"
    with page.expect_download() as info:
        page.click("button[data-export=svg]")
    exported = info.value.path().read_text(encoding="utf-8").upper()
    shown = page.evaluate("() => document.querySelector('.diagram-preview svg style').textContent").upper()
    assert "#ECECFF" in exported, "the file has Mermaid's default (light) node colour"
    assert "#ECECFF" not in shown, "the page shows the dark drawing"
    assert page_errors == []


def test_a_wide_drawing_gets_the_whole_width_under_the_code(open_diagram, page, page_errors):
    chain = " --> ".join(f'N{i}["Step {i}"]' for i in range(12))
    open_diagram(f"flowchart LR\n    {chain}")

    assert page.locator(".diagram-workspace.wide-drawing").count() == 1
    code, preview = page.locator(".cm-editor").bounding_box(), page.locator(".diagram-preview").bounding_box()
    assert preview["y"] >= code["y"] + code["height"], "under the code"
    assert preview["width"] == pytest.approx(code["width"], abs=4) and preview["width"] > 1000, "across the page"

    type_code(page, "flowchart TD\n    A --> B --> C")
    page.wait_for_function("() => !document.querySelector('.diagram-workspace.wide-drawing')")
    assert page_errors == []
