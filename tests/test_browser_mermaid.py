"""In Chromium: the Mermaid editor of a text → diagram result. Russian labels render
and export (SVG, PNG at 2×, .mmd); broken code shows the parser's message and line
and can be sent for repair; edits re-draw live, save as versions and restore; "Draw it"
makes the round trip from a description.

Finished pages render from the database, so pytest-django's live_server serves them
(no worker, no WebSocket needed). One test watches the code stream in over a real
WebSocket (daphne) while the tiny model writes it in this process.
"""

from __future__ import annotations

import re
import threading
import xml.etree.ElementTree as ET

import pytest
from PIL import Image

from django.contrib.auth.hashers import PBKDF2PasswordHasher

from describer import services
from describer.jobs import claim
from describer.models import Conversion, MermaidVersion
from describer.pipeline import JobRunner
from describer.progress import Broadcaster
from tests.browser import log_in
from tests.conftest import PASSWORD
from tests.processes import free_port, start_daphne, stop, wait_for

pytestmark = pytest.mark.browser

RUSSIAN = """flowchart TD
    A(["Заявка получена"]) --> B{"Заявка одобрена?"}
    B -->|"Да"| C["Оформить приказ"]
    B -->|"Нет"| D(["Отказ"])
    C --> E(["Отпуск оформлен"])"""
LABELS = ["Заявка получена", "Заявка одобрена?", "Оформить приказ", "Отказ", "Отпуск оформлен", "Да", "Нет"]
BROKEN = """flowchart TD
    A["Старт"] --> B{"Ок?"}
    B --> C[["Шаг"]
    C --> D"""
SVG_NS = "{http://www.w3.org/2000/svg}"


@pytest.fixture
def open_diagram(live_server, page, user, make_conversion):
    """Log in and open a finished text → diagram conversion holding `code`."""

    def open_(code: str) -> Conversion:
        conversion = make_conversion(
            kind=Conversion.Kind.TEXT_TO_DIAGRAM, status=Conversion.Status.DONE, title="Отпуск", input_text="Отпуск."
        )
        services.mermaid_version_add(conversion, code=code, origin=MermaidVersion.Origin.MODEL)
        log_in(page, live_server.url, user.username, PASSWORD)
        page.goto(f"{live_server.url}{conversion.get_absolute_url()}")
        page.wait_for_selector("#diagram[data-state=ok], #diagram[data-state=error]")
        return conversion

    return open_


# Each label of the drawn diagram: its rows (Mermaid wraps long labels) joined by spaces.
LABELS_JS = """svg => Array.from(svg.querySelectorAll('text')).map(text => {
  const rows = text.querySelectorAll(':scope > tspan');
  const parts = rows.length ? Array.from(rows, row => row.textContent) : [text.textContent];
  return parts.join(' ').replace(/\\s+/g, ' ').trim();
}).join('|')"""


def set_code(page, code: str) -> None:
    """Replace the editor's code as one edit (typing is tested in test_browser_editor.py)."""
    page.evaluate("code => document.querySelector('#diagram').mermaidEditor.setCode(code)", code)


def preview_text(page) -> str:
    return page.eval_on_selector(".diagram-preview svg", LABELS_JS)


def download(page, selector: str):
    with page.expect_download() as info:
        page.click(selector)
    return info.value


def test_russian_labels_render_to_svg(open_diagram, page, page_errors):
    open_diagram(RUSSIAN)

    texts = preview_text(page).split("|")
    for label in LABELS:
        assert label in texts
    assert page.locator(".diagram-preview svg foreignObject").count() == 0, "labels are SVG text"
    assert page.locator("[data-error]").is_hidden()
    assert page.is_enabled("button[data-export=svg]") and page.is_enabled("button[data-export=png]")
    assert page_errors == []


def test_broken_code_shows_the_parsers_message_and_line_and_can_go_back_for_repair(
    open_diagram, page, page_errors, live_server
):
    conversion = open_diagram(BROKEN)

    error = page.locator("[data-error]")
    assert error.is_visible()
    assert page.inner_text("[data-error-message]").startswith("Line 3: the shape opened with “[[” is not closed")
    assert page.inner_text("[data-error-line]") == "Go to line 3"
    assert "3 attempts left" in error.inner_text()
    assert page.is_disabled("button[data-export=png]")

    page.click("[data-error-line]")
    selected = page.evaluate("""() => { const view = document.querySelector('#diagram').mermaidEditor.view;
        const range = view.state.selection.main; return view.state.sliceDoc(range.from, range.to); }""")
    assert selected == '    B --> C[["Шаг"]'

    page.click("[data-repair-form] button[type=submit]")
    page.wait_for_selector("#live-status")
    conversion.refresh_from_db()
    assert conversion.status == Conversion.Status.QUEUED
    assert conversion.repair_error.startswith("Parse error on line")
    assert conversion.mermaid_versions.get(number=1).parse_error == conversion.repair_error
    assert [e for e in page_errors if "/static/" in e] == []


def test_edits_redraw_live_save_as_versions_and_restore(open_diagram, page, page_errors):
    conversion = open_diagram(RUSSIAN)
    page.evaluate("window.stillTheSamePage = true")

    set_code(page, RUSSIAN + "\n    E --> F{")
    page.wait_for_selector("#diagram[data-state=error]")
    assert page.locator("[data-error]").is_visible()
    assert page.locator("[data-dirty]").is_visible()

    set_code(page, RUSSIAN + '\n    E --> F(["Архив"])')
    page.wait_for_selector("#diagram[data-state=ok]")
    assert "Архив" in preview_text(page).split("|")

    page.click("[data-save-form] button[type=submit]")
    page.wait_for_selector("#version-2")
    assert "Edited by you" in page.inner_text("#version-2")
    assert "Saved as version 2." in page.inner_text("#diagram-versions")
    assert page.locator("[data-dirty]").is_hidden()

    page.click("#version-1 button:has-text('Restore')")
    page.wait_for_selector("#version-3")
    page.wait_for_selector("#diagram[data-state=ok]")
    assert page.input_value("#mermaid-code") == RUSSIAN
    assert "Архив" not in preview_text(page).split("|")
    assert page.evaluate("window.stillTheSamePage") is True, "no reload: htmx swapped the parts"
    versions = [(v.number, v.origin) for v in conversion.mermaid_versions.all()]
    assert versions == [(3, "restore"), (2, "edit"), (1, "model")]
    assert page_errors == []


def test_svg_png_and_mmd_downloads_are_valid_files(open_diagram, page, page_errors):
    conversion = open_diagram(RUSSIAN)
    stem = conversion.download_stem()

    svg_file = download(page, "button[data-export=svg]")
    assert svg_file.suggested_filename == f"{stem}.svg"
    root = ET.parse(svg_file.path()).getroot()
    assert root.tag == f"{SVG_NS}svg"
    svg_labels = [re.sub(r"\s+", " ", "".join(text.itertext())).strip() for text in root.iter(f"{SVG_NS}text")]
    assert sorted(svg_labels) == sorted(LABELS)
    _, _, box_width, box_height = (float(value) for value in root.get("viewBox").split())

    page.select_option("[data-png-background]", "white")
    white = Image.open(download(page, "button[data-export=png]").path())
    page.select_option("[data-png-background]", "transparent")
    transparent_file = download(page, "button[data-export=png]")
    transparent = Image.open(transparent_file.path())

    assert transparent_file.suggested_filename == f"{stem}.png"
    assert open(transparent_file.path(), "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    for png in (white, transparent):
        assert png.format == "PNG"
        assert abs(png.width - 2 * box_width) <= 1 and abs(png.height - 2 * box_height) <= 1
    assert white.convert("RGBA").getpixel((0, 0)) == (255, 255, 255, 255)
    assert transparent.convert("RGBA").getpixel((0, 0))[3] == 0
    dark = sum(1 for pixel in white.convert("L").getdata() if pixel < 128)
    assert dark > 500, "the diagram is drawn, not just the background"

    mmd = download(page, "[data-export=mmd]")
    assert mmd.suggested_filename == f"{stem}.mmd"
    assert open(mmd.path(), encoding="utf-8").read() == RUSSIAN + "\n"
    assert page_errors == []


def test_draw_it_opens_the_drawing_of_a_description_next_to_its_image(
    live_server, page, page_errors, user, make_conversion
):
    description = make_conversion(
        status=Conversion.Status.DONE,
        title="Hiring",
        output_text="# Hiring\n\n## Steps\n1. Interview.",
        output_structure={"title": "Hiring", "steps": [{"number": 1, "text": "Interview."}]},
    )
    log_in(page, live_server.url, user.username, PASSWORD)
    page.goto(f"{live_server.url}{description.get_absolute_url()}")

    page.click("text=Draw it")
    page.wait_for_url(lambda url: re.search(r"/c/[0-9a-f-]{36}/$", url) and str(description.pk) not in url)
    drawn = Conversion.objects.get(kind=Conversion.Kind.TEXT_TO_DIAGRAM)
    assert page.url.endswith(drawn.get_absolute_url())
    assert drawn.source == description
    assert page.eval_on_selector("figure.original img", "img => img.decode().then(() => img.naturalWidth)") == 640
    assert "drawn from" in page.inner_text(".pagehead")
    assert [e for e in page_errors if "/static/" in e] == []


@pytest.fixture
def site(tmp_path):
    port = free_port()
    server = start_daphne(port, tmp_path / "daphne.log", DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost")
    yield f"http://127.0.0.1:{port}"
    stop(server)


def run_job_in_this_process(runtime) -> None:
    from django.db import connections

    [job] = claim("browser-test")
    broadcaster = Broadcaster()
    JobRunner(runtime, broadcaster, worker_name="browser-test").run(job)
    broadcaster.close()
    connections.close_all()  # this thread's connection would block dropping the test database


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("constrained", [False, True], ids=["unconstrained", "constrained"])
def test_the_code_streams_into_the_page_then_the_editor_shows_the_parsers_verdict(
    site, page, page_errors, user, tiny_runtime, settings, constrained
):
    settings.DESCRIBER_CONSTRAINED = constrained
    settings.DESCRIBER_MIN_NEW_TOKENS = settings.DESCRIBER_MAX_NEW_TOKENS = 300
    settings.DESCRIBER_STREAM_INTERVAL_MS = 20
    # daphne checks passwords with the production hashers, the tests hash with MD5.
    user.password = PBKDF2PasswordHasher().encode(PASSWORD, PBKDF2PasswordHasher().salt())
    user.save(update_fields=["password"])
    log_in(page, site, user.username, PASSWORD)
    page.goto(f"{site}/text/")
    page.fill("textarea[name=text]", "# Отпуск\nСотрудник подаёт заявление, руководитель согласует.")
    page.click("#text-form button[type=submit]")
    page.wait_for_url(f"{site}/c/**")
    page.wait_for_selector("#live-status")

    job = threading.Thread(target=run_job_in_this_process, args=(tiny_runtime,))
    job.start()
    seen = set()

    def partial_texts():
        if page.query_selector("#live-text"):
            seen.add(page.inner_text("#live-text"))
        return len(seen - {""}) >= 2 or page.query_selector("#diagram")

    wait_for(partial_texts, timeout=60, what="the code to grow in the page", interval=0.02)
    job.join()
    page.wait_for_selector("#diagram[data-state=ok], #diagram[data-state=error]")

    conversion = Conversion.objects.get()
    assert conversion.status == Conversion.Status.DONE
    assert len(seen - {""}) >= 2, "the code streamed in before the result"
    assert page.input_value("#mermaid-code") == conversion.output_mermaid
    if constrained:
        # The same random model under the Mermaid grammar: Mermaid's own parser takes its code.
        assert page.locator("#diagram[data-state=ok] svg").count() == 1
        assert not page.locator("[data-error]").is_visible()
    else:
        # The tiny model writes nonsense: the real parser says so, and the repair is offered.
        assert page.locator("[data-error]").is_visible()
        assert page.inner_text("[data-error-message]")
        assert page.locator("[data-repair-form] button").is_visible()
    assert page_errors == []
