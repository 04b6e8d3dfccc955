"""In Chromium: the description streams into the page while a real worker
process writes it, served by daphne (the production ASGI server) so the
WebSocket is real too."""

from __future__ import annotations

import signal

import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher

from describer.models import Conversion
from tests.browser import log_in
from tests.conftest import PASSWORD, diagram_png
from tests.processes import free_port, start_daphne, start_worker, stop, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def site(tmp_path, tiny_models_dir):
    port = free_port()
    server = start_daphne(port, tmp_path / "daphne.log", DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost")
    yield f"http://127.0.0.1:{port}"
    stop(server)
    print((tmp_path / "daphne.log").read_text()[-3000:])


def real_password_hash(user) -> None:
    """The tests hash with MD5 for speed; daphne runs with the production hashers."""
    user.password = PBKDF2PasswordHasher().encode(PASSWORD, PBKDF2PasswordHasher().salt())
    user.save(update_fields=["password"])


def test_the_description_streams_into_the_page(site, page, user, tiny_models_dir, tmp_path):
    real_password_hash(user)
    log_in(page, site, user.username, PASSWORD)

    upload = tmp_path / "flow.png"
    upload.write_bytes(diagram_png("Order received"))
    page.goto(f"{site}/upload/")
    page.set_input_files("input[name=image]", str(upload))
    page.click("#upload-form button[type=submit]")
    page.wait_for_url(f"{site}/c/**")
    page.wait_for_selector("#live-status")
    assert "Waiting in the queue" in page.inner_text("#live-status")

    # Slow enough on the CPU that the page sees several partial texts.
    worker = start_worker(
        tmp_path / "worker.log",
        TINY_MODELS_DIR=tiny_models_dir,
        DESCRIBER_MIN_NEW_TOKENS=600,
        DESCRIBER_MAX_NEW_TOKENS=600,
    )
    try:
        seen = set()

        def partial_texts():
            text = page.inner_text("#live-text") if page.query_selector("#live-text") else ""
            if text:
                seen.add(text)
            return len(seen) >= 3

        wait_for(partial_texts, timeout=120, what="the text to grow in the page", interval=0.05)
        assert "Writing" in page.inner_text("#live-status")
        page.wait_for_selector("article.description", timeout=180_000)
    finally:
        stop(worker, signal.SIGKILL)
        print((tmp_path / "worker.log").read_text()[-3000:])

    conversion = Conversion.objects.get()
    assert conversion.status == Conversion.Status.DONE
    assert page.inner_text("article.description h2") == conversion.output_structure["title"]
    # The graph's drawing arrived beside the original, in the other column.
    assert conversion.output_graph is not None
    assert page.query_selector(".input-pane #graph-beside img.graph-svg") is not None
    # A reload renders the finished result from the database.
    page.reload()
    assert page.query_selector("article.description") is not None
    assert page.query_selector("[ws-connect]") is None
