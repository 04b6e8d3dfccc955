"""Personal API tokens: created and revoked on the settings page (shown once,
stored hashed), and what the API makes of them."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from describer.api.tokens import api_token_create
from describer.models import ApiToken

pytestmark = pytest.mark.django_db

CONVERSIONS = "/api/v1/conversions"


def bearer(raw: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {raw}"}


def test_the_settings_page_is_in_the_nav_and_lists_the_users_tokens(alice, user, other_user):
    api_token_create(user=user, name="CI pipeline")
    api_token_create(user=other_user, name="not mine")

    page = alice.get(reverse("settings")).content.decode()

    assert f'href="{reverse("settings")}"' in alice.get(reverse("history")).content.decode()
    assert "CI pipeline" in page
    assert "not mine" not in page
    assert "Never" in page  # last used


def test_creating_a_token_shows_it_once_and_stores_only_its_hash(alice, user):
    response = alice.post(reverse("token_create"), {"name": "laptop"})

    assert response.status_code == 200
    token = ApiToken.objects.get(user=user)
    raw = response.context["new_token"]
    assert raw.startswith("ds_") and len(raw) > 40
    assert raw in response.content.decode()
    assert token.token_hash == hashlib.sha256(raw.encode()).hexdigest()
    assert token.prefix == raw[:10]
    assert raw not in alice.get(reverse("settings")).content.decode()
    assert token.prefix in alice.get(reverse("settings")).content.decode()


def test_creating_a_token_through_htmx_returns_the_token_fragment(alice):
    response = alice.post(reverse("token_create"), {"name": "laptop"}, HTTP_HX_REQUEST="true")

    assert response.status_code == 200
    assert [t.name for t in response.templates][0] == "describer/_api_tokens.html"
    assert 'id="new-token"' in response.content.decode()


def test_a_token_needs_a_name(alice):
    response = alice.post(reverse("token_create"), {"name": "  "}, HTTP_HX_REQUEST="true")

    assert response.status_code == 400
    assert "Give the token a name" in response.content.decode()
    assert not ApiToken.objects.exists()


def test_revoking_a_token_deletes_it_and_the_api_refuses_it(alice, client, user):
    token, raw = api_token_create(user=user, name="old")
    assert client.get(CONVERSIONS, **bearer(raw)).status_code == 200

    response = alice.post(reverse("token_revoke", args=[token.pk]), HTTP_HX_REQUEST="true")

    assert response.status_code == 200 and response.content == b""
    assert not ApiToken.objects.exists()
    refused = client.get(CONVERSIONS, **bearer(raw))
    assert refused.status_code == 401
    assert "revoked or mistyped" in refused.json()["detail"]


def test_revoking_without_htmx_redirects_with_a_message(alice, user):
    token, _ = api_token_create(user=user, name="old")

    response = alice.post(reverse("token_revoke", args=[token.pk]), follow=True)

    assert response.redirect_chain == [(reverse("settings"), 302)]
    assert "was revoked" in response.content.decode()


def test_another_users_token_cannot_be_revoked(alice, other_user):
    token, _ = api_token_create(user=other_user, name="theirs")

    assert alice.post(reverse("token_revoke", args=[token.pk])).status_code == 404
    assert ApiToken.objects.filter(pk=token.pk).exists()


def test_revoking_needs_a_post(alice, user):
    token, _ = api_token_create(user=user, name="old")

    assert alice.get(reverse("token_revoke", args=[token.pk])).status_code == 405


def test_a_used_token_records_when(client, user):
    token, raw = api_token_create(user=user, name="ci")

    client.get(CONVERSIONS, **bearer(raw))

    token.refresh_from_db()
    assert token.last_used_at is not None


def test_tokens_of_inactive_users_are_refused(client, user):
    _, raw = api_token_create(user=user, name="ci")
    user.is_active = False
    user.save()

    response = client.get(CONVERSIONS, **bearer(raw))

    assert response.status_code == 401
    assert response["Content-Type"] == "application/problem+json"
    assert "deactivated" in response.json()["detail"]


# --- Expiry ------------------------------------------------------------------------------------


def test_a_new_token_expires_after_the_default_days(alice, user, settings):
    settings.API_TOKEN_DEFAULT_DAYS = 30

    alice.post(reverse("token_create"), {"name": "laptop"})

    expires_in = ApiToken.objects.get(user=user).expires_at - timezone.now()
    assert timedelta(days=30) - timedelta(minutes=1) < expires_in <= timedelta(days=30)


@pytest.mark.parametrize(("choice", "days"), [("30", 30), ("365", 365), ("0", None)])
def test_the_maker_chooses_how_long_a_token_lasts(alice, user, choice, days):
    alice.post(reverse("token_create"), {"name": "ci", "expires_in": choice})

    token = ApiToken.objects.get(user=user)
    if days is None:
        assert token.expires_at is None
    else:
        assert (token.expires_at - timezone.now()).days == days - 1  # a few seconds less than `days`


def test_an_expiry_that_is_not_offered_is_refused(alice):
    response = alice.post(reverse("token_create"), {"name": "ci", "expires_in": "7"}, HTTP_HX_REQUEST="true")

    assert response.status_code == 400
    assert "Select a valid choice" in response.content.decode()
    assert not ApiToken.objects.exists()


def test_the_form_offers_the_default_expiry_first_chosen_whatever_it_is(alice, settings):
    settings.API_TOKEN_DEFAULT_DAYS = 45

    page = alice.get(reverse("settings")).content.decode()

    assert re.search(r'<option value="45" selected>After 45 days</option>', page)
    assert '<option value="0">Never</option>' in page and '<option value="365">After 365 days</option>' in page


def test_the_tokens_table_shows_when_each_token_expires(alice, user):
    api_token_create(user=user, name="forever", days=0)
    api_token_create(user=user, name="soon", days=30)
    old, _ = api_token_create(user=user, name="old", days=30)
    ApiToken.objects.filter(pk=old.pk).update(expires_at=timezone.now() - timedelta(days=1))

    page = alice.get(reverse("settings")).content.decode()

    assert "Never expires" in page
    assert page.count('<td class="token-expiry" data-label="Expires"><time datetime=') == 2
    assert re.search(r'<tr id="token-%s" class="expired">.*?expired</span>' % old.pk, page, re.DOTALL)


def test_an_expired_token_is_refused_with_a_message_that_says_so(client, user):
    token, raw = api_token_create(user=user, name="ci", days=30)
    expired = timezone.now() - timedelta(hours=1)
    ApiToken.objects.filter(pk=token.pk).update(expires_at=expired)

    response = client.get(CONVERSIONS, **bearer(raw))

    assert response.status_code == 401
    assert response["Content-Type"] == "application/problem+json"
    assert 'error="invalid_token"' in response["WWW-Authenticate"]
    detail = response.json()["detail"]
    assert "expired" in detail and expired.isoformat(timespec="seconds") in detail and "/settings/" in detail
    token.refresh_from_db()
    assert token.last_used_at is None, "a refused token was not used"


def test_a_token_that_never_expires_keeps_working(client, user):
    token, raw = api_token_create(user=user, name="ci", days=0)

    assert client.get(CONVERSIONS, **bearer(raw)).status_code == 200
    assert token.expires_at is None


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer ds_not-a-real-token", "Basic YWxpY2U6cHc=", "Token abc"])
def test_requests_without_a_valid_token_are_refused_with_a_problem(client, header):
    extra = {"HTTP_AUTHORIZATION": header} if header else {}

    response = client.get(CONVERSIONS, **extra)

    assert response.status_code == 401
    assert response["Content-Type"] == "application/problem+json"
    assert response["WWW-Authenticate"].startswith("Bearer")
    problem = response.json()
    assert problem["status"] == 401 and problem["title"] and "/settings/" in problem["detail"]


def test_a_session_cookie_is_not_accepted_by_the_api(alice, make_conversion):
    conversion = make_conversion()

    assert alice.get(CONVERSIONS).status_code == 401
    assert alice.get(f"{CONVERSIONS}/{conversion.id}").status_code == 401
    assert alice.delete(f"{CONVERSIONS}/{conversion.id}").status_code == 401
    assert alice.post(f"{CONVERSIONS}/text-to-diagram", {"text": "x"}, content_type="application/json").status_code == 401


@pytest.mark.browser
def test_a_user_creates_uses_and_revokes_a_token_in_the_browser(live_server, page, page_errors, user):
    from tests.browser import log_in
    from tests.conftest import PASSWORD

    base = live_server.url
    log_in(page, base, user.username, PASSWORD)
    page.click("header >> text=Settings")
    page.wait_for_url(f"{base}/settings/")
    assert "You have no API tokens yet." in page.inner_text("#api-tokens")

    page.fill("input[name=name]", "   ")  # blank: the server's error appears in place
    page.click("#token-form button[type=submit]")
    assert "Give the token a name" in page.inner_text("#token-form .error")
    page.fill("input[name=name]", "CI pipeline")
    page.click("#token-form button[type=submit]")
    raw = page.inner_text("#new-token")
    assert page.url == f"{base}/settings/"
    assert raw.startswith("ds_")
    assert "CI pipeline" in page.inner_text("table.tokens")
    assert Client().get(CONVERSIONS, **bearer(raw)).status_code == 200

    page.reload()
    assert page.query_selector("#new-token") is None
    assert raw[:10] in page.inner_text("table.tokens")

    page.on("dialog", lambda dialog: dialog.accept())
    page.click("table.tokens >> text=Revoke")
    page.wait_for_selector("table.tokens tbody tr", state="detached")
    assert not ApiToken.objects.exists()
    assert Client().get(CONVERSIONS, **bearer(raw)).status_code == 401
    assert page_errors == []
