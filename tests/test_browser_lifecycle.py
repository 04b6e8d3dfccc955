"""A waiting job's page in Chromium: no worker online, its attempt, Cancel, and the cancelled page."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from describer.models import Conversion, Worker
from tests.browser import log_in
from tests.conftest import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def screenshot(page, name: str) -> None:
    """SCREENSHOT_DIR=… keeps the pictures, to look at them."""
    folder = os.environ.get("SCREENSHOT_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def test_the_owner_cancels_a_waiting_job_and_can_run_it_again(live_server, page, page_errors, user, make_conversion):
    conversion = make_conversion(title="Invoice approval", attempts=1)
    log_in(page, live_server.url, user.username, PASSWORD)

    page.goto(f"{live_server.url}{conversion.get_absolute_url()}")
    assert "No worker is online" in page.inner_text("#live-status")
    assert "attempt 2 of 3" in page.inner_text("#live-actions")
    screenshot(page, "queued-no-worker")

    page.click("#live-actions button:has-text('Cancel')")
    page.wait_for_selector("text=The conversion was cancelled")
    screenshot(page, "cancelled")
    conversion.refresh_from_db()
    assert conversion.status == Conversion.Status.CANCELLED

    page.click("button:has-text('Run it again')")
    page.wait_for_selector("#live-status")
    conversion.refresh_from_db()
    assert conversion.status == Conversion.Status.QUEUED and conversion.attempts == 0
    assert page_errors == []


def test_with_a_worker_online_the_page_gives_the_queue_position(live_server, page, user, make_conversion):
    Worker.objects.create(name="gpu:1", host="gpu", pid=1, model_name="Qwen/Qwen2.5-VL-3B-Instruct")
    conversion = make_conversion()
    log_in(page, live_server.url, user.username, PASSWORD)
    page.goto(f"{live_server.url}{conversion.get_absolute_url()}")
    text = page.inner_text("#live-status")
    assert "position 1" in text and "No worker is online" not in text
    screenshot(page, "queued-worker-online")


def test_an_answer_cut_off_at_the_length_limit_is_marked_above_what_was_complete(live_server, page, page_errors, user, make_conversion):
    from describer.describing import Describe

    raw = "# Invoice approval\n\n## Steps\n1. Receive the invoice\n2. Check the amount\n   - If over 1000: go to step 3.\n3. Ask the man"
    conversion = make_conversion(language="en")
    fields, _ = Describe().result(conversion, raw, cut_off=True)
    Conversion.objects.filter(pk=conversion.pk).update(
        **fields, status=Conversion.Status.DONE, stage=Conversion.Stage.FINISHED, output_raw=raw,
        tokens_generated=1024, cut_off=True,
    )  # fmt: skip
    log_in(page, live_server.url, user.username, PASSWORD)
    page.goto(f"{live_server.url}{conversion.get_absolute_url()}")

    notice = page.locator("#cut-off")
    assert notice.is_visible() and "Cut off at the length limit" in notice.inner_text()
    assert "limit of 1024 tokens" in notice.inner_text()
    steps = page.locator("#description ol.steps > li")
    assert steps.count() == 2 and "Ask the man" not in page.inner_text("#description")
    notice.locator("summary").click()
    assert "3. Ask the man" in notice.locator("pre").inner_text()  # everything the model wrote
    screenshot(page, "cut-off")
    assert page_errors == []
