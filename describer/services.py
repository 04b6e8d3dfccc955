"""Business rules for conversions: creating, deleting and waking the worker.

Views call these; they hold no rules of their own.
"""

from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from channels.exceptions import ChannelFull
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.files.base import ContentFile
from django.db import transaction

from describer.images import NormalisedImage, thumbnail_from_bytes
from describer.models import Conversion

log = logging.getLogger(__name__)


def wake_worker() -> None:
    """Tell a worker there is work. Only a hint: the job is already in PostgreSQL,
    and workers also poll, so a lost or refused message loses nothing."""
    try:
        async_to_sync(get_channel_layer().send)(settings.WORKER_CHANNEL, {"type": "jobs.wake"})
    except ChannelFull:
        log.info("worker channel full; the worker will find the job when it polls")
    except Exception:  # Redis down must not fail the upload: the job is saved.
        log.warning("could not wake the worker", exc_info=True)


def title_from_filename(filename: str) -> str:
    stem = filename.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    return stem.replace("_", " ").replace("-", " ").strip()[:200]


def conversion_create_from_image(
    *, owner, image: NormalisedImage, original_filename: str, language: str = ""
) -> Conversion:
    conversion = Conversion(
        owner=owner,
        kind=Conversion.Kind.DIAGRAM_TO_TEXT,
        language=language,
        original_filename=original_filename[:255],
        title=title_from_filename(original_filename),
        image_width=image.width,
        image_height=image.height,
    )
    thumbnail = thumbnail_from_bytes(image.content)  # before any file is written
    try:
        with transaction.atomic():
            # The names given here only carry the extension: upload_to makes a random one.
            conversion.input_image.save(f"upload.{image.extension}", ContentFile(image.content), save=False)
            conversion.input_thumbnail.save("thumb.jpg", ContentFile(thumbnail), save=False)
            conversion.save()
            transaction.on_commit(wake_worker)
    except Exception:
        # Nothing partial: no row without files, no files without a row.
        conversion.delete_files()
        raise
    return conversion


def conversion_create_from_text(*, owner, text: str, source: Conversion | None = None) -> Conversion:
    first_line = text.strip().splitlines()[0] if text.strip() else ""
    with transaction.atomic():
        conversion = Conversion.objects.create(
            owner=owner,
            kind=Conversion.Kind.TEXT_TO_DIAGRAM,
            input_text=text,
            title=first_line.lstrip("# ").strip()[:200],
            source=source,
        )
        transaction.on_commit(wake_worker)
    return conversion


def conversion_delete(conversion: Conversion) -> None:
    with transaction.atomic():
        conversion.delete()
        transaction.on_commit(conversion.delete_files)


def conversion_retry(conversion: Conversion) -> None:
    """Queue a failed conversion again from the start, keeping its input."""
    if conversion.status != Conversion.Status.FAILED:
        return
    Conversion.objects.filter(pk=conversion.pk).update(
        status=Conversion.Status.QUEUED,
        stage=Conversion.Stage.QUEUED,
        attempts=0,
        error_message="",
        output_raw="",
        output_text="",
        output_structure=None,
        started_at=None,
        finished_at=None,
        tokens_generated=0,
        timings={},
    )
    transaction.on_commit(wake_worker)
