"""The GPU worker: `python manage.py runworker describer-gpu`.

Three threads. The main one runs Channels' worker (`ResilientWorker`) and receives `jobs.wake`
messages on the `describer-gpu` channel (describer/consumers.py); each only sets an event. The
job thread (`JobLoop`) owns the models: it claims jobs from PostgreSQL, runs them
(describer/pipeline.py), and when the queue is empty waits for a wake-up or the poll interval,
whichever comes first, so expired or dropped wake-ups delay nothing by more than a poll. With the
continuous scheduler (the default) it claims whenever the engine has a free slot, and each job
joins the running batch at the engine's next step; the engine steps on a fourth thread
(describer/inference/runtime.py's `_EngineThread`). The
heartbeat thread (`Heartbeat`) refreshes every job the worker holds and the worker's own row
(`Worker`, the workers page and the container's healthcheck) every DESCRIBER_HEARTBEAT_S.

Redis or PostgreSQL going away stops none of them: each logs, backs off and carries on.

This module is imported by the web process too (the wake-up consumer reads `current_loop`),
so it must not import torch or the pipeline at module level.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from datetime import timedelta

from channels.worker import Worker as ChannelsWorker
from django.conf import settings
from django.db import DatabaseError, close_old_connections
from django.utils import timezone

from describer import adapters

log = logging.getLogger(__name__)

# A Worker row not seen for this long is deleted (the workers page shows the recent past only).
FORGET_WORKERS_AFTER = timedelta(days=1)


def timing_problems(config=settings) -> list[str]:
    """Contradictions among the worker's timing settings, each saying which settings clash."""
    problems = []
    heartbeat, stale = config.DESCRIBER_HEARTBEAT_S, config.DESCRIBER_STALE_AFTER_S
    if heartbeat <= 0:
        problems.append(f"DESCRIBER_HEARTBEAT_S must be above 0 (it is {heartbeat}).")
    elif stale < 3 * heartbeat:
        problems.append(
            f"DESCRIBER_STALE_AFTER_S ({stale}) must be at least 3 × DESCRIBER_HEARTBEAT_S ({heartbeat}): "
            "otherwise one late heartbeat makes a live worker's jobs look abandoned and they run twice."
        )
    if config.DESCRIBER_STREAM_INTERVAL_MS / 1000 >= stale:
        problems.append(
            f"DESCRIBER_STREAM_INTERVAL_MS ({config.DESCRIBER_STREAM_INTERVAL_MS}) must be well below "
            f"DESCRIBER_STALE_AFTER_S ({stale} s)."
        )
    if config.DESCRIBER_BATCH_WINDOW_MS / 1000 >= stale:
        problems.append(
            f"DESCRIBER_BATCH_WINDOW_MS ({config.DESCRIBER_BATCH_WINDOW_MS}) must be well below "
            f"DESCRIBER_STALE_AFTER_S ({stale} s)."
        )
    for name in ("DESCRIBER_POLL_SECONDS", "DESCRIBER_TIME_LIMIT_S"):
        if getattr(config, name) <= 0:
            problems.append(f"{name} must be above 0 (it is {getattr(config, name)}).")
    if config.DESCRIBER_SCHEDULER not in ("continuous", "static"):
        problems.append(f"DESCRIBER_SCHEDULER must be 'continuous' or 'static' (it is {config.DESCRIBER_SCHEDULER!r}).")
    for name in ("DESCRIBER_BATCH_SIZE", "DESCRIBER_MAX_ATTEMPTS", "DESCRIBER_MAX_PROMPT_TOKENS", "DESCRIBER_PREFILL_CHUNK"):
        if getattr(config, name) < 1:
            problems.append(f"{name} must be at least 1 (it is {getattr(config, name)}).")
    return problems


class JobLoop:
    def __init__(self, runtime, *, batch_size: int | None = None, poll_seconds: float | None = None) -> None:
        from describer.pipeline import HeldJobs

        self.runtime = runtime
        self.batch_size = batch_size or settings.DESCRIBER_BATCH_SIZE
        self.poll_seconds = poll_seconds if poll_seconds is not None else settings.DESCRIBER_POLL_SECONDS
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.held = HeldJobs()
        adapter = getattr(runtime, "adapter", None)
        self.serving_path = str(adapter.path) if adapter else ""
        self.refused: dict[str, tuple] = {}  # adapter folders that failed here, with their files' state
        self.wake_event = threading.Event()
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None
        self.heartbeat = Heartbeat(self)

    def wake(self) -> None:
        self.wake_event.set()

    def stop(self) -> None:
        self.stop_event.set()
        self.wake_event.set()

    def start(self) -> None:
        self.heartbeat.start()
        self.thread = threading.Thread(target=self.run_forever, name="describer-jobs", daemon=True)
        self.thread.start()

    def join(self, timeout: float) -> None:
        if self.thread is not None:
            self.thread.join(timeout)
        self.heartbeat.join(timeout=5)

    def run_forever(self) -> None:
        from describer import jobs
        from describer.examples import embed_pending_examples
        from describer.pipeline import JobRunner
        from describer.progress import Broadcaster

        broadcaster = Broadcaster()
        log.info("worker %s ready (model %s on %s)", self.name, getattr(self.runtime, "serving", "?"), self.runtime.device)
        if self.runtime.available and self.runtime.continuous and self.engine_ready():
            self.run_continuously(broadcaster)
            return
        runner = JobRunner(
            self.runtime, broadcaster, worker_name=self.name, held=self.held, should_stop=self.stop_event.is_set
        )
        while not self.stop_event.is_set():
            claimed = []
            try:
                close_old_connections()
                jobs.recover_stale()
                self.follow_adapter_choice(runner)
                claimed = self.claim(jobs)
                if claimed:
                    runner.run_batch(claimed)
                else:  # no job waiting: embed examples saved meanwhile; a wake-up interrupts
                    embed_pending_examples(self.runtime, should_stop=self.wake_event.is_set)
            except DatabaseError as error:  # PostgreSQL away: wait a poll, try again
                log.warning("job loop: database unavailable (%s); retrying", str(error).strip()[:200])
                close_old_connections()
            except Exception:  # a bug must not stop the worker: log it and carry on
                log.exception("job loop error")
            if not claimed:
                self.wake_event.wait(self.poll_seconds)
                self.wake_event.clear()
        close_old_connections()
        log.info("worker %s stopped", self.name)

    def run_continuously(self, broadcaster) -> None:
        """Claim jobs whenever the engine has room, not between batches: a job joins the running
        batch at the engine's next step. Claims happen on a wake-up, when a row has left (there
        may be jobs waiting) or once a poll; a job restarted after a crash still comes alone, and
        the engine runs it alone. The adapter is switched only while nothing runs."""
        from describer import jobs
        from describer.examples import embed_pending_examples
        from describer.inference.runtime import STREAM_POLL_S
        from describer.pipeline import ContinuousRunner, WorkerStopping

        runner = ContinuousRunner(
            self.runtime, broadcaster, worker_name=self.name, held=self.held, should_stop=self.stop_event.is_set
        )
        polled_at = 0.0
        while not self.stop_event.is_set():
            try:
                close_old_connections()
                if runner.idle():
                    self.follow_adapter_choice(runner)
                self.batch_size = self.runtime.engine().engine.slots  # the workers page shows the slots
                poll_due = time.monotonic() - polled_at >= self.poll_seconds
                if poll_due:
                    jobs.recover_stale()
                free = runner.free_rows()
                if free and (poll_due or self.wake_event.is_set() or runner.row_left):
                    self.wake_event.clear()
                    runner.row_left, polled_at = False, time.monotonic()
                    runner.admit_all(self.claim_now(jobs, free))  # the running rows stream in between
                if runner.idle():
                    embed_pending_examples(self.runtime, should_stop=self.wake_event.is_set)
                    self.wake_event.wait(max(0.0, self.poll_seconds - (time.monotonic() - polled_at)))
                else:
                    runner.pump(timeout=STREAM_POLL_S)
            except WorkerStopping:
                break
            except DatabaseError as error:
                # PostgreSQL away: the rows go on decoding (progress writes wait for it); a job whose
                # finishing write ran out of patience was given back, or goes stale and is requeued.
                log.warning("job loop: database unavailable (%s); retrying", str(error).strip()[:200])
                close_old_connections()
                self.stop_event.wait(min(1.0, self.poll_seconds))
            except Exception:  # a bug must not stop the worker: log it and carry on
                log.exception("job loop error")
                self.stop_event.wait(min(1.0, self.poll_seconds))
        runner.abandon()  # stopping: the jobs still running go back to the queue
        close_old_connections()
        log.info("worker %s stopped", self.name)

    def engine_ready(self) -> bool:
        """Build the engine now (it sizes its slots from MODEL_MAX_VRAM). A budget that holds no
        slot is the administrator's to fix: every job then fails with the numbers, as when the
        model cannot load."""
        from describer.inference.errors import InferenceError

        try:
            self.runtime.engine()
        except InferenceError as error:
            log.error("models unavailable: %s", error)
            self.runtime = UnavailableRuntime(error)
            return False
        return True

    def claim_now(self, jobs_module, limit: int) -> list:
        claimed = jobs_module.claim(self.name, limit=limit)
        self.held.add(job.pk for job in claimed)
        return claimed

    def follow_adapter_choice(self, runner) -> None:
        """Between jobs: serve the adapter chosen now (admin, else DESCRIBER_ADAPTER) if it is not
        the one loaded. One that fails its checks or its loading is refused with the reason on its
        row (and is not tried again until its files change), and the current model goes on serving."""
        if not self.runtime.available:
            return
        wanted = adapters.chosen_path()
        if wanted == self.serving_path or self.refused.get(wanted) == adapters.signature(wanted):
            return
        previous = self.runtime.adapter
        try:
            info = adapters.check(wanted) if wanted else None
            log.info("worker %s: switching to %s", self.name, info.label if info else "the base model")
            self.runtime.reload(info)
            self._engine_after_switch(previous)
        except Exception as error:  # noqa: BLE001 - a bad adapter must not stop the worker
            refuse_adapter(wanted, error)
            self.refused[wanted] = adapters.signature(wanted)  # tried again once its files change
            return
        self.serving_path = wanted
        runner.runtime = self.runtime
        note_adapter_served(self.runtime)

    def _engine_after_switch(self, previous) -> None:
        """The new weights' engine is built now; if its budget holds no slot, the previous model
        comes back (and the error refuses the adapter)."""
        if not self.runtime.continuous:
            return
        try:
            self.runtime.engine()
        except Exception:
            self.runtime.reload(previous)
            raise

    def claim(self, jobs_module) -> list:
        """Claim one job, or with batching, what arrives within the batch window."""
        claimed = jobs_module.claim(self.name, limit=self.batch_size)
        restarted_alone = bool(claimed) and claimed[0].attempts > 0
        if claimed and not restarted_alone and self.batch_size > 1 and len(claimed) < self.batch_size:
            self.held.add(job.pk for job in claimed)  # heartbeats cover them while the window is open
            time.sleep(settings.DESCRIBER_BATCH_WINDOW_MS / 1000)
            try:
                claimed += jobs_module.claim(self.name, limit=self.batch_size - len(claimed))
            except DatabaseError:
                close_old_connections()  # run what we have; the runner's writes wait for the database
        return claimed


class Heartbeat(threading.Thread):
    """Every DESCRIBER_HEARTBEAT_S: refresh the heartbeat of every job the loop holds, mark the
    ones taken from it as lost (the runner drops them at their next step), and record the
    worker's presence. Its own thread, so a long prefill or a slow batch never lets a held job
    go stale."""

    def __init__(self, loop: JobLoop) -> None:
        super().__init__(name="describer-heartbeat", daemon=True)
        self.loop = loop
        self.interval = settings.DESCRIBER_HEARTBEAT_S
        self.started_at = timezone.now()

    def run(self) -> None:
        while not self.loop.stop_event.is_set():
            try:
                close_old_connections()
                self.beat()
            except DatabaseError as error:
                log.warning("heartbeat: database unavailable (%s)", str(error).strip()[:200])
                close_old_connections()
            except Exception:
                log.exception("heartbeat error")
            self.loop.stop_event.wait(self.interval)
        self.leave()

    def beat(self) -> None:
        from describer import jobs

        held = self.loop.held.snapshot()
        still_held = jobs.heartbeat(self.loop.name, held)
        self.loop.held.mark_lost(set(held) - still_held)
        self.record_presence(len(still_held))

    def record_presence(self, jobs_in_hand: int) -> None:
        from describer.models import Worker

        host, _, pid = self.loop.name.rpartition(":")
        Worker.objects.update_or_create(
            name=self.loop.name,
            defaults={
                "host": host,
                "pid": int(pid),
                "model_name": str(getattr(self.loop.runtime, "serving", self.loop.runtime.model_name))[:300],
                "device": str(self.loop.runtime.device)[:50],
                "batch_size": self.loop.batch_size,
                "jobs_in_hand": jobs_in_hand,
                "started_at": self.started_at,
                "last_seen_at": timezone.now(),
            },
        )
        Worker.objects.filter(last_seen_at__lt=timezone.now() - FORGET_WORKERS_AFTER).delete()

    def leave(self) -> None:
        from describer.models import Worker

        try:
            close_old_connections()
            Worker.objects.filter(name=self.loop.name).delete()
        except DatabaseError:
            pass  # it simply goes offline once it is not seen for the stale time
        close_old_connections()


class ResilientWorker(ChannelsWorker):
    """Channels' worker, except that a channel-layer error (Redis away) does not end the
    process: the listener logs, backs off (up to 10 s) and listens again. Jobs are in
    PostgreSQL and the job loop polls, so nothing is lost meanwhile."""

    async def listener(self, channel):
        delay = 0.5
        while True:
            try:
                message = await self.channel_layer.receive(channel)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - redis-py raises several kinds
                log.warning("channel layer unavailable (%s: %s); listening again in %.1f s",
                            type(error).__name__, error, delay)  # fmt: skip
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            delay = 0.5
            if not message.get("type"):
                log.warning("ignored a message without a type on %s", channel)
                continue
            queue = self.get_or_create_application_instance(channel, {"type": "channel", "channel": channel})
            await queue.put(message)


def initial_adapter():
    """The adapter to load at start (checked), or None for the base model; a bad one is refused
    with its reason on its row, and the base model serves."""
    wanted = adapters.chosen_path()
    if not wanted:
        return None
    try:
        return adapters.check(wanted)
    except adapters.AdapterProblem as error:
        refuse_adapter(wanted, error)
        return None


def refuse_adapter(path: str, error: Exception) -> None:
    from describer.models import Adapter

    log.error("adapter %s not served: %s", path, error)
    Adapter.objects.filter(path=path).update(problem=str(error)[:2000], is_active=False)


def note_adapter_served(runtime) -> None:
    """Results name the adapter's row: register it (one from DESCRIBER_ADAPTER may have none)."""
    from describer.models import Adapter

    if runtime.adapter is None:
        runtime.adapter_id = None
        return
    try:
        runtime.adapter_id = Adapter.register(runtime.adapter).pk
    except DatabaseError:  # results still name it (adapter_name); the row is made at the next switch
        log.warning("adapter %s: its row could not be written (database unavailable)", runtime.adapter.label)
        runtime.adapter_id = None
    log.info("serving %s (merge %.1f s, load %.1f s)", runtime.serving, runtime.load_seconds.get("merge_s", 0),
             runtime.load_seconds.get("load_s", 0))  # fmt: skip


class UnavailableRuntime:
    """Stands in for the models when they could not be loaded: every job fails
    with the loading error, which tells the admin what to fix."""

    model_name = serving = "unavailable"
    device = "none"
    is_tiny = False
    available = False
    adapter = adapter_id = None

    def __init__(self, error: Exception) -> None:
        self.error = error

    def __getattr__(self, name):
        def raise_error(*args, **kwargs):
            raise self.error

        return raise_error


# Set by the runworker command in the worker process; None in the web process.
current_loop: JobLoop | None = None
