"""The error pages (templates/403.html, 404.html, 500.html, 403_csrf.html) in the site's look, as
production serves them: DEBUG off."""

from __future__ import annotations

import uuid

import pytest
from django.db import connection
from django.template.loader import render_to_string
from django.test import Client
from django.urls import include, path, reverse

from describer.models import Conversion

pytestmark = pytest.mark.django_db


def broken_view(request):
    raise RuntimeError("boom")


# A URLconf with one view that fails, for the 500 page (used through @pytest.mark.urls).
urlpatterns = [path("broken/", broken_view), path("", include("diagramsite.urls"))]


@pytest.fixture(autouse=True)
def production(settings):
    settings.DEBUG = False


def test_a_missing_page_is_the_sites_own_404(alice):
    response = alice.get(f"/c/{uuid.uuid4()}/")

    page = response.content.decode()
    assert response.status_code == 404
    assert 'data-status="404"' in page and "Page not found" in page
    assert "/static/css/site.css" in page and 'class="mainnav"' in page  # the site's header and look
    assert f'href="{reverse("history")}"' in page


def test_another_users_conversion_is_the_same_404(alice, other_user, make_conversion):
    theirs = make_conversion(owner=other_user)

    assert alice.get(theirs.get_absolute_url()).status_code == 404


def test_a_forbidden_action_is_the_sites_own_403(alice, make_conversion):
    conversion = make_conversion(status=Conversion.Status.DONE)

    # Promoting to an example is for staff only.
    response = alice.post(reverse("promote_example", args=[conversion.pk]), {"name": "x"})

    page = response.content.decode()
    assert response.status_code == 403
    assert 'data-status="403"' in page and "Not allowed" in page and "/static/css/site.css" in page


@pytest.mark.urls("tests.test_pages_errors")
def test_a_server_error_is_the_sites_own_500(user):
    client = Client(raise_request_exception=False)
    client.force_login(user)

    response = client.get("/broken/")

    page = response.content.decode()
    assert response.status_code == 500
    assert 'data-status="500"' in page and "Something went wrong" in page
    assert "/static/css/site.css" in page and "/static/js/theme.js" in page


def test_the_500_page_renders_without_a_request_or_the_database(django_assert_num_queries):
    with django_assert_num_queries(0):
        page = render_to_string("500.html")

    assert "Something went wrong" in page and 'href="/"' in page


def test_the_500_page_renders_when_the_database_is_gone(monkeypatch):
    def no_database(*args, **kwargs):
        raise AssertionError("the 500 page touched the database")

    monkeypatch.setattr(connection, "cursor", no_database)
    assert "Something went wrong" in render_to_string("500.html")


def test_a_form_sent_without_its_csrf_token_explains_to_reload_the_page(user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)

    response = client.post(reverse("text_new"), {"text": "Order, then pay."})

    page = response.content.decode()
    assert response.status_code == 403
    assert "data-csrf-failure" in page and "The page is out of date" in page
    assert "reload the page" in page
    assert 'class="mainnav"' in page  # the site's header: the request's user is known
    assert not Conversion.objects.exists()
