"""Login throttling behind reverse proxies (TRUSTED_PROXY_COUNT): django-axes locks a
username + client address pair, and the client address comes from X-Forwarded-For only
as far as the proxies in front of us vouch for it.

Requests arrive as they would through the proxies: REMOTE_ADDR is the last proxy, and
every proxy appends the address it saw to X-Forwarded-For.
"""

from __future__ import annotations

import runpy

import pytest
from axes.models import AccessAttempt
from django.urls import reverse

from tests.conftest import PASSWORD
from tests.test_accounts import WRONG, fail_logins, log_in

pytestmark = pytest.mark.django_db

SETTINGS_FILE = "diagramsite/settings.py"
PROXY = "10.0.0.2"  # what daphne sees: the proxy's address
CLIENT_A = "81.2.69.142"
CLIENT_B = "81.2.69.160"
PROXY_SETTINGS = (
    "AXES_IPWARE_PROXY_COUNT",
    "AXES_IPWARE_PROXY_ORDER",
    "AXES_IPWARE_META_PRECEDENCE_ORDER",
    "IPWARE_STRICT",
)


@pytest.fixture
def proxies(settings, monkeypatch):
    """Apply what settings.py makes of TRUSTED_PROXY_COUNT=n (read from the real file)."""

    def configure(count: int) -> None:
        monkeypatch.setenv("TRUSTED_PROXY_COUNT", str(count))
        computed = runpy.run_path(SETTINGS_FILE)
        for name in PROXY_SETTINGS:
            setattr(settings, name, computed[name])

    return configure


def via_proxy(forwarded_for: str) -> dict[str, str]:
    return {"REMOTE_ADDR": PROXY, "HTTP_X_FORWARDED_FOR": forwarded_for}


def lock_out(client, settings, **extra) -> None:
    fail_logins(client, "alice", settings.AXES_FAILURE_LIMIT - 1, **extra)
    assert log_in(client, "alice", WRONG, **extra).status_code == 429


def test_behind_one_proxy_a_clients_failures_do_not_lock_out_another_client(client, user, settings, proxies):
    proxies(1)

    lock_out(client, settings, **via_proxy(CLIENT_A))

    assert log_in(client, "alice", PASSWORD, **via_proxy(CLIENT_A)).status_code == 429
    assert log_in(client, "alice", PASSWORD, **via_proxy(CLIENT_B)).status_code == 302
    # AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]: the pair, with the client's address.
    assert list(AccessAttempt.objects.values_list("username", "ip_address")) == [("alice", CLIENT_A)]


def test_a_client_cannot_lock_out_another_by_writing_x_forwarded_for_itself(client, user, settings, proxies):
    proxies(1)

    # Client A claims to be B; the proxy appends the address it really saw.
    lock_out(client, settings, **via_proxy(f"{CLIENT_B}, {CLIENT_A}"))

    assert log_in(client, "alice", PASSWORD, **via_proxy(CLIENT_B)).status_code == 302
    assert AccessAttempt.objects.get().ip_address == CLIENT_A


def test_a_garbled_x_forwarded_for_in_front_does_not_hide_the_client(client, user, settings, proxies):
    proxies(1)

    lock_out(client, settings, **via_proxy(f"not-an-address, {CLIENT_A}"))

    assert AccessAttempt.objects.get().ip_address == CLIENT_A
    assert log_in(client, "alice", PASSWORD, **via_proxy(CLIENT_B)).status_code == 302


def test_behind_two_proxies_the_client_is_the_second_address_from_the_right(client, user, settings, proxies):
    proxies(2)
    first_proxy = "10.0.0.3"  # e.g. a load balancer in front of nginx

    lock_out(client, settings, **via_proxy(f"{CLIENT_A}, {first_proxy}"))

    assert log_in(client, "alice", PASSWORD, **via_proxy(f"{CLIENT_B}, {first_proxy}")).status_code == 302
    assert AccessAttempt.objects.get().ip_address == CLIENT_A


def test_without_a_proxy_x_forwarded_for_is_ignored(client, user, settings, proxies):
    proxies(0)

    # A direct client varies the header on every try: it is still one address to axes.
    for number in range(settings.AXES_FAILURE_LIMIT - 1):
        extra = {"REMOTE_ADDR": CLIENT_A, "HTTP_X_FORWARDED_FOR": f"81.2.69.{number + 1}"}
        fail_logins(client, "alice", 1, **extra)
    response = log_in(client, "alice", WRONG, REMOTE_ADDR=CLIENT_A, HTTP_X_FORWARDED_FOR="81.2.69.99")

    assert response.status_code == 429
    assert AccessAttempt.objects.get().ip_address == CLIENT_A
    assert log_in(client, "alice", PASSWORD, REMOTE_ADDR=CLIENT_B, HTTP_X_FORWARDED_FOR=CLIENT_A).status_code == 302


def test_the_login_page_behind_a_proxy_still_logs_in(client, user, proxies):
    proxies(1)

    assert log_in(client, "alice", PASSWORD, **via_proxy(CLIENT_A)).status_code == 302
    assert client.get(reverse("history")).status_code == 200
