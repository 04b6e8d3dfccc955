"""Progress of a running job: saved to PostgreSQL and broadcast to its page.

The worker calls `JobProgress` as text streams in. At most every
DESCRIBER_STREAM_INTERVAL_MS it writes the partial text to the row (so a reload
mid-stream shows what was written) and sends one event to the conversion's
group. Each event carries the whole text so far, so a dropped event is healed by
the next. Writes go through describer/jobs.py and take only while the job is
still this worker's: once one does not (cancelled, or taken as stale), `lost`
is set and the runner drops the job. A database outage does not stop the
stream: the text stays in memory and the next write after it catches up.
"""

from __future__ import annotations

import asyncio
import logging
import time

from channels.layers import get_channel_layer
from django.conf import settings
from django.db import DatabaseError, close_old_connections

from describer import jobs
from describer.cache import ThrottledWarning
from describer.models import Conversion

log = logging.getLogger(__name__)
# While Redis or PostgreSQL is down every event fails: warn once per this many seconds.
WARNING_INTERVAL_S = 10.0


def group_name(conversion_id) -> str:
    return f"conversion-{conversion_id}"


class Broadcaster:
    """Sends channel-layer events from the worker's job thread over one event loop,
    so Redis connections are reused instead of opened per event."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.layer = get_channel_layer()
        self.warn = ThrottledWarning(
            log, "could not broadcast progress; pages catch up when Redis is back", every=WARNING_INTERVAL_S
        )

    def send(self, conversion_id, event: dict) -> None:
        try:
            self.loop.run_until_complete(self.layer.group_send(group_name(conversion_id), event))
        except Exception as error:  # a page missing an update is no reason to fail the job
            self.warn(error)

    def close(self) -> None:
        self.loop.close()


class JobProgress:
    def __init__(self, conversion: Conversion, broadcaster: Broadcaster, worker_name: str) -> None:
        self.conversion = conversion
        self.broadcaster = broadcaster
        self.worker_name = worker_name
        self.lost = False  # the job is no longer this worker's
        self.db_warning = ThrottledWarning(
            log, "could not save progress; the text is kept and saved later", every=WARNING_INTERVAL_S
        )
        self.interval = settings.DESCRIBER_STREAM_INTERVAL_MS / 1000
        self.started = time.monotonic()
        self.last_flush = 0.0
        self.text = ""
        self.tokens = 0
        self.dirty = False

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def stage(self, stage: str) -> bool:
        """Record the stage; False (and `lost`) when the job is no longer this worker's.
        With the database away the stage is only shown, not saved: the job goes on."""
        try:
            self.lost = self.lost or not jobs.record_stage(self.conversion, self.worker_name, stage)
        except DatabaseError as error:
            self.db_warning(error)
            close_old_connections()
        if not self.lost:
            self.publish()
        return not self.lost

    def add_text(self, chunk: str, tokens: int = 1) -> bool:
        """Append a chunk; False once the job is no longer this worker's."""
        self.text += chunk.replace("\x00", "")  # PostgreSQL text cannot hold NUL; models can write it
        self.tokens += tokens
        self.dirty = True
        if time.monotonic() - self.last_flush >= self.interval:
            self.flush()
        return not self.lost

    def flush(self) -> bool:
        if not self.dirty or self.lost:
            return not self.lost
        self.last_flush = time.monotonic()
        try:
            took = jobs.record_progress(self.conversion, self.worker_name, self.text, self.tokens)
        except DatabaseError as error:
            self.db_warning(error)
            close_old_connections()  # a broken connection is reopened by the next write
            return True
        self.lost = not took
        self.dirty = False
        if took:
            self.publish()
        return took

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
