"""One way to write a moment on every page (diagramsite/formats/), in English and in Russian."""

from __future__ import annotations

import re
from datetime import datetime, timezone

import pytest
from django.urls import reverse
from django.utils import translation

from describer.api.tokens import api_token_create
from describer.models import ApiToken, Conversion, MermaidVersion

pytestmark = pytest.mark.django_db

MOMENT = datetime(2026, 12, 5, 14, 3, tzinfo=timezone.utc)
WRITTEN = {"en": "5 Dec 2026, 14:03", "ru": "5 декабря 2026, 14:03"}
FORMAT = {"en": re.compile(r"\d{1,2} [A-Z][a-z]{2} \d{4}, \d\d:\d\d"), "ru": re.compile(r"\d{1,2} [а-я]+ \d{4}, \d\d:\d\d")}


def times_in(page: str) -> list[str]:
    """The text of every <time> element of the page."""
    return re.findall(r"<time [^>]*>([^<]*)</time>", page)


@pytest.mark.parametrize("language", ["en", "ru"])
def test_the_history_and_the_conversions_page_write_its_date_the_same_way(alice, make_conversion, language):
    conversion = make_conversion(title="Hiring", status=Conversion.Status.DONE, created_at=MOMENT)
    alice.cookies["django_language"] = language

    history = alice.get(reverse("history")).content.decode()
    detail = alice.get(conversion.get_absolute_url()).content.decode()

    assert times_in(history) == [WRITTEN[language]]
    assert times_in(detail) == [WRITTEN[language]]


@pytest.mark.parametrize("language", ["en", "ru"])
def test_api_tokens_and_diagram_versions_use_the_same_format(alice, user, make_conversion, language):
    token, _ = api_token_create(user=user, name="laptop")
    ApiToken.objects.filter(pk=token.pk).update(created_at=MOMENT, last_used_at=MOMENT)
    drawing = make_conversion(kind=Conversion.Kind.TEXT_TO_DIAGRAM, input_text="Order, then pay.",
                              status=Conversion.Status.DONE, created_at=MOMENT, output_mermaid="flowchart TD\n  a --> b")  # fmt: skip
    MermaidVersion.objects.create(conversion=drawing, number=1, code=drawing.output_mermaid, created_at=MOMENT)
    alice.cookies["django_language"] = language

    settings_page = alice.get(reverse("settings")).content.decode()
    drawing_page = alice.get(drawing.get_absolute_url()).content.decode()

    assert times_in(settings_page).count(WRITTEN[language]) == 2  # created, last used
    assert all(FORMAT[language].fullmatch(text) for text in times_in(settings_page))  # an expiry too
    assert set(times_in(drawing_page)) == {WRITTEN[language]}  # the page's date and the version's


def test_the_long_and_the_short_formats_are_one(settings):
    from django.utils.formats import get_format

    for language in ("en", "ru"):
        with translation.override(language):
            assert get_format("DATETIME_FORMAT") == get_format("SHORT_DATETIME_FORMAT")
            assert get_format("DATE_FORMAT") == get_format("SHORT_DATE_FORMAT")
