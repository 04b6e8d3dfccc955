"""The pages in Chromium, wide (1440×900) and on a phone (390×844): the image in view beside a long
description, nothing wider than a phone's screen, the dark theme, forms that arrive without a
CSRF token, example thumbnails. SCREENSHOT_DIR=… keeps pictures of each page in both themes."""

from __future__ import annotations


import pytest
from django.urls import reverse

from describer import examples
from describer.api.tokens import api_token_create
from describer.describing import Describe
from describer.models import Conversion, ConversionExample, Example
from tests.browser import log_in
from tests.conftest import PASSWORD, png_bytes
from tests.example_files import write_example

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("no_ocr")]

WIDE = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}
STEPS = 40
LONG_RAW = "# Onboarding a supplier with a rather long title\n\n## Steps\n" + "\n".join(
    f"{n}. Check the supplier's document number {n} against the register and write down what was found"
    for n in range(1, STEPS + 1)
)


@pytest.fixture
def long_description(make_conversion, user) -> Conversion:
    conversion = make_conversion(language="en", original_filename="supplier-onboarding-with-a-long-file-name.png")
    fields, _ = Describe().result(conversion, LONG_RAW)
    Conversion.objects.filter(pk=conversion.pk).update(
        **fields, status=Conversion.Status.DONE, stage=Conversion.Stage.FINISHED, output_raw=LONG_RAW,
        title="Onboarding a supplier", tokens_generated=900, timings={"queue_wait_s": 0.1, "first_token_s": 0.2,
        "generation_s": 3.0, "tokens": 900, "tokens_per_s": 300},
    )  # fmt: skip
    conversion.refresh_from_db()
    return conversion


def open_as(page, live_server, user, viewport: dict, path: str) -> None:
    page.set_viewport_size(viewport)
    if "sessionid" not in {cookie["name"] for cookie in page.context.cookies()}:
        log_in(page, live_server.url, user.username, PASSWORD)
    page.goto(f"{live_server.url}{path}")


def horizontal_overflow(page) -> int:
    return page.evaluate("document.documentElement.scrollWidth") - page.viewport_size["width"]


# --- The image beside a long description ---------------------------------------------------------


def test_on_a_wide_screen_the_image_stays_in_view_beside_a_long_description(live_server, page, page_errors, user,
                                                                           long_description):  # fmt: skip
    open_as(page, live_server, user, WIDE, long_description.get_absolute_url())
    image = page.locator("figure.original img")
    assert page.locator("#description ol.steps > li").count() == STEPS

    page.locator(f"#step-{STEPS}").scroll_into_view_if_needed()

    assert page.evaluate("window.scrollY") > 900  # the page did scroll
    box = image.bounding_box()
    assert 0 <= box["y"] and box["y"] + box["height"] <= WIDE["height"]
    assert page_errors == []


def test_on_a_phone_the_image_scrolls_away_above_the_description(live_server, page, user, long_description):
    open_as(page, live_server, user, PHONE, long_description.get_absolute_url())
    assert page.eval_on_selector(".input-pane", "pane => getComputedStyle(pane).position") == "static"

    page.locator(f"#step-{STEPS}").scroll_into_view_if_needed()

    box = page.locator("figure.original img").bounding_box()
    assert box["y"] + box["height"] < 0


# --- Nothing wider than a phone ------------------------------------------------------------------


def test_on_a_phone_no_page_is_wider_than_the_screen(live_server, page, page_errors, user, make_conversion,
                                                     long_description):  # fmt: skip
    for index in range(3):
        make_conversion(title=f"Quarterly_procurement_approval_workflow_{index}_with_no_spaces_at_all",
                        status=Conversion.Status.DONE, coverage=0.8)  # fmt: skip
    make_conversion(kind=Conversion.Kind.TEXT_TO_DIAGRAM, input_text="Pay.", status=Conversion.Status.QUEUED)
    api_token_create(user=user, name="continuous-integration-pipeline-token")

    pages = [reverse("history"), reverse("upload"), reverse("settings"), long_description.get_absolute_url(),
             reverse("text_new"), "/no-such-page/"]  # fmt: skip
    for path in pages:
        open_as(page, live_server, user, PHONE, path)
        assert horizontal_overflow(page) <= 0, path

    # A new token is shown once, with a long example command.
    open_as(page, live_server, user, PHONE, reverse("settings"))
    page.fill("#token-form input[name=name]", "laptop")
    page.click("#token-form button[type=submit]")
    page.wait_for_selector("#new-token")
    assert horizontal_overflow(page) <= 0
    assert page_errors == []


def test_on_a_phone_the_history_rows_are_cards(live_server, page, user, make_conversion):
    conversion = make_conversion(title="Hiring", status=Conversion.Status.DONE, coverage=0.9)
    open_as(page, live_server, user, PHONE, reverse("history"))

    row = page.locator(f"#row-{conversion.pk}")

    assert row.evaluate("row => getComputedStyle(row).display") == "flex"
    assert page.locator("table.history thead").bounding_box()["width"] <= 1  # for screen readers only
    assert "Coverage" in row.locator(".coverage-cell").evaluate("cell => getComputedStyle(cell, '::before').content")
    assert row.bounding_box()["width"] <= PHONE["width"]


# --- The dark theme ---------------------------------------------------------------------------------


def colors(page) -> dict:
    return page.evaluate(
        """() => ({theme: document.documentElement.dataset.theme,
                  body: getComputedStyle(document.body).backgroundColor,
                  text: getComputedStyle(document.body).color})"""
    )


# Records the theme as <body> first appears: before anything of the page is drawn.
THEME_AT_FIRST_PAINT = """
new MutationObserver((records, observer) => {
  if (document.body) { window.themeWhenBodyAppeared = document.documentElement.dataset.theme || null; observer.disconnect(); }
}).observe(document, {childList: true, subtree: true});
document.addEventListener("themechange", (event) => { (window.themeChanges = window.themeChanges || []).push(event.detail.theme); });
"""


def test_the_theme_follows_the_system_and_is_set_before_the_page_is_drawn(live_server, browser, user):
    for scheme, background in (("dark", "rgb(15, 18, 24)"), ("light", "rgb(246, 247, 249)")):
        context = browser.new_context(color_scheme=scheme, viewport=WIDE)
        context.add_init_script(THEME_AT_FIRST_PAINT)
        page = context.new_page()
        page.goto(f"{live_server.url}/accounts/login/")
        assert page.evaluate("window.themeWhenBodyAppeared") == scheme
        assert colors(page)["theme"] == scheme and colors(page)["body"] == background
        context.close()


def test_the_chosen_theme_is_remembered_and_announced(live_server, browser, user):
    context = browser.new_context(color_scheme="dark", viewport=WIDE)
    context.add_init_script(THEME_AT_FIRST_PAINT)
    page = context.new_page()
    log_in(page, live_server.url, user.username, PASSWORD)
    select = page.locator("[data-theme-select]")
    assert select.is_visible() and select.input_value() == "auto"

    select.select_option("light")
    assert colors(page)["theme"] == "light" and colors(page)["body"] == "rgb(246, 247, 249)"
    assert page.evaluate("window.themeChanges") == ["light"]
    assert page.evaluate("localStorage.getItem('theme')") == "light"

    page.goto(f"{live_server.url}{reverse('upload')}")  # another page: light, from the start
    assert page.evaluate("window.themeWhenBodyAppeared") == "light"
    assert page.locator("[data-theme-select]").input_value() == "light"

    page.locator("[data-theme-select]").select_option("auto")  # back to the system's dark
    assert colors(page)["theme"] == "dark" and page.evaluate("window.themeChanges") == ["dark"]
    assert page.evaluate("localStorage.getItem('theme')") is None
    context.close()


def test_the_dark_theme_keeps_diagrams_on_light_paper(live_server, browser, user, long_description):
    context = browser.new_context(color_scheme="dark", viewport=WIDE)
    page = context.new_page()
    log_in(page, live_server.url, user.username, PASSWORD)
    page.goto(f"{live_server.url}{long_description.get_absolute_url()}")

    assert colors(page)["body"] == "rgb(15, 18, 24)" and colors(page)["text"] == "rgb(228, 231, 236)"
    paper = page.eval_on_selector("figure.original img", "img => getComputedStyle(img).backgroundColor")
    assert paper == "rgb(255, 255, 255)"
    context.close()


# --- Forms without a token, a token out of date ---------------------------------------------------


def test_a_plain_form_that_arrived_without_a_csrf_token_still_posts(live_server, page, page_errors, user, make_conversion):
    failed = make_conversion(status=Conversion.Status.FAILED, error_message="It broke.")
    open_as(page, live_server, user, WIDE, reverse("history"))
    # As a fragment rendered without a request would be: no token field, no htmx.
    page.evaluate(
        """url => document.querySelector("main").insertAdjacentHTML("beforeend",
             `<form id="pushed" method="post" action="${url}"><button type="submit">Again</button></form>`)""",
        reverse("retry", args=[failed.pk]),
    )

    page.click("#pushed button")

    page.wait_for_url(f"{live_server.url}{failed.get_absolute_url()}")
    failed.refresh_from_db()
    assert failed.status == Conversion.Status.QUEUED
    assert page_errors == []


def test_an_htmx_form_sent_with_an_outdated_token_says_to_reload(live_server, page, user):
    open_as(page, live_server, user, WIDE, reverse("text_new"))
    page.context.clear_cookies(name="csrftoken")

    page.fill("textarea[name=text]", "Order, then pay.")
    page.click("#text-form button[type=submit]")

    message = page.wait_for_selector("#messages .message.error")
    assert "reload the page" in message.inner_text()
    assert not Conversion.objects.exists()


# --- Example thumbnails -----------------------------------------------------------------------------


def test_the_examples_used_are_shown_as_small_thumbnails(live_server, page, page_errors, user, long_description, tmp_path):
    write_example(tmp_path / "in", "flow-en-big", image=png_bytes((2400, 1600), color="lightblue"))
    examples.import_folder(tmp_path / "in")
    ConversionExample.objects.create(conversion=long_description, example=Example.objects.get(), similarity=0.9, rank=1)
    open_as(page, live_server, user, WIDE, long_description.get_absolute_url())

    thumbnail = page.locator("#examples-used img")

    assert thumbnail.evaluate("img => img.decode().then(() => [img.naturalWidth, img.naturalHeight])") == [192, 128]
    assert page_errors == []


# --- Pictures ---------------------------------------------------------------------------------------------


def test_a_refused_example_name_is_shown_in_the_promote_form(live_server, page, page_errors, staff_user, make_conversion):
    conversion = make_conversion(staff_user, language="en")
    fields, _ = Describe().result(conversion, LONG_RAW)
    Conversion.objects.filter(pk=conversion.pk).update(**fields, status=Conversion.Status.DONE)
    open_as(page, live_server, staff_user, WIDE, conversion.get_absolute_url())
    page.evaluate("window.stillTheSamePage = true")

    page.click("#promote summary")
    page.fill("#promote input[name=name]", "not a slug!")
    page.click("#promote button[type=submit]")

    error = page.wait_for_selector("#promote .error")
    assert error.is_visible() and page.locator("#promote").count() == 1
    assert page.evaluate("window.stillTheSamePage") is True
    assert not Example.objects.exists()
    assert page_errors == []
