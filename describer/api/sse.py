"""A conversion's live progress as Server-Sent Events.

The stream listens to the same channel-layer group as the page's WebSocket
(`conversion-<id>`, fed by describer/progress.py). It joins the group *before*
reading the conversion, so no event can fall between the first state and the
live events. Layer messages may be lost (they expire, and a full channel drops
them), so while no event comes the row is re-read every POLL_SECONDS: a
finished conversion is noticed even when its `finished` event never arrives,
and a queued one reports its moving queue position.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.http import HttpRequest

from describer.api.schemas import ProgressEvent, conversion_data
from describer.models import Conversion
from describer.progress import group_name

HEARTBEAT_SECONDS = 15
POLL_SECONDS = 2


def sse(event: str, data: dict) -> str:
    # json.dumps escapes newlines, so the data is always one `data:` line.
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


@database_sync_to_async
def _load(request: HttpRequest, conversion: Conversion) -> tuple[Conversion | None, dict | None]:
    fresh = (
        Conversion.objects.owned_by(conversion.owner_id)
        .prefetch_related("examples_used__example")
        .filter(pk=conversion.pk)
        .first()
    )
    return fresh, (conversion_data(fresh, request) if fresh else None)


async def event_stream(request: HttpRequest, conversion: Conversion) -> AsyncIterator[str]:
    layer = get_channel_layer()
    channel = await layer.new_channel()
    group = group_name(conversion.pk)
    await layer.group_add(group, channel)
    try:
        async for chunk in _events(request, conversion, layer, channel):
            yield chunk
    finally:
        # Also runs when the client goes away: Django cancels the response and closes this generator.
        await layer.group_discard(group, channel)


async def _events(request: HttpRequest, conversion: Conversion, layer, channel: str) -> AsyncIterator[str]:
    fresh, data = await _load(request, conversion)
    if fresh is None:
        yield sse("deleted", {"id": str(conversion.pk)})
        return
    yield sse("state", data)
    if fresh.is_finished:
        yield sse("finished", data)
        return
    queue_position = data["queue_position"]
    last_sent = time.monotonic()
    while True:
        try:
            message = await asyncio.wait_for(layer.receive(channel), timeout=POLL_SECONDS)
        except TimeoutError:
            message = None
        if message and message.get("type") == "conversion.progress":
            progress = ProgressEvent.model_validate(message).model_dump(mode="json")
            yield sse("progress", progress)
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
        if data["queue_position"] != queue_position:
            queue_position = data["queue_position"]
            yield sse("state", data)
            last_sent = time.monotonic()
        elif time.monotonic() - last_sent >= HEARTBEAT_SECONDS:
            yield ": keep-alive\n\n"
            last_sent = time.monotonic()
