"""htmx requests of a visitor whose session expired navigate to the login page."""

from __future__ import annotations


def test_an_htmx_request_without_a_session_is_sent_to_the_login_page(client, db):
    response = client.get("/?q=x", headers={"HX-Request": "true"})
    assert response.status_code == 200
    assert response["HX-Redirect"].startswith("/accounts/login/?next=")


def test_a_plain_request_without_a_session_is_redirected_as_usual(client, db):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")
    assert "HX-Redirect" not in response
