"""Who may see what: every URL needs a session, and another user's conversion is a 404
everywhere, its files included. Media is never served directly.

The URLs are read from the resolver, so a new page is covered (or fails here) without
anyone remembering to add it.
"""

from __future__ import annotations

import re
import uuid
from urllib.parse import quote

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import URLPattern, URLResolver, get_resolver, resolve, reverse
from django.urls.converters import UUIDConverter

from describer.models import Conversion
from tests.conftest import diagram_png

SAMPLE_ID = "6f1c3c55-5d0b-4b8e-9a51-2f4f1d7a1c2e"
PUBLIC = {"login", "admin:login", "set_language", "signup"}


def sample_value(name: str, converter: str) -> str:
    if converter in ("uuid", "uuidstr"):  # uuidstr: django-ninja's UUID converter
        return SAMPLE_ID
    return "describer" if name == "app_label" else "1"


def concrete_path(pattern: str) -> str:
    """`c/<uuid:pk>/` or `^(?P<app_label>a|b)/$` with sample values filled in."""
    path = re.sub(r"\(\?P<(\w+)>[^)]*\)", lambda m: sample_value(m[1], "re"), pattern)
    path = re.sub(r"<(?:(\w+):)?(\w+)>", lambda m: sample_value(m[2], m[1] or "str"), path)
    return "/" + path.replace("^", "").replace("$", "")


def every_url(resolver: URLResolver | None = None, prefix: str = "", namespace: str = ""):
    """(name, URL, pattern) for every pattern of the project, with sample arguments."""
    for entry in (resolver or get_resolver()).url_patterns:
        if isinstance(entry, URLResolver):
            inner = ":".join(filter(None, [namespace, entry.namespace]))
            yield from every_url(entry, prefix + str(entry.pattern), inner)
        elif isinstance(entry, URLPattern):
            pattern = prefix + str(entry.pattern)
            name = ":".join(filter(None, [namespace, entry.name])) if entry.name else pattern
            yield name, concrete_path(pattern), entry


# The JSON API takes a token instead of a session; tests/test_api.py checks that each of its URLs refuses anonymous callers.
PRIVATE_URLS = [(name, url) for name, url, _ in every_url() if name not in PUBLIC and not url.startswith("/api/")]


def test_the_url_list_covers_the_app_and_the_admin():
    names = {name for name, _ in PRIVATE_URLS}
    assert {"history", "upload", "detail", "delete", "retry", "image", "thumbnail", "download_markdown"} <= names
    assert {"admin:index", "admin:describer_conversion_changelist", "admin:describer_example_change"} <= names
    assert len(PRIVATE_URLS) > 50


def test_each_sample_url_reaches_its_own_pattern():
    for name, url, entry in every_url():
        assert resolve(url).func == entry.callback, name


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["get", "post"])
@pytest.mark.parametrize(("name", "url"), PRIVATE_URLS, ids=[name for name, _ in PRIVATE_URLS])
def test_every_url_sends_anonymous_visitors_to_a_login_page(client, method, name, url):
    response = getattr(client, method)(url)

    assert response.status_code == 302, f"{method.upper()} {url} answered {response.status_code}"
    login_pages = ["/accounts/login/"] + (["/admin/login/"] if url.startswith("/admin/") else [])
    assert response["Location"] in [f"{page}?next={quote(url)}" for page in login_pages]


@pytest.mark.django_db
def test_the_login_page_is_open(client):
    response = client.get(reverse("login"))

    assert response.status_code == 200
    assert 'name="password"' in response.content.decode()


@pytest.mark.django_db
def test_the_admin_login_page_is_open(client):
    assert client.get(reverse("admin:login")).status_code == 200


@pytest.mark.django_db
def test_the_language_switch_works_before_login(client):
    response = client.post(reverse("set_language"), {"language": "ru", "next": reverse("login")})

    assert response.status_code == 302
    assert response["Location"] == reverse("login")
    assert response.cookies["django_language"].value == "ru"
    assert client.get(reverse("login")).status_code == 200


def test_a_signed_in_user_who_is_not_staff_gets_no_admin(alice):
    response = alice.get(reverse("admin:describer_conversion_changelist"))

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


# Every URL that takes a conversion id, and how its owner uses it.
CONVERSION_URLS = {
    "detail": ["get"],
    "delete": ["get", "post"],
    "retry": ["post"],
    "cancel": ["post"],
    "image": ["get"],
    "thumbnail": ["get"],
    "download_markdown": ["get"],
    "download_mermaid": ["get"],
    "download": ["get"],
    "mermaid_save": ["post"],
    "mermaid_restore": ["post"],
    "mermaid_parse_report": ["post"],
    "repair": ["post"],
    "draw": ["post"],
    "edit_as_mermaid": ["post"],
    "promote_example": ["post"],
}
STAFF_ONLY = {"promote_example"}
EMPTY_POST_IS_400 = STAFF_ONLY | {"mermaid_parse_report"}  # reached, and told what the empty form lacks


def test_the_table_lists_every_url_that_takes_a_conversion_id():
    taking_an_id = {
        entry.name
        for _, url, entry in every_url()
        if not url.startswith("/api/")  # the API's own 404s are in tests/test_api.py
        and any(isinstance(converter, UUIDConverter) for converter in entry.pattern.converters.values())
    }
    assert taking_an_id == set(CONVERSION_URLS)


@pytest.fixture
def finished_conversion(make_conversion):
    """Failed but with a description, so that every URL has something to act on for its owner."""
    return lambda owner: make_conversion(
        owner,
        status=Conversion.Status.FAILED,
        output_text="# Steps\n1. Start",
        output_mermaid="flowchart TD\n  A --> B",
        title="Orders",
    )


STRANGER_CASES = [(name, method) for name, methods in CONVERSION_URLS.items() for method in methods]


@pytest.mark.parametrize(("name", "method"), STRANGER_CASES, ids=[f"{m}-{n}" for n, m in STRANGER_CASES])
def test_another_users_conversion_is_a_404_and_stays_untouched(alice, other_user, finished_conversion, name, method):
    theirs = finished_conversion(other_user)

    response = getattr(alice, method)(reverse(name, args=[theirs.pk]), HTTP_HX_REQUEST="true")

    assert response.status_code == 404
    after = Conversion.objects.get(pk=theirs.pk)
    assert (after.status, after.output_text) == (Conversion.Status.FAILED, "# Steps\n1. Start")


@pytest.mark.parametrize(("name", "method"), STRANGER_CASES, ids=[f"{m}-{n}" for n, m in STRANGER_CASES])
def test_the_owner_reaches_the_same_urls(alice, user, finished_conversion, name, method):
    mine = finished_conversion(user)
    if name in STAFF_ONLY:
        User.objects.filter(pk=user.pk).update(is_staff=True)

    response = getattr(alice, method)(reverse(name, args=[mine.pk]))

    assert response.status_code in ((200, 302, 400) if name in EMPTY_POST_IS_400 else (200, 302))


def test_a_staff_only_url_refuses_an_owner_who_is_not_staff(alice, user, finished_conversion):
    mine = finished_conversion(user)
    assert alice.post(reverse("promote_example", args=[mine.pk])).status_code == 403


def test_an_unknown_id_is_a_404(alice):
    assert alice.get(reverse("detail", args=[uuid.uuid4()])).status_code == 404


def test_the_owner_gets_the_image_through_the_checked_view(alice):
    content = diagram_png()
    alice.post(reverse("upload"), {"image": SimpleUploadedFile("d.png", content), "language": ""})
    conversion = Conversion.objects.get()

    response = alice.get(reverse("image", args=[conversion.pk]))

    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert "private" in response["Cache-Control"]
    assert b"".join(response.streaming_content) == conversion.input_image.read()


def test_media_files_have_no_public_url_even_for_their_owner(alice, settings):
    alice.post(reverse("upload"), {"image": SimpleUploadedFile("d.png", diagram_png()), "language": ""})
    conversion = Conversion.objects.get()
    assert conversion.input_image.storage.exists(conversion.input_image.name)

    for field in (conversion.input_image, conversion.input_thumbnail):
        assert alice.get(f"{settings.MEDIA_URL}{field.name}").status_code == 404
        assert alice.get(field.url).status_code == 404
