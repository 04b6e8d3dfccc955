"""Text that is not Unicode never reaches PostgreSQL: a lone UTF-16 surrogate in the
API's JSON is a 400 problem (it was a 500 from the database driver), and the web forms
cannot deliver one at all. The JSON endpoint answers 415 to bodies of other types."""

from __future__ import annotations

import pytest
from django.urls import reverse

from describer.models import Conversion
from tests.test_api import BASE, PROBLEM, Api, assert_problem

pytestmark = pytest.mark.django_db

TEXT_ENDPOINT = f"{BASE}/conversions/text-to-diagram"
SURROGATE_BYTES = "\ud800".encode("utf-8", "surrogatepass")  # b"\xed\xa0\x80": not valid UTF-8


@pytest.fixture
def api(user):
    from describer.api.tokens import api_token_create

    return Api(api_token_create(user=user, name="tests")[1])


def post_raw(api: Api, body: bytes, content_type: str = "application/json"):
    return api.client.generic("POST", TEXT_ENDPOINT, body, content_type=content_type)


def assert_surrogate_refused(response, field: str = "text") -> None:
    problem = assert_problem(response, 400, field)
    assert "surrogate" in problem["detail"]
    assert "\\ud800" in problem["detail"], "says what to look for"
    assert not Conversion.objects.exists()


def test_an_escaped_lone_surrogate_is_a_400_problem(api):
    assert_surrogate_refused(post_raw(api, b'{"text": "ok \\ud800"}'))


def test_a_lone_low_surrogate_is_refused_too(api):
    assert_surrogate_refused(post_raw(api, b'{"text": "\\udfff at the start"}'))


def test_a_surrogate_written_as_raw_bytes_is_refused(api):
    # json.loads decodes bytes with "surrogatepass": these three bytes become "\ud800" too.
    assert_surrogate_refused(post_raw(api, b'{"text": "ok ' + SURROGATE_BYTES + b'"}'))


def test_a_surrogate_in_a_field_the_endpoint_does_not_know_is_refused(api):
    assert_surrogate_refused(post_raw(api, b'{"text": "fine", "note": ["a", "\\ud800"]}'), "note.1")


def test_a_surrogate_in_a_key_names_the_object_not_the_key(api):
    response = post_raw(api, b'{"text": "fine", "\\ud800": 1}')

    assert_surrogate_refused(response, "body")
    response.content.decode("utf-8")  # the problem itself is valid UTF-8


def test_a_proper_surrogate_pair_is_one_character_and_accepted(api):
    response = post_raw(api, b'{"text": "Deploy \\ud83d\\ude80 to production"}')

    assert response.status_code == 201, response.content
    assert Conversion.objects.get().input_text == "Deploy \U0001f680 to production"


def test_json_with_a_charset_parameter_is_accepted(api):
    response = post_raw(api, b'{"text": "hello"}', content_type="application/json; charset=utf-8")

    assert response.status_code == 201, response.content


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/plain", b'{"text": "hello"}'),
        ("application/x-www-form-urlencoded", b"text=hello"),
        ("application/xml", b"<text>hello</text>"),
        ("", b'{"text": "hello"}'),
    ],
)
def test_a_body_of_another_type_is_415(api, content_type, body):
    problem = assert_problem(post_raw(api, body, content_type=content_type), 415)

    assert "Content-Type: application/json" in problem["detail"]
    assert not Conversion.objects.exists()


def test_a_multipart_form_to_the_json_endpoint_is_415(api):
    response = api.client.post(TEXT_ENDPOINT, {"text": "hello"})  # the test client's multipart default

    problem = assert_problem(response, 415)
    assert "multipart/form-data" in problem["detail"]


def test_the_schema_documents_the_415(client):
    responses = client.get(f"{BASE}/openapi.json").json()["paths"][TEXT_ENDPOINT]["post"]["responses"]

    assert PROBLEM in responses["415"]["content"]


# --- The web forms ---------------------------------------------------------------------------


def test_the_web_form_never_stores_a_surrogate_from_url_encoded_bytes(alice):
    response = alice.generic(
        "POST", reverse("text_new"), b"text=ok+%ED%A0%80+end", content_type="application/x-www-form-urlencoded"
    )

    assert response.status_code == 302
    text = Conversion.objects.get().input_text
    assert text.startswith("ok ") and text.endswith(" end")
    assert all(not "\ud800" <= char <= "\udfff" for char in text)


def test_the_web_form_never_stores_a_surrogate_from_multipart_bytes(alice):
    body = (
        b'--B\r\nContent-Disposition: form-data; name="text"\r\n\r\nok ' + SURROGATE_BYTES + b"\r\n--B--\r\n"
    )
    response = alice.generic("POST", reverse("text_new"), body, content_type="multipart/form-data; boundary=B")

    assert response.status_code == 302
    assert all(not "\ud800" <= char <= "\udfff" for char in Conversion.objects.get().input_text)
