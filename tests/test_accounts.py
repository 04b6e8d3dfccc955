"""Accounts: logging in and out, throttled failed logins (django-axes), and self
sign-up, which is off unless SIGNUP_ENABLED is set.

Logins go through the real login form (axes needs the request), never client.login().
"""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from tests.conftest import PASSWORD

WRONG = "not the password"


def log_in(client, username: str, password: str, **extra):
    return client.post(reverse("login"), {"username": username, "password": password}, **extra)


def is_signed_in(client) -> bool:
    return client.get(reverse("history")).status_code == 200


def fail_logins(client, username: str, times: int, **extra) -> None:
    for _ in range(times):
        response = log_in(client, username, WRONG, **extra)
        assert response.status_code == 200
        assert "correct username and password" in response.content.decode()


def test_the_right_password_logs_in(client, user):
    response = log_in(client, "alice", PASSWORD)

    assert response.status_code == 302
    assert response["Location"] == reverse("history")
    assert is_signed_in(client)


def test_a_wrong_password_shows_the_form_again(client, user):
    fail_logins(client, "alice", 1)

    assert not is_signed_in(client)


def test_a_signed_in_user_skips_the_login_page(alice):
    assert alice.get(reverse("login")).status_code == 302


def test_it_locks_out_after_the_failure_limit_even_with_the_right_password(client, user, settings):
    fail_logins(client, "alice", settings.AXES_FAILURE_LIMIT - 1)

    last_failure = log_in(client, "alice", WRONG)
    with_right_password = log_in(client, "alice", PASSWORD)

    for response in (last_failure, with_right_password):
        assert response.status_code == 429
        assert "Too many failed logins" in response.content.decode()
    assert not is_signed_in(client)


def test_it_honours_a_lower_failure_limit(client, user, settings):
    settings.AXES_FAILURE_LIMIT = 2
    fail_logins(client, "alice", 1)

    assert log_in(client, "alice", WRONG).status_code == 429
    assert log_in(client, "alice", PASSWORD).status_code == 429


def test_a_successful_login_resets_the_failure_count(client, user, settings):
    almost = settings.AXES_FAILURE_LIMIT - 1
    fail_logins(client, "alice", almost)
    assert log_in(client, "alice", PASSWORD).status_code == 302
    client.post(reverse("logout"))

    fail_logins(client, "alice", almost)

    assert log_in(client, "alice", PASSWORD).status_code == 302
    assert is_signed_in(client)


def test_the_lockout_is_for_that_username_from_that_address(client, user, other_user, settings):
    fail_logins(client, "alice", settings.AXES_FAILURE_LIMIT - 1)
    assert log_in(client, "alice", WRONG).status_code == 429

    assert log_in(client, "mallory", PASSWORD).status_code == 302
    client.post(reverse("logout"))
    assert log_in(client, "alice", PASSWORD, REMOTE_ADDR="10.1.2.3").status_code == 302


def test_logging_out_ends_the_session(alice):
    response = alice.post(reverse("logout"))

    assert response.status_code == 302
    assert response["Location"] == reverse("login")
    assert not is_signed_in(alice)


@pytest.mark.django_db
def test_sign_up_is_off_by_default(client):
    login_page = client.get(reverse("login")).content.decode()

    assert client.get(reverse("signup")).status_code == 404
    response = client.post(
        reverse("signup"), {"username": "eve", "password1": "a long pass phrase 42", "password2": "a long pass phrase 42"}
    )
    assert response.status_code == 404
    assert not get_user_model().objects.filter(username="eve").exists()
    assert reverse("signup") not in login_page
    assert "Accounts are created by an administrator" in login_page


@pytest.mark.django_db
def test_sign_up_works_when_enabled(client, settings):
    settings.SIGNUP_ENABLED = True

    assert f'href="{reverse("signup")}"' in client.get(reverse("login")).content.decode()
    assert client.get(reverse("signup")).status_code == 200
    response = client.post(
        reverse("signup"), {"username": "eve", "password1": "a long pass phrase 42", "password2": "a long pass phrase 42"}
    )

    assert response.status_code == 302
    assert response["Location"] == reverse("history")
    assert get_user_model().objects.get(username="eve").check_password("a long pass phrase 42")
    assert is_signed_in(client)


@pytest.mark.django_db
def test_sign_up_refuses_mismatched_passwords(client, settings):
    settings.SIGNUP_ENABLED = True

    response = client.post(
        reverse("signup"), {"username": "eve", "password1": "a long pass phrase 42", "password2": "another phrase 42"}
    )

    assert response.status_code == 200
    assert "didn’t match" in response.content.decode()
    assert not get_user_model().objects.filter(username="eve").exists()
    assert not is_signed_in(client)
