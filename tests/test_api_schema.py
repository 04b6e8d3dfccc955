"""The OpenAPI schema at /api/v1/openapi.json, its docs page (offline: Swagger UI
from django-ninja's bundled static files), and schemathesis checking that the
endpoints do what the schema says."""

from __future__ import annotations

import re
import secrets
import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from describer.api.tokens import TOKEN_PREFIX, hash_token
from describer.models import ApiToken

OPENAPI = "/api/v1/openapi.json"
OPERATIONS = {
    ("post", "/api/v1/conversions/diagram-to-text"),
    ("post", "/api/v1/conversions/text-to-diagram"),
    ("get", "/api/v1/conversions"),
    ("get", "/api/v1/conversions/{conversion_id}"),
    ("delete", "/api/v1/conversions/{conversion_id}"),
    ("get", "/api/v1/conversions/{conversion_id}/events"),
    ("post", "/api/v1/conversions/{conversion_id}/cancel"),
    ("get", "/api/v1/conversions/{conversion_id}/export"),
    ("post", "/api/v1/conversions/{conversion_id}/retry"),
    ("get", "/api/v1/conversions/{conversion_id}/versions"),
    ("post", "/api/v1/conversions/{conversion_id}/versions"),
    ("post", "/api/v1/conversions/{conversion_id}/versions/{number}/restore"),
    ("post", "/api/v1/conversions/{conversion_id}/repair"),
}
# The operations that queue model work and count against API_JOBS_PER_MINUTE, with their success status.
RATE_LIMITED = {
    "/api/v1/conversions/diagram-to-text": "201",
    "/api/v1/conversions/text-to-diagram": "201",
    "/api/v1/conversions/{conversion_id}/retry": "202",
    "/api/v1/conversions/{conversion_id}/repair": "202",
}
RATE_HEADERS = {"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"}


@pytest.fixture
def openapi(client):
    response = client.get(OPENAPI)
    assert response.status_code == 200
    return response.json()


def test_the_schema_is_served_without_a_token_and_lists_every_endpoint(openapi):
    assert openapi["openapi"].startswith("3.")
    served = {(method, path) for path, methods in openapi["paths"].items() for method in methods}
    assert served == OPERATIONS
    assert openapi["components"]["securitySchemes"] == {"TokenAuth": {"type": "http", "scheme": "bearer"}}


def test_every_operation_needs_the_token_and_declares_its_errors_as_problems(openapi):
    for path, methods in openapi["paths"].items():
        for method, operation in methods.items():
            assert operation["security"] == [{"TokenAuth": []}], (method, path)
            responses = operation["responses"]
            assert "401" in responses, (method, path)
            for status, response in responses.items():
                if int(status) >= 400:
                    schema = response["content"]["application/problem+json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Problem"}, (method, path, status)


def test_the_creating_operations_declare_rate_limiting_and_validation(openapi):
    for path in ("/api/v1/conversions/diagram-to-text", "/api/v1/conversions/text-to-diagram"):
        assert {"201", "400", "401", "422", "429"} <= set(openapi["paths"][path]["post"]["responses"])
    upload = openapi["paths"]["/api/v1/conversions/diagram-to-text"]["post"]
    assert "413" in upload["responses"]
    body = upload["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert body["required"] == ["image"] and body["properties"]["image"]["format"] == "binary"


def test_the_rate_limited_operations_declare_their_rate_limit_headers(openapi):
    for path, success in RATE_LIMITED.items():
        responses = openapi["paths"][path]["post"]["responses"]
        assert set(responses[success]["headers"]) == RATE_HEADERS, path
        assert set(responses["429"]["headers"]) == RATE_HEADERS | {"Retry-After"}, path
        assert responses[success]["content"], "the headers are added to the answer, not in its place"


def test_a_drawings_result_says_whether_its_mermaid_parses_and_what_checked_it(openapi):
    fields = openapi["components"]["schemas"]["ConversionOut"]["properties"]

    assert {"mermaid_version", "mermaid_parses", "mermaid_parse_error", "mermaid_parse_checked_by"} <= set(fields)
    assert "runs no Mermaid parser" in fields["mermaid_parse_checked_by"]["description"]


def test_the_stream_is_documented_as_server_sent_events(openapi):
    operation = openapi["paths"]["/api/v1/conversions/{conversion_id}/events"]["get"]

    assert list(operation["responses"]["200"]["content"]) == ["text/event-stream"]
    assert "`finished`" in operation["description"] and "`delta`" in operation["description"]


def test_the_docs_page_works_offline_from_bundled_static_files(client):
    page = client.get("/api/v1/docs")

    assert page.status_code == 200
    html = page.content.decode()
    assets = re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', html)
    assert any(asset.endswith("swagger-ui-bundle.js") for asset in assets)
    for asset in assets:
        assert asset.startswith("/static/"), f"{asset} is not served by the site itself"
        response = client.get(asset)
        assert response.status_code == 200, asset
        b"".join(response.streaming_content) if response.streaming else response.content  # noqa: B018


# --- schemathesis against the served schema ---------------------------------------------------
# In process (Django's WSGI handler): every example is a real request through the middleware,
# the token auth, the forms and PostgreSQL. The schema is fetched from the site at collection time
# (it needs no database); a handful of examples per operation keeps the run under a minute.
# (schemathesis.pytest.from_fixture would load it lazily, but it touches a pytest internal that
# pytest 9 no longer has.)

MAX_EXAMPLES = 40

schema = schemathesis.openapi.from_wsgi(OPENAPI, get_wsgi_application())
schema.config.generation.update(max_examples=MAX_EXAMPLES)
# Known before any case exists: schemathesis builds some cases before the test's fixtures run.
RAW_TOKEN = TOKEN_PREFIX + secrets.token_urlsafe(32)


@schema.auth()
class BearerToken:
    """Through schemathesis' own auth, so that its checks can also try the API without it."""

    def get(self, case, context) -> str:
        return RAW_TOKEN

    def set(self, case, data, context) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


@pytest.fixture
def token(transactional_db, user, settings) -> ApiToken:
    # Committed (transactional_db): the async stream view reads it from another thread's connection.
    settings.API_JOBS_PER_MINUTE = 0  # a 429 is fine by the schema but would hide the real answers
    return ApiToken.objects.create(user=user, name="schemathesis", prefix=RAW_TOKEN[:10],
                                   token_hash=hash_token(RAW_TOKEN))


@schema.parametrize()
# One token for all of an operation's examples is the point, not an accident.
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
def test_the_api_does_what_its_schema_says(case, token):
    # The jobs' inputs have rules JSON Schema cannot say (an image that decodes, 16 px a side at
    # least; a text that is not blank): the web's forms check them, with their own messages, so a
    # schema-valid 1×1 PNG is rightly refused with 422. Every other check stays on.
    creating = case.operation.method.upper() == "POST"
    case.call_and_validate(excluded_checks=[positive_data_acceptance] if creating else None)


@pytest.mark.browser
def test_the_docs_page_shows_every_operation_without_leaving_the_site(live_server, page, page_errors):
    elsewhere = []
    page.on("request", lambda request: elsewhere.append(request.url)
            if not request.url.startswith(live_server.url) and not request.url.startswith("data:") else None)

    page.goto(f"{live_server.url}/api/v1/docs")
    page.wait_for_selector(".opblock")

    assert page.locator(".opblock").count() == len(OPERATIONS)
    assert "diagramsite API" in page.inner_text(".info")
    assert elsewhere == []
    assert page_errors == []

