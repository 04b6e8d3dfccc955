"""A description's Coverage panel in Chromium: the score, the labels it never mentions and the
steps that are not in the image; the label boxes drawn over the image, linked to the steps both
ways; the coverage in the history."""

from __future__ import annotations

import io
import threading

import pytest
from django.core.files.base import ContentFile
from PIL import Image, ImageDraw, ImageFont

from describer.models import Conversion
from describer.postprocess import structure_description
from describer.progress import Broadcaster
from tests.browser import log_in
from tests.conftest import PASSWORD
from tests.processes import free_port, start_daphne, stop, wait_for
from tests.test_browser_lifecycle import screenshot
from tests.test_browser_live import real_password_hash

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
SIZE = (1200, 800)
DESCRIPTION = """# Invoice intake

## Steps
1. Receive the invoice
2. Call the supplier
"""
# Two labels in the picture: step 1 says the first; nothing says the second; step 2 is not in it.
LABELS = [("Receive the invoice", (80, 120), [1]), ("Archive the order", (680, 520), [])]
STEPS = [(1, "Receive the invoice", True, [0]), (2, "Call the supplier", False, [])]

TIMINGS = {"queue_wait_s": 0.1, "ocr_s": 0.42, "first_token_s": 0.8, "generation_s": 2.1, "tokens": 40,
           "tokens_per_s": 19}  # fmt: skip


def diagram(labels) -> tuple[bytes, list[list[int]]]:
    """A picture of boxed labels, and each label's box as OCR would give it (x, y, w, h)."""
    image = Image.new("RGB", SIZE, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.truetype(FONT, 36)
    boxes = []
    for text, (x, y), _ in labels:
        left, top, right, bottom = draw.textbbox((x, y), text, font=font)
        draw.rectangle((left - 24, top - 24, right + 24, bottom + 24), outline="black", width=3)
        draw.text((x, y), text, fill="black", font=font)
        boxes.append([left, top, right - left, bottom - top])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue(), boxes


def grounding(boxes, labels=LABELS, steps=STEPS) -> dict:
    used = [bool(label_steps) for _, _, label_steps in labels]
    recall, precision = sum(used) / len(used), sum(step[2] for step in steps) / len(steps)
    return {
        "score": round(2 * recall * precision / (recall + precision), 4),
        "label_recall": recall, "step_precision": precision,
        "image_width": SIZE[0], "image_height": SIZE[1],
        "labels": [{"text": text, "box": box, "used": bool(label_steps), "steps": label_steps}
                   for (text, _, label_steps), box in zip(labels, boxes, strict=True)],
        "steps": [{"number": n, "text": text, "grounded": grounded, "labels": indexes}
                  for n, text, grounded, indexes in steps],
    }  # fmt: skip


@pytest.fixture
def described(user):
    """A finished description of the picture, with its grounding (or none: OCR off)."""

    def make(*, measured: bool = True, text: str = DESCRIPTION, labels=LABELS, steps=STEPS,
             status: str = Conversion.Status.DONE, **fields) -> Conversion:
        content, boxes = diagram(labels)
        measurement = grounding(boxes, labels, steps) if measured else None
        conversion = Conversion(
            owner=user, kind=Conversion.Kind.DIAGRAM_TO_TEXT, status=status,
            title="Invoice intake", output_text=text, output_structure=structure_description(text, "en").as_dict(),
            image_width=SIZE[0], image_height=SIZE[1], grounding=measurement,
            coverage=measurement["score"] if measurement else None, timings=TIMINGS, **fields,
        )  # fmt: skip
        conversion.input_image.save("diagram.png", ContentFile(content), save=False)
        conversion.input_thumbnail.save("thumb.png", ContentFile(content), save=False)
        conversion.save()
        return conversion

    return make


def open_page(page, site: str, user, conversion) -> None:
    log_in(page, site, user.username, PASSWORD)
    page.goto(f"{site}{conversion.get_absolute_url()}")


def test_the_panel_gives_the_score_the_omissions_and_the_inventions(live_server, page, page_errors, user, described):
    open_page(page, live_server.url, user, described())

    panel = page.locator("#coverage")
    assert panel.locator(".coverage-percent").inner_text() == "50%"  # half the labels, half the steps
    assert "1 of 2 labels in the image used" in panel.inner_text()
    assert "1 of 2 steps found in the image" in panel.inner_text()
    assert panel.locator(".coverage-omissions li").all_inner_texts() == ["Archive the order"]
    assert panel.locator(".coverage-inventions li").all_inner_texts() == ["Step 2: Call the supplier"]
    assert "Reading the labels (OCR)" in page.inner_text(".timings")
    assert page_errors == []


def test_hovering_a_step_lights_up_its_label_and_the_label_its_step(live_server, page, page_errors, user, described):
    refused = []  # what the Content-Security-Policy blocked, as Chromium logs it
    page.on("console", lambda line: refused.append(line.text) if "Content Security Policy" in line.text else None)
    open_page(page, live_server.url, user, described())
    step = page.locator("#step-1")
    box = page.locator("#coverage-boxes rect[data-label='0']")
    unused = page.locator("#coverage-boxes rect[data-label='1']")
    assert "unused" in unused.get_attribute("class") and "unused" not in box.get_attribute("class")
    assert box.locator("title").text_content() == "Receive the invoice"

    step.hover()
    assert "is-linked" in box.get_attribute("class")
    assert "is-linked" not in unused.get_attribute("class")

    page.mouse.move(0, 0)
    assert "is-linked" not in box.get_attribute("class")
    box.hover()
    assert "is-linked" in step.get_attribute("class")
    assert "is-linked" not in (page.get_attribute("#step-2", "class") or "")

    page.focus("#step-1")  # the keyboard too
    assert "is-linked" in box.get_attribute("class")
    page.locator(".coverage-omissions li").hover()  # an omission shows where it is
    assert "is-linked" in unused.get_attribute("class")
    assert page_errors == [] and refused == []


def test_the_boxes_cover_the_image_at_its_reduced_size(live_server, page, user, described):
    open_page(page, live_server.url, user, described())
    page.wait_for_function("() => document.querySelector('.image-frame img').complete")

    image = page.locator(".image-frame img").bounding_box()
    box = page.locator("#coverage-boxes rect[data-label='1']").bounding_box()
    scale = (image["width"] - 2) / SIZE[0]  # inside its 1px border
    assert scale < 1
    [_, boxes] = diagram(LABELS)
    x, y, width, height = boxes[1]
    assert box["x"] + box["width"] / 2 == pytest.approx(image["x"] + 1 + (x + width / 2) * scale, abs=1)
    assert box["y"] + box["height"] / 2 == pytest.approx(image["y"] + 1 + (y + height / 2) * scale, abs=1)
    assert box["width"] >= width * scale  # around the letters, not over them


def test_without_a_measurement_there_is_no_panel_and_no_boxes(live_server, page, page_errors, user, described):
    open_page(page, live_server.url, user, described(measured=False))

    assert page.locator("#description").is_visible()
    assert page.locator("#coverage").count() == 0
    assert page.locator("#coverage-boxes rect").count() == 0
    assert page_errors == []


def test_the_texts_read_in_the_image_stay_text(alice, described):
    labels = [("<b>Receive</b> the invoice", (80, 120), [1]), ("<script>alert(1)</script>", (680, 520), [])]
    steps = [(1, "Receive the invoice", True, [0]), (2, "<img src=x onerror=alert(1)>", False, [])]

    html = alice.get(described(labels=labels, steps=steps).get_absolute_url()).content.decode()

    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<b>Receive" not in html and "<img src=x" not in html


def test_the_history_shows_each_coverage(live_server, page, user, described, make_conversion):
    described()
    make_conversion(status="done", title="Not measured")
    log_in(page, live_server.url, user.username, PASSWORD)

    cells = page.locator("table.history td.coverage-cell").all_inner_texts()
    assert sorted(cells) == ["50%", "—"]
    screenshot(page, "history-coverage")


FITS_ITS_COLUMN = """[...document.querySelectorAll('.split > section')].every(pane =>
  pane.scrollWidth <= pane.clientWidth
  && pane.getBoundingClientRect().right <= document.querySelector('.split').getBoundingClientRect().right + 0.5)"""


def test_the_page_fits_a_desktop_and_a_phone(live_server, page, page_errors, user, described):
    """SCREENSHOT_DIR=… keeps coverage-1440.png and coverage-390.png, to look at them."""
    conversion = described()
    open_page(page, live_server.url, user, conversion)
    for width, height in [(1440, 900), (390, 844)]:
        page.set_viewport_size({"width": width, "height": height})
        page.wait_for_function("() => document.querySelector('.image-frame img').complete")
        page.locator("#step-1").hover()
        screenshot(page, f"coverage-{width}")
        # Nothing wider than its column (a pane that overflows into the page's margin shows no scrollbar).
        assert page.evaluate(FITS_ITS_COLUMN)
        assert page.evaluate("document.documentElement.scrollWidth") <= width
    assert page_errors == []


def broadcast(conversion_id, event: dict) -> None:
    """As the worker does, from a thread of its own: Playwright's sync API holds this one's loop."""

    def send() -> None:
        broadcaster = Broadcaster()
        broadcaster.send(conversion_id, event)
        broadcaster.close()

    thread = threading.Thread(target=send)
    thread.start()
    thread.join()


@pytest.mark.slow
def test_the_panel_and_the_boxes_arrive_with_the_result_over_the_websocket(tmp_path, page, page_errors, user,
                                                                            described):
    port = free_port()
    server = start_daphne(port, tmp_path / "daphne.log", DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost")
    try:
        real_password_hash(user)
        conversion = described(status=Conversion.Status.RUNNING, stage=Conversion.Stage.GENERATION)
        open_page(page, f"http://127.0.0.1:{port}", user, conversion)
        assert page.locator("#coverage-boxes rect").count() == 0

        def page_is_live() -> bool:  # the socket is open once a progress event shows
            progress = {"stage": "generation", "text": "# Invoice intake", "tokens": 3, "elapsed": 1.0}
            broadcast(conversion.pk, {"type": "conversion.progress", **progress})
            return "Invoice intake" in page.inner_text("#live-text")

        wait_for(page_is_live, timeout=20, what="the page's WebSocket", interval=0.3)
        Conversion.objects.filter(pk=conversion.pk).update(status=Conversion.Status.DONE)
        broadcast(conversion.pk, {"type": "conversion.finished"})

        page.wait_for_selector("#coverage")
        page.locator("#step-1").hover()
        assert "is-linked" in page.get_attribute("#coverage-boxes rect[data-label='0']", "class")
        assert page_errors == []
    finally:
        stop(server)


def test_the_page_names_the_model_and_adapter_that_wrote_it(live_server, page, page_errors, user, described, staff_user):
    from describer.models import Adapter

    adapter = Adapter.objects.create(
        name="v0003", path="/data/adapters/v0003", base_model="Qwen/Qwen2.5-VL-3B-Instruct", weights_sha256="ab" * 32,
        node_f1=0.94, edge_f1=0.91, is_active=True,
        report={"settings": {"method": "QLoRA (4-bit NF4 base)", "rank": 16, "alpha": 32, "learning_rate": 0.0002,
                             "epochs": 3, "repeats": 1, "patience": 2},
                "data": {"training": 180, "validation": 20, "sha256": "cd" * 32}, "stopped": "epochs", "seconds": 4620,
                "samples_per_second": 0.4,
                "epochs": [{"epoch": 1, "train_loss": 0.41, "validation": {"node_f1": 0.88, "edge_f1": 0.85}}]},
    )  # fmt: skip
    conversion = described(model_name="Qwen/Qwen2.5-VL-3B-Instruct", adapter=adapter, adapter_name="v0003 (abababababab)")
    open_page(page, live_server.url, user, conversion)
    assert page.inner_text(".written-by") == (
        "Qwen/Qwen2.5-VL-3B-Instruct with the fine-tuned adapter v0003 (abababababab)"
    )
    assert "a fine-tuned adapter wrote this" in page.inner_text(".examples-used")
    screenshot(page, "result-written-by-adapter")
    base = described(model_name="Qwen/Qwen2.5-VL-3B-Instruct")
    page.goto(f"{live_server.url}{base.get_absolute_url()}")
    assert page.inner_text(".written-by") == "Qwen/Qwen2.5-VL-3B-Instruct (base model, no adapter)"

    page.context.clear_cookies()
    log_in(page, live_server.url, staff_user.username, PASSWORD)
    page.goto(f"{live_server.url}/admin/describer/adapter/")
    assert "v0003" in page.inner_text("#result_list")
    screenshot(page, "admin-adapters")
    page.goto(f"{live_server.url}/admin/describer/adapter/{adapter.pk}/change/")
    assert "QLoRA (4-bit NF4 base)" in page.inner_text("body")
    screenshot(page, "admin-adapter-report")
    assert page_errors == []
