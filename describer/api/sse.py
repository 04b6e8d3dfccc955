"""A conversion's live progress as Server-Sent Events.

The stream listens to the same channel-layer group as the page's WebSocket
(`conversion-<id>`, fed by describer/progress.py). It joins the group *before*
reading the conversion, so no event can fall between the first state and the
live events. Layer messages may be lost (they expire, and a full channel drops
them), so while no event comes the row is re-read every POLL_SECONDS: a
finished conversion is noticed even when its `finished` event never arrives,
and a queued one reports its moving queue position. While Redis is down the
stream does not fail: it polls the row alone and sends its saved partial text as
`progress` events, then listens again once the layer answers.

The worker's events carry the whole text so far (the page's WebSocket needs that:
a dropped event is healed by the next). The stream sends only what is new, as
OpenAI-style streams do: each `progress` has the `delta` since the text the client
already has (the latest `state`'s `output_raw` and the deltas after it), or `reset`
when the text started over; `finished` has the whole text. A lost layer message
costs nothing: the next delta covers it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.http import HttpRequest

from describer.api.schemas import ProgressEvent, conversion_data, with_output_relations
from describer.cache import ThrottledWarning
from describer.models import Conversion
from describer.progress import group_name

log = logging.getLogger(__name__)
LAYER_TIMEOUT_S = 2
_layer_down = ThrottledWarning(log, "event stream: channel layer unavailable; polling the database instead")

HEARTBEAT_SECONDS = 15
POLL_SECONDS = 2


def sse(event: str, data: dict) -> str:
    # json.dumps escapes newlines, so the data is always one `data:` line.
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


@database_sync_to_async
def _load(request: HttpRequest, conversion: Conversion) -> tuple[Conversion | None, dict | None]:
    fresh = with_output_relations(Conversion.objects.owned_by(conversion.owner_id)).filter(pk=conversion.pk).first()
    return fresh, (conversion_data(fresh, request) if fresh else None)


class _Listener:
    """The stream's membership of the conversion's group; `joined` is False while Redis is away."""

    def __init__(self, conversion: Conversion) -> None:
        self.layer = get_channel_layer()
        self.group = group_name(conversion.pk)
        self.channel = ""
        self.joined = False

    async def join(self) -> None:
        try:
            self.channel = self.channel or await self.layer.new_channel()
            await asyncio.wait_for(self.layer.group_add(self.group, self.channel), LAYER_TIMEOUT_S)
            self.joined = True
        except Exception as error:  # noqa: BLE001 - redis-py raises several kinds
            _layer_down(error)

    async def receive(self) -> dict | None:
        """The next event, or None after a quiet POLL_SECONDS (also while the layer is away)."""
        if not self.joined:
            await asyncio.sleep(POLL_SECONDS)
            await self.join()
            return None
        try:
            return await asyncio.wait_for(self.layer.receive(self.channel), timeout=POLL_SECONDS)
        except TimeoutError:
            return None
        except Exception as error:  # noqa: BLE001
            _layer_down(error)
            self.joined = False
            return None

    async def leave(self) -> None:
        if self.joined:
            try:
                await asyncio.wait_for(self.layer.group_discard(self.group, self.channel), LAYER_TIMEOUT_S)
            except Exception as error:  # noqa: BLE001 - the group entry expires by itself
                _layer_down(error)


async def event_stream(request: HttpRequest, conversion: Conversion) -> AsyncIterator[str]:
    listener = _Listener(conversion)
    await listener.join()
    try:
        async for chunk in _events(request, conversion, listener):
            yield chunk
    finally:
        # Also runs when the client goes away: Django cancels the response and closes this generator.
        await listener.leave()


class _SentText:
    """The text the client has, so that each progress event carries only what is new."""

    def __init__(self, text: str) -> None:
        self.text = text

    def progress(self, event: dict) -> str:
        """A `progress` event for a worker's event (or the saved row), which holds the whole text."""
        text = event.get("text") or ""
        reset = not text.startswith(self.text)
        delta = text if reset else text[len(self.text):]
        self.text = text
        progress = ProgressEvent.model_validate({**event, "delta": delta, "reset": reset})
        return sse("progress", progress.model_dump(mode="json"))

    def state(self, data: dict) -> str:
        self.text = data["output_raw"]  # a client takes the conversion's text as its own
        return sse("state", data)


def _saved_progress(conversion: Conversion, sent: _SentText) -> str:
    row = {"stage": conversion.stage, "text": conversion.output_raw, "tokens": conversion.tokens_generated}
    return sent.progress(row)


async def _events(request: HttpRequest, conversion: Conversion, listener: _Listener) -> AsyncIterator[str]:
    fresh, data = await _load(request, conversion)
    if fresh is None:
        yield sse("deleted", {"id": str(conversion.pk)})
        return
    sent = _SentText("")
    yield sent.state(data)
    if fresh.is_finished:
        yield sse("finished", data)
        return
    queue_position = data["queue_position"]
    saved_text = fresh.output_raw
    last_sent = time.monotonic()
    while True:
        message = await listener.receive()
        if message and message.get("type") == "conversion.progress":
            yield sent.progress(message)
            last_sent = time.monotonic()
            continue
        # A `finished` message, or a quiet spell: look at the row itself.
        fresh, data = await _load(request, conversion)
        if fresh is None:
            yield sse("deleted", {"id": str(conversion.pk)})
            return
        if fresh.is_finished:
            yield sse("finished", data)
            return
        if not listener.joined and fresh.output_raw != saved_text:  # no live events: the saved text
            saved_text = fresh.output_raw
            yield _saved_progress(fresh, sent)
            last_sent = time.monotonic()
        elif data["queue_position"] != queue_position:
            queue_position = data["queue_position"]
            yield sent.state(data)
            last_sent = time.monotonic()
        elif time.monotonic() - last_sent >= HEARTBEAT_SECONDS:
            yield ": keep-alive\n\n"
            last_sent = time.monotonic()
