"""In Chromium: the exported BPMN opens in the vendored bpmn-js (static/js/bpmn-view.js) with no
import warning, and every pool, lane, node and flow is drawn; broken BPMN shows its warnings
next to the diagram.

No Django page shows the viewer yet, so a tiny page is served through Playwright's routing
from an origin of its own, with the site's real Content-Security-Policy and the real static
files: what runs here runs on the site. `bpmn_import_warnings(page, xml)` is the one call a
test over many graphs needs.
"""

from __future__ import annotations

import mimetypes
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from playwright.sync_api import ConsoleMessage, Error, Page, Route

from describer.graph.bpmn import render_bpmn
from tests.test_graph_bpmn import GRAPHS, NS

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
STATIC = ROOT / "static"
ORIGIN = "http://bpmn.test"
PAGE = """<!doctype html>
<html><head><meta charset="utf-8">
<link rel="stylesheet" href="/static/vendor/diagram-js.css">
<link rel="stylesheet" href="/static/vendor/bpmn-js.css">
<script src="/static/vendor/bpmn-navigated-viewer.min.js" defer></script>
<script src="/static/js/bpmn-view.js" defer></script>
</head><body>
<div id="diagram" data-bpmn-url="/diagram.bpmn" style="height: 600px"></div>
</body></html>"""
LINES_JS = """texts => texts.map(text =>
  Array.from(text.querySelectorAll('tspan'), line => line.textContent).join(' ').replace(/\\s+/g, ' ').trim())"""
DONE = "() => ['ok', 'warnings', 'error'].includes(document.querySelector('#diagram').dataset.bpmnState)"


def site_policy() -> str:
    """The Content-Security-Policy header the site sends (settings.CONTENT_SECURITY_POLICY)."""
    directives = settings.CONTENT_SECURITY_POLICY["DIRECTIVES"]
    return "; ".join(f"{name} {' '.join(values)}" for name, values in directives.items())


@contextmanager
def served(page: Page, xml: str) -> Iterator[list[str]]:
    """While open, ORIGIN serves the test page, the static files and `xml`; yields the list that
    collects the console's errors (CSP violations are reported there) and uncaught exceptions."""

    def answer(route: Route) -> None:
        path = urlsplit(route.request.url).path
        if path == "/":
            policy = {"Content-Security-Policy": site_policy()}
            route.fulfill(body=PAGE, content_type="text/html; charset=utf-8", headers=policy)
        elif path == "/diagram.bpmn":
            route.fulfill(body=xml, content_type="application/xml; charset=utf-8")
        elif path.startswith("/static/") and (file := (ROOT / path.lstrip("/")).resolve()).is_relative_to(STATIC):
            route.fulfill(path=file, content_type=mimetypes.guess_type(file.name)[0] or "application/octet-stream")
        else:
            route.fulfill(status=404, body="not found")

    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    def on_page_error(error: Error) -> None:
        errors.append(f"uncaught {error.name}: {error.message}")

    page.route(f"{ORIGIN}/**", answer)
    page.on("console", on_console)
    page.on("pageerror", on_page_error)
    try:
        yield errors
    finally:
        page.unroute(f"{ORIGIN}/**")
        page.remove_listener("console", on_console)
        page.remove_listener("pageerror", on_page_error)


def bpmn_import_warnings(page: Page, xml: str) -> list[str]:
    """Import `xml` into the vendored bpmn-js as the site does; the warnings and errors it
    reports ([] when it imports cleanly). Console errors (CSP violations) and uncaught
    exceptions count as warnings."""
    with served(page, xml) as errors:
        page.goto(f"{ORIGIN}/")
        page.wait_for_function(DONE)
        shown = page.locator("[data-bpmn-messages] li").all_inner_texts()
        state = page.get_attribute("#diagram", "data-bpmn-state")
        assert (state == "ok") == (shown == []), (state, shown)
        return shown + [f"page: {error}" for error in errors]


def drawn_ids(page: Page) -> set[str]:
    """Ids of the BPMN elements bpmn-js drew (external labels and the root aside)."""
    ids = page.eval_on_selector_all(".djs-element[data-element-id]", "all => all.map(e => e.dataset.elementId)")
    return {i for i in ids if not i.endswith("_label") and not i.startswith("__implicitroot")}


def exported_ids(xml: str) -> set[str]:
    plane = ET.fromstring(xml.encode()).find(".//bpmndi:BPMNPlane", NS)
    return {element.get("bpmnElement") for element in plane}


@pytest.mark.parametrize("name", list(GRAPHS))
def test_each_export_opens_in_bpmn_js_without_warnings_and_draws_every_element(page, page_errors, name):
    xml = render_bpmn(GRAPHS[name])

    assert bpmn_import_warnings(page, xml) == []
    drawn = drawn_ids(page)
    assert drawn == exported_ids(xml)
    assert len(drawn) >= len(GRAPHS[name].nodes) + len(GRAPHS[name].edges)
    assert page_errors == []


CONTROL_PAGE = """<!doctype html><html><body>
<script src="/control.js"></script><script>document.body.dataset.inline = "ran";</script>
</body></html>"""
CONTROL_JS = 'eval("document.body.dataset.eval = 1");'


def test_the_test_page_is_under_the_sites_policy_and_violations_are_caught(page):
    """The control: under the policy served here eval and inline scripts are refused, and the
    errors reach the list the helper returns, so "no warnings" above means that bpmn-js and
    bpmn-view.js need neither."""
    def control(route: Route) -> None:
        if route.request.url.endswith(".js"):
            route.fulfill(body=CONTROL_JS, content_type="text/javascript")
        else:
            policy = {"Content-Security-Policy": site_policy()}
            route.fulfill(body=CONTROL_PAGE, content_type="text/html", headers=policy)

    with served(page, "") as errors:
        page.route(f"{ORIGIN}/control*", control)  # the newest route answers first
        page.goto(f"{ORIGIN}/control")
        for _ in range(40):  # the events arrive after the page has loaded
            if len(errors) >= 2:
                break
            page.wait_for_timeout(50)

    assert page.evaluate("() => [document.body.dataset.eval, document.body.dataset.inline]") == [None, None]
    assert any("Content Security Policy" in error and "inline" in error for error in errors), errors
    assert any(error.startswith("uncaught EvalError") for error in errors), errors


def test_the_diagram_is_zoomed_to_fit_its_box(page):
    assert bpmn_import_warnings(page, render_bpmn(GRAPHS["two pools"])) == []
    frame = page.locator("#diagram").bounding_box()
    drawing = page.locator("#diagram .viewport").bounding_box()
    assert drawing["width"] <= frame["width"] + 1 and drawing["height"] <= frame["height"] + 1
    assert drawing["width"] > frame["width"] / 2 or drawing["height"] > frame["height"] / 2


def test_labels_are_drawn_as_text(page):
    graph = GRAPHS["two lanes in a pool"]
    assert bpmn_import_warnings(page, render_bpmn(graph)) == []
    # bpmn-js wraps a label into one <tspan> a line.
    texts = " ".join(page.eval_on_selector_all("#diagram text", LINES_JS))
    for label in ("Fill in the form", "Approved?", "Employee", "Manager", "Company"):
        assert label in texts


def test_broken_bpmn_shows_bpmn_js_warnings_next_to_the_diagram(page):
    xml = render_bpmn(GRAPHS["sequence"]).replace('targetRef="b"', 'targetRef="nowhere"', 1)

    warnings = bpmn_import_warnings(page, xml)

    assert warnings and any("nowhere" in warning for warning in warnings), warnings
    assert page.get_attribute("#diagram", "data-bpmn-state") == "warnings"
    assert page.locator("#diagram + [data-bpmn-messages]").is_visible()


def test_a_file_that_is_not_bpmn_is_an_error_shown_as_text(page):
    warnings = bpmn_import_warnings(page, "<p><img src=x onerror=alert(1)>not bpmn</p>")

    assert warnings, "the failure is reported"
    assert page.get_attribute("#diagram", "data-bpmn-state") == "error"
    assert page.locator("[data-bpmn-messages] img").count() == 0, "messages are text, never HTML"


def test_every_starter_examples_bpmn_opens_in_bpmn_js_without_warnings(page, page_errors):
    from describer.graph.mermaid import read_mermaid
    from tests.example_files import STARTER

    warnings = {}
    for path in sorted(STARTER.glob("*.mmd")):
        xml = render_bpmn(read_mermaid(path.read_text(encoding="utf-8")).graph)
        found = bpmn_import_warnings(page, xml)
        if found or drawn_ids(page) != exported_ids(xml):
            warnings[path.stem] = found or ["not every element was drawn"]
    assert len(list(STARTER.glob("*.mmd"))) == 44
    assert warnings == {}
    assert page_errors == []
