"""In Chromium, against daphne: the forms of a result that arrived over the WebSocket work (their
CSRF token is not in the fragment, describer/consumers.py renders it without a request), and a
cut-off answer is marked as it arrives. One test runs a real worker on the tiny models; the
others finish the job in the database and send the worker's `conversion.finished` event."""

from __future__ import annotations

import re
import signal

import pytest

from describer.describing import Describe
from describer.models import Conversion, Example
from tests.browser import log_in
from tests.conftest import PASSWORD
from tests.processes import free_port, start_daphne, start_worker, stop
from tests.test_browser_coverage import broadcast
from tests.test_browser_live import real_password_hash

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

RAW = "# Invoice approval\n\n## Steps\n1. Receive the invoice\n2. Check the amount\n3. Pay it\n"


@pytest.fixture
def site(tmp_path, settings):
    settings.DESCRIBER_OCR = False
    port = free_port()
    server = start_daphne(port, tmp_path / "daphne.log", DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost")
    yield f"http://127.0.0.1:{port}"
    stop(server)
    print((tmp_path / "daphne.log").read_text()[-3000:])


def watch(page, site: str, user, conversion: Conversion) -> None:
    """Open the conversion's page and wait until its socket has sent the live state."""
    real_password_hash(user)
    log_in(page, site, user.username, PASSWORD)
    page.goto(f"{site}{conversion.get_absolute_url()}")
    # The page's own Cancel form is replaced by the one the socket sends on connect.
    page.evaluate("document.querySelector('#live-actions').dataset.fromPage = 'yes'")
    page.wait_for_function("() => !document.querySelector('#live-actions').dataset.fromPage")


def finish_in_the_database(conversion: Conversion, **fields) -> None:
    """What the worker does at the end of a job: the row first, then the event to the page."""
    Conversion.objects.filter(pk=conversion.pk).update(stage=Conversion.Stage.FINISHED, **fields)
    broadcast(conversion.pk, {"type": "conversion.finished"})


def description_fields(conversion: Conversion) -> dict:
    fields, _ = Describe().result(conversion, RAW)
    return {**fields, "status": Conversion.Status.DONE, "output_raw": RAW, "tokens_generated": 40}


def test_staff_save_a_result_that_arrived_live_as_an_example(site, page, page_errors, staff_user, make_conversion,
                                                             tiny_models_dir, tmp_path):  # fmt: skip
    conversion = make_conversion(staff_user, language="en")
    watch(page, site, staff_user, conversion)
    # Unconstrained and forced to its limit: the answer is cut off there.
    worker = start_worker(tmp_path / "worker.log", TINY_MODELS_DIR=tiny_models_dir, DESCRIBER_CONSTRAINED=0,
                          DESCRIBER_OCR=0, DESCRIBER_MIN_NEW_TOKENS=64, DESCRIBER_MAX_NEW_TOKENS=64)  # fmt: skip
    try:
        page.wait_for_selector("#conversion-body #promote", timeout=180_000)
    finally:
        stop(worker, signal.SIGKILL)
        print((tmp_path / "worker.log").read_text()[-3000:])
    assert page.query_selector("[ws-connect]") is None  # the result came over the socket
    notice = page.locator("#cut-off")
    assert notice.is_visible() and "limit of 64 tokens" in notice.inner_text()

    page.click("#promote summary")
    page.fill("#promote input[name=name]", "flow-en-saved-live")
    page.fill("#promote textarea[name=description]", RAW)
    page.click("#promote button[type=submit]")

    page.wait_for_url(re.compile(r".*/admin/describer/example/\d+/change/$"))
    example = Example.objects.get()
    assert example.name == "flow-en-saved-live" and example.source_conversion_id == conversion.pk
    assert page_errors == []


def test_drawing_a_result_that_arrived_live_works(site, page, page_errors, user, make_conversion):
    conversion = make_conversion(language="en")
    watch(page, site, user, conversion)

    finish_in_the_database(conversion, **description_fields(conversion))
    page.click("#conversion-body button:has-text('Draw it with the model')")

    page.wait_for_url(lambda url: conversion.get_absolute_url() not in url and "/c/" in url)
    drawing = Conversion.objects.get(source=conversion)
    assert drawing.kind == Conversion.Kind.TEXT_TO_DIAGRAM
    assert page_errors == []


def test_editing_as_mermaid_a_result_that_arrived_live_works(site, page, page_errors, user, make_conversion):
    conversion = make_conversion(language="en")
    watch(page, site, user, conversion)

    finish_in_the_database(conversion, **description_fields(conversion))
    page.click("#graph-beside button:has-text('Edit as Mermaid')")

    page.wait_for_url(lambda url: conversion.get_absolute_url() not in url and "/c/" in url)
    assert Conversion.objects.get(source=conversion).output_mermaid
    assert page_errors == []


def test_retrying_a_failure_that_arrived_live_works(site, page, page_errors, user, make_conversion):
    conversion = make_conversion(language="en")
    watch(page, site, user, conversion)

    finish_in_the_database(conversion, status=Conversion.Status.FAILED, error_message="The model ran out of memory.")
    page.click("#conversion-body button:has-text('Try again')")

    page.wait_for_selector("#live-status")
    conversion.refresh_from_db()
    assert conversion.status == Conversion.Status.QUEUED
    assert page_errors == []


def test_cancelling_with_the_form_the_socket_sent_works(site, page, page_errors, user, make_conversion):
    conversion = make_conversion(language="en")
    watch(page, site, user, conversion)  # the Cancel button now is the socket's

    page.click("#live-actions button:has-text('Cancel')")

    page.wait_for_selector("text=The conversion was cancelled")
    conversion.refresh_from_db()
    assert conversion.status == Conversion.Status.CANCELLED
    assert page_errors == []
