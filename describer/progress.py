"""Progress of a running job: saved to PostgreSQL and broadcast to its page.

The worker calls `JobProgress` as text streams in. At most every
DESCRIBER_STREAM_INTERVAL_MS it writes the partial text and a heartbeat to the
row (so a reload mid-stream shows what was written, and a dead worker can be
told from a slow one) and sends one event to the conversion's group. Each
event carries the whole text so far, so a dropped event is healed by the next.
"""

from __future__ import annotations

import asyncio
import logging
import time

from channels.layers import get_channel_layer
from django.conf import settings
from django.utils import timezone

from describer.models import Conversion

log = logging.getLogger(__name__)


def group_name(conversion_id) -> str:
    return f"conversion-{conversion_id}"


class Broadcaster:
    """Sends channel-layer events from the worker's job thread over one event loop,
    so Redis connections are reused instead of opened per event."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.layer = get_channel_layer()

    def send(self, conversion_id, event: dict) -> None:
        try:
            self.loop.run_until_complete(self.layer.group_send(group_name(conversion_id), event))
        except Exception:  # a page missing an update is no reason to fail the job
            log.warning("could not broadcast progress", exc_info=True)

    def close(self) -> None:
        self.loop.close()


class JobProgress:
    def __init__(self, conversion: Conversion, broadcaster: Broadcaster) -> None:
        self.conversion = conversion
        self.broadcaster = broadcaster
        self.interval = settings.DESCRIBER_STREAM_INTERVAL_MS / 1000
        self.started = time.monotonic()
        self.last_flush = 0.0
        self.text = ""
        self.tokens = 0
        self.dirty = False

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def stage(self, stage: str) -> None:
        self.conversion.stage = stage
        Conversion.objects.filter(pk=self.conversion.pk).update(stage=stage, heartbeat_at=timezone.now())
        self.publish()

    def add_text(self, chunk: str, tokens: int = 1) -> None:
        self.text += chunk.replace("\x00", "")  # PostgreSQL text cannot hold NUL; models can write it
        self.tokens += tokens
        self.dirty = True
        if time.monotonic() - self.last_flush >= self.interval:
            self.flush()

    def flush(self) -> None:
        if not self.dirty:
            return
        Conversion.objects.filter(pk=self.conversion.pk).update(
            output_raw=self.text, tokens_generated=self.tokens, heartbeat_at=timezone.now()
        )
        self.dirty = False
        self.publish()

    def publish(self) -> None:
        self.last_flush = time.monotonic()
        self.broadcaster.send(
            self.conversion.pk,
            {
                "type": "conversion.progress",
                "stage": self.conversion.stage,
                "text": self.text,
                "tokens": self.tokens,
                "elapsed": round(self.elapsed(), 1),
            },
        )

    def finished(self) -> None:
        """The row holds the final result now; pages re-read it from the database."""
        self.broadcaster.send(self.conversion.pk, {"type": "conversion.finished"})
