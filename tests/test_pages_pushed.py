"""What the conversion page's WebSocket pushes (describer/consumers.py) is rendered without a
request, so {% csrf_token %} is empty in it: every form it carries must be an htmx form, whose
CSRF token is the X-CSRFToken header of <body hx-headers>. Also: a cut-off answer is marked in
the result that arrives live, and in the history."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.urls import reverse

from describer.describing import Describe
from describer.models import Conversion, MermaidVersion
from diagramsite.asgi import application

ORIGIN = (b"origin", b"http://localhost")
RAW = "# Invoice approval\n\n## Steps\n1. Receive the invoice\n2. Check the amount\n3. Ask the man"


class Forms(HTMLParser):
    """The POST forms of a fragment: their action and attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.posts: list[dict] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "form" and attributes.get("method", "").lower() == "post":
            self.posts.append(attributes)


def post_forms(html: str) -> list[dict]:
    parser = Forms()
    parser.feed(html)
    return parser.posts


async def pushed(client, user, conversion: Conversion) -> str:
    """Everything the page's socket sends for this conversion, as its owner's page gets it."""
    await sync_to_async(client.force_login)(user)
    cookie = (b"cookie", f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}".encode())
    comm = WebsocketCommunicator(application, f"/ws/conversions/{conversion.id}/", headers=[ORIGIN, cookie])
    connected, _ = await comm.connect()
    assert connected
    html = await comm.receive_from(timeout=10)
    await comm.disconnect()
    return html


def finished_description(make_conversion, owner, *, cut_off=False) -> Conversion:
    conversion = make_conversion(owner, language="en")
    fields, _ = Describe().result(conversion, RAW, cut_off=cut_off)
    Conversion.objects.filter(pk=conversion.pk).update(
        **fields, status=Conversion.Status.DONE, stage=Conversion.Stage.FINISHED, output_raw=RAW,
        tokens_generated=1024, cut_off=cut_off,
    )  # fmt: skip
    conversion.refresh_from_db()
    return conversion


def finished_drawing(make_conversion, owner) -> Conversion:
    drawing = make_conversion(owner, kind=Conversion.Kind.TEXT_TO_DIAGRAM, input_text="Pay.", status=Conversion.Status.DONE,
                              output_mermaid="flowchart TD\n  a --> b")  # fmt: skip
    for number in (1, 2):
        MermaidVersion.objects.create(conversion=drawing, number=number, code=drawing.output_mermaid, origin="model")
    return drawing


def assert_all_htmx(forms: list[dict], expected_actions: set[str]) -> None:
    assert {form["action"] for form in forms} >= expected_actions
    for form in forms:
        assert form.get("hx-post") == form["action"], form


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_finished_description_pushed_to_staff_carries_only_htmx_forms(client, staff_user, make_conversion, no_ocr):
    conversion = await sync_to_async(finished_description)(make_conversion, staff_user)

    forms = post_forms(await pushed(client, staff_user, conversion))

    assert_all_htmx(forms, {reverse(name, args=[conversion.pk]) for name in ("promote_example", "draw", "edit_as_mermaid")})


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("status", [Conversion.Status.FAILED, Conversion.Status.CANCELLED])
async def test_a_failed_or_cancelled_result_pushed_carries_an_htmx_retry(client, user, make_conversion, status):
    conversion = await sync_to_async(make_conversion)(status=status, error_message="It broke.")

    forms = post_forms(await pushed(client, user, conversion))

    assert_all_htmx(forms, {reverse("retry", args=[conversion.pk])})


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_finished_drawing_pushed_carries_only_htmx_forms(client, user, make_conversion):
    drawing = await sync_to_async(finished_drawing)(make_conversion, user)

    forms = post_forms(await pushed(client, user, drawing))

    names = ("mermaid_save", "repair", "mermaid_restore")
    assert_all_htmx(forms, {reverse(name, args=[drawing.pk]) for name in names})


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_waiting_job_pushed_carries_an_htmx_cancel(client, user, make_conversion):
    conversion = await sync_to_async(make_conversion)()

    forms = post_forms(await pushed(client, user, conversion))

    assert_all_htmx(forms, {reverse("cancel", args=[conversion.pk])})


# --- Cut off at the length limit -------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_cut_off_result_that_arrives_live_is_marked(client, user, make_conversion, no_ocr):
    conversion = await sync_to_async(finished_description)(make_conversion, user, cut_off=True)

    html = await pushed(client, user, conversion)

    assert 'id="cut-off"' in html and "limit of 1024 tokens" in html


@pytest.mark.django_db
def test_a_cut_off_result_is_marked_in_the_history(alice, user, make_conversion, no_ocr):
    cut = finished_description(make_conversion, user, cut_off=True)
    whole = finished_description(make_conversion, user)

    page = alice.get(reverse("history")).content.decode()

    cut_row = page[page.index(f'id="row-{cut.pk}"'):].split("</tr>")[0]
    whole_row = page[page.index(f'id="row-{whole.pk}"'):].split("</tr>")[0]
    assert 'class="badge cut-off"' in cut_row and "cut off" in cut_row
    assert "cut-off" not in whole_row
