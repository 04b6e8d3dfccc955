"""In Chromium: the upload page's drop zone, paste, previews, several files at once, and the
checks the browser makes before sending (with the limits and messages the server rendered).

The pages come from pytest-django's live_server, in this process: the `settings` fixture
changes the limits the page renders and the server applies alike. No worker runs, so new
conversions stay queued.
"""

from __future__ import annotations

import base64
import re

import pytest
from playwright.sync_api import Page

from describer.models import Conversion
from tests.browser import log_in
from tests.conftest import PASSWORD, diagram_png, png_bytes

pytestmark = pytest.mark.browser

DETAIL_URL = re.compile(r"/c/[0-9a-f-]{36}/$")


def png_file(name: str, content: bytes | None = None) -> dict:
    return {"name": name, "mimeType": "image/png", "buffer": diagram_png() if content is None else content}


def gif_file(name: str = "photo.gif") -> dict:
    return {"name": name, "mimeType": "image/gif", "buffer": png_bytes(fmt="GIF")}


def open_upload_page(page: Page, live_server, user) -> str:
    base = live_server.url
    log_in(page, base, user.username, PASSWORD)
    page.goto(f"{base}/upload/")
    return base


def record_upload_posts(page: Page) -> list[str]:
    posts: list[str] = []
    page.on("request", lambda request: posts.append(request.url) if request.method == "POST" else None)
    return posts


def preview_names(page: Page) -> list[str]:
    return page.locator(".upload-preview-name").all_inner_texts()


def chosen_names(page: Page) -> list[str]:
    """What the form will send: the file input's files."""
    return page.eval_on_selector("#upload-form input[type=file]", "input => [...input.files].map(f => f.name)")


def transfer_with(page: Page, files: list[dict]):
    """A DataTransfer holding these files, as a drag from the desktop or the clipboard carries them."""
    payload = [[f["name"], f["mimeType"], base64.b64encode(f["buffer"]).decode()] for f in files]
    return page.evaluate_handle(
        """files => {
            const transfer = new DataTransfer();
            for (const [name, type, data] of files) {
                const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
                transfer.items.add(new File([bytes], name, {type}));
            }
            return transfer;
        }""",
        payload,
    )


def test_files_dropped_on_the_zone_are_previewed_and_one_can_be_removed(live_server, page, page_errors, user):
    open_upload_page(page, live_server, user)
    assert page.is_visible("text=Drop PNG or JPEG images here")
    transfer = transfer_with(page, [png_file("order-flow.png"), png_file("hiring.png", diagram_png(size=(800, 500)))])

    page.dispatch_event("[data-dropzone]", "dragenter", {"dataTransfer": transfer})
    assert "dragging" in page.get_attribute("[data-dropzone]", "class")
    page.dispatch_event("[data-dropzone]", "drop", {"dataTransfer": transfer})

    assert "dragging" not in page.get_attribute("[data-dropzone]", "class")
    assert preview_names(page) == ["order-flow.png", "hiring.png"]
    assert chosen_names(page) == ["order-flow.png", "hiring.png"]
    thumbnail = page.locator(".upload-preview img").first
    assert thumbnail.evaluate("img => img.decode().then(() => img.naturalWidth)") == 640
    page.wait_for_selector(".upload-preview >> text=640×400")
    assert re.fullmatch(r"\d\.\d\xa0KB · 640×400", page.locator(".upload-preview-size").first.inner_text())

    page.click("[aria-label='Remove hiring.png']")
    assert preview_names(page) == ["order-flow.png"]
    assert chosen_names(page) == ["order-flow.png"]

    page.click("#upload-form button[type=submit]")
    page.wait_for_url(DETAIL_URL)
    conversion = Conversion.objects.get()
    assert conversion.original_filename == "order-flow.png"
    assert page_errors == []


def test_an_image_pasted_with_ctrl_v_is_added_under_its_own_name(live_server, page, page_errors, user):
    base = open_upload_page(page, live_server, user)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
    data = base64.b64encode(diagram_png()).decode()
    page.evaluate(
        """async data => {
            const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
            await navigator.clipboard.write([new ClipboardItem({"image/png": new Blob([bytes], {type: "image/png"})})]);
        }""",
        data,
    )

    page.locator("h1").click()  # anywhere on the page, not in a field
    page.keyboard.press("Control+V")

    page.wait_for_selector(".upload-preview")
    assert preview_names(page) == ["pasted image 1.png"]
    page.click("#upload-form button[type=submit]")
    page.wait_for_url(DETAIL_URL)
    conversion = Conversion.objects.get()
    assert conversion.original_filename == "pasted image 1.png"
    assert conversion.title == "pasted image 1"
    assert page_errors == []


def test_several_files_become_several_conversions_listed_in_the_history(live_server, page, page_errors, user):
    base = open_upload_page(page, live_server, user)
    page.select_option("select[name=language]", "ru")

    page.set_input_files("input[name=image]", [png_file("first.png"), png_file("second.png")])
    page.set_input_files("input[name=image]", [png_file("third.png")])  # a second pick adds to the first
    assert preview_names(page) == ["first.png", "second.png", "third.png"]
    page.click("#upload-form button[type=submit]")

    page.wait_for_url(f"{base}/")
    assert "Each image is queued as its own conversion: first.png, second.png, third.png." in page.inner_text(
        "#messages"
    )
    conversions = Conversion.objects.order_by("created_at")
    assert [c.original_filename for c in conversions] == ["first.png", "second.png", "third.png"]
    assert {c.language for c in conversions} == {"ru"}
    for conversion in conversions:
        assert page.locator(f"#row-{conversion.pk}").is_visible()
    assert page_errors == []


def test_the_browser_refuses_a_wrong_file_at_once_naming_it_and_keeps_the_others(
    live_server, page, page_errors, user, settings
):
    settings.UPLOAD_MAX_BYTES = 20_000
    open_upload_page(page, live_server, user)
    posts = record_upload_posts(page)
    page.select_option("select[name=language]", "ru")

    page.set_input_files("input[name=image]", [png_file("flow.png"), gif_file("photo.gif")])

    error = page.wait_for_selector("#upload-form .error")
    assert error.inner_text().startswith("photo.gif: The file does not have a .png, .jpg or .jpeg extension.")
    assert "Allowed: PNG or JPEG, at most 19.5\xa0KB" in error.inner_text()
    assert chosen_names(page) == ["flow.png"]
    assert page.input_value("select[name=language]") == "ru"

    big = png_file("huge.png", diagram_png() + b"\0" * 30_000)
    page.set_input_files("input[name=image]", [big])
    message = page.wait_for_selector("#upload-form .error >> text=huge.png")
    assert re.match(r"huge\.png: The file is 3\d\.\d\xa0KB, which is too large\.", message.inner_text())
    assert chosen_names(page) == ["flow.png"]
    assert posts == []  # refused before anything was sent
    assert page_errors == []


def test_the_browser_checks_the_contents_and_the_pixels_too(live_server, page, page_errors, user, settings):
    settings.UPLOAD_MAX_PIXELS = 100_000
    open_upload_page(page, live_server, user)
    posts = record_upload_posts(page)

    page.set_input_files(
        "input[name=image]",
        [png_file("fine.png", diagram_png(size=(300, 200))), png_file("wide.png"), png_file("notes.png", b"Start, End" * 10)],
    )

    page.wait_for_selector("#upload-form .error >> text=wide.png")
    page.wait_for_selector("#upload-form .error >> text=notes.png")
    errors = page.locator("#upload-form .error").all_inner_texts()
    assert any(e.startswith("wide.png: The image is 640×400 pixels (0.256 megapixels), which is too many.") for e in errors)
    assert any(e.startswith("notes.png: The file is not a PNG or JPEG image") for e in errors)
    assert chosen_names(page) == preview_names(page) == ["fine.png"]
    assert posts == []
    assert page_errors == []


def test_a_file_the_server_refuses_is_named_and_the_other_choices_stay(live_server, page, page_errors, user):
    open_upload_page(page, live_server, user)
    page.select_option("select[name=language]", "ru")
    broken = png_file("broken.png", diagram_png()[:500])  # a PNG header: only the server finds the damage

    page.set_input_files("input[name=image]", [png_file("flow.png"), broken])
    page.click("#upload-form button[type=submit]")

    error = page.wait_for_selector("#upload-form .error")
    assert error.inner_text().startswith("broken.png: The image is truncated or corrupt")
    assert Conversion.objects.count() == 0
    assert chosen_names(page) == preview_names(page) == ["flow.png"]
    assert page.input_value("select[name=language]") == "ru"

    page.click("#upload-form button[type=submit]")
    page.wait_for_url(DETAIL_URL)
    conversion = Conversion.objects.get()
    assert (conversion.original_filename, conversion.language) == ("flow.png", "ru")
    assert page_errors == []


def test_without_javascript_the_plain_form_sends_several_files_and_names_a_refused_one(live_server, browser, user):
    context = browser.new_context(java_script_enabled=False, locale="en-US")
    page = context.new_page()
    try:
        base = open_upload_page(page, live_server, user)
        assert not page.is_visible("text=Drop PNG or JPEG images here")

        page.set_input_files("input[name=image]", [png_file("flow.png"), gif_file("photo.gif")])
        page.select_option("select[name=language]", "ru")
        page.click("#upload-form button[type=submit]")
        page.wait_for_selector("#upload-form .error")
        assert page.inner_text("#upload-form .error").startswith("photo.gif: The file does not have")
        assert page.input_value("select[name=language]") == "ru"
        assert Conversion.objects.count() == 0

        page.set_input_files("input[name=image]", [png_file("flow.png"), png_file("order.png")])
        page.click("#upload-form button[type=submit]")
        page.wait_for_url(f"{base}/")
        assert "Each image is queued as its own conversion: flow.png, order.png." in page.inner_text("#messages")
        assert Conversion.objects.filter(language="ru").count() == 2
    finally:
        context.close()
