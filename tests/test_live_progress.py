"""The conversion page's WebSocket: owner only, same origin only, and the text
streaming in while a real (tiny) model writes it."""

from __future__ import annotations

import threading

import pytest
from channels.testing import WebsocketCommunicator
from django.conf import settings

from describer.consumers import CLOSE_NOT_FOUND, CLOSE_NOT_LOGGED_IN
from describer.models import Conversion
from describer.pipeline import JobRunner
from describer.progress import Broadcaster
from diagramsite.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)
ORIGIN = (b"origin", b"http://localhost")


def session_cookie(client, user) -> tuple[bytes, bytes]:
    client.force_login(user)
    return (b"cookie", f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}".encode())


def communicator(conversion: Conversion, *headers) -> WebsocketCommunicator:
    return WebsocketCommunicator(application, f"/ws/conversions/{conversion.id}/", headers=[*headers])


async def closed_with(comm: WebsocketCommunicator) -> int | None:
    connected, _ = await comm.connect()
    if not connected:
        return None
    message = await comm.receive_output(timeout=5)
    assert message["type"] == "websocket.close"
    return message.get("code")


@pytest.mark.asyncio
async def test_it_closes_the_socket_of_an_anonymous_visitor(make_conversion):
    conversion = await _make(make_conversion)
    assert await closed_with(communicator(conversion, ORIGIN)) == CLOSE_NOT_LOGGED_IN


@pytest.mark.asyncio
async def test_it_closes_the_socket_of_another_user(client, make_conversion, other_user):
    conversion = await _make(make_conversion)
    cookie = await _cookie(client, other_user)
    assert await closed_with(communicator(conversion, ORIGIN, cookie)) == CLOSE_NOT_FOUND


@pytest.mark.asyncio
async def test_it_rejects_a_foreign_origin(client, make_conversion, user):
    conversion = await _make(make_conversion)
    cookie = await _cookie(client, user)
    comm = communicator(conversion, (b"origin", b"http://evil.example"), cookie)
    connected, _ = await comm.connect()
    assert not connected
    await comm.disconnect()


@pytest.mark.asyncio
async def test_the_owner_sees_the_queue_position(client, make_conversion, user):
    conversion = await _make(make_conversion)
    comm = communicator(conversion, ORIGIN, await _cookie(client, user))
    connected, _ = await comm.connect()
    assert connected
    html = await comm.receive_from(timeout=5)
    assert 'id="live-status"' in html
    assert "position 1" in html
    await comm.disconnect()


@pytest.mark.asyncio
async def test_the_owner_watches_the_text_stream_in_then_gets_the_result(
    client, make_conversion, user, tiny_runtime, quick_generation
):
    conversion = await _make(make_conversion)
    comm = communicator(conversion, ORIGIN, await _cookie(client, user))
    connected, _ = await comm.connect()
    assert connected
    await comm.receive_from(timeout=5)  # the state on connect

    job = threading.Thread(target=_run_job, args=(tiny_runtime, conversion))
    job.start()
    messages = []
    while True:
        output = await comm.receive_output(timeout=60)
        if output["type"] == "websocket.close":
            break
        messages.append(output["text"])
    job.join()

    live = [m for m in messages if 'id="live-text"' in m]
    texts = [m.split('id="live-text"', 1)[1] for m in live]
    assert len(live) >= 3, "stages and text chunks are pushed as they happen"
    assert any("Writing" in m for m in live)
    assert len(set(texts)) >= 2, "the text grows between updates"
    assert 'id="conversion-body"' in messages[-1]
    assert 'class="description"' in messages[-1]


def _run_job(runtime, conversion: Conversion) -> None:
    from django.db import connections

    from describer.jobs import claim

    [claimed] = claim("test-worker")
    assert claimed.pk == conversion.pk
    broadcaster = Broadcaster()
    JobRunner(runtime, broadcaster, worker_name="test-worker").run(claimed)
    broadcaster.close()
    connections.close_all()  # this thread's connection would block dropping the test database


async def _make(make_conversion) -> Conversion:
    from channels.db import database_sync_to_async

    return await database_sync_to_async(make_conversion)()


async def _cookie(client, user):
    from channels.db import database_sync_to_async

    return await database_sync_to_async(session_cookie)(client, user)
