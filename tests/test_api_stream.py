"""Following a conversion live as Server-Sent Events: in process against the
channel layer (the events the worker sends), and end to end through daphne with
a real worker process writing with the tiny model."""

from __future__ import annotations

import asyncio
import gc
import json
import signal
import urllib.request
import uuid

import pytest
import pytest_asyncio
from channels.layers import get_channel_layer
from django.test import AsyncClient, Client

from describer.api import sse
from describer.api.tokens import api_token_create
from describer.models import Conversion
from describer.progress import group_name
from tests.conftest import diagram_png
from tests.processes import free_port, start_daphne, start_worker, stop

pytestmark = pytest.mark.django_db(transaction=True)


def events_url(conversion_id) -> str:
    return f"/api/v1/conversions/{conversion_id}/events"


def parse_events(text: str) -> list[tuple[str, object]]:
    """("progress", {...}) for each event of a stream; ("comment", text) for `:` lines."""
    events = []
    for block in text.split("\n\n"):
        if block.startswith(":"):
            events.append(("comment", block[1:].strip()))
        elif block.strip():
            fields = dict(line.split(": ", 1) for line in block.splitlines())
            events.append((fields["event"], json.loads(fields["data"])))
    return events


class Stream:
    """An open event stream of the in-process ASGI app, read one event at a time."""

    def __init__(self, response) -> None:
        self.response = response
        self.chunks = aiter(response.streaming_content)
        self.buffer = ""

    async def next(self, timeout: float = 10) -> tuple[str, object]:
        while "\n\n" not in self.buffer:
            chunk = await asyncio.wait_for(anext(self.chunks), timeout)
            self.buffer += chunk.decode() if isinstance(chunk, bytes) else chunk
        block, self.buffer = self.buffer.split("\n\n", 1)
        return parse_events(block + "\n\n")[0]

    async def ended(self, timeout: float = 10) -> bool:
        try:
            await asyncio.wait_for(anext(self.chunks), timeout)
        except StopAsyncIteration:
            return True
        return False


@pytest.fixture
def raw_token(user) -> str:
    return api_token_create(user=user, name="stream")[1]


@pytest_asyncio.fixture
async def open_stream(raw_token):
    streams = []

    async def open_(conversion_id) -> Stream:
        response = await AsyncClient().get(events_url(conversion_id), headers={"Authorization": f"Bearer {raw_token}"})
        assert response.status_code == 200, response.content
        assert response["Content-Type"] == "text/event-stream"
        assert response["Cache-Control"] == "no-cache"
        streams.append(Stream(response))
        return streams[-1]

    yield open_
    for stream in streams:  # as a client going away: the view leaves the group, Django closes the response
        await stream.chunks.aclose()


@pytest.fixture(autouse=True)
def collect_stray_connections():
    """The test client keeps Django from closing connections when a request ends, and those the async
    view opened in its own context are left unreferenced: collect them (which closes them), or the
    test database cannot be dropped at the end of the run."""
    yield
    gc.collect()


async def send(conversion: Conversion, event: dict) -> None:
    await get_channel_layer().group_send(group_name(conversion.pk), event)


def progress(text: str, tokens: int) -> dict:
    return {"type": "conversion.progress", "stage": "generation", "text": text, "tokens": tokens, "elapsed": 0.5}


@pytest.mark.asyncio
async def test_a_finished_conversion_streams_its_state_and_finished_at_once(open_stream, make_conversion):
    conversion = make_conversion(status=Conversion.Status.DONE, stage=Conversion.Stage.FINISHED, output_text="# Done")

    stream = await open_stream(conversion.id)

    state = await stream.next()
    finished = await stream.next()
    assert state[0] == "state" and state[1]["status"] == "done"
    assert finished == ("finished", state[1])
    assert await stream.ended()


@pytest.mark.asyncio
async def test_progress_events_are_passed_on_then_the_final_conversion(open_stream, make_conversion):
    conversion = make_conversion()
    stream = await open_stream(conversion.id)
    event, state = await stream.next()
    assert (event, state["status"], state["queue_position"]) == ("state", "queued", 1)

    await send(conversion, progress("The", 1))
    await send(conversion, progress("The process", 2))
    assert await stream.next() == (
        "progress", {"stage": "generation", "delta": "The", "reset": False, "tokens": 1, "elapsed": 0.5})
    assert (await stream.next())[1]["delta"] == " process"

    Conversion.objects.filter(pk=conversion.pk).update(
        status=Conversion.Status.DONE, stage=Conversion.Stage.FINISHED, output_raw="The process", output_text="# P")
    await send(conversion, {"type": "conversion.finished"})
    event, final = await stream.next()
    assert event == "finished"
    assert (final["status"], final["output_text"], final["id"]) == ("done", "# P", str(conversion.id))
    assert await stream.ended()


@pytest.mark.asyncio
async def test_progress_events_carry_only_the_new_text_however_long_the_answer(open_stream, make_conversion):
    conversion = make_conversion(status=Conversion.Status.RUNNING, stage=Conversion.Stage.GENERATION)
    stream = await open_stream(conversion.id)
    await stream.next()
    words = [f"word{n} " for n in range(300)]

    events = []
    for n in range(1, len(words) + 1):
        await send(conversion, progress("".join(words[:n]), n))
        events.append(await stream.next())

    assert [data["delta"] for _, data in events] == words
    assert all(len(json.dumps(data)) < 120 for _, data in events), "no event resends the text so far"


@pytest.mark.asyncio
async def test_a_lost_progress_event_is_covered_by_the_next_delta(open_stream, make_conversion):
    conversion = make_conversion(status=Conversion.Status.RUNNING, stage=Conversion.Stage.GENERATION)
    stream = await open_stream(conversion.id)
    await stream.next()

    await send(conversion, progress("One", 1))
    # "One, two" never reaches the stream (the layer may drop messages); the worker's next event has it all.
    await send(conversion, progress("One, two, three", 3))

    assert [(await stream.next())[1]["delta"] for _ in range(2)] == ["One", ", two, three"]


@pytest.mark.asyncio
async def test_a_text_that_starts_over_is_sent_as_a_reset(open_stream, make_conversion):
    conversion = make_conversion(status=Conversion.Status.RUNNING, stage=Conversion.Stage.GENERATION)
    stream = await open_stream(conversion.id)
    await stream.next()

    await send(conversion, progress("First attempt", 2))
    await send(conversion, progress("Sec", 1))  # the job was requeued and runs again

    assert (await stream.next())[1] | {"elapsed": None} == {
        "stage": "generation", "delta": "First attempt", "reset": False, "tokens": 2, "elapsed": None}
    event, data = await stream.next()
    assert (event, data["delta"], data["reset"]) == ("progress", "Sec", True)


@pytest.mark.asyncio
async def test_deltas_continue_from_the_text_of_the_first_state(open_stream, make_conversion):
    conversion = make_conversion(status=Conversion.Status.RUNNING, stage=Conversion.Stage.GENERATION,
                                 output_raw="Written before the client came")
    stream = await open_stream(conversion.id)
    assert (await stream.next())[1]["output_raw"] == "Written before the client came"

    await send(conversion, progress("Written before the client came, and after", 9))

    assert (await stream.next())[1]["delta"] == ", and after"


@pytest.mark.asyncio
async def test_a_finish_is_noticed_even_when_its_event_is_lost(open_stream, make_conversion, monkeypatch):
    monkeypatch.setattr(sse, "POLL_SECONDS", 0.1)
    conversion = make_conversion()
    stream = await open_stream(conversion.id)
    await stream.next()

    Conversion.objects.filter(pk=conversion.pk).update(status=Conversion.Status.FAILED, error_message="boom")

    event, final = await stream.next()
    assert (event, final["status"], final["error_message"]) == ("finished", "failed", "boom")


@pytest.mark.asyncio
async def test_a_queued_conversion_reports_its_moving_queue_position(open_stream, make_conversion, monkeypatch):
    monkeypatch.setattr(sse, "POLL_SECONDS", 0.1)
    ahead = make_conversion()
    conversion = make_conversion()
    stream = await open_stream(conversion.id)
    assert (await stream.next())[1]["queue_position"] == 2

    Conversion.objects.filter(pk=ahead.pk).update(status=Conversion.Status.RUNNING)

    event, state = await stream.next()
    assert (event, state["queue_position"]) == ("state", 1)


@pytest.mark.asyncio
async def test_quiet_streams_get_keep_alive_comments(open_stream, make_conversion, monkeypatch):
    monkeypatch.setattr(sse, "POLL_SECONDS", 0.05)
    monkeypatch.setattr(sse, "HEARTBEAT_SECONDS", 0.2)
    conversion = make_conversion(status=Conversion.Status.RUNNING)
    stream = await open_stream(conversion.id)
    await stream.next()

    assert await stream.next() == ("comment", "keep-alive")


@pytest.mark.asyncio
async def test_a_conversion_deleted_meanwhile_ends_the_stream(open_stream, make_conversion, monkeypatch):
    monkeypatch.setattr(sse, "POLL_SECONDS", 0.1)
    conversion = make_conversion()
    stream = await open_stream(conversion.id)
    await stream.next()

    Conversion.objects.filter(pk=conversion.pk).delete()

    assert await stream.next() == ("deleted", {"id": str(conversion.id)})
    assert await stream.ended()


def test_another_users_or_an_unknown_conversion_is_a_404_problem(raw_token, make_conversion, other_user):
    client = Client(HTTP_AUTHORIZATION=f"Bearer {raw_token}")
    for conversion_id in (make_conversion(other_user).id, uuid.uuid4()):
        response = client.get(events_url(conversion_id))
        assert response.status_code == 404
        assert response["Content-Type"] == "application/problem+json"


def test_the_stream_needs_a_token(client, make_conversion):
    response = client.get(events_url(make_conversion().id))

    assert response.status_code == 401
    assert response["Content-Type"] == "application/problem+json"


# --- End to end: daphne + a worker process + the tiny model --------------------------------------


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
             for name, value in fields.items()]
    for name, (filename, content) in files.items():
        head = (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                "Content-Type: image/png\r\n\r\n")
        parts.append(head.encode() + content + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def read_events(response, *, until: str):
    """Events of an open urllib response as they arrive, up to and including `until`."""
    event, data = None, None
    for raw in response:
        line = raw.decode().rstrip("\r\n")
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data = json.loads(line[6:])
        elif not line and event:
            yield event, data
            if event == until:
                return
            event, data = None, None


@pytest.mark.slow
def test_the_tiny_model_streams_through_daphne_to_curl_like_clients(user, raw_token, tiny_models_dir, tmp_path):
    port = free_port()
    server = start_daphne(port, tmp_path / "daphne.log", DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost")
    site, auth = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {raw_token}"}
    worker = None
    try:
        body, content_type = multipart({"language": "en"}, {"image": ("flow.png", diagram_png("Order received"))})
        request = urllib.request.Request(f"{site}/api/v1/conversions/diagram-to-text", data=body, method="POST",
                                         headers={**auth, "Content-Type": content_type})
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 201
            created = json.load(response)

        stream = urllib.request.urlopen(urllib.request.Request(created["events_url"], headers=auth), timeout=120)
        assert stream.headers["Content-Type"] == "text/event-stream"
        events = read_events(stream, until="finished")
        first = next(events)
        assert first[0] == "state" and first[1]["status"] == "queued"

        # Started only now, so the stream sees the job go from the queue to the end.
        worker = start_worker(tmp_path / "worker.log", TINY_MODELS_DIR=tiny_models_dir,
                              DESCRIBER_MIN_NEW_TOKENS=300, DESCRIBER_MAX_NEW_TOKENS=300)
        rest = list(events)
        stream.close()
    finally:
        if worker:
            stop(worker, signal.SIGKILL)
            print((tmp_path / "worker.log").read_text()[-3000:])
        stop(server)
        print((tmp_path / "daphne.log").read_text()[-3000:])

    progress_events = [data for event, data in rest if event == "progress"]
    deltas = [data["delta"] for data in progress_events if data["delta"]]
    assert len(deltas) >= 3, rest
    assert not any(data["reset"] for data in progress_events)
    assert {data["stage"] for data in progress_events} >= {"retrieval", "generation"}
    event, final = rest[-1]
    assert event == "finished"
    assert final["status"] == "done", final["error_message"]
    assert "".join(deltas) == final["output_raw"], "the deltas add up to the whole text, sent at the end"
    assert final["output_text"].startswith("# ") and final["tokens_generated"] >= 300
    conversion = Conversion.objects.get(pk=created["id"])
    assert final["output_text"] == conversion.output_text


@pytest.mark.asyncio
async def test_with_the_channel_layer_down_the_stream_polls_the_saved_text(open_stream, make_conversion, settings, monkeypatch):
    from channels.db import database_sync_to_async

    monkeypatch.setattr(sse, "POLL_SECONDS", 0.2)
    dead = f"redis://127.0.0.1:{free_port()}/0"
    settings.CHANNEL_LAYERS = {"default": {**settings.CHANNEL_LAYERS["default"],
                                           "CONFIG": {**settings.CHANNEL_LAYERS["default"]["CONFIG"], "hosts": [dead]}}}
    conversion = make_conversion(status=Conversion.Status.RUNNING, stage=Conversion.Stage.GENERATION)
    stream = await open_stream(conversion.id)
    assert (await stream.next())[0] == "state"

    # The worker saves its text to the row (the layer is down for it too).
    update = database_sync_to_async(lambda **fields: Conversion.objects.filter(pk=conversion.pk).update(**fields))
    await update(output_raw="Saved so far", tokens_generated=3)
    assert await stream.next() == (
        "progress", {"stage": "generation", "delta": "Saved so far", "reset": False, "tokens": 3, "elapsed": None})
    await update(output_raw="Saved so far, and more", tokens_generated=5)
    assert (await stream.next())[1]["delta"] == ", and more"
    await update(status=Conversion.Status.DONE, stage=Conversion.Stage.FINISHED)
    assert (await stream.next())[0] == "finished"
    assert await stream.ended()


def test_daphne_names_the_status_of_every_api_error(raw_token, tmp_path):
    """Twisted's status table lacks 422 and 429: they went out as "Unknown Status"."""
    import http.client
    from http import HTTPStatus

    port = free_port()
    server = start_daphne(port, tmp_path / "daphne.log", DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost",
                          API_JOBS_PER_MINUTE="1")  # fmt: skip
    headers = {"Authorization": f"Bearer {raw_token}", "Content-Type": "application/json"}
    try:
        statuses = []
        # An empty text, then jobs until the limit (1 a minute, whichever minute they fall in) refuses one.
        for text in ("", *["A customer orders; the shop ships."] * 4):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            connection.request("POST", "/api/v1/conversions/text-to-diagram", json.dumps({"text": text}), headers)
            response = connection.getresponse()
            statuses.append((response.status, response.reason))
            connection.close()
            if response.status == 429:
                break
    finally:
        stop(server)
    assert statuses[0] == (422, HTTPStatus(422).phrase) and statuses[-1] == (429, "Too Many Requests")
    assert all(reason == HTTPStatus(status).phrase for status, reason in statuses), statuses
    assert "Unknown" not in HTTPStatus(422).phrase
