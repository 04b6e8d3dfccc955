"""POST /api/v1/conversions/{id}/cancel and the lifecycle fields of a conversion."""

from __future__ import annotations

import pytest
from django.test import Client

from describer import jobs
from describer.api.tokens import api_token_create
from describer.models import Conversion, Worker

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(user):
    return Client(HTTP_AUTHORIZATION=f"Bearer {api_token_create(user=user, name='tests')[1]}", enforce_csrf_checks=True)


def test_the_owner_cancels_a_queued_conversion(api, make_conversion):
    conversion = make_conversion()
    response = api.post(f"/api/v1/conversions/{conversion.pk}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert api.get(f"/api/v1/conversions?status=cancelled").json()["count"] == 1


def test_a_running_conversion_is_cancelled_and_its_worker_can_no_longer_write(api, make_conversion):
    conversion = make_conversion()
    [claimed] = jobs.claim("w1")
    jobs.start(claimed, "w1")
    assert api.post(f"/api/v1/conversions/{conversion.pk}/cancel").json()["status"] == "cancelled"
    assert jobs.finish(claimed, "w1", {"output_text": "too late"}) is False


def test_an_ended_conversion_cannot_be_cancelled(api, make_conversion):
    conversion = make_conversion(status="done")
    response = api.post(f"/api/v1/conversions/{conversion.pk}/cancel")
    assert response.status_code == 409
    assert response["Content-Type"].startswith("application/problem+json")
    assert "already ended" in response.json()["detail"]


def test_another_users_conversion_is_a_404(api, other_user, make_conversion):
    theirs = make_conversion(other_user)
    assert api.post(f"/api/v1/conversions/{theirs.pk}/cancel").status_code == 404
    theirs.refresh_from_db()
    assert theirs.status == Conversion.Status.QUEUED


def test_a_queued_conversion_reports_workers_wait_and_attempt(api, make_conversion):
    conversion = make_conversion(attempts=1)
    body = api.get(f"/api/v1/conversions/{conversion.pk}").json()
    assert (body["workers_online"], body["estimated_wait_s"], body["attempt"], body["max_attempts"]) == (0, None, 2, 3)
    Worker.objects.create(name="gpu:1", host="gpu", pid=1)
    assert api.get(f"/api/v1/conversions/{conversion.pk}").json()["workers_online"] == 1
