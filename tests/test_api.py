"""The JSON API's endpoints and every error they answer: both jobs, read, list,
delete, rate limits, and problem details (RFC 9457) for everything refused."""

from __future__ import annotations

import logging
import time
import uuid

import pytest
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from describer import services
from describer.api.tokens import api_token_create
from describer.models import Conversion, ConversionExample, Example
from tests.conftest import diagram_png, png_bytes

pytestmark = pytest.mark.django_db

BASE = "/api/v1"
PROBLEM = "application/problem+json"


class Api:
    """A test client that sends one user's API token and no cookies."""

    def __init__(self, raw_token: str) -> None:
        self.client = Client(HTTP_AUTHORIZATION=f"Bearer {raw_token}", enforce_csrf_checks=True)

    def get(self, path, data=None, **extra):
        return self.client.get(BASE + path, data, **extra)

    def delete(self, path):
        return self.client.delete(BASE + path)

    def post_text(self, data, **extra):
        return self.client.post(f"{BASE}/conversions/text-to-diagram", data, content_type="application/json", **extra)

    def upload(self, content=None, name="flow.png", **fields):
        image = SimpleUploadedFile(name, diagram_png() if content is None else content, "image/png")
        return self.client.post(f"{BASE}/conversions/diagram-to-text", {"image": image, **fields})


@pytest.fixture
def api(user):
    return Api(api_token_create(user=user, name="tests")[1])


@pytest.fixture
def other_api(other_user):
    return Api(api_token_create(user=other_user, name="theirs")[1])


def assert_problem(response, status: int, *fields: str) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == PROBLEM
    problem = response.json()
    assert problem["type"] == "about:blank"
    assert problem["status"] == status and problem["title"] and problem["detail"]
    for field in fields:
        assert problem["errors"][field], problem
    return problem


# --- Creating jobs ------------------------------------------------------------------------------


def test_an_uploaded_diagram_queues_a_diagram_to_text_conversion(api, user):
    response = api.upload(language="ru")

    assert response.status_code == 201, response.content
    data = response.json()
    conversion = Conversion.objects.get(pk=data["id"])
    assert conversion.owner == user
    assert data["kind"] == "diagram_to_text" and data["status"] == "queued" and data["stage"] == "queued"
    assert data["queue_position"] == 1
    assert data["language"] == "ru" and data["original_filename"] == "flow.png"
    assert (data["image_width"], data["image_height"]) == (640, 400)
    assert response["Location"] == data["url"] == f"http://testserver{BASE}/conversions/{conversion.id}"
    assert data["events_url"] == data["url"] + "/events"
    assert data["page_url"] == f"http://testserver/c/{conversion.id}/"


def test_a_text_queues_a_text_to_diagram_conversion(api, user):
    response = api.post_text({"text": "# Orders\nCustomer orders; we ship."})

    assert response.status_code == 201, response.content
    data = response.json()
    assert data["kind"] == "text_to_diagram" and data["status"] == "queued"
    assert data["input_text"] == "# Orders\nCustomer orders; we ship."
    assert data["title"] == "Orders"
    assert Conversion.objects.get(pk=data["id"]).owner == user


def test_an_upload_without_an_image_is_refused(api):
    response = api.client.post(f"{BASE}/conversions/diagram-to-text", {"language": "en"})

    problem = assert_problem(response, 422, "image")
    assert "image" in problem["detail"]


def test_an_upload_of_another_format_says_what_the_file_is(api):
    gif = png_bytes(fmt="GIF")

    problem = assert_problem(api.upload(gif, name="flow.png"), 422, "image")

    assert "GIF" in problem["errors"]["image"][0]
    assert "Allowed: PNG or JPEG" in problem["errors"]["image"][0]
    assert not Conversion.objects.exists()


def test_a_wrong_extension_is_refused_as_on_the_upload_page(api):
    problem = assert_problem(api.upload(name="flow.bmp"), 422, "image")

    assert ".png, .jpg or .jpeg" in problem["errors"]["image"][0]


def test_an_unknown_language_is_refused_with_the_choices(api):
    problem = assert_problem(api.upload(language="de"), 422, "language")

    assert "'en'" in problem["errors"]["language"][0]


def test_an_upload_over_the_size_limit_is_413(api, settings):
    settings.UPLOAD_MAX_BYTES = 1000

    problem = assert_problem(api.upload(), 413, "image")

    assert "too large" in problem["detail"]


def test_a_request_body_over_djangos_limit_is_413(api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000

    problem = assert_problem(api.post_text({"text": "x" * 2000}), 413)

    assert "too large" in problem["detail"]


def test_an_empty_text_is_refused_with_the_forms_message(api):
    problem = assert_problem(api.post_text({"text": "   "}), 422, "text")

    assert problem["errors"]["text"] == ["Write or paste a description of the process first."]


def test_a_text_over_the_limit_says_how_long_it_is_and_may_be(api, settings):
    settings.TEXT_INPUT_MAX_CHARS = 100

    problem = assert_problem(api.post_text({"text": "x" * 150}), 422, "text")

    assert "150" in problem["detail"] and "100" in problem["detail"]


def test_a_text_with_a_nul_character_is_refused(api):
    problem = assert_problem(api.post_text({"text": "a\x00b"}), 422, "text")

    assert problem["errors"]["text"] == ["Null characters are not allowed."], "the site's words, not a regex"


@pytest.mark.parametrize("body", [{}, {"text": 5}, {"words": "x"}, ["x"]])
def test_a_json_body_of_the_wrong_shape_is_422(api, body):
    assert_problem(api.post_text(body), 422)


def test_a_missing_body_is_422(api):
    response = api.client.post(f"{BASE}/conversions/text-to-diagram", content_type="application/json")

    assert_problem(response, 422, "text")


def test_a_body_that_is_not_json_is_400_with_a_hint(api):
    problem = assert_problem(api.post_text("text=hello"), 400)

    assert "Content-Type: application/json" in problem["detail"]


def test_creating_jobs_is_rate_limited_per_token(api, other_api, settings):
    settings.API_JOBS_PER_MINUTE = 2
    assert api.post_text({"text": "one"}).status_code == 201
    assert api.upload().status_code == 201

    response = api.post_text({"text": "three"})

    problem = assert_problem(response, 429)
    assert 1 <= int(response["Retry-After"]) <= 60
    assert "2 conversions a minute" in problem["detail"]
    assert Conversion.objects.count() == 2
    assert other_api.post_text({"text": "another token"}).status_code == 201


def start_well_inside_a_window() -> None:
    """The limit counts per calendar minute: keep a test's few requests inside one."""
    left = 60 - time.time() % 60
    if left < 2:
        time.sleep(left)


def test_every_counted_answer_says_where_the_token_stands(api, settings):
    settings.API_JOBS_PER_MINUTE = 2
    start_well_inside_a_window()
    before = time.time()

    first, refused_input, over = api.post_text({"text": "one"}), api.post_text({"text": " "}), api.upload()

    assert (first.status_code, refused_input.status_code, over.status_code) == (201, 422, 429)
    assert [r["X-RateLimit-Limit"] for r in (first, refused_input, over)] == ["2"] * 3
    assert [r["X-RateLimit-Remaining"] for r in (first, refused_input, over)] == ["1", "0", "0"]
    reset = int(first["X-RateLimit-Reset"])
    assert reset % 60 == 0 and before < reset <= before + 60
    assert over["X-RateLimit-Reset"] == str(reset)
    assert 1 <= int(over["Retry-After"]) <= 60


def test_without_a_limit_or_for_reading_no_rate_limit_headers_are_sent(api, settings, make_conversion):
    settings.API_JOBS_PER_MINUTE = 0
    created = api.post_text({"text": "one"})
    settings.API_JOBS_PER_MINUTE = 5
    read = api.get(f"/conversions/{make_conversion().id}")

    assert created.status_code == 201 and read.status_code == 200
    assert not [name for name in (*created.headers, *read.headers) if name.lower().startswith("x-ratelimit")]


def test_reading_is_not_rate_limited(api, settings, make_conversion):
    settings.API_JOBS_PER_MINUTE = 1
    conversion = make_conversion()

    assert all(api.get(f"/conversions/{conversion.id}").status_code == 200 for _ in range(3))


def test_a_limit_of_zero_turns_the_rate_limit_off(api, settings):
    settings.API_JOBS_PER_MINUTE = 0

    assert [api.post_text({"text": f"job {n}"}).status_code for n in range(3)] == [201] * 3


def test_posting_needs_no_csrf_token(api):
    # The client enforces CSRF checks; token-authenticated requests carry no cookies to forge.
    assert api.post_text({"text": "hello"}).status_code == 201


# --- Reading one -----------------------------------------------------------------------------


def test_a_conversion_is_read_with_its_outputs_timings_and_examples(api, make_conversion):
    conversion = make_conversion(
        status=Conversion.Status.DONE, stage=Conversion.Stage.FINISHED, title="Orders",
        output_raw="raw text", output_text="# Orders", output_structure={"title": "Orders", "steps": []},
        tokens_generated=48, timings={"queue_wait_s": 0.5, "tokens": 48, "tokens_per_s": None},
    )
    example = Example(name="invoice-flow", description="# Invoices")
    example.image.save("invoice.png", ContentFile(diagram_png()), save=False)
    example.save()
    ConversionExample.objects.create(conversion=conversion, example=example, similarity=0.91, rank=1)
    ConversionExample.objects.create(conversion=conversion, example=None, similarity=0.5, rank=2)

    data = api.get(f"/conversions/{conversion.id}").json()

    assert data["status"] == "done" and data["stage"] == "finished" and data["queue_position"] is None
    assert data["output_raw"] == "raw text" and data["output_text"] == "# Orders"
    assert data["output_structure"] == {"title": "Orders", "steps": []}
    assert data["timings"] == {"queue_wait_s": 0.5, "tokens": 48, "tokens_per_s": None}
    assert data["examples_used"] == [
        {"example_id": example.pk, "name": "invoice-flow", "similarity": 0.91, "rank": 1},
        {"example_id": None, "name": None, "similarity": 0.5, "rank": 2},
    ]


def test_a_running_conversion_shows_its_partial_text(api, make_conversion):
    conversion = make_conversion(status=Conversion.Status.RUNNING, stage=Conversion.Stage.GENERATION,
                                 output_raw="The process sta")

    data = api.get(f"/conversions/{conversion.id}").json()

    assert (data["status"], data["stage"], data["output_raw"]) == ("running", "generation", "The process sta")


def test_the_queue_position_counts_the_jobs_ahead(api, make_conversion, other_user):
    make_conversion(other_user)
    make_conversion()
    mine = make_conversion()

    assert api.get(f"/conversions/{mine.id}").json()["queue_position"] == 3


def test_another_users_conversion_is_404(api, make_conversion, other_user):
    theirs = make_conversion(other_user)

    problem = assert_problem(api.get(f"/conversions/{theirs.id}"), 404)

    assert str(theirs.id) in problem["detail"]


def test_an_unknown_id_is_404(api):
    assert_problem(api.get(f"/conversions/{uuid.uuid4()}"), 404)


def test_an_id_that_is_not_a_uuid_is_404(api):
    problem = assert_problem(api.get("/conversions/42"), 404)

    assert "/api/v1/docs" in problem["detail"]


# --- Listing ---------------------------------------------------------------------------------


def test_the_list_is_the_callers_newest_first_and_paginated(api, make_conversion, other_user):
    mine = [make_conversion(title=f"job {n}") for n in range(3)]
    make_conversion(other_user, title="theirs")

    first = api.get("/conversions", {"page_size": 2}).json()
    second = Client().get(first["next"].replace("http://testserver", ""), **api.client.defaults).json()

    assert first["count"] == 3 and first["page"] == 1 and first["page_size"] == 2
    assert [item["title"] for item in first["items"]] == ["job 2", "job 1"]
    assert first["previous"] is None
    assert [item["id"] for item in second["items"]] == [str(mine[0].id)]
    assert second["next"] is None and second["previous"].endswith("page=1")


def test_a_page_past_the_end_is_empty(api, make_conversion):
    make_conversion()

    data = api.get("/conversions", {"page": 5}).json()

    assert data["count"] == 1 and data["items"] == [] and data["next"] is None


def test_the_list_filters_like_the_history(api, make_conversion):
    make_conversion(title="Invoice approval", status=Conversion.Status.DONE)
    make_conversion(title="Invoice draft")
    make_conversion(kind=Conversion.Kind.TEXT_TO_DIAGRAM, title="Hiring", input_text="Interview, then offer")

    def titles(**query):
        return [item["title"] for item in api.get("/conversions", query).json()["items"]]

    assert titles(q="invoice") == ["Invoice draft", "Invoice approval"]
    assert titles(q="interview") == ["Hiring"]
    assert titles(kind="text_to_diagram") == ["Hiring"]
    assert titles(status="done") == ["Invoice approval"]
    assert titles(q="invoice", status="queued") == ["Invoice draft"]


@pytest.mark.parametrize(("query", "field"), [
    ({"kind": "poem"}, "kind"), ({"status": "lost"}, "status"), ({"page": 0}, "page"),
    ({"page_size": 1000}, "page_size"), ({"q": "x" * 201}, "q"), ({"q": "a\x00b"}, "q"),
    ({"staus": "done"}, "staus"),  # a misspelt filter is named, not silently ignored
])
def test_invalid_filters_are_422_per_field(api, query, field):
    assert_problem(api.get("/conversions", query), 422, field)


# --- Deleting --------------------------------------------------------------------------------


def test_deleting_removes_the_conversion_and_its_files(api, make_conversion, django_capture_on_commit_callbacks):
    conversion = make_conversion()
    storage, image = conversion.input_image.storage, conversion.input_image.name

    with django_capture_on_commit_callbacks(execute=True):
        response = api.delete(f"/conversions/{conversion.id}")

    assert response.status_code == 204 and response.content == b""
    assert not Conversion.objects.exists()
    assert not storage.exists(image)
    assert_problem(api.delete(f"/conversions/{conversion.id}"), 404)


def test_another_users_conversion_cannot_be_deleted(api, make_conversion, other_user):
    theirs = make_conversion(other_user)

    assert_problem(api.delete(f"/conversions/{theirs.id}"), 404)
    assert Conversion.objects.filter(pk=theirs.pk).exists()


# --- Everything else answers with problems too -------------------------------------------------


def test_a_method_an_address_does_not_take_is_405_with_allow(api, make_conversion):
    conversion = make_conversion()

    response = api.client.put(f"{BASE}/conversions/{conversion.id}")

    problem = assert_problem(response, 405)
    assert set(response["Allow"].replace(" ", "").split(",")) == {"GET", "DELETE"}
    assert "PUT" in problem["detail"]


@pytest.mark.parametrize("path", ["/nothing-here", "/", "/conversions/"])
def test_an_address_without_an_endpoint_is_404(api, path):
    assert_problem(api.get(path), 404)


def test_an_unexpected_error_is_a_500_problem_and_is_logged(api, monkeypatch, caplog):
    def broken(**kwargs):
        raise RuntimeError("database on fire")

    monkeypatch.setattr(services, "conversion_create_from_text", broken)

    with caplog.at_level(logging.ERROR, logger="describer.api.problems"):
        problem = assert_problem(api.post_text({"text": "hello"}), 500)

    assert "database on fire" not in problem["detail"]  # no internals to the caller
    assert "database on fire" in caplog.text


def test_every_api_url_is_closed_to_anonymous_callers(client):
    """The API is outside the login-required pages (test_access.py): here it is token or nothing."""
    from tests.test_access import every_url

    for name, url, _ in every_url():
        if not url.startswith(f"{BASE}/") or name in {"api:openapi-json", "api:openapi-view"}:
            continue
        for method in ("get", "post"):
            response = getattr(client, method)(url)
            assert response.status_code in (401, 404, 405), (method, url, response.status_code)
            assert response["Content-Type"] == PROBLEM, (method, url)


@pytest.mark.django_db
def test_a_conversion_returns_its_coverage_and_grounding(api, make_conversion):
    detail = {"score": 0.8, "label_recall": 1.0, "step_precision": 0.6667, "labels": [], "steps": []}
    conversion = make_conversion(status=Conversion.Status.DONE, coverage=0.8, grounding=detail)
    data = api.get(f"/conversions/{conversion.pk}").json()
    assert data["coverage"] == 0.8 and data["grounding"]["step_precision"] == 0.6667
    bare = make_conversion(kind=Conversion.Kind.TEXT_TO_DIAGRAM, input_text="x")
    assert api.get(f"/conversions/{bare.pk}").json()["coverage"] is None
