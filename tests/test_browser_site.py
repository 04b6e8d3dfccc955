"""In Chromium: log in, upload a diagram, see it queued, find it in the history;
filter and delete there without reloading the page.

No worker runs here, so a new conversion stays queued, visibly. The pages come from
pytest-django's live_server (WSGI, static files included); the WebSocket that
streams progress is tested with daphne elsewhere (test_browser_live.py).
"""

from __future__ import annotations

import re

import pytest

from describer.models import Conversion
from tests.browser import log_in
from tests.conftest import PASSWORD, diagram_png

pytestmark = pytest.mark.browser


def test_a_user_logs_in_uploads_a_diagram_and_finds_it_in_the_history(live_server, page, page_errors, user, tmp_path):
    base = live_server.url
    page.goto(f"{base}/")
    assert page.url == f"{base}/accounts/login/?next=/"
    assert page.evaluate("window.htmx && htmx.version").startswith("2.")

    log_in(page, base, user.username, PASSWORD)
    page.click("text=Upload a diagram")
    page.wait_for_url(f"{base}/upload/")

    # A broken file first: the error appears in the form (htmx swaps the 400 in).
    broken = tmp_path / "broken.png"
    broken.write_bytes(diagram_png()[:500])
    page.set_input_files("input[name=image]", str(broken))
    page.click("#upload-form button[type=submit]")
    error = page.wait_for_selector("#upload-form .error")
    assert "truncated or corrupt" in error.inner_text()
    assert "Allowed: PNG or JPEG" in error.inner_text()
    assert page.url == f"{base}/upload/"

    diagram = tmp_path / "order-flow.png"
    diagram.write_bytes(diagram_png("Order received"))
    page.set_input_files("input[name=image]", str(diagram))
    page.click("#upload-form button[type=submit]")
    page.wait_for_url(re.compile(rf"{re.escape(base)}/c/[0-9a-f-]{{36}}/$"))
    conversion = Conversion.objects.get()
    assert page.url == f"{base}{conversion.get_absolute_url()}"
    assert page.inner_text("h1") == "order flow"
    assert "Waiting in the queue" in page.inner_text("#live-status")
    assert page.eval_on_selector("figure.original img", "img => img.naturalWidth") == 640

    page.click("header >> text=History")
    page.wait_for_url(f"{base}/")
    row = page.locator(f"#row-{conversion.pk}")
    assert "order flow" in row.inner_text()
    assert "Queued" in row.inner_text()
    assert row.locator("img").evaluate("img => img.decode().then(() => img.naturalWidth)") == 320
    assert page_errors == []


def test_the_history_filters_and_deletes_without_reloading(live_server, page, page_errors, user, make_conversion):
    keep = make_conversion(title="Hiring chart", status=Conversion.Status.DONE)
    doomed = make_conversion(title="Order chart", status=Conversion.Status.FAILED)
    base = live_server.url
    log_in(page, base, user.username, PASSWORD)
    page.evaluate("window.stillTheSamePage = true")

    page.fill("input[name=q]", "hiring")
    page.wait_for_url(f"{base}/?q=hiring&kind=&status=")
    page.wait_for_selector(f"#row-{doomed.pk}", state="detached")
    assert page.locator(f"#row-{keep.pk}").is_visible()

    page.select_option("select[name=status]", "failed")
    page.wait_for_selector("text=No conversions match these filters")
    page.fill("input[name=q]", "")
    page.wait_for_selector(f"#row-{doomed.pk}")

    page.click(f"#row-{doomed.pk} >> text=Delete")
    dialog = page.locator("dialog#modal")
    dialog.wait_for(state="visible")
    assert "Delete “Order chart”" in dialog.inner_text()
    dialog.locator("button.danger").click()
    page.wait_for_selector(f"#row-{doomed.pk}", state="detached")
    assert not dialog.is_visible()

    assert not Conversion.objects.filter(pk=doomed.pk).exists()
    assert Conversion.objects.filter(pk=keep.pk).exists()
    assert page.evaluate("window.stillTheSamePage") is True  # htmx swapped; nothing reloaded
    assert page_errors == []
