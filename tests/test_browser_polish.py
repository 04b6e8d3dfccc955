"""What the screenshots showed (issue 16), measured in Chromium: the top bar on a phone, API tokens
as cards, one box per history thumbnail, the drop zone's hint on a touch screen, and the admin's
list of examples at 1440 and 390 px. The markup is tested in tests/test_pages_polish.py."""

from __future__ import annotations

import pytest
from django.urls import reverse

from describer import examples
from describer.api.tokens import api_token_create
from describer.models import Conversion
from tests.browser import log_in
from tests.conftest import PASSWORD
from tests.example_files import MIXED, copy_starter
from tests.test_browser_pages import PHONE, WIDE, horizontal_overflow, open_as

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def centres(locator) -> list[float]:
    """The vertical middle of each element, to see which share a row."""
    return [box["y"] + box["height"] / 2 for box in (element.bounding_box() for element in locator.all())]


def one_row(locator) -> bool:
    middles = centres(locator)
    return max(middles) - min(middles) < 8


def in_view(locator, viewport: dict) -> bool:
    box = locator.bounding_box()
    return box is not None and 0 <= box["x"] and box["x"] + box["width"] <= viewport["width"]


def focused_text(page) -> str:
    return page.evaluate("document.activeElement.textContent.trim()")


# --- The top bar ------------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["user", "staff_user"])
def test_on_a_phone_the_top_bar_is_one_row_with_the_pages_behind_menu(live_server, page, page_errors, request, who):
    person = request.getfixturevalue(who)
    open_as(page, live_server, person, PHONE, reverse("history"))
    links, summary = page.locator(".mainnav a"), page.locator(".topmenu > summary")

    assert one_row(page.locator(".topbar .brand, .topmenu > summary, .themeswitch select, .langswitch button"))
    assert page.locator(".topbar").bounding_box()["height"] < 56
    assert not links.first.is_visible() and horizontal_overflow(page) <= 0

    # The keyboard: the name, Menu (Enter opens it), every page, the account, then the controls.
    page.evaluate("document.activeElement.blur()")
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    assert focused_text(page) == "Menu"
    page.keyboard.press("Enter")
    names = links.all_inner_texts()
    assert len(names) == (5 if person.is_staff else 4) and names[-1] == ("Admin" if person.is_staff else "Settings")
    for name in [*names, "Log out"]:
        page.keyboard.press("Tab")
        assert focused_text(page) == name
        assert in_view(page.locator(":focus"), PHONE)
    assert len(set(round(box) for box in centres(links))) == len(names)  # a row per page
    assert horizontal_overflow(page) <= 0

    page.keyboard.press("Escape")  # closes it, back on Menu
    assert not links.first.is_visible() and focused_text(page) == "Menu"
    summary.click()
    page.mouse.click(200, PHONE["height"] - 20)  # a click elsewhere closes it too
    assert not links.first.is_visible()
    assert page_errors == []


def test_on_a_wide_screen_the_pages_and_the_account_are_in_the_bar(live_server, page, staff_user):
    open_as(page, live_server, staff_user, WIDE, reverse("history"))

    assert not page.locator(".topmenu > summary").is_visible()
    assert one_row(page.locator(".topbar .brand, .mainnav a, .account > *, .langswitch button"))
    assert page.locator(".mainnav a").count() == 5 and page.locator(".mainnav a").last.is_visible()

    page.click("header >> text=Settings")
    page.wait_for_url(f"{live_server.url}{reverse('settings')}")


# --- API tokens ---------------------------------------------------------------------------------------


def test_on_a_phone_api_tokens_are_cards_and_a_new_one_fits(live_server, page, page_errors, user):
    api_token_create(user=user, name="continuous-integration-pipeline-token")
    open_as(page, live_server, user, PHONE, reverse("settings"))

    row = page.locator("table.tokens tbody tr").first
    assert row.evaluate("row => getComputedStyle(row).display") == "flex"
    assert page.locator("table.tokens thead").bounding_box()["width"] <= 1
    created = row.locator("td[data-label=Created]")
    assert created.evaluate("cell => getComputedStyle(cell, '::before').content") == '"Created"'
    assert row.bounding_box()["x"] + row.bounding_box()["width"] <= PHONE["width"]
    # The password link has a row of its own under the heading.
    heading, password = page.locator(".pagehead h1").bounding_box(), page.locator(".pagehead .button").bounding_box()
    assert password["y"] >= heading["y"] + heading["height"]

    page.fill("#token-form input[name=name]", "laptop")
    page.click("#token-form button[type=submit]")
    token = page.wait_for_selector("#new-token")

    assert token.evaluate("code => getComputedStyle(code).wordBreak") == "break-all"
    assert in_view(page.locator("#new-token"), PHONE) and in_view(page.locator("[data-copy-target='#new-token']"), PHONE)
    command = page.locator("pre.command")
    assert command.evaluate("pre => pre.scrollWidth > pre.clientWidth")  # it scrolls in its box...
    assert command.evaluate("pre => getComputedStyle(pre).overflowX") == "auto"
    assert command.bounding_box()["height"] < 60  # ...on one line
    assert horizontal_overflow(page) <= 0
    assert page_errors == []


# --- History thumbnails -------------------------------------------------------------------------------


@pytest.mark.parametrize("viewport, size", [(WIDE, (96, 64)), (PHONE, (64, 48))])
def test_every_history_row_has_a_thumbnail_box_of_one_size(live_server, page, user, make_conversion, viewport, size):
    diagram = make_conversion(title="Wide chart")
    text = make_conversion(kind=Conversion.Kind.TEXT_TO_DIAGRAM, input_text="A then B", title="From text")
    open_as(page, live_server, user, viewport, reverse("history"))

    image = page.locator(f"#row-{diagram.pk} td.thumb img")
    placeholder = page.locator(f"#row-{text.pk} td.thumb .thumb-placeholder")

    image.evaluate("img => img.decode()")
    for box in (image.bounding_box(), placeholder.bounding_box()):
        assert (round(box["width"]), round(box["height"])) == size
    assert image.evaluate("img => getComputedStyle(img).objectFit") == "contain"
    assert placeholder.inner_text() == "Text" and placeholder.is_visible()
    assert horizontal_overflow(page) <= 0


def test_thumbnails_lie_on_paper_in_the_dark_theme(live_server, browser, user, make_conversion):
    diagram = make_conversion(title="Wide chart")
    context = browser.new_context(color_scheme="dark", viewport=WIDE)
    page = context.new_page()
    log_in(page, live_server.url, user.username, PASSWORD)
    page.goto(f"{live_server.url}{reverse('history')}")

    paper = page.locator(f"#row-{diagram.pk} td.thumb img").evaluate("img => getComputedStyle(img).backgroundColor")

    assert paper == "rgb(255, 255, 255)"
    context.close()


# --- The drop zone's hint -----------------------------------------------------------------------------


@pytest.mark.parametrize("touch, shown, hidden", [(True, ".hint-coarse-pointer", ".hint-fine-pointer"),
                                                   (False, ".hint-fine-pointer", ".hint-coarse-pointer")])  # fmt: skip
def test_the_drop_zone_hint_fits_the_pointer(live_server, browser, user, touch, shown, hidden):
    context = browser.new_context(viewport=PHONE if touch else WIDE, is_mobile=touch, has_touch=touch)
    page = context.new_page()
    log_in(page, live_server.url, user.username, PASSWORD)
    page.goto(f"{live_server.url}{reverse('upload')}")

    assert page.evaluate("matchMedia('(pointer: coarse)').matches") is touch
    assert page.locator(shown).is_visible() and not page.locator(hidden).is_visible()
    if touch:
        assert page.locator("[data-dropzone-hint]").inner_text() == "Choose PNG or JPEG images."
        assert horizontal_overflow(page) <= 0
    context.close()


# --- The admin's list of examples ----------------------------------------------------------------------


@pytest.mark.parametrize("viewport", [WIDE, PHONE])
def test_the_admin_list_of_examples_is_not_cut_off(live_server, page, staff_user, tmp_path, viewport):
    examples.import_folder(copy_starter(tmp_path / "in", *MIXED))
    open_as(page, live_server, staff_user, viewport, reverse("admin:describer_example_changelist"))

    results = page.locator("#changelist .results")
    if viewport is WIDE:
        assert results.evaluate("box => box.scrollWidth <= box.clientWidth")  # every column in view
        rows = page.locator("#result_list tbody tr")
        assert max(row.bounding_box()["height"] for row in rows.all()) < 90  # three lines at most
    else:  # the table scrolls inside its own box
        assert results.evaluate("box => getComputedStyle(box).overflowX") == "auto"
    assert horizontal_overflow(page) <= 0
