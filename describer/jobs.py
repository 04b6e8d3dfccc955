"""The lifecycle of a job: the one module that writes a Conversion's `status`, `worker`,
`attempts` and `heartbeat_at` (tests/test_lifecycle.py enforces it).

PostgreSQL is the queue: a queued Conversion row is the job. The transitions:

    queued  ──claim──▶ running, held by a worker (it may wait in that worker's batch)
    running ──start──▶ running on the model: the attempt counts from here
    running ──finish─▶ done        running ──fail──▶ failed
    running ──release─▶ queued     the worker is stopping; a started attempt is given back
    running ──requeue─▶ queued     its heartbeat went stale (the worker died), or failed when
                                   every attempt was used; a job that never started costs none
    queued | running ──cancel──▶ cancelled   (the owner)
    failed | cancelled ──retry──▶ queued     (the owner)
    done | failed ──repair──▶ queued         (text → diagram: the model fixes rejected code)
    done | failed ──accept_edit──▶ done      (the user's own code is the result)
    queued ──done_without_model──▶ done      (a drawing made from a description's graph)

Worker-side transitions (start, progress, finish, fail, release) are conditional updates: they
take only while the row is still this worker's running job, and return whether they took, as
healthchecks' `Flip` updates do. A worker whose job was taken from it (requeued as stale and
claimed elsewhere, or cancelled) drops its result. Workers claim with SELECT … FOR UPDATE
SKIP LOCKED, so any number of them share one database; channel messages only wake them up.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from django.conf import settings
from django.db import transaction
from django.db.models import Case, F, IntegerField, When
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from describer.models import Conversion

log = logging.getLogger(__name__)

Status = Conversion.Status
Stage = Conversion.Stage

# What a job that goes back to the queue forgets of its last run.
_FRESH_RUN = {
    "stage": Stage.QUEUED,
    "worker": "",
    "heartbeat_at": None,
    "claimed_at": None,
    "started_at": None,
    "output_raw": "",
    "tokens_generated": 0,
    "cut_off": False,
    "ocr_reading": None,
    "grounding": None,
    "coverage": None,
    "model_name": "",
    "adapter": None,
    "adapter_name": "",
}


def _held(job: Conversion, worker_name: str):
    return Conversion.objects.held_by(worker_name).filter(pk=job.pk)


# --- Worker side ----------------------------------------------------------------------------


def claim(worker_name: str, limit: int = 1) -> list[Conversion]:
    """Hold up to `limit` of the oldest queued jobs for this worker. No attempt counts yet.

    A job restarted after its worker died (attempts > 0) runs alone: if it is what kills the
    worker, the next crash costs it an attempt and no innocent job of a shared batch."""
    with transaction.atomic():
        candidates = list(
            Conversion.objects.queued()
            .order_by("created_at")
            .select_for_update(skip_locked=True)
            .values_list("id", "attempts")[:limit]
        )
        if candidates and candidates[0][1] > 0:
            ids = [candidates[0][0]]
        else:
            ids = [job_id for job_id, attempts in candidates if attempts == 0]
        if not ids:
            return []
        now = timezone.now()
        Conversion.objects.filter(id__in=ids, status=Status.QUEUED).update(
            status=Status.RUNNING, stage=Stage.PREPROCESSING, claimed_at=now, heartbeat_at=now, worker=worker_name
        )
    claimed = list(Conversion.objects.held_by(worker_name).filter(id__in=ids).order_by("created_at"))
    for job in claimed:
        log.info("job %s claimed by %s", job.pk, worker_name)
    return claimed


def heartbeat(worker_name: str, ids: Iterable) -> set:
    """Refresh the heartbeat of every job this worker holds; return the ids it still holds."""
    ids = list(ids)
    if not ids:
        return set()
    held = Conversion.objects.held_by(worker_name).filter(id__in=ids)
    held.update(heartbeat_at=timezone.now())
    return set(held.values_list("id", flat=True))


def start(job: Conversion, worker_name: str) -> bool:
    """The job goes onto the model: from here a crash costs it an attempt."""
    now = timezone.now()
    took = _held(job, worker_name).update(
        started_at=now, heartbeat_at=now, stage=Stage.GENERATION, attempts=F("attempts") + 1
    )
    if took:
        job.started_at, job.stage, job.attempts = now, Stage.GENERATION, job.attempts + 1
        log.info("job %s started (attempt %s of %s)", job.pk, job.attempts, settings.DESCRIBER_MAX_ATTEMPTS)
    return bool(took)


def record_stage(job: Conversion, worker_name: str, stage: str) -> bool:
    took = _held(job, worker_name).update(stage=stage, heartbeat_at=timezone.now())
    job.stage = stage
    return bool(took)


def record_progress(job: Conversion, worker_name: str, text: str, tokens: int) -> bool:
    """Save the text streamed so far (a reload shows it); False once the job is no longer ours."""
    took = _held(job, worker_name).update(output_raw=text, tokens_generated=tokens, heartbeat_at=timezone.now())
    return bool(took)


def finish(job: Conversion, worker_name: str, fields: dict, *, also: Callable[[], None] | None = None) -> bool:
    """Done, with the result `fields`; `also` runs in the same transaction only if the write took
    (text → diagram adds its Mermaid version there, so a dropped result leaves no version)."""
    if "timings" in fields:
        # Counted here from the row's own times: the run's queue wait starts when it was queued
        # (created, retried or sent for repair), not when the conversion was first created.
        fields = {**fields, "timings": {**fields["timings"], "queue_wait_s": job.queue_wait_s()}}
    with transaction.atomic():
        took = _held(job, worker_name).update(
            status=Status.DONE, stage=Stage.FINISHED, finished_at=timezone.now(), **fields
        )
        if took and also is not None:
            also()
    if took:
        timings = fields.get("timings", {})
        log.info(
            "job %s finished: %s tokens, first token %s s, generation %s s, %s tokens/s",
            job.pk, fields.get("tokens_generated"), timings.get("first_token_s"),
            timings.get("generation_s"), timings.get("tokens_per_s"),
        )  # fmt: skip
    else:
        log_lost(job)
    return bool(took)


def fail(job: Conversion, worker_name: str, message: str) -> bool:
    took = _held(job, worker_name).update(
        status=Status.FAILED, stage=Stage.FINISHED, error_message=message, finished_at=timezone.now()
    )
    if took:
        log.info("job %s failed: %s", job.pk, message)
    else:
        log_lost(job)
    return bool(took)


def release(job: Conversion, worker_name: str) -> bool:
    """Give a job back (the worker is stopping): a started attempt does not count."""
    took = _held(job, worker_name).update(
        status=Status.QUEUED,
        attempts=Case(
            When(started_at__isnull=False, then=F("attempts") - 1), default=F("attempts"), output_field=IntegerField()
        ),
        **_FRESH_RUN,
    )
    if took:
        log.info("job %s requeued: its worker %s is stopping", job.pk, worker_name)
    return bool(took)


def lost_reason(job: Conversion) -> str:
    """Why a worker's write did not take: "cancelled", or "taken" (requeued, maybe elsewhere)."""
    status = Conversion.objects.filter(pk=job.pk).values_list("status", flat=True).first()
    return "cancelled" if status == Status.CANCELLED else "taken"


def log_lost(job: Conversion) -> None:
    if lost_reason(job) == "cancelled":
        log.info("job %s cancelled: its result is dropped", job.pk)
    else:
        log.warning("job %s was taken from this worker (its heartbeat went stale): its result is dropped", job.pk)


# --- Recovery (any worker) ------------------------------------------------------------------


def recover_stale() -> tuple[int, int]:
    """Requeue the jobs of dead workers; fail those that used every attempt. Returns (requeued, failed)."""
    requeued = failed = 0
    with transaction.atomic():
        for job in Conversion.objects.stale_running().select_for_update(skip_locked=True):
            if job.started_at is not None and job.attempts >= settings.DESCRIBER_MAX_ATTEMPTS:
                failed += _fail_exhausted(job)
            else:
                requeued += _requeue_stale(job)
    return requeued, failed


def _stale(job: Conversion):
    # Re-checked in the UPDATE: a heartbeat that arrived meanwhile keeps the job with its worker.
    return Conversion.objects.stale_running().filter(pk=job.pk, worker=job.worker)


def _requeue_stale(job: Conversion) -> int:
    took = _stale(job).update(status=Status.QUEUED, **_FRESH_RUN)
    if took:
        ran = "after attempt %s" % job.attempts if job.started_at else "before it started"
        log.info("job %s requeued: worker %s went silent %s", job.pk, job.worker, ran)
    return took


def _fail_exhausted(job: Conversion) -> int:
    with translation.override(job.interface_language or None):
        message = _("The worker stopped while running this conversion %(n)s times, so it was given up.") % {
            "n": job.attempts
        }
    took = _stale(job).update(
        status=Status.FAILED, stage=Stage.FINISHED, error_message=message, finished_at=timezone.now(), worker=""
    )
    if took:
        log.info("job %s failed: %s", job.pk, message)
    return took


# --- Owner side -----------------------------------------------------------------------------


def cancel(job: Conversion) -> bool:
    """Stop a queued or running job. A running one stops at its worker's next progress write."""
    took = Conversion.objects.filter(pk=job.pk, status__in=[Status.QUEUED, Status.RUNNING]).update(
        status=Status.CANCELLED, stage=Stage.FINISHED, worker="", heartbeat_at=None, finished_at=timezone.now()
    )
    if took:
        job.status, job.stage = Status.CANCELLED, Stage.FINISHED
        log.info("job %s cancelled by its owner", job.pk)
    return bool(took)


def retry(job: Conversion) -> bool:
    """Queue a failed or cancelled job again from the start, keeping its input."""
    now = timezone.now()
    took = Conversion.objects.filter(pk=job.pk, status__in=[Status.FAILED, Status.CANCELLED]).update(
        status=Status.QUEUED,
        queued_at=now,
        attempts=0,
        error_message="",
        output_text="",
        output_structure=None,
        finished_at=None,
        timings={},
        **_FRESH_RUN,
    )
    if took:
        job.status, job.queued_at = Status.QUEUED, now
        log.info("job %s queued again by its owner", job.pk)
    return bool(took)


def repair(job: Conversion, error: str) -> bool:
    """Queue a finished text → diagram job so that the model fixes the code the parser rejected.
    The caller holds the row lock and has checked the repair budget. The last run's timings go:
    the repair's own run writes new ones, its queue wait counted from now."""
    now = timezone.now()
    took = Conversion.objects.filter(pk=job.pk, status__in=[Status.DONE, Status.FAILED]).update(
        status=Status.QUEUED,
        queued_at=now,
        repair_error=error,
        repair_attempts=F("repair_attempts") + 1,
        attempts=0,
        error_message="",
        finished_at=None,
        timings={},
        **_FRESH_RUN,
    )
    if took:
        job.status, job.queued_at, job.timings = Status.QUEUED, now, {}
        log.info("job %s queued for a repair", job.pk)
    return bool(took)


def done_without_model(job: Conversion) -> bool:
    """A new job whose result needs no model (a drawing made from a description's graph)."""
    took = Conversion.objects.filter(pk=job.pk, status=Status.QUEUED, worker="").update(
        status=Status.DONE, stage=Stage.FINISHED, finished_at=timezone.now()
    )
    if took:
        job.status, job.stage = Status.DONE, Stage.FINISHED
        log.info("job %s done without the model", job.pk)
    return bool(took)


def accept_edit(job: Conversion) -> bool:
    """The user's own code is the result now, even after a failed repair."""
    took = Conversion.objects.filter(pk=job.pk, status__in=[Status.DONE, Status.FAILED]).update(
        status=Status.DONE, stage=Stage.FINISHED, error_message="", repair_error=""
    )
    if took:
        job.status, job.error_message, job.repair_error = Status.DONE, "", ""
    return bool(took)
