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
from django.db.models import Max
from django.utils import translation
from django.utils.text import Truncator
from django.utils.translation import gettext as _

from describer import graphs, jobs
from describer.images import NormalisedImage, thumbnail_from_bytes
from describer.models import Conversion, MermaidVersion

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
        interface_language=translation.get_language() or "",
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


def conversions_create_from_images(
    *, owner, images: list[tuple[str, NormalisedImage]], language: str = ""
) -> list[Conversion]:
    """Several uploads at once (original file name, image), each its own conversion: all or none."""
    created: list[Conversion] = []
    try:
        with transaction.atomic():
            for original_filename, image in images:
                created.append(
                    conversion_create_from_image(
                        owner=owner, image=image, original_filename=original_filename, language=language
                    )
                )
    except Exception:
        # Each call removes its own files when it fails; the ones before it were rolled back too.
        for conversion in created:
            conversion.delete_files()
        raise
    return created


def conversion_create_from_text(*, owner, text: str, source: Conversion | None = None) -> Conversion:
    first_line = text.strip().splitlines()[0] if text.strip() else ""
    with transaction.atomic():
        conversion = Conversion.objects.create(
            interface_language=translation.get_language() or "",
            owner=owner,
            kind=Conversion.Kind.TEXT_TO_DIAGRAM,
            input_text=text,
            title=Truncator(first_line.lstrip("# ").strip()).chars(80),
            source=source,
        )
        transaction.on_commit(wake_worker)
    return conversion


def conversion_delete(conversion: Conversion) -> None:
    with transaction.atomic():
        conversion.delete()
        transaction.on_commit(conversion.delete_files)


def conversion_retry(conversion: Conversion) -> bool:
    """Queue a failed or cancelled conversion again from the start, keeping its input; False
    (and nothing changes) for one in another state."""
    took = jobs.retry(conversion)
    if took:
        transaction.on_commit(wake_worker)
    return took


def conversion_cancel(conversion: Conversion) -> None:
    """Stop a queued or running conversion; raises ConversionStateError when it has ended."""
    if not jobs.cancel(conversion):
        raise ConversionStateError(_("This conversion has already ended; there is nothing to cancel."))


# --- Text → diagram: versions, repairs, the round trip ----------------------------------


class ConversionStateError(Exception):
    """The conversion is not in a state that allows the action; the message says why."""


BROWSER = MermaidVersion.ParseChecker.BROWSER


def parse_status(parse_error: str, checked_by: str) -> dict:
    """A version's parse fields from a parser's report. An error means it does not parse; no error
    means it parses only when the reporter surely ran a parser: the site's editor always does
    before it posts, an API client may not have (then: not checked, None)."""
    if parse_error:
        return {"parse_error": parse_error, "parses": False, "parse_checked_by": checked_by}
    if checked_by == BROWSER:
        return {"parse_error": "", "parses": True, "parse_checked_by": checked_by}
    return {"parse_error": "", "parses": None, "parse_checked_by": ""}


def mermaid_version_add(
    conversion: Conversion, *, code: str, origin: str, parse_error: str = "", checked_by: str = ""
) -> MermaidVersion:
    """Append a version of the Mermaid code and make it the conversion's current code. Without a
    report (`checked_by` empty: the model's code, a repair, a graph's) its parse status is None."""
    with transaction.atomic():
        # The row lock numbers concurrent saves one after the other.
        Conversion.objects.select_for_update().filter(pk=conversion.pk).first()
        last = conversion.mermaid_versions.aggregate(last=Max("number"))["last"] or 0
        version = MermaidVersion.objects.create(
            conversion=conversion, number=last + 1, code=code, origin=origin, **parse_status(parse_error, checked_by)
        )
        # Every version, the model's or the user's, is read into the graph behind the exports.
        graph_fields = graphs.from_mermaid(code).fields()
        Conversion.objects.filter(pk=conversion.pk).update(output_mermaid=code, **graph_fields)
    conversion.output_mermaid = code
    conversion.output_graph, conversion.graph_notes = graph_fields["output_graph"], graph_fields["graph_notes"]
    return version


def mermaid_version_record_parse(version: MermaidVersion, *, parse_error: str, checked_by: str) -> bool:
    """Keep a parser's verdict on an existing version (e.g. a repair the model wrote, which no
    parser had seen); a report that says nothing (no error, no parser) changes nothing."""
    status = parse_status(parse_error, checked_by)
    if status["parses"] is None:
        return False
    MermaidVersion.objects.filter(pk=version.pk).update(**status)
    for field, value in status.items():
        setattr(version, field, value)
    return True


def mermaid_version_report_parse(conversion: Conversion, *, number: int, code: str, parse_error: str) -> bool:
    """The editor's verdict on a version it drew as it was saved (the model's code, a repair),
    kept when no parser had reported on that version yet. A report on other code (the version
    changed meanwhile) or on a version already judged changes nothing."""
    version = conversion.mermaid_versions.filter(number=number, parses=None).first()
    if version is None or version.code != code:
        return False
    return mermaid_version_record_parse(version, parse_error=parse_error, checked_by=BROWSER)


def _check_editable(conversion: Conversion) -> None:
    if conversion.kind != Conversion.Kind.TEXT_TO_DIAGRAM:
        raise ConversionStateError(_("Only a text → diagram conversion has Mermaid code to edit."))
    if not conversion.is_finished:
        raise ConversionStateError(_("The model is still working on this diagram; wait until it has finished."))


def _take_over(
    conversion: Conversion, *, code: str, origin: str, parse_error: str = "", checked_by: str = ""
) -> MermaidVersion:
    """The user's own version: it is the result now, even after a failed repair."""
    with transaction.atomic():
        _check_editable(Conversion.objects.select_for_update().get(pk=conversion.pk))  # not queued meanwhile
        version = mermaid_version_add(
            conversion, code=code, origin=origin, parse_error=parse_error, checked_by=checked_by
        )
        jobs.accept_edit(conversion)
    return version


def mermaid_save(
    conversion: Conversion, *, code: str, parse_error: str = "", checked_by: str = BROWSER
) -> MermaidVersion | None:
    """Keep the user's edit as a new version; None when it is the current code already (the
    report of whether it parses is still kept on that version: it may be the first one)."""
    _check_editable(conversion)
    current = conversion.current_mermaid_version()
    if current is not None and code == conversion.output_mermaid:
        mermaid_version_record_parse(current, parse_error=parse_error, checked_by=checked_by)
        return None
    return _take_over(
        conversion, code=code, origin=MermaidVersion.Origin.EDIT, parse_error=parse_error, checked_by=checked_by
    )


def mermaid_restore(conversion: Conversion, number: int) -> MermaidVersion:
    """Make an earlier version current again, as a new version (the history only grows), with
    what is known of whether it parses. Raises MermaidVersion.DoesNotExist for an unknown number."""
    _check_editable(conversion)
    earlier = conversion.mermaid_versions.get(number=number)
    if earlier.code == conversion.output_mermaid:
        raise ConversionStateError(
            _("Version %(number)s has the same code as the current version; there is nothing to restore.")
            % {"number": number}
        )
    return _take_over(
        conversion, code=earlier.code, origin=MermaidVersion.Origin.RESTORE,
        parse_error=earlier.parse_error, checked_by=earlier.parse_checked_by,
    )  # fmt: skip


def conversion_request_repair(conversion: Conversion, *, code: str, error: str, checked_by: str = BROWSER) -> None:
    """Queue the conversion again so that the model fixes `code`, which the parser rejected with `error`.

    The code is kept as a version first (with its error) when it differs from the current one.
    At most DESCRIBER_MAX_REPAIRS repairs per conversion."""
    _check_editable(conversion)
    with transaction.atomic():
        locked = Conversion.objects.select_for_update().get(pk=conversion.pk)
        _check_editable(locked)  # another request may have queued it meanwhile
        if locked.repair_attempts >= settings.DESCRIBER_MAX_REPAIRS:
            raise ConversionStateError(
                _("All %(count)s repair attempts have been used; edit the code by hand.")
                % {"count": settings.DESCRIBER_MAX_REPAIRS}
            )
        latest = locked.mermaid_versions.first()
        if latest is None or latest.code != code:
            mermaid_version_add(locked, code=code, origin=MermaidVersion.Origin.EDIT, parse_error=error,
                                checked_by=checked_by)  # fmt: skip
        else:
            mermaid_version_record_parse(latest, parse_error=error, checked_by=checked_by)
        jobs.repair(locked, error)
        transaction.on_commit(wake_worker)


def conversion_edit_as_mermaid(source: Conversion) -> Conversion:
    """A description's graph opened in the Mermaid editor: a text → diagram conversion whose first
    version is the graph's Mermaid, done at once (no model pass, unlike conversion_draw)."""
    if source.kind != Conversion.Kind.DIAGRAM_TO_TEXT or not source.output_graph:
        raise ConversionStateError(_("Only a finished description with a process graph can be edited as Mermaid."))
    with transaction.atomic():
        drawing = Conversion.objects.create(
            interface_language=translation.get_language() or "",
            owner=source.owner,
            kind=Conversion.Kind.TEXT_TO_DIAGRAM,
            input_text=source.output_text[: settings.TEXT_INPUT_MAX_CHARS],
            title=source.title,
            source=source,
        )
        mermaid_version_add(drawing, code=graphs.mermaid_of(source.output_graph), origin=MermaidVersion.Origin.GRAPH)
        jobs.done_without_model(drawing)
    return drawing


def conversion_draw(source: Conversion) -> Conversion:
    """The round trip: draw a finished description as a new text → diagram conversion."""
    if source.kind != Conversion.Kind.DIAGRAM_TO_TEXT or source.status != Conversion.Status.DONE:
        raise ConversionStateError(_("Only a finished diagram → text description can be drawn."))
    if not source.output_text.strip():
        raise ConversionStateError(_("This conversion has no description to draw."))
    text = source.output_text[: settings.TEXT_INPUT_MAX_CHARS]
    return conversion_create_from_text(owner=source.owner, text=text, source=source)
