"""WebSocket of a conversion's page: live progress as HTML fragments for htmx-ext-ws.

Only the conversion's owner is admitted: anyone else is closed with code 4401
(not logged in) or 4404 (no such conversion of yours). Foreign origins never get
here: asgi.py wraps the router in AllowedHostsOriginValidator.
"""

from __future__ import annotations

import asyncio

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.template.loader import render_to_string
from django.utils import translation
from django.utils.translation.trans_real import parse_accept_lang_header

from describer.models import Conversion
from describer.progress import group_name

CLOSE_NOT_LOGGED_IN = 4401
CLOSE_NOT_FOUND = 4404
QUEUE_REFRESH_SECONDS = 2


class ConversionProgressConsumer(AsyncWebsocketConsumer):
    conversion_id = None
    conversion: Conversion | None = None
    queue_task: asyncio.Task | None = None

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
        await self.channel_layer.group_add(group_name(self.conversion_id), self.channel_name)
        if conversion.is_finished:
            await self.send_result(conversion)
            return
        await self.send_live(conversion, stage=conversion.stage, text=conversion.output_raw,
                             tokens=conversion.tokens_generated, elapsed=None)
        if conversion.status == Conversion.Status.QUEUED:
            self.queue_task = asyncio.create_task(self.watch_queue(user))

    async def disconnect(self, code) -> None:
        if self.queue_task:
            self.queue_task.cancel()
        if self.conversion_id:
            await self.channel_layer.group_discard(group_name(self.conversion_id), self.channel_name)

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
