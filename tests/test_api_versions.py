"""The API's editing endpoints of a conversion, as the result page has them: retry, the Mermaid
versions of a drawing (list, save, restore), a repair, and whether the current code parses."""

from __future__ import annotations

import pytest

from describer import services
from describer.models import Conversion, MermaidVersion
from tests.test_api import Api, api, assert_problem, other_api  # noqa: F401 - fixtures

pytestmark = pytest.mark.django_db

TEXT = Conversion.Kind.TEXT_TO_DIAGRAM
GOOD = "flowchart TD\n    A([Order received]) --> B{In stock?}\n    B -->|yes| C([Shipped])"
BROKEN = 'flowchart TD\n    A["Start"] --> B{"Ok?"\n    B --> C'
PARSER_ERROR = "Parse error on line 3:\n...Expecting 'DIAMOND_STOP', got 'NODE_STRING'"


@pytest.fixture
def drawing(make_conversion):
    """A finished text → diagram conversion whose version 1 the model wrote."""

    def make(owner=None, code=GOOD, **fields):
        conversion = make_conversion(owner, kind=TEXT, **{"status": Conversion.Status.DONE, "input_text": "Orders.",
                                                          **fields})
        services.mermaid_version_add(conversion, code=code, origin=MermaidVersion.Origin.MODEL)
        return conversion

    return make


def post(api: Api, path: str, data: dict | None = None):
    if data is None:
        return api.client.post(f"/api/v1{path}")
    return api.client.post(f"/api/v1{path}", data, content_type="application/json")


# --- Retry ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [Conversion.Status.FAILED, Conversion.Status.CANCELLED])
def test_a_failed_or_cancelled_conversion_is_queued_again(api, make_conversion, status):
    conversion = make_conversion(status=status, error_message="boom", timings={"queue_wait_s": 1})

    response = post(api, f"/conversions/{conversion.pk}/retry")

    assert response.status_code == 202, response.content
    data = response.json()
    assert (data["status"], data["error_message"], data["timings"], data["queue_position"]) == ("queued", "", {}, 1)


def test_a_conversion_that_has_not_ended_badly_cannot_be_retried(api, make_conversion):
    conversion = make_conversion(status=Conversion.Status.DONE)

    problem = assert_problem(post(api, f"/conversions/{conversion.pk}/retry"), 409)

    assert problem["title"] == "Conflict" and "failed or cancelled" in problem["detail"] and "done" in problem["detail"]


def test_a_retry_counts_against_the_rate_limit(api, make_conversion, settings):
    settings.API_JOBS_PER_MINUTE = 1
    first, second = (make_conversion(status=Conversion.Status.FAILED) for _ in range(2))

    assert post(api, f"/conversions/{first.pk}/retry").status_code == 202
    assert_problem(post(api, f"/conversions/{second.pk}/retry"), 429)
    assert Conversion.objects.get(pk=second.pk).status == Conversion.Status.FAILED


# --- Versions ------------------------------------------------------------------------------------


def test_the_versions_are_listed_newest_first_with_their_parse_status(api, drawing):
    conversion = drawing()
    services.mermaid_save(conversion, code=BROKEN, parse_error=PARSER_ERROR)  # as the editor posts it

    response = api.get(f"/conversions/{conversion.pk}/versions")

    assert response.status_code == 200
    [edit, model] = response.json()
    assert (edit["number"], edit["origin"], edit["code"]) == (2, "edit", BROKEN)
    assert (edit["parses"], edit["parse_error"], edit["parse_checked_by"]) == (False, PARSER_ERROR, "browser")
    assert (model["number"], model["origin"], model["parses"], model["parse_checked_by"]) == (1, "model", None, None)


def test_a_description_has_no_versions(api, make_conversion):
    problem = assert_problem(api.get(f"/conversions/{make_conversion().pk}/versions"), 409)

    assert "only text → diagram conversions" in problem["detail"]


def test_saving_code_makes_it_the_current_version_and_the_result(api, drawing):
    conversion = drawing(status=Conversion.Status.FAILED, error_message="The repair failed.")
    edited = GOOD + "\n    B -->|no| D([Refunded])"

    response = post(api, f"/conversions/{conversion.pk}/versions", {"code": edited})

    assert response.status_code == 201, response.content
    version = response.json()
    assert (version["number"], version["origin"], version["code"]) == (2, "edit", edited)
    assert (version["parses"], version["parse_checked_by"]) == (None, None), "not on the client's word alone"
    data = api.get(f"/conversions/{conversion.pk}").json()
    assert (data["status"], data["output_mermaid"], data["mermaid_version"]) == ("done", edited, 2)


def test_a_saved_parse_error_is_kept_as_the_clients_report(api, drawing):
    conversion = drawing()

    response = post(api, f"/conversions/{conversion.pk}/versions", {"code": BROKEN, "parse_error": PARSER_ERROR})

    assert (response.json()["parses"], response.json()["parse_checked_by"]) == (False, "api_client")
    data = api.get(f"/conversions/{conversion.pk}").json()
    assert (data["mermaid_parses"], data["mermaid_parse_error"], data["mermaid_parse_checked_by"]) == (
        False, PARSER_ERROR, "api_client")


def test_saving_the_current_code_again_adds_no_version_but_keeps_its_report(api, drawing):
    conversion = drawing(code=BROKEN)

    response = post(api, f"/conversions/{conversion.pk}/versions", {"code": BROKEN, "parse_error": PARSER_ERROR})

    assert response.status_code == 200
    assert (response.json()["number"], response.json()["parses"]) == (1, False)
    assert conversion.mermaid_versions.count() == 1


def test_empty_code_is_refused_with_the_editors_message(api, drawing):
    problem = assert_problem(post(api, f"/conversions/{drawing().pk}/versions", {"code": " \n"}), 422, "code")

    assert "The Mermaid code is empty" in problem["errors"]["code"][0]


def test_code_cannot_be_saved_while_the_model_works_on_it(api, drawing):
    conversion = drawing(status=Conversion.Status.RUNNING)

    problem = assert_problem(post(api, f"/conversions/{conversion.pk}/versions", {"code": BROKEN}), 409)

    assert "still working" in problem["detail"]
    assert conversion.mermaid_versions.count() == 1


def test_restoring_adds_the_earlier_version_again_with_its_parse_status(api, drawing):
    conversion = drawing(code=BROKEN)
    services.mermaid_version_record_parse(conversion.current_mermaid_version(), parse_error=PARSER_ERROR,
                                          checked_by=MermaidVersion.ParseChecker.BROWSER)
    services.mermaid_save(conversion, code=GOOD, parse_error="")

    response = post(api, f"/conversions/{conversion.pk}/versions/1/restore")

    assert response.status_code == 201, response.content
    version = response.json()
    assert (version["number"], version["origin"], version["code"], version["parses"]) == (3, "restore", BROKEN, False)
    assert Conversion.objects.get(pk=conversion.pk).output_mermaid == BROKEN


def test_restoring_the_current_code_is_refused(api, drawing):
    conversion = drawing()

    problem = assert_problem(post(api, f"/conversions/{conversion.pk}/versions/1/restore"), 409)

    assert "nothing to restore" in problem["detail"]
    assert conversion.mermaid_versions.count() == 1


def test_restoring_a_version_it_does_not_have_is_a_404(api, drawing):
    conversion = drawing()

    problem = assert_problem(post(api, f"/conversions/{conversion.pk}/versions/7/restore"), 404)

    assert "no version 7" in problem["detail"] and f"/conversions/{conversion.pk}/versions" in problem["detail"]


# --- Repair --------------------------------------------------------------------------------------


def test_a_repair_queues_the_code_and_the_parsers_message_for_the_model(api, drawing):
    conversion = drawing(code=BROKEN)

    response = post(api, f"/conversions/{conversion.pk}/repair", {"code": BROKEN, "parse_error": PARSER_ERROR})

    assert response.status_code == 202, response.content
    assert response.json()["status"] == "queued"
    conversion.refresh_from_db()
    assert (conversion.repair_error, conversion.repair_attempts) == (PARSER_ERROR, 1)
    version = conversion.mermaid_versions.get()
    assert (version.parses, version.parse_error, version.parse_checked_by) == (False, PARSER_ERROR, "api_client")


def test_a_repair_needs_the_parsers_message(api, drawing):
    conversion = drawing(code=BROKEN)

    problem = assert_problem(post(api, f"/conversions/{conversion.pk}/repair", {"code": BROKEN, "parse_error": ""}),
                             422, "parse_error")

    assert "nothing to repair" in problem["detail"]
    assert Conversion.objects.get(pk=conversion.pk).status == Conversion.Status.DONE


def test_repairs_are_bounded(api, drawing, settings):
    settings.DESCRIBER_MAX_REPAIRS = 2
    conversion = drawing(code=BROKEN, repair_attempts=2)

    problem = assert_problem(
        post(api, f"/conversions/{conversion.pk}/repair", {"code": BROKEN, "parse_error": PARSER_ERROR}), 409)

    assert "All 2 repair attempts have been used" in problem["detail"]


def test_a_repair_counts_against_the_rate_limit(api, drawing, settings):
    settings.API_JOBS_PER_MINUTE = 1
    assert api.post_text({"text": "A first job."}).status_code == 201
    conversion = drawing(code=BROKEN)

    response = post(api, f"/conversions/{conversion.pk}/repair", {"code": BROKEN, "parse_error": PARSER_ERROR})

    assert_problem(response, 429)
    assert response["X-RateLimit-Remaining"] == "0"
    assert Conversion.objects.get(pk=conversion.pk).repair_attempts == 0


# --- Whether the result parses --------------------------------------------------------------------


def test_a_drawing_the_model_wrote_says_its_parse_status_is_not_checked(api, drawing):
    data = api.get(f"/conversions/{drawing().pk}").json()

    assert (data["mermaid_version"], data["mermaid_parses"], data["mermaid_parse_checked_by"]) == (1, None, None)
    assert data["mermaid_parse_error"] == ""


def test_code_the_editor_saved_is_known_to_parse(api, drawing):
    conversion = drawing()
    services.mermaid_save(conversion, code=GOOD + "\n    B -->|no| D([Wait])", parse_error="")

    data = api.get(f"/conversions/{conversion.pk}").json()

    assert (data["mermaid_version"], data["mermaid_parses"], data["mermaid_parse_checked_by"]) == (2, True, "browser")


def test_a_description_or_a_queued_drawing_has_no_parse_status(api, make_conversion):
    for conversion in (make_conversion(), make_conversion(kind=TEXT, input_text="Orders.")):
        data = api.get(f"/conversions/{conversion.pk}").json()
        assert (data["mermaid_version"], data["mermaid_parses"], data["mermaid_parse_checked_by"]) == (None, None, None)


def test_the_list_reads_every_parse_status_in_a_fixed_number_of_queries(api, drawing, django_assert_max_num_queries):
    for _ in range(5):
        drawing()

    with django_assert_max_num_queries(8):
        items = api.get("/conversions").json()["items"]

    assert [item["mermaid_version"] for item in items] == [1] * 5


# --- Owner only ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "data"), [
    ("post", "/retry", None),
    ("get", "/versions", None),
    ("post", "/versions", {"code": BROKEN}),
    ("post", "/versions/1/restore", None),
    ("post", "/repair", {"code": BROKEN, "parse_error": PARSER_ERROR}),
])  # fmt: skip
def test_another_users_conversion_is_a_404_and_stays_untouched(api, other_user, drawing, method, path, data):
    theirs = drawing(other_user, status=Conversion.Status.FAILED)
    url = f"/conversions/{theirs.pk}{path}"

    response = api.get(url) if method == "get" else post(api, url, data)

    assert str(theirs.pk) in assert_problem(response, 404)["detail"]
    theirs.refresh_from_db()
    assert (theirs.status, theirs.output_mermaid, theirs.mermaid_versions.count()) == ("failed", GOOD, 1)
