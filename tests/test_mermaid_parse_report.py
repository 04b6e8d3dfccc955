"""POST /c/<id>/mermaid/parse/: the editor's verdict on a version no parser has judged."""

from __future__ import annotations

import pytest
from django.urls import reverse

from describer import services
from describer.models import Conversion, MermaidVersion

pytestmark = pytest.mark.django_db
CODE = "flowchart TD\n    A --> B("


@pytest.fixture
def drawing(make_conversion):
    conversion = make_conversion(kind=Conversion.Kind.TEXT_TO_DIAGRAM, status=Conversion.Status.DONE, image=False)
    services.mermaid_version_add(conversion, code=CODE, origin=MermaidVersion.Origin.REPAIR)
    return conversion


def report(client, conversion, **data):
    return client.post(reverse("mermaid_parse_report", args=[conversion.pk]), {"version": 1, "code": CODE, **data})


def test_it_keeps_the_editors_verdict_and_answers_the_versions_with_the_badge(alice, drawing):
    response = report(alice, drawing, parse_error="Line 2: the shape opened with “(” is not closed.")

    assert response.status_code == 200
    assert "does not parse" in response.content.decode()
    version = drawing.mermaid_versions.get()
    assert (version.parses, version.parse_checked_by) == (False, "browser")


def test_it_ignores_a_report_on_other_code_or_on_a_version_already_judged(alice, drawing):
    report(alice, drawing, code="flowchart TD\n    A --> B", parse_error="")
    assert drawing.mermaid_versions.get().parses is None, "the version changed meanwhile"

    report(alice, drawing, parse_error="Line 2: broken")
    report(alice, drawing, parse_error="")
    assert drawing.mermaid_versions.get().parses is False, "the first verdict stays"


def test_another_users_conversion_is_not_found(client, other_user, drawing):
    client.force_login(other_user)
    assert report(client, drawing).status_code == 404
    assert drawing.mermaid_versions.get().parses is None


def test_a_report_without_a_version_number_is_refused(alice, drawing):
    assert report(alice, drawing, version="x").status_code == 400
