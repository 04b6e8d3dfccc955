"""The GPU worker: `python manage.py runworker describer-gpu`.

Two threads. The main one runs Channels' worker and receives `jobs.wake`
messages on the `describer-gpu` channel; each only sets an event. The job thread
(`JobLoop`) owns the models: it claims jobs from PostgreSQL, runs them, and
when the queue is empty waits for a wake-up or the poll interval, whichever
comes first, so expired or dropped wake-ups delay nothing by more than a poll.

This module is imported by the web process too (asgi.py routes the channel),
so it must not import torch or the pipeline at module level.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

from channels.consumer import AsyncConsumer
from django.conf import settings
from django.db import close_old_connections

log = logging.getLogger(__name__)


class JobLoop:
    def __init__(self, runtime, *, batch_size: int | None = None, poll_seconds: float | None = None) -> None:
        self.runtime = runtime
        self.batch_size = batch_size or settings.DESCRIBER_BATCH_SIZE
        self.poll_seconds = poll_seconds if poll_seconds is not None else settings.DESCRIBER_POLL_SECONDS
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.wake_event = threading.Event()
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None

    def wake(self) -> None:
        self.wake_event.set()

    def stop(self) -> None:
        self.stop_event.set()
        self.wake_event.set()

    def start(self) -> None:
        self.thread = threading.Thread(target=self.run_forever, name="describer-jobs", daemon=True)
        self.thread.start()

    def run_forever(self) -> None:
        from describer import jobs
        from describer.examples import embed_pending_examples
        from describer.pipeline import JobRunner
        from describer.progress import Broadcaster

        broadcaster = Broadcaster()
        runner = JobRunner(self.runtime, broadcaster, should_stop=self.stop_event.is_set)
        log.info("worker %s ready (model %s on %s)", self.name, self.runtime.model_name, self.runtime.device)
        while not self.stop_event.is_set():
            try:
                close_old_connections()
                jobs.recover_stale_jobs()
                claimed = self.claim(jobs)
                self.run_claimed(runner, claimed)
                if not claimed:  # no job waiting: embed examples saved meanwhile; a wake-up interrupts
                    embed_pending_examples(self.runtime, should_stop=self.wake_event.is_set)
            except Exception:  # database or Redis hiccup: log, wait, carry on
                log.exception("job loop error")
                claimed = []
            if not claimed:
                self.wake_event.wait(self.poll_seconds)
                self.wake_event.clear()
        close_old_connections()
        log.info("worker %s stopped", self.name)

    def run_claimed(self, runner, claimed: list) -> None:
        """Diagram → text jobs claimed together generate as one batch; other jobs run one by one."""
        from describer.models import Conversion

        describe = [job for job in claimed if job.kind == Conversion.Kind.DIAGRAM_TO_TEXT]
        if len(describe) > 1:
            close_old_connections()
            runner.run_batch(describe)
        for job in claimed:
            if len(describe) > 1 and job in describe:
                continue
            close_old_connections()
            runner.run(job)

    def claim(self, jobs_module) -> list:
        """Claim one job, or with batching, what arrives within the batch window."""
        claimed = jobs_module.claim_jobs(self.name, limit=self.batch_size)
        if claimed and self.batch_size > 1 and len(claimed) < self.batch_size:
            time.sleep(settings.DESCRIBER_BATCH_WINDOW_MS / 1000)
            claimed += jobs_module.claim_jobs(self.name, limit=self.batch_size - len(claimed))
        return claimed


class UnavailableRuntime:
    """Stands in for the models when they could not be loaded: every job fails
    with the loading error, which tells the admin what to fix."""

    model_name = "unavailable"
    device = "none"
    is_tiny = False

    def __init__(self, error: Exception) -> None:
        self.error = error

    def __getattr__(self, name):
        def raise_error(*args, **kwargs):
            raise self.error

        return raise_error


# Set by the runworker command in the worker process; None in the web process.
current_loop: JobLoop | None = None


class DescriberWorkerConsumer(AsyncConsumer):
    """Receives wake-ups on the worker channel."""

    async def jobs_wake(self, message: dict) -> None:
        if current_loop is not None:
            current_loop.wake()
