"""PostgreSQL as the job queue.

A queued Conversion row is the job. Workers claim rows with
SELECT … FOR UPDATE SKIP LOCKED, so any number of workers on any number of
machines can share one database without running a job twice. Channel messages
only wake workers up; losing one loses nothing because workers also poll.
A running job carries a heartbeat; one whose heartbeat is old belongs to a dead
worker and is queued again, up to DESCRIBER_MAX_ATTEMPTS attempts.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from describer.models import Conversion

log = logging.getLogger(__name__)


def claim_jobs(worker_name: str, limit: int = 1) -> list[Conversion]:
    """Mark up to `limit` of the oldest queued jobs as running by this worker."""
    with transaction.atomic():
        ids = list(
            Conversion.objects.queued()
            .order_by("created_at")
            .select_for_update(skip_locked=True)
            .values_list("id", flat=True)[:limit]
        )
        if not ids:
            return []
        now = timezone.now()
        Conversion.objects.filter(id__in=ids).update(
            status=Conversion.Status.RUNNING,
            stage=Conversion.Stage.PREPROCESSING,
            started_at=now,
            heartbeat_at=now,
            attempts=F("attempts") + 1,
            worker=worker_name,
        )
    return list(Conversion.objects.filter(id__in=ids).order_by("created_at"))


def recover_stale_jobs() -> tuple[int, int]:
    """Requeue jobs of dead workers; fail those that already used every attempt.

    Returns (requeued, failed)."""
    with transaction.atomic():
        stale = list(Conversion.objects.stale_running().select_for_update(skip_locked=True))
        requeued = failed = 0
        for job in stale:
            if job.attempts >= settings.DESCRIBER_MAX_ATTEMPTS:
                with translation.override(job.interface_language or None):
                    message = _(
                        "The worker stopped while running this conversion %(n)s times, so it was given up."
                    ) % {"n": job.attempts}
                fail_job(job, message)
                failed += 1
            else:
                _requeue(job)
                requeued += 1
    if requeued or failed:
        log.warning("stale jobs: %s queued again, %s failed", requeued, failed)
    return requeued, failed


def release_job(job: Conversion) -> None:
    """Give a job back untouched (the worker is shutting down); the attempt does not count."""
    Conversion.objects.filter(pk=job.pk, status=Conversion.Status.RUNNING).update(
        status=Conversion.Status.QUEUED,
        stage=Conversion.Stage.QUEUED,
        attempts=F("attempts") - 1,
        worker="",
        heartbeat_at=None,
        output_raw="",
        tokens_generated=0,
    )


def _requeue(job: Conversion) -> None:
    Conversion.objects.filter(pk=job.pk).update(
        status=Conversion.Status.QUEUED,
        stage=Conversion.Stage.QUEUED,
        worker="",
        heartbeat_at=None,
        output_raw="",
        tokens_generated=0,
    )


def fail_job(job: Conversion, message: str) -> None:
    Conversion.objects.filter(pk=job.pk).update(
        status=Conversion.Status.FAILED,
        stage=Conversion.Stage.FINISHED,
        error_message=message,
        finished_at=timezone.now(),
    )
