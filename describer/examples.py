"""Curated retrieval examples: the folder layout (import and export), names and metadata,
embedding by the worker, and promoting a finished conversion to an example.

A folder holds one example per NAME (ASCII letters, digits, "-" and "_"):

    NAME.png | NAME.jpg | NAME.jpeg   the diagram
    NAME.txt                          its reference description (UTF-8), in the structured
                                      layout the describer writes (describer/postprocess.py)
    NAME.mmd                          optional: its Mermaid source

Diagram type and language come from a `%% type: bpmn, lang: ru` line in NAME.mmd; without
one, from the name's prefix (`flow-en-…`, `bpmn-ru-…`); without that, the language is detected
from the description and the type is "other". Export writes the line, so a round trip keeps
them.

The web process imports this module, so nothing here imports torch: embedding happens where
a model runtime is passed in (the worker's job loop, or a command run with --embed).
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils.text import slugify
from django.utils.translation import gettext as _
from PIL import Image

from describer import images
from describer.models import EMBEDDING_DIMENSIONS, Conversion, Example
from describer.postprocess import detect_language, structure_description
from describer.services import wake_worker

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
DESCRIPTION_SUFFIX = ".txt"
MERMAID_SUFFIX = ".mmd"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,199}$")
METADATA_LINE = re.compile(r"^\s*%%\s*type\s*:\s*([\w-]+)\s*,\s*lang(?:uage)?\s*:\s*([\w-]+)\s*$", re.IGNORECASE)
NAME_PREFIX = re.compile(r"^(flow|flowchart|bpmn|other)-(en|ru|other)-", re.IGNORECASE)
TYPE_ALIASES = {"flow": Example.DiagramType.FLOWCHART}
NAME_PREFIX_OF_TYPE = {Example.DiagramType.FLOWCHART: "flow", Example.DiagramType.BPMN: "bpmn"}
# Stored in embedding_model for vectors of the tiny random test CLIP (its directory is temporary).
TINY_CLIP_NAME = "tiny random CLIP (test model)"
# Examples embedded per round of the worker's loop; queued jobs wait at most this long.
EMBED_BATCH = 64
# pg_advisory_xact_lock key: two web containers starting together import one at a time.
IMPORT_LOCK_KEY = 0x65_78_61_6D

ADDED, UPDATED, UNCHANGED = "added", "updated", "unchanged"

# Russian → Latin for suggested names (slugs are ASCII).
TRANSLITERATION = str.maketrans(
    {
        **dict(zip("абвгдеёзийклмнопрстуфхцы", "abvgdeezijklmnoprstufhcy", strict=True)),
        "ж": "zh", "ч": "ch", "ш": "sh", "щ": "shch", "ъ": "", "ь": "", "э": "e", "ю": "yu", "я": "ya",
    }
)  # fmt: skip


class ExampleRefused(Exception):
    """An example that cannot be imported; str() says what is wrong and what is allowed."""


class PromotionError(Exception):
    """A conversion that cannot become an example; str() says why."""


# --- Names and metadata ----------------------------------------------------------------------


def name_problem(name: str) -> str | None:
    if NAME_PATTERN.match(name):
        return None
    return _(
        "“%(name)s” is not a valid example name: use ASCII letters, digits, “-” and “_”, "
        "starting with a letter or digit, at most 200 characters."
    ) % {"name": name}


def metadata_line(diagram_type: str, language: str) -> str:
    return f"%% type: {diagram_type}, lang: {language}"


def split_metadata(mermaid: str) -> tuple[str, tuple[str, str] | None]:
    """The Mermaid code without its metadata line, and that line's (type, language)."""
    found = None
    kept = []
    for line in mermaid.splitlines():
        match = METADATA_LINE.match(line)
        if match and found is None:
            found = (match.group(1).lower(), match.group(2).lower())
        else:
            kept.append(line)
    return "\n".join(kept).strip(), found


def resolve_metadata(name: str, header: tuple[str, str] | None, description: str) -> tuple[str, str]:
    """(diagram_type, language): from the .mmd line, else the name's prefix, else guessed."""
    if header:
        diagram_type = TYPE_ALIASES.get(header[0], header[0])
        _check_choice(name, "type", diagram_type, Example.DiagramType.values)
        _check_choice(name, "lang", header[1], Example.Language.values)
        return diagram_type, header[1]
    prefix = NAME_PREFIX.match(name)
    if prefix:
        kind = prefix.group(1).lower()
        return TYPE_ALIASES.get(kind, kind), prefix.group(2).lower()
    return Example.DiagramType.OTHER, detect_language(description)


def _check_choice(name: str, key: str, value: str, allowed: list[str]) -> None:
    if value not in allowed:
        raise ExampleRefused(
            _("%(file)s says %(key)s: “%(value)s”; allowed: %(allowed)s.")
            % {"file": f"{name}{MERMAID_SUFFIX}", "key": key, "value": value, "allowed": ", ".join(allowed)}
        )


def suggest_name(title: str, diagram_type: str, language: str) -> str:
    """A free name like `bpmn-ru-soglasovanie-dogovora`, the layout of the starter set."""
    prefix = NAME_PREFIX_OF_TYPE.get(diagram_type, "other")
    slug = slugify(title.lower().translate(TRANSLITERATION))[:60].strip("-_") or "example"
    base = f"{prefix}-{language or 'other'}-{slug}"
    taken = set(Example.objects.filter(name__startswith=base).values_list("name", flat=True))
    name, number = base, 2
    while name in taken:
        name, number = f"{base}-{number}", number + 1
    return name


def file_sha256(field_file) -> str:
    digest = hashlib.sha256()
    for chunk in field_file.chunks():
        digest.update(chunk)
    return digest.hexdigest()


# --- Import ----------------------------------------------------------------------------------


@dataclass
class ExampleFiles:
    """The files of one NAME found in a folder."""

    name: str
    images: list[Path] = field(default_factory=list)
    description: Path | None = None
    mermaid: Path | None = None

    def problem(self) -> str | None:
        if len(self.images) > 1:
            names = ", ".join(path.name for path in self.images)
            return _("two images for one example (%(files)s): keep one.") % {"files": names}
        if not self.images:
            return _("%(name)s.txt has no image: add %(name)s.png or %(name)s.jpg.") % {"name": self.name}
        if self.description is None:
            return _("%(file)s has no description: add %(name)s.txt.") % {
                "file": self.images[0].name,
                "name": self.name,
            }
        return None


@dataclass
class ExampleSource:
    """One example as read from its files, ready to compare with the database."""

    name: str
    image: bytes
    image_filename: str
    description: str
    mermaid: str
    diagram_type: str
    language: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.image).hexdigest()


@dataclass
class ImportReport:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (file or name, reason)
    notes: list[tuple[str, str]] = field(default_factory=list)  # imported, but worth a look

    def summary(self) -> str:
        text = _("%(added)s added, %(updated)s updated, %(unchanged)s unchanged (skipped), %(refused)s refused")
        return text % {
            "added": len(self.added),
            "updated": len(self.updated),
            "unchanged": len(self.unchanged),
            "refused": len(self.refused),
        }


def scan_folder(folder: Path) -> tuple[list[ExampleFiles], list[tuple[str, str]]]:
    """Group a folder's files by NAME. Returns the complete examples and the refused files."""
    found: dict[str, ExampleFiles] = {}
    refused: list[tuple[str, str]] = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        suffix = path.suffix.lower()
        if suffix not in (*IMAGE_SUFFIXES, DESCRIPTION_SUFFIX, MERMAID_SUFFIX):
            expected = _("not part of an example: expected NAME.png, NAME.jpg or NAME.jpeg, NAME.txt and NAME.mmd.")
            refused.append((path.name, expected))
            continue
        problem = name_problem(path.stem)
        if problem:
            refused.append((path.name, problem))
            continue
        files = found.setdefault(path.stem, ExampleFiles(path.stem))
        if suffix in IMAGE_SUFFIXES:
            files.images.append(path)
        elif suffix == DESCRIPTION_SUFFIX:
            files.description = path
        else:
            files.mermaid = path
    complete = []
    for files in found.values():
        problem = files.problem()
        if problem:
            refused.append((files.name, problem))
        else:
            complete.append(files)
    return complete, refused


def read_text(path: Path) -> str:
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ExampleRefused(_("%(file)s is not UTF-8 text.") % {"file": path.name}) from None
    return text.replace("\r\n", "\n").strip()


def load_source(files: ExampleFiles) -> ExampleSource:
    """Read one example's files; the image is only checked later, if it is new or changed."""
    description = read_text(files.description)
    if not description:
        message = _("%(file)s is empty: write the diagram's description in it.")
        raise ExampleRefused(message % {"file": files.description.name})
    mermaid, header = split_metadata(read_text(files.mermaid)) if files.mermaid else ("", None)
    diagram_type, language = resolve_metadata(files.name, header, description)
    image = files.images[0]
    return ExampleSource(files.name, image.read_bytes(), image.name, description, mermaid, diagram_type, language)


def check_image(source: ExampleSource) -> None:
    """The checks uploads get (type, size, pixels, truncation), with the file named."""
    try:
        images.check_size(len(source.image))
        images.decode_fully(images.open_checked(source.image))
    except ValidationError as error:
        raise ExampleRefused(f"{source.image_filename}: {' '.join(error.messages)}") from None


def differs(example: Example, source: ExampleSource) -> bool:
    return (
        not example.image
        or example.image_sha256 != source.sha256
        or (example.description, example.mermaid, example.diagram_type, example.language)
        != (source.description, source.mermaid, source.diagram_type, source.language)
    )


def import_source(source: ExampleSource, *, update: bool = True) -> str:
    """Add or update the example called source.name; returns ADDED, UPDATED or UNCHANGED.

    A new or changed image is checked, stored, and left for the worker to embed. With
    update=False an existing example is left as it is (its curation in the admin kept)."""
    new_file = ""
    try:
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [IMPORT_LOCK_KEY])
            example = Example.objects.select_for_update().filter(name=source.name).first()
            if example is not None and (not update or not differs(example, source)):
                return UNCHANGED
            outcome = ADDED if example is None else UPDATED
            example = example or Example(name=source.name)
            if not example.image or example.image_sha256 != source.sha256:
                check_image(source)
                new_file = replace_image(example, source.image, source.image_filename)
            example.description, example.mermaid = source.description, source.mermaid
            example.diagram_type, example.language = source.diagram_type, source.language
            example.save()
    except Exception:
        if new_file:  # no file without its row
            Example._meta.get_field("image").storage.delete(new_file)
        raise
    return outcome


def replace_image(example: Example, content: bytes, filename: str) -> str:
    """Store a new image for `example` (saved by the caller), pending embedding; the old file
    is deleted once the change is committed. Returns the new file's name."""
    old = example.image.name if example.image else ""
    suffix = Path(filename).suffix.lower() or ".png"
    example.image.save(f"{example.name or 'example'}{suffix}", ContentFile(content), save=False)
    note_new_image(example, content)
    if old and old != example.image.name:
        storage = example.image.storage
        transaction.on_commit(lambda: storage.delete(old))
    return example.image.name


# --- Thumbnails --------------------------------------------------------------------------------

# Lists show examples 96 CSS pixels wide: twice that stays sharp on high-density screens.
THUMBNAIL_PIXELS = 192


def note_new_image(example: Example, content: bytes) -> None:
    """What a new image (`content`) changes in its example: digest, embedding to redo, thumbnail."""
    example.image_sha256 = hashlib.sha256(content).hexdigest()
    reset_embedding(example)
    make_thumbnail(example, content)


def make_thumbnail(example: Example, content: bytes) -> None:
    """Store a small JPEG of `content`, the example's new image (the caller saves the row); the
    old thumbnail is deleted once the change is committed."""
    old = example.thumbnail.name if example.thumbnail else ""
    thumbnail = images.thumbnail_from_bytes(content, THUMBNAIL_PIXELS)
    example.thumbnail.save(f"{example.name or 'example'}.jpg", ContentFile(thumbnail), save=False)
    if old and old != example.thumbnail.name:
        storage = example.thumbnail.storage
        transaction.on_commit(lambda: storage.delete(old))


def example_thumbnail(example: Example) -> bytes | None:
    """The example's thumbnail (JPEG bytes). One stored before thumbnails existed gets it now,
    once; None when its image cannot be read."""
    if not example.thumbnail and not _add_missing_thumbnail(example):
        return None
    try:
        with example.thumbnail.open("rb") as stored:
            return stored.read()
    except OSError:
        return None


def _add_missing_thumbnail(example: Example) -> bool:
    try:
        with example.image.open("rb") as stored:
            content = stored.read()
        thumbnail = images.thumbnail_from_bytes(content, THUMBNAIL_PIXELS)
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        log.warning("example %s has no readable image for a thumbnail: %s", example.pk, error)
        return False
    storage = example.thumbnail.storage
    name = storage.save(example.thumbnail.field.generate_filename(example, f"{example.name or 'example'}.jpg"),
                        ContentFile(thumbnail))  # fmt: skip
    # Two pages at once: the first to store its thumbnail wins, the other's file goes.
    if not Example.objects.filter(pk=example.pk, thumbnail="").update(thumbnail=name):
        storage.delete(name)
        example.refresh_from_db(fields=["thumbnail"])
        return bool(example.thumbnail)
    example.thumbnail.name = name
    return True


def reset_embedding(example: Example) -> None:
    example.embedding, example.embedding_model, example.embedding_error = None, "", ""


def layout_note(source: ExampleSource) -> str | None:
    """Descriptions are what the model imitates: say when one is not in the canonical layout."""
    if structure_description(source.description).to_markdown().strip() == source.description:
        return None
    return _(
        "the description is not exactly in the describer's layout (# title, ## Steps, numbered steps…); "
        "the model will imitate it as it is."
    )


def import_folder(
    folder: Path, *, update: bool = True, progress: Callable[[int, int, str], None] | None = None
) -> ImportReport:
    """Import every example in `folder`; idempotent (unchanged examples are skipped)."""
    candidates, refused = scan_folder(folder)
    report = ImportReport(refused=refused)
    for number, files in enumerate(candidates, 1):
        try:
            source = load_source(files)
            outcome = import_source(source, update=update)
        except ExampleRefused as error:
            report.refused.append((files.name, str(error)))
        else:
            getattr(report, outcome).append(files.name)
            note = layout_note(source)
            if note and outcome != UNCHANGED:
                report.notes.append((files.name, note))
        if progress:
            progress(number, len(candidates), files.name)
    if report.added or report.updated:
        wake_worker()
    return report


# --- Export ----------------------------------------------------------------------------------


def export_stem(example: Example) -> str:
    return example.name or f"example-{example.pk}"


def example_files(example: Example) -> list[tuple[str, bytes]]:
    """The files of one example in the import layout; raises OSError if its image is missing."""
    stem = export_stem(example)
    with example.image.open("rb") as image:
        content = image.read()
    mermaid = metadata_line(example.diagram_type, example.language) + "\n"
    if example.mermaid.strip():
        mermaid += example.mermaid.strip() + "\n"
    return [
        (f"{stem}{Path(example.image.name).suffix.lower() or '.png'}", content),
        (f"{stem}{DESCRIPTION_SUFFIX}", (example.description.strip() + "\n").encode("utf-8")),
        (f"{stem}{MERMAID_SUFFIX}", mermaid.encode("utf-8")),
    ]


def export_entries(
    examples: Iterable[Example], problems: list[tuple[str, str]]
) -> Iterator[tuple[str, bytes]]:
    """Every file of `examples`; an example whose image is unreadable goes to `problems`."""
    for example in examples:
        try:
            yield from example_files(example)
        except OSError as error:
            problems.append((export_stem(example), _("its image cannot be read (%(error)s).") % {"error": error}))


def export_to_folder(queryset: QuerySet[Example], folder: Path) -> tuple[int, list[tuple[str, str]]]:
    """Write the examples into `folder` (created if needed). Returns (examples written, problems)."""
    folder.mkdir(parents=True, exist_ok=True)
    problems: list[tuple[str, str]] = []
    files = 0
    for filename, content in export_entries(queryset.defer("embedding").iterator(), problems):
        (folder / filename).write_bytes(content)
        files += 1
    return files // 3, problems


def export_zip(queryset: QuerySet[Example]) -> tuple[bytes, list[tuple[str, str]]]:
    """The examples as a .zip in the import layout, and the problems met."""
    buffer = io.BytesIO()
    problems: list[tuple[str, str]] = []
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for filename, content in export_entries(queryset.defer("embedding").iterator(), problems):
            archive.writestr(filename, content)
    return buffer.getvalue(), problems


# --- Embedding (in the worker, or a command with --embed) ------------------------------------


@dataclass
class EmbedResult:
    embedded: int = 0
    failed: int = 0


def embedding_model_name(runtime) -> str:
    """What embedding_model records: vectors of different models must never be compared."""
    return TINY_CLIP_NAME if getattr(runtime, "is_tiny", False) else settings.CLIP_MODEL


def queue_embedding(queryset: QuerySet[Example]) -> int:
    """Mark examples for embedding again (the admin's "re-embed"); the worker picks them up."""
    count = queryset.update(embedding=None, embedding_model="", embedding_error="")
    transaction.on_commit(wake_worker)
    return count


def embed_pending_examples(
    runtime, *, limit: int | None = EMBED_BATCH, should_stop: Callable[[], bool] = lambda: False
) -> EmbedResult:
    """Embed examples that need it (Example.objects.needs_embedding) with the runtime's CLIP.

    A problem of the example itself (image missing or unreadable) is kept in its
    embedding_error for the admin to see. A model failure (InferenceError) stops the round and
    leaves the examples pending: the next round, or a fixed worker, tries again.
    """
    from describer.inference.errors import InferenceError
    result = EmbedResult()
    if not getattr(runtime, "available", True):  # no models: every job already fails with the reason
        return result
    model_name = embedding_model_name(runtime)
    pending = Example.objects.needs_embedding(model_name).order_by("pk").only("pk", "name", "image")
    for example in pending[:limit] if limit else pending:
        if should_stop():
            break
        try:
            embedded = embed_example(runtime, example, model_name)
        except InferenceError as error:
            log.warning("embedding examples paused: %s", error)
            break
        result.embedded += embedded
        result.failed += not embedded
    if result.embedded or result.failed:
        log.info("examples embedded: %s, failed: %s", result.embedded, result.failed)
    return result


def embed_example(runtime, example: Example, model_name: str) -> bool:
    """Embed one example; False (with the reason stored) when the example itself is at fault."""
    from describer.inference.errors import InferenceError

    try:
        with example.image.open("rb") as stored:
            content = stored.read()
        image = images.load_for_model(io.BytesIO(content), settings.DESCRIBER_MAX_PIXELS)
    except FileNotFoundError:
        reason = _("The image file %(file)s is missing; upload the image again.")
        return _store_failure(example, reason % {"file": example.image.name})
    except Exception as error:  # noqa: BLE001 - Pillow reports damage with many exception types
        reason = _("The image cannot be read (%(error)s); upload a PNG or JPEG.")
        return _store_failure(example, reason % {"error": _short(error)})
    try:
        vector = runtime.embed_image(image)
    except InferenceError:
        raise  # the model's problem, not the example's
    except Exception as error:  # noqa: BLE001 - kept as the example's readable reason
        return _store_failure(example, _("Embedding failed (%(error)s).") % {"error": _short(error)})
    if len(vector) != EMBEDDING_DIMENSIONS:
        reason = _("The CLIP model %(model)s gives %(got)s-dimensional embeddings; the database holds %(want)s.")
        return _store_failure(example, reason % {"model": model_name, "got": len(vector), "want": EMBEDDING_DIMENSIONS})
    # Only if the image is still the one embedded: an admin may have replaced it meanwhile.
    Example.objects.filter(pk=example.pk, image=example.image.name).update(
        embedding=vector,
        embedding_model=model_name,
        embedding_error="",
        image_sha256=hashlib.sha256(content).hexdigest(),
    )
    return True


def _store_failure(example: Example, reason: str) -> bool:
    log.warning("example %s not embedded: %s", example.name or example.pk, reason)
    Example.objects.filter(pk=example.pk, image=example.image.name).update(
        embedding=None, embedding_model="", embedding_error=reason
    )
    return False


def _short(error: Exception) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 200 else text[:199] + "…"


# --- Promotion: a finished conversion becomes an example -------------------------------------


def promotion_initial(conversion: Conversion) -> dict:
    """Initial values of the promotion form: the result as it is, a suggested name."""
    structure = conversion.output_structure or {}
    language = conversion.language or structure.get("language") or detect_language(conversion.output_text)
    diagram_type = Example.DiagramType.BPMN if structure.get("participants") else Example.DiagramType.FLOWCHART
    title = structure.get("title") or conversion.title or str(conversion.pk)[:8]
    return {
        "name": suggest_name(title, diagram_type, language),
        "description": conversion.output_text,
        "diagram_type": diagram_type,
        "language": language if language in Example.Language.values else Example.Language.OTHER,
    }


def example_from_conversion(
    conversion: Conversion, *, name: str, description: str, diagram_type: str, language: str
) -> Example:
    """Create an example from a finished diagram → text conversion: its image copied, the
    (edited) description, a link back to the conversion; the worker embeds it."""
    if conversion.kind != Conversion.Kind.DIAGRAM_TO_TEXT or conversion.status != Conversion.Status.DONE:
        raise PromotionError(_("Only a finished diagram → text conversion can become an example."))
    if not conversion.input_image:
        raise PromotionError(_("This conversion has no image to copy."))
    with conversion.input_image.open("rb") as stored:
        content = stored.read()
    example = Example(
        name=name,
        description=description.replace("\r\n", "\n").strip(),
        diagram_type=diagram_type,
        language=language,
        source_conversion=conversion,
    )
    new_file = ""
    try:
        with transaction.atomic():
            new_file = replace_image(example, content, conversion.input_image.name)
            example.save()
            transaction.on_commit(wake_worker)
    except Exception:
        if new_file:
            example.image.storage.delete(new_file)
        raise
    return example
