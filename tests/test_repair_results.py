"""What the result page shows after a repair: the repaired version's parse status (a "does
not parse" badge once a parser has said so) and timings that describe the repair's own run."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from describer import jobs, services
from describer.models import Conversion, MermaidVersion
from tests.conftest import run_next

pytestmark = pytest.mark.django_db

TEXT = Conversion.Kind.TEXT_TO_DIAGRAM
GOOD = "flowchart TD\n    A([Request]) --> B{Approved?}\n    B -->|yes| C([Done])"
BROKEN = 'flowchart TD\n    A["Start"] --> B{"Ok?"\n    B --> C'
STILL_BROKEN = 'flowchart TD\n    A["Start"] --> B{"Ok?"\n    B --> C["End'
PARSER_ERROR = "Parse error on line 3:\n...Expecting 'DIAMOND_STOP', got 'NODE_STRING'"
AN_HOUR_AGO = timedelta(hours=1)


@pytest.fixture
def drawing(make_conversion):
    """A finished text → diagram conversion whose version 1 the model wrote, made an hour ago."""

    def make(code=BROKEN, **fields):
        made = timezone.now() - AN_HOUR_AGO
        conversion = make_conversion(kind=TEXT, status=Conversion.Status.DONE, input_text="Leave: ask, approve.",
                                     created_at=made, queued_at=made, **fields)  # fmt: skip
        services.mermaid_version_add(conversion, code=code, origin=MermaidVersion.Origin.MODEL)
        return conversion

    return make


def repaired_by_the_worker(conversion: Conversion, code: str) -> Conversion:
    """The worker's side of a repair, as describer/drawing.py finishes it: the answer is a new version."""
    [job] = jobs.claim("w1")
    jobs.start(job, "w1")
    jobs.finish(job, "w1", {"repair_error": "", "timings": {}}, also=lambda: services.mermaid_version_add(
        job, code=code, origin=MermaidVersion.Origin.REPAIR))
    return Conversion.objects.get(pk=conversion.pk)


def version_item(html: str, number: int) -> str:
    match = re.search(rf'<li id="version-{number}".*?</li>', html, re.DOTALL)
    assert match, f"no version {number} in the list"
    return match.group(0)


# --- The "does not parse" badge ------------------------------------------------------------------


def test_a_repair_the_editor_reports_not_to_parse_gets_the_badge(alice, drawing):
    conversion = drawing()
    alice.post(reverse("repair", args=[conversion.pk]), {"code": BROKEN, "parse_error": PARSER_ERROR})
    repaired_by_the_worker(conversion, STILL_BROKEN)
    page = alice.get(conversion.get_absolute_url()).content.decode()
    assert "does not parse" in version_item(page, 1)
    assert "does not parse" not in version_item(page, 2), "no parser has seen the repair yet"
    assert 'data-parses="unknown"' in version_item(page, 2)

    # The editor shows the parser's error on the repair; saving it unchanged posts that error.
    response = alice.post(reverse("mermaid_save", args=[conversion.pk]),
                          {"code": STILL_BROKEN, "parse_error": PARSER_ERROR}, HTTP_HX_REQUEST="true")

    html = response.content.decode()
    assert response.status_code == 200 and "No changes to save." in html
    item = version_item(html, 2)
    assert "Repaired by the model" in item and "does not parse" in item and 'data-parses="false"' in item
    assert (conversion.mermaid_versions.count(), conversion.mermaid_versions.first().parse_checked_by) == (2, "browser")


def test_asking_to_repair_a_repair_marks_it_as_not_parsing(alice, drawing):
    conversion = drawing()
    services.conversion_request_repair(conversion, code=BROKEN, error=PARSER_ERROR)
    repaired_by_the_worker(conversion, STILL_BROKEN)

    alice.post(reverse("repair", args=[conversion.pk]), {"code": STILL_BROKEN, "parse_error": PARSER_ERROR})

    repair = conversion.mermaid_versions.get(number=2)
    assert (repair.origin, repair.parses, repair.parse_error) == ("repair", False, PARSER_ERROR)
    # The page shows the live progress of the new repair now; its version list will show:
    html = render_to_string("describer/_diagram_versions.html", {"conversion": conversion})
    assert "does not parse" in version_item(html, 2)


def test_a_repair_the_editor_finds_parsing_gets_no_badge(alice, drawing):
    conversion = drawing()
    services.conversion_request_repair(conversion, code=BROKEN, error=PARSER_ERROR)
    repaired_by_the_worker(conversion, GOOD)

    response = alice.post(reverse("mermaid_save", args=[conversion.pk]), {"code": GOOD, "parse_error": ""},
                          HTTP_HX_REQUEST="true")

    item = version_item(response.content.decode(), 2)
    assert "does not parse" not in item and 'data-parses="true"' in item


def test_a_report_without_a_parser_does_not_erase_what_the_editor_found(drawing):
    conversion = drawing()
    version = conversion.current_mermaid_version()
    services.mermaid_version_record_parse(version, parse_error=PARSER_ERROR, checked_by="browser")

    services.mermaid_save(conversion, code=BROKEN, parse_error="", checked_by=MermaidVersion.ParseChecker.API_CLIENT)

    version.refresh_from_db()
    assert (version.parses, version.parse_error, version.parse_checked_by) == (False, PARSER_ERROR, "browser")


# --- Timings ------------------------------------------------------------------------------------


def test_a_repair_request_clears_the_last_runs_timings_and_starts_its_queue_wait(alice, drawing):
    conversion = drawing(timings={"queue_wait_s": 0.1, "generation_s": 4.2, "tokens": 48})
    assert "Timings" in alice.get(conversion.get_absolute_url()).content.decode()

    services.conversion_request_repair(conversion, code=BROKEN, error=PARSER_ERROR)

    conversion.refresh_from_db()
    assert conversion.timings == {}
    assert timezone.now() - conversion.queued_at < timedelta(seconds=10)
    assert conversion.created_at < timezone.now() - AN_HOUR_AGO + timedelta(seconds=10), "its history date stays"
    assert "Timings" not in alice.get(conversion.get_absolute_url()).content.decode()


def test_a_repairs_timings_describe_the_repair_run(alice, drawing, runner):
    conversion = drawing(timings={"queue_wait_s": 0.1, "generation_s": 4.2, "tokens": 48})
    services.conversion_request_repair(conversion, code=BROKEN, error=PARSER_ERROR)

    job = run_next(runner)

    assert job.status == Conversion.Status.DONE, job.error_message
    assert job.mermaid_versions.first().origin == MermaidVersion.Origin.REPAIR
    assert 0 <= job.timings["queue_wait_s"] < 60, "counted from the repair request, not from an hour ago"
    assert job.timings["tokens"] == 48 and job.timings["generation_s"] != 4.2
    page = alice.get(conversion.get_absolute_url()).content.decode()
    assert "Of the last repair, from its request to the model's answer." in page


def test_a_retry_counts_its_queue_wait_from_the_retry(make_conversion):
    made = timezone.now() - AN_HOUR_AGO
    conversion = make_conversion(status=Conversion.Status.FAILED, created_at=made, queued_at=made)

    assert services.conversion_retry(conversion)
    [job] = jobs.claim("w1")
    jobs.start(job, "w1")
    jobs.finish(job, "w1", {"timings": {"queue_wait_s": AN_HOUR_AGO.total_seconds(), "tokens": 1}})

    job.refresh_from_db()
    assert 0 <= job.timings["queue_wait_s"] < 10 and job.timings["tokens"] == 1


def test_the_first_runs_queue_wait_counts_from_its_creation(make_conversion):
    conversion = make_conversion(created_at=timezone.now() - timedelta(seconds=30))
    Conversion.objects.filter(pk=conversion.pk).update(queued_at=conversion.created_at)

    [job] = jobs.claim("w1")
    jobs.start(job, "w1")
    jobs.finish(job, "w1", {"timings": {}})

    job.refresh_from_db()
    assert 30 <= job.timings["queue_wait_s"] < 40
