"""A description's result page in Chromium: the graph drawn beside the original at once, and its
BPMN view opening without warnings."""

from __future__ import annotations

import pytest

from describer import graphs
from describer.postprocess import structure_description
from tests.browser import log_in
from tests.conftest import PASSWORD
from tests.test_browser_lifecycle import screenshot
from tests.test_process_graph import DESCRIPTION

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def described_invoice(make_conversion):
    """A finished description of the invoice process, with its graph: (conversion, graph result)."""
    result = graphs.from_description(DESCRIPTION, "en")
    canonical = graphs.description_text(result.graph)
    conversion = make_conversion(status="done", output_text=canonical, title="Invoice approval",
                                 output_structure=structure_description(canonical, "en").as_dict(), **result.fields())
    return conversion, result


def test_the_result_page_draws_the_graph_and_opens_it_as_bpmn(live_server, page, page_errors, user, make_conversion):
    conversion, result = described_invoice(make_conversion)
    log_in(page, live_server.url, user.username, PASSWORD)
    page.goto(f"{live_server.url}{conversion.get_absolute_url()}")

    page.wait_for_function("() => { const i = document.querySelector('img.graph-svg'); return i && i.complete && i.naturalWidth > 0; }")
    page.click("summary:has-text('Open as BPMN')")
    page.wait_for_function("() => ['ok', 'warnings', 'error'].includes(document.querySelector('[data-bpmn-url]').dataset.bpmnState)")
    assert page.get_attribute("[data-bpmn-url]", "data-bpmn-state") == "ok"
    assert page.locator(".djs-element[data-element-id]").count() > len(result.graph.nodes)
    screenshot(page, "description-with-graph")
    assert page_errors == []
