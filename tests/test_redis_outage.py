"""The site survives a Redis outage: logins, pages, uploads and the API answer from
PostgreSQL while Redis is down, the API's rate limit fails open with a WARNING, and a
progress page says live updates are paused until Redis is back, then is live again.

Outages are real: a private redis-server on a free port (never the machine's shared
one), killed and started again by its PID; the end-to-end tests run daphne against it.
"""

from __future__ import annotations

import logging
import re
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import requests
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from describer.api.tokens import api_token_create
from describer.cache import CacheUnavailable, FailSafeRedisCache
from describer.consumers import CLOSE_LIVE_PAUSED
from describer.models import Conversion
from describer.progress import Broadcaster
from diagramsite.asgi import application
from tests.browser import log_in
from tests.conftest import PASSWORD, diagram_png
from tests.processes import PrivateRedis, free_port, start_daphne, stop, wait_for

PAUSED = "Live updates are paused"
# Generous for 2 busy cores; a page stalled on Redis would take the OS's connect timeout.
ANSWER_WITHIN_S = 3.0


@dataclass
class Site:
    url: str
    log_path: Path

    def log_size(self) -> int:
        return self.log_path.stat().st_size

    def log_since(self, offset: int) -> str:
        return self.log_path.read_bytes()[offset:].decode(errors="replace")


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory):
    server = PrivateRedis(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.kill()


@pytest.fixture
def redis_up(private_redis) -> PrivateRedis:
    """Every test starts with the private Redis running, whatever the last one did to it."""
    if not private_redis.is_running():
        private_redis.start()
    return private_redis


@pytest.fixture(scope="module")
def site(django_db_setup, private_redis, tmp_path_factory):
    """daphne against the private Redis; module-scoped, as it only serves what the database holds."""
    directory = tmp_path_factory.mktemp("daphne")
    port = free_port()
    server = start_daphne(
        port, directory / "daphne.log",
        REDIS_URL=private_redis.url, DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost", MEDIA_ROOT=directory / "media",
    )
    yield Site(f"http://127.0.0.1:{port}", directory / "daphne.log")
    stop(server)
    print((directory / "daphne.log").read_text()[-3000:])


def dead_redis_url() -> str:
    """A port nobody listens on: connections are refused at once."""
    return f"redis://127.0.0.1:{free_port()}/0"


def fail_safe_cache(url: str, timeout: float = 0.5) -> FailSafeRedisCache:
    return FailSafeRedisCache(url, {"OPTIONS": {"socket_connect_timeout": timeout, "socket_timeout": timeout}})


def layer_at(url: str) -> dict:
    return {"default": {**django_settings.CHANNEL_LAYERS["default"], "CONFIG": {
        **django_settings.CHANNEL_LAYERS["default"]["CONFIG"], "hosts": [url]}}}


def real_password_hash(user) -> None:
    """The tests hash with MD5 for speed; daphne runs with the production hashers."""
    user.password = PBKDF2PasswordHasher().encode(PASSWORD, PBKDF2PasswordHasher().salt())
    user.save(update_fields=["password"])


def errors_in(records) -> list[str]:
    return [record.getMessage() for record in records if record.levelno >= logging.ERROR]


# --- The cache ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("operation", "expected"),
    [
        (lambda cache: cache.get("k", "fallback"), "fallback"),
        (lambda cache: cache.set("k", 1), False),
        (lambda cache: cache.add("k", 1), False),
        (lambda cache: cache.delete("k"), False),
        (lambda cache: cache.touch("k"), False),
        (lambda cache: "k" in cache, False),
        (lambda cache: cache.get_many(["k", "j"]), {}),
        (lambda cache: cache.set_many({"k": 1}), ["k"]),
        (lambda cache: cache.get_or_set("k", 7), 7),
    ],
    ids=["get", "set", "add", "delete", "touch", "has_key", "get_many", "set_many", "get_or_set"],
)
def test_an_unreachable_cache_answers_as_a_miss(operation, expected):
    assert operation(fail_safe_cache(dead_redis_url())) == expected


def test_incr_on_an_unreachable_cache_raises_its_own_error():
    # Not ValueError: callers read that as "the key expired" and start a new count.
    with pytest.raises(CacheUnavailable):
        fail_safe_cache(dead_redis_url()).incr("k")


def test_an_outage_is_one_warning_not_one_per_operation(caplog):
    cache = fail_safe_cache(dead_redis_url().replace("redis://", "redis://:s3cret@"))
    with caplog.at_level(logging.WARNING, logger="describer.cache"):
        for _ in range(50):
            cache.get("k")
            cache.set("k", 1)
    warnings = [record for record in caplog.records if record.name == "describer.cache"]
    assert len(warnings) == 1
    assert "Redis cache unreachable" in warnings[0].getMessage()
    assert "s3cret" not in warnings[0].getMessage()


def test_a_redis_that_does_not_answer_costs_one_timeout_then_is_left_alone():
    with socket.socket() as silent:  # accepts connections (the kernel does), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        cache = fail_safe_cache(f"redis://127.0.0.1:{silent.getsockname()[1]}/0", timeout=0.3)
        started = time.monotonic()
        assert cache.get("k") is None
        first = time.monotonic() - started
        started = time.monotonic()
        for _ in range(20):
            assert cache.get("k") is None
        rest = time.monotonic() - started
    assert 0.25 <= first < 2
    assert rest < 0.1


def test_a_delete_is_tried_even_while_redis_is_left_alone(redis_up):
    """A Redis that stalls keeps its data (as across a network cut): a logout meanwhile must
    still delete the cached session, or the session would outlive it."""
    cache = fail_safe_cache(redis_up.url, timeout=0.2)
    cache.set("session", "alive")
    admin = redis.Redis.from_url(redis_up.url)
    admin.execute_command("CLIENT", "PAUSE", 500, "ALL")
    assert cache.get("session") is None  # timed out: a miss, and Redis is left alone for a while
    time.sleep(0.5)  # answering again, with its data
    assert cache.get("session") is None  # still left alone
    assert cache.delete("session") is True
    assert not admin.exists(cache.make_and_validate_key("session"))
    assert cache.get("session") is None and cache.set("session", "new") is None  # back in use


def test_the_cache_is_used_again_once_redis_is_back(redis_up):
    cache = fail_safe_cache(redis_up.url)
    assert cache.set("k", "before") is None
    redis_up.kill()
    assert cache.get("k") is None
    redis_up.start()  # empty: no persistence
    wait_for(lambda: cache.set("k", "after") is None and cache.get("k") == "after", timeout=10,
             what="the cache to use Redis again")


# --- Pages and the API in-process, with the cache down -----------------------------------------


@pytest.fixture
def cache_down(settings):
    settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": dead_redis_url()}}
    return settings


@pytest.mark.django_db
def test_logging_in_and_logged_in_pages_work_with_the_cache_down(client, user, cache_down):
    # The real login form: django-axes counts attempts in the database, sessions fall back to it.
    response = client.post("/accounts/login/", {"username": user.username, "password": PASSWORD})
    assert response.status_code == 302 and response.url == "/"
    assert client.get("/").status_code == 200
    assert client.get("/upload/").status_code == 200


@pytest.mark.django_db
def test_the_api_rate_limit_fails_open_with_a_warning(user, cache_down, settings, caplog):
    settings.API_JOBS_PER_MINUTE = 1
    headers = {"Authorization": f"Bearer {api_token_create(user=user, name='outage')[1]}"}
    with caplog.at_level(logging.WARNING, logger="describer.api.ratelimit"):
        for _ in range(2):  # over the limit: not counted while the count cannot be kept
            image = SimpleUploadedFile("flow.png", diagram_png(), "image/png")
            response = Client().post("/api/v1/conversions/diagram-to-text", {"image": image}, headers=headers)
            assert response.status_code == 201, response.content
    assert any("API rate limit not enforced" in record.getMessage() for record in caplog.records)
    assert errors_in(caplog.records) == []


# --- The progress socket in-process, with the channel layer down -------------------------------


async def socket_for(client, user, conversion) -> WebsocketCommunicator:
    await database_sync_to_async(client.force_login)(user)
    cookie = f"{django_settings.SESSION_COOKIE_NAME}={client.cookies[django_settings.SESSION_COOKIE_NAME].value}"
    comm = WebsocketCommunicator(
        application,
        f"/ws/conversions/{conversion.id}/",
        headers=[(b"origin", b"http://localhost"), (b"cookie", cookie.encode())],
    )
    connected, _ = await comm.connect()
    assert connected
    return comm


async def running_conversion(make_conversion) -> Conversion:
    return await database_sync_to_async(make_conversion)(
        status=Conversion.Status.RUNNING, stage=Conversion.Stage.GENERATION, output_raw="Order received", image=False
    )


async def next_close(comm: WebsocketCommunicator, timeout: float = 5) -> dict:
    """The close, past any queue refreshes sent before it."""
    deadline = time.monotonic() + timeout
    while True:
        message = await comm.receive_output(timeout=max(0.1, deadline - time.monotonic()))
        if message["type"] == "websocket.close":
            return message


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_without_the_layer_the_page_gets_the_state_a_notice_and_a_close_to_reconnect(
    client, user, make_conversion, settings, caplog
):
    settings.CHANNEL_LAYERS = layer_at(dead_redis_url())
    conversion = await running_conversion(make_conversion)
    comm = await socket_for(client, user, conversion)

    html = await comm.receive_from(timeout=5)
    assert "Order received" in html  # what the database knows
    assert re.search(r'<p id="live-paused"[^>]*role="status">', html)  # shown: no `hidden`
    assert PAUSED in html
    assert (await next_close(comm))["code"] == CLOSE_LIVE_PAUSED
    await comm.disconnect()
    assert errors_in(caplog.records) == []


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_a_layer_failure_mid_session_closes_the_socket_to_reconnect_without_an_error(
    client, user, make_conversion, settings, caplog, redis_up
):
    settings.CHANNEL_LAYERS = layer_at(redis_up.url)
    conversion = await running_conversion(make_conversion)
    comm = await socket_for(client, user, conversion)
    html = await comm.receive_from(timeout=5)
    assert re.search(r'<p id="live-paused"[^>]*hidden', html)  # live: the notice stays hidden

    redis_up.kill()
    assert (await next_close(comm))["code"] == CLOSE_LIVE_PAUSED
    await comm.disconnect()  # leaving the group fails too: a warning, not a traceback
    assert errors_in(caplog.records) == []


# --- End to end: daphne against a Redis that goes away -------------------------------------------


def csrf_token(html: str) -> str:
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1)


def answered(response: requests.Response) -> requests.Response:
    assert response.elapsed.total_seconds() < ANSWER_WITHIN_S, f"{response.url} took {response.elapsed}"
    return response


def logged_in_session(site: Site, user) -> requests.Session:
    """Log in through the login form, as a browser would (django-axes needs the real request)."""
    session = requests.Session()
    form = answered(session.get(f"{site.url}/accounts/login/", timeout=10))
    response = answered(session.post(
        f"{site.url}/accounts/login/",
        {"csrfmiddlewaretoken": csrf_token(form.text), "username": user.username, "password": PASSWORD},
        allow_redirects=False, timeout=10,
    ))
    assert response.status_code == 302 and response.headers["Location"] == "/", response.text[:500]
    return session


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_logins_pages_uploads_and_the_api_answer_while_redis_is_down(site, redis_up, user, make_conversion):
    real_password_hash(user)
    conversion = make_conversion(kind=Conversion.Kind.TEXT_TO_DIAGRAM, input_text="Order received, then shipped")
    raw_token = api_token_create(user=user, name="outage")[1]
    before = logged_in_session(site, user)
    assert answered(before.get(f"{site.url}/", timeout=10)).status_code == 200  # the history, cached
    log_start = site.log_size()

    redis_up.kill()
    during = logged_in_session(site, user)  # a new login while Redis is down
    for session in (before, during):
        for path in ("/", f"/c/{conversion.id}/", "/upload/"):
            response = answered(session.get(f"{site.url}{path}", timeout=10))
            assert response.status_code == 200, (path, response.text[:500])

    form = answered(before.get(f"{site.url}/upload/", timeout=10))
    response = answered(before.post(
        f"{site.url}/upload/", {"csrfmiddlewaretoken": csrf_token(form.text)},
        files={"image": ("flow.png", diagram_png("Order received"), "image/png")}, allow_redirects=False, timeout=10,
    ))
    assert response.status_code == 302 and response.headers["Location"].startswith("/c/"), response.text[:500]
    response = answered(requests.post(
        f"{site.url}/api/v1/conversions/diagram-to-text", headers={"Authorization": f"Bearer {raw_token}"},
        files={"image": ("flow.png", diagram_png(), "image/png")}, timeout=10,
    ))
    assert response.status_code == 201, response.text[:500]
    assert Conversion.objects.filter(status=Conversion.Status.QUEUED).count() == 3

    page = answered(during.get(f"{site.url}/", timeout=10))
    logout = answered(during.post(f"{site.url}/accounts/logout/", {"csrfmiddlewaretoken": csrf_token(page.text)},
                                  allow_redirects=False, timeout=10))
    assert logout.status_code == 302

    log = site.log_since(log_start)
    assert "API rate limit not enforced" in log
    assert "Redis cache unreachable" in log
    assert " ERROR " not in log, log[-3000:]

    redis_up.start()
    assert answered(before.get(f"{site.url}/", timeout=10)).status_code == 200


def send_progress(conversion: Conversion, text: str) -> None:
    """One progress event as JobProgress.publish sends it, from a thread of its own, as in the
    worker (Playwright's sync API holds an event loop in this one)."""

    def send() -> None:
        broadcaster = Broadcaster()
        try:
            broadcaster.send(conversion.pk, {"type": "conversion.progress", "stage": Conversion.Stage.GENERATION,
                                             "text": text, "tokens": 2, "elapsed": 0.5})
        finally:
            broadcaster.close()

    thread = threading.Thread(target=send)
    thread.start()
    thread.join(10)


COUNT_SOCKET_OPENS = """
window.socketOpens = 0;
document.addEventListener("htmx:wsOpen", function () { window.socketOpens += 1; });
"""


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_a_progress_page_says_live_updates_are_paused_until_redis_is_back(
    site, redis_up, page, page_errors, user, make_conversion, settings
):
    real_password_hash(user)
    conversion = make_conversion(kind=Conversion.Kind.TEXT_TO_DIAGRAM, input_text="Order received, then shipped")
    page.add_init_script(COUNT_SOCKET_OPENS)
    log_in(page, site.url, user.username, PASSWORD)
    page.goto(f"{site.url}/c/{conversion.id}/")
    page.wait_for_function("() => window.socketOpens >= 1")  # a function, not a string: CSP forbids eval
    notice = page.locator("#live-paused")
    assert notice.is_hidden()
    log_start = site.log_size()

    redis_up.kill()
    notice.wait_for(state="visible", timeout=5_000)
    assert PAUSED in notice.inner_text()

    redis_up.start()
    notice.wait_for(state="hidden", timeout=15_000)
    # Live again: progress, sent as the worker sends it, reaches the page.
    settings.CHANNEL_LAYERS = layer_at(redis_up.url)
    send_progress(conversion, "Order received")
    page.wait_for_function("() => document.querySelector('#live-text').textContent.includes('Order received')",
                           timeout=5_000)
    assert notice.is_hidden()
    assert page_errors == []
    assert " ERROR " not in site.log_since(log_start)
