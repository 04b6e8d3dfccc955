"""WebSocket of a conversion's page: live progress as HTML fragments for htmx-ext-ws.

Only the conversion's owner is admitted: anyone else is closed with code 4401
(not logged in) or 4404 (no such conversion of yours). Foreign origins never get
here: asgi.py wraps the router in SiteOriginValidator (describer/ws_origin.py).

While Redis (the channel layer) is unreachable the page gets what PostgreSQL
knows, with a notice that live updates are paused, and the socket is closed with
4503, after which static/js/live.js reconnects with a backoff; each reconnect
catches up from the database, and the first one after Redis is back is live
again. A layer failure mid-session closes the same way.
"""

from __future__ import annotations

import asyncio
import logging

from channels.consumer import AsyncConsumer
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.template.loader import render_to_string
from django.utils import translation
from django.utils.translation.trans_real import parse_accept_lang_header

from describer import worker
from describer.cache import REDIS_UNAVAILABLE, ThrottledWarning
from describer.models import Conversion
from describer.progress import group_name

CLOSE_NOT_LOGGED_IN = 4401
CLOSE_NOT_FOUND = 4404
# "Redis is down, come back later". Not 1013: a server may only send 1000 or 3000-4999
# (autobahn, under daphne, refuses others), so the page's live.js reconnects after it.
CLOSE_LIVE_PAUSED = 4503
QUEUE_REFRESH_SECONDS = 2
# A Redis that accepts no connections or does not answer must not hold a socket open for long.
LAYER_TIMEOUT_SECONDS = 2
LAYER_DOWN = (*REDIS_UNAVAILABLE, TimeoutError)

warn_layer_down = ThrottledWarning(
    logging.getLogger(__name__), "Live updates paused: the channel layer (Redis) is unreachable"
)


class ConversionProgressConsumer(AsyncWebsocketConsumer):
    conversion_id = None
    conversion: Conversion | None = None
    queue_task: asyncio.Task | None = None
    in_group = False
    layer_failed = False

    # Channels' __call__ assigns the layer's receive here and awaits it next to the socket's;
    # a Redis error from it would end the consumer with a traceback. Listen through
    # `listen_to_layer` instead, which turns that error into one `live.paused` event.
    @property
    def channel_receive(self):
        return self.listen_to_layer

    @channel_receive.setter
    def channel_receive(self, receive) -> None:
        self.layer_receive = receive

    async def listen_to_layer(self) -> dict:
        if not self.layer_failed:
            try:
                return await self.layer_receive()
            except LAYER_DOWN as error:
                warn_layer_down(error)
                self.layer_failed = True
                return {"type": "live.paused"}
        # Listen no more: the socket is closing, and its disconnect ends the consumer.
        return await asyncio.get_running_loop().create_future()

    async def connect(self) -> None:
        user = self.scope.get("user")
        # Accept first, then close: a close before accept loses the code.
        await self.accept()
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_NOT_LOGGED_IN)
            return
        self.conversion_id = self.scope["url_route"]["kwargs"]["pk"]
        conversion = await self.load(user)
        if conversion is None:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        self.conversion = conversion  # ownership is checked once; progress events carry the rest
        self.in_group = await self.join_group()
        if conversion.is_finished:
            await self.send_result(conversion)
            return
        live = self.in_group and not self.layer_failed
        await self.send_live(conversion, stage=conversion.stage, text=conversion.output_raw,
                             tokens=conversion.tokens_generated, elapsed=None, paused=not live)
        if not live:
            await self.close(code=CLOSE_LIVE_PAUSED)
        elif conversion.status == Conversion.Status.QUEUED:
            self.queue_task = asyncio.create_task(self.watch_queue(user))

    async def disconnect(self, code) -> None:
        if self.queue_task:
            self.queue_task.cancel()
        if self.in_group:
            await self.leave_group()

    async def join_group(self) -> bool:
        try:
            await asyncio.wait_for(
                self.channel_layer.group_add(group_name(self.conversion_id), self.channel_name),
                LAYER_TIMEOUT_SECONDS,
            )
        except LAYER_DOWN as error:
            warn_layer_down(error)
            return False
        return True

    async def leave_group(self) -> None:
        try:
            await asyncio.wait_for(
                self.channel_layer.group_discard(group_name(self.conversion_id), self.channel_name),
                LAYER_TIMEOUT_SECONDS,
            )
        except LAYER_DOWN as error:
            warn_layer_down(error)  # a stale membership only costs messages that expire unread

    async def live_paused(self, event: dict) -> None:
        """The layer failed after connect: close, so that the page says so and reconnects.
        Before connect there is nothing to do: connect sees `layer_failed` and pauses."""
        if self.in_group:
            if self.queue_task:
                self.queue_task.cancel()
            await self.close(code=CLOSE_LIVE_PAUSED)

    async def conversion_progress(self, event: dict) -> None:
        if self.queue_task:
            self.queue_task.cancel()
            self.queue_task = None
        # Up to ten events a second per viewer: render from the event, not from a fresh query.
        self.conversion.status = Conversion.Status.RUNNING
        self.conversion.stage = event["stage"]
        await self.send_live(self.conversion, stage=event["stage"], text=event["text"],
                             tokens=event["tokens"], elapsed=event["elapsed"])

    async def conversion_finished(self, event: dict) -> None:
        conversion = await self.load(self.scope["user"])
        if conversion is not None:
            await self.send_result(conversion)

    async def watch_queue(self, user) -> None:
        """While waiting, keep the queue position fresh."""
        while True:
            await asyncio.sleep(QUEUE_REFRESH_SECONDS)
            conversion = await self.load(user)
            if conversion is None or conversion.status != Conversion.Status.QUEUED:
                return
            await self.send_live(conversion, stage=conversion.stage, text="", tokens=0, elapsed=None)

    @database_sync_to_async
    def load(self, user) -> Conversion | None:
        return Conversion.objects.filter(pk=self.conversion_id, owner=user).first()

    async def send_live(self, conversion: Conversion, **progress) -> None:
        await self.send(text_data=await self.render("describer/_live.html", conversion=conversion, **progress))

    async def send_result(self, conversion: Conversion) -> None:
        await self.send(text_data=await self.render("describer/_result_update.html", conversion=conversion))
        await self.close()

    @database_sync_to_async
    def render(self, template: str, **context) -> str:
        """Render a fragment as the page would: for this user, in the page's language."""
        with translation.override(self.language()):
            return render_to_string(template, {"user": self.scope.get("user"), **context})

    def language(self) -> str:
        cookie = self.scope.get("cookies", {}).get(settings.LANGUAGE_COOKIE_NAME)
        headers = dict(self.scope.get("headers", []))
        accept = headers.get(b"accept-language", b"").decode("latin-1")
        for candidate in [cookie, *(code for code, _ in parse_accept_lang_header(accept))]:
            try:
                return translation.get_supported_language_variant(candidate or "")
            except LookupError:
                continue
        return settings.LANGUAGE_CODE


class WorkerWakeConsumer(AsyncConsumer):
    """The GPU worker's channel (runworker describer-gpu): a `jobs.wake` message only wakes the
    job loop; the job itself is in PostgreSQL, so a lost message delays nothing past a poll."""

    # No channel of its own (the worker's listener delivers the messages): an instance that
    # also listened on a private channel would die with an ERROR whenever Redis drops.
    channel_layer_alias = None

    async def jobs_wake(self, message: dict) -> None:
        if worker.current_loop is not None:
            worker.current_loop.wake()
