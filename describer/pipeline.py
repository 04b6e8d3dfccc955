"""What the worker does with the jobs it claimed: one path for both kinds and any batch size.

Each job is prepared by its kind (describer/describing.py, describer/drawing.py: a list of chat
messages), started on the model (jobs.start: the attempt counts from here), generated together
with the others (runtime.stream_batch; one job is a batch of one), streamed to its own page,
and finished from its text by its kind as soon as its own text is complete. Every write goes
through describer/jobs.py and takes only while the job is still this worker's; a job that is
cancelled or taken meanwhile leaves the batch at the next decode step, the rest go on.

Runs in the worker process only. The model runtime (describer/inference, the only code that
imports torch) is passed in, never imported here at module level.
"""

from __future__ import annotations

import itertools
import logging
import queue
import time
from contextlib import closing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from django.conf import settings
from django.db import DatabaseError, close_old_connections
from django.utils import translation
from django.utils.translation import gettext as _

from describer import jobs
from describer.describing import Describe
from describer.drawing import Draw
from describer.models import Conversion
from describer.progress import Broadcaster, JobProgress

if TYPE_CHECKING:
    from describer.inference.runtime import DescriberRuntime, GenerationRequest

log = logging.getLogger(__name__)


class JobKind(Protocol):
    kind: str

    def prepare(self, runtime, job: Conversion, progress: JobProgress, timings: dict) -> list[dict]: ...

    def grammar(self, job: Conversion) -> str: ...

    def result(self, job: Conversion, text: str, *, cut_off: bool = False) -> tuple[dict, object]: ...


KINDS: dict[str, JobKind] = {kind.kind: kind for kind in (Describe(), Draw())}


class WorkerStopping(Exception):
    """The worker is shutting down; its jobs go back to the queue."""


class HeldJobs:
    """The ids of the jobs a worker holds (claimed, waiting, running), shared with its heartbeat
    thread, which marks those taken from it (cancelled, or requeued as stale) as lost."""

    def __init__(self) -> None:
        self.ids: set = set()
        self.lost: set = set()

    def add(self, job_ids) -> None:
        self.ids.update(job_ids)

    def discard(self, job_id) -> None:
        self.ids.discard(job_id)
        self.lost.discard(job_id)

    def mark_lost(self, job_ids) -> None:
        self.lost.update(job_ids)

    def is_lost(self, job_id) -> bool:
        return job_id in self.lost

    def snapshot(self) -> list:
        return list(self.ids)


@dataclass
class _Row:
    job: Conversion
    progress: JobProgress
    messages: list[dict]
    timings: dict
    started_on_model: bool = False
    first_token_at: float | None = None
    done: bool = False
    cut_off: bool = False
    request: GenerationRequest | None = field(default=None, repr=False)
    rid: tuple | None = None  # (job id, incarnation) on the continuous-batching engine
    submitted_at: float = 0.0
    alone: bool = False  # runs alone on the engine (restarted after a crash or an out-of-memory)


class JobRunner:
    def __init__(
        self,
        runtime: DescriberRuntime,
        broadcaster: Broadcaster,
        *,
        worker_name: str = "test",
        held: HeldJobs | None = None,
        should_stop=lambda: False,
    ) -> None:
        self.runtime = runtime
        self.broadcaster = broadcaster
        self.worker_name = worker_name
        self.held = held if held is not None else HeldJobs()
        self.should_stop = should_stop

    def run(self, job: Conversion) -> None:
        """One job: a batch of one."""
        self.run_batch([job])

    def run_batch(self, batch: list[Conversion]) -> None:
        """Run claimed jobs to their ends; never raises for the jobs' own errors.

        Preparation runs job by job, and a failure there fails that job alone. If the batch runs
        out of GPU memory, its unfinished jobs run again one by one (the same attempt)."""
        self.held.add(job.pk for job in batch)
        try:
            self._run_claimed(batch)
        except WorkerStopping:
            pass
        except DatabaseError:
            log.warning("database unavailable mid-batch; its unfinished jobs go back to the queue")
            close_old_connections()
        finally:
            self._after_batch(batch)

    def _run_claimed(self, batch: list[Conversion]) -> None:
        rows = [row for row in (self._prepare(job) for job in batch) if row is not None]
        if rows:
            self._generate(rows)

    def _after_batch(self, batch: list[Conversion]) -> None:
        self._give_back_unfinished(batch)

    # --- Preparing ---------------------------------------------------------------------------

    def _prepare(self, job: Conversion) -> _Row | None:
        if self.should_stop():
            raise WorkerStopping
        progress = JobProgress(job, self.broadcaster, self.worker_name)
        timings: dict = {}  # jobs.finish adds the queue wait, counted from this run's own request
        try:
            messages = KINDS[job.kind].prepare(self.runtime, job, progress, timings)
        except DatabaseError:
            # Not the job's fault: it stays held and goes back to the queue when the batch ends.
            log.warning("job %s: database unavailable while preparing; it goes back to the queue", job.pk)
            close_old_connections()
            return None
        except Exception as error:  # noqa: BLE001 - this job fails alone
            self._fail(job, progress, error)
            return None
        if progress.lost:
            self._drop(job, progress)
            return None
        return _Row(job, progress, messages, timings)

    def _request(self, row: _Row) -> GenerationRequest:
        from describer.inference.runtime import GenerationRequest  # worker only: imports torch

        return GenerationRequest(
            messages=row.messages,
            max_new_tokens=settings.DESCRIBER_MAX_NEW_TOKENS,
            min_new_tokens=settings.DESCRIBER_MIN_NEW_TOKENS,
            # Every answer in the layout its kind is read in (describer/graph/grammar.py).
            grammar=KINDS[row.job.kind].grammar(row.job) if settings.DESCRIBER_CONSTRAINED else None,
        )

    # --- Generating --------------------------------------------------------------------------

    def _generate(self, rows: list[_Row]) -> None:
        from describer.inference.errors import OutOfMemory

        rows = [row for row in rows if self._start(row)]
        if not rows:
            return
        try:
            self._stream(rows)
        except OutOfMemory as error:
            unfinished = [row for row in rows if not row.done]
            if len(rows) == 1:
                self._fail_row(rows[0], error)
                return
            log.warning("a batch of %s ran out of GPU memory; running %s jobs one by one", len(rows), len(unfinished))
            for row in unfinished:
                self._generate([self._restart(row)])
        except (WorkerStopping, DatabaseError):
            raise  # the jobs still held go back to the queue (run_batch), or go stale and are requeued
        except Exception as error:  # noqa: BLE001 - every failure becomes the jobs' readable message
            for row in rows:
                if not row.done:
                    self._fail_row(row, error)

    def _start(self, row: _Row) -> bool:
        if row.started_on_model:
            return True
        if not jobs.start(row.job, self.worker_name):
            self._drop(row.job, row.progress)
            return False
        row.started_on_model = True
        row.progress.conversion.stage = Conversion.Stage.GENERATION
        row.progress.publish()
        return True

    def _restart(self, row: _Row) -> _Row:
        """The same job and attempt, with its text so far forgotten (it is written again)."""
        progress = JobProgress(row.job, self.broadcaster, self.worker_name)
        progress.conversion.stage = Conversion.Stage.GENERATION
        return _Row(row.job, progress, row.messages, row.timings, started_on_model=True)

    def _stream(self, rows: list[_Row]) -> None:
        started = time.monotonic()
        deadline = started + settings.DESCRIBER_TIME_LIMIT_S
        stopped: set[int] = set()  # rows that leave the batch: the decoder skips them from the next step
        requests = [self._request(row) for row in rows]
        with closing(self.runtime.stream_batch(requests, deadline=deadline, stopped=stopped)) as chunks:
            for index, chunk in chunks:
                if self.should_stop():
                    raise WorkerStopping
                row = rows[index]
                if row.done:
                    continue
                row.first_token_at = row.first_token_at or time.monotonic()
                if not row.progress.add_text(chunk, chunk.tokens) or self.held.is_lost(row.job.pk):
                    stopped.add(index)
                    self._drop(row.job, row.progress)
                    row.done = True
                elif chunk.final:
                    row.cut_off = chunk.cut_off
                    row.timings.update(_generation_timings(started, row.first_token_at, row.progress.tokens))
                    self._finish(row)

    # --- Ending ------------------------------------------------------------------------------

    def _finish(self, row: _Row) -> None:
        row.done = True
        row.progress.flush()
        job, progress = row.job, row.progress
        progress.stage(Conversion.Stage.POSTPROCESSING)
        try:
            fields, also = _until_database_answers(
                lambda: KINDS[job.kind].result(job, progress.text, cut_off=row.cut_off)
            )
        except DatabaseError:
            raise
        except Exception as error:  # noqa: BLE001 - this job fails alone
            self._fail(job, progress, error)
            return
        fields.update(
            output_raw=progress.text, tokens_generated=progress.tokens, timings=row.timings, cut_off=row.cut_off,
            **self._written_by(),
        )
        try:
            _until_database_answers(lambda: jobs.finish(job, self.worker_name, fields, also=also))
        except DatabaseError:
            raise  # still held: given back when the batch ends, or requeued once stale
        except Exception as error:  # noqa: BLE001 - e.g. a version that cannot be saved: this job fails alone
            self._fail(job, progress, error)
            return
        self._ended(job, progress)

    def _written_by(self) -> dict:
        """The model and the adapter that wrote a result."""
        adapter = getattr(self.runtime, "adapter", None)
        return {
            "model_name": str(self.runtime.model_name)[:300],
            "adapter_id": getattr(self.runtime, "adapter_id", None) if adapter else None,
            "adapter_name": adapter.label[:200] if adapter else "",
        }

    def _fail_row(self, row: _Row, error: Exception) -> None:
        row.done = True
        row.progress.flush()
        self._fail(row.job, row.progress, error)

    def _fail(self, job: Conversion, progress: JobProgress, error: Exception) -> None:
        message = failure_message(job, error)
        _until_database_answers(lambda: jobs.fail(job, self.worker_name, message))
        self._ended(job, progress)

    def _drop(self, job: Conversion, progress: JobProgress) -> None:
        """The job was taken from this worker: its result is dropped, its page re-reads the row."""
        jobs.log_lost(job)
        self._ended(job, progress)

    def _ended(self, job: Conversion, progress: JobProgress) -> None:
        self.held.discard(job.pk)
        progress.finished()

    def _give_back_unfinished(self, batch: list[Conversion]) -> None:
        """Jobs still held when the batch ends (the worker stops, or the database failed under
        it) go back to the queue; if even that fails, their heartbeats stop and they go stale."""
        for job in batch:
            if job.pk not in self.held.ids:
                continue
            try:
                jobs.release(job, self.worker_name)
            except DatabaseError:
                log.warning("job %s could not be given back; it is requeued once its heartbeat is stale", job.pk)
                close_old_connections()
            self.held.discard(job.pk)


class ContinuousRunner(JobRunner):
    """Jobs join the engine's running batch as they are claimed (describer/inference/engine.py).

    The job thread ``admit``s each claimed job (preparation, CLIP and OCR on this thread while the
    engine decodes on its own), then ``pump``s the engine's events: text to the job's page, and
    each job finished, failed or dropped through describer/jobs.py as soon as its own row ends,
    exactly as ``run_batch`` does. A job taken from the worker (cancelled, or requeued as stale)
    leaves the engine at its next step. Rows are keyed ``(job id, incarnation)``, so a late event
    of a row that was restarted is ignored.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.rows: dict[tuple, _Row] = {}
        self.sink: queue.Queue = queue.Queue()
        self.row_left = False  # a row ended since the loop last claimed: there may be room
        self._texts: dict[tuple, object] = {}
        self._incarnations = itertools.count(1)

    def free_rows(self) -> int:
        return self.runtime.free_slots()

    def idle(self) -> bool:
        return not self.rows

    def _run_claimed(self, batch: list[Conversion]) -> None:
        """``run_batch`` through the engine: admit them all, then stream until every row ended."""
        self.admit_all(batch)
        while self.rows:
            self.pump(timeout=0.1)

    def _after_batch(self, batch: list[Conversion]) -> None:
        self.abandon(batch)

    def admit_all(self, claimed: list[Conversion]) -> None:
        """Admit claimed jobs one by one, the running rows streaming in between. If anything
        raises (the database, the worker stopping), the jobs not yet admitted go back at once."""
        for index, job in enumerate(claimed):
            try:
                self.admit(job)
                self.pump(0)
            except BaseException:
                self._give_back_unfinished(claimed[index + 1 :])
                raise

    def admit(self, job: Conversion) -> None:
        """A claimed (and held) job: prepared, started on the model, and submitted to the engine.
        A job restarted after its worker died runs alone, as it does in a static batch."""
        restarted = job.attempts > 0
        try:
            row = self._prepare(job)
            if row is not None and self._start(row):
                self._submit(row, alone=restarted)
        finally:
            if job.pk in self.held.ids and not any(row.job.pk == job.pk for row in self.rows.values()):
                self._give_back_unfinished([job])  # the database failed under it: back to the queue

    def _submit(self, row: _Row, *, alone: bool) -> None:
        row.rid, row.alone, row.submitted_at = (row.job.pk, next(self._incarnations)), alone, time.monotonic()
        try:  # the time limit counts from the row's prefill: a wait for a slot (alone, say) does not use it
            self.runtime.submit(
                row.rid, self._request(row), self.sink, exclusive=alone, time_limit_s=settings.DESCRIBER_TIME_LIMIT_S
            )
        except Exception as error:  # noqa: BLE001 - e.g. a prompt too long for the slots: this job fails alone
            self._fail_row(row, error)
            return
        self.rows[row.rid] = row
        self._texts[row.rid] = self.runtime.row_text(row.rid)

    def pump(self, timeout: float) -> None:
        """Handle the engine's events for up to ``timeout`` seconds (at least what is there now)."""
        for rid, row in list(self.rows.items()):
            if self.held.is_lost(row.job.pk):  # cancelled or taken: it leaves even before a token
                self._leave(rid)
                self._drop(row.job, row.progress)
            elif self._overdue(row):
                self._leave(rid)
                self._ended_with(row, _engine_failure(self.runtime))
        until = time.monotonic() + timeout
        while True:
            try:
                event = self.sink.get(timeout=max(0.0, until - time.monotonic())) if timeout else self.sink.get_nowait()
            except queue.Empty:
                return
            self._handle(event)
            if self.should_stop():
                raise WorkerStopping
            timeout = 0 if time.monotonic() >= until else timeout

    def _handle(self, event) -> None:
        row = self.rows.get(event.rid)
        if row is None or row.done:
            return  # a row that left: its late tokens are dropped
        if event.error is not None:
            self._leave(event.rid)
            try:
                self._ended_with(row, event.error)
            except DatabaseError:
                self._give_back_unfinished([row.job])  # or, if even that fails, requeued once stale
                raise
            return
        for _, chunk in self._texts[event.rid].add(event.token, event.finished, event.cut_off):
            row.first_token_at = row.first_token_at or time.monotonic()
            if not row.progress.add_text(chunk, chunk.tokens):
                self._leave(event.rid)
                self._drop(row.job, row.progress)
                return
            if chunk.final:
                self._leave(event.rid, cancel=False)
                row.cut_off = chunk.cut_off
                row.timings.update(_generation_timings(row.submitted_at, row.first_token_at, row.progress.tokens))
                try:
                    self._finish(row)
                except DatabaseError:
                    self._give_back_unfinished([row.job])  # or, if even that fails, requeued once stale
                    raise

    def _ended_with(self, row: _Row, error: Exception) -> None:
        from describer.inference.errors import OutOfMemory

        if isinstance(error, OutOfMemory) and not row.alone:
            log.warning("job %s ran out of GPU memory beside others; it runs again alone", row.job.pk)
            self._submit(self._restart(row), alone=True)  # the same attempt
            return
        self._fail_row(row, error)

    def _overdue(self, row: _Row) -> bool:
        """A safety net beside the engine's own deadlines: the decode thread died, or a row has
        had twice its time limit and a minute, waits included."""
        if not self.runtime.engine_alive():
            return True
        return time.monotonic() - row.submitted_at > 2 * settings.DESCRIBER_TIME_LIMIT_S + 60

    def _leave(self, rid: tuple, *, cancel: bool = True) -> None:
        row = self.rows.pop(rid, None)
        self._texts.pop(rid, None)
        if row is not None:
            row.done = True
            self.row_left = True
        if cancel:
            self.runtime.cancel(rid)

    def abandon(self, jobs_held: list[Conversion] | None = None) -> None:
        """Every row leaves the engine, and the jobs still held go back to the queue (the worker
        stops, or the database failed under a finishing write)."""
        rows = list(self.rows.values())
        for rid in list(self.rows):
            self._leave(rid)
        self._give_back_unfinished([row.job for row in rows] + list(jobs_held or []))


def _engine_failure(runtime) -> Exception:
    from describer.inference.errors import EngineStopped, GenerationTimeout

    if not runtime.engine_alive():
        return EngineStopped()
    return GenerationTimeout(settings.DESCRIBER_TIME_LIMIT_S)


def failure_message(job: Conversion, error: Exception) -> str:
    """The message the user reads, in the language the job was made in."""
    from describer.inference.errors import InferenceError

    if isinstance(error, InferenceError):
        log.warning("job %s: %s", job.pk, error)
    else:
        log.error("job %s: internal error", job.pk, exc_info=error)
    with translation.override(job.interface_language or None):
        if isinstance(error, InferenceError):
            return str(error)
        return _("The conversion failed because of an internal error (%(kind)s: %(error)s).") % {
            "kind": type(error).__name__,
            "error": str(error)[:300],
        }


def _until_database_answers(write, *, patience_s: float | None = None) -> bool:
    """A finishing write survives a short PostgreSQL outage: retried with backoff for up to the
    stale time (after that the job is requeued anyway, and the write would not take)."""
    patience_s = settings.DESCRIBER_STALE_AFTER_S if patience_s is None else patience_s
    deadline = time.monotonic() + patience_s
    delay = 0.2
    while True:
        try:
            return write()
        except DatabaseError:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("database unavailable for a finishing write; retrying in %.1f s", delay)
            close_old_connections()
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def _generation_timings(started: float, first_token_at: float | None, tokens: int) -> dict:
    finished = time.monotonic()
    decode_seconds = finished - (first_token_at or finished)
    return {
        "first_token_s": round((first_token_at or finished) - started, 3),
        "generation_s": round(finished - started, 3),
        "tokens": tokens,
        "tokens_per_s": round(tokens / decode_seconds, 1) if decode_seconds > 0 else None,
    }
